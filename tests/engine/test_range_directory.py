"""engine.range_directory: the bootstrap layout and generation-ordered updates."""

from __future__ import annotations

import itertools
import random

from engine.config import local_cluster_configs
from engine.meta_codec import META_RANGE_ID
from engine.range_desc import RangeDescriptor
from engine.range_directory import RangeDirectory, bootstrap_descriptors, initial_descriptors
from engine.testing.histories import split_merge_history


def test_bootstrap_layout_is_deterministic_and_covers_the_key_space(tmp_path) -> None:  # type: ignore[no-untyped-def]
    configs = local_cluster_configs(3, tmp_path)
    layouts = [initial_descriptors(c) for c in configs]
    assert layouts[0] == layouts[1] == layouts[2]
    descs = layouts[0]
    assert [d.range_id for d in descs] == list(range(1, len(descs) + 1))
    assert descs[0].start_key == b"" and descs[-1].end_key == b""
    for a, b in itertools.pairwise(descs):
        assert a.end_key == b.start_key
    assert all(d.voters == (1, 2, 3) for d in descs)
    d = RangeDirectory(descs)
    for key in (b"", b"\x00", b"key:1", b"\xff\xff\xff", b"\x80"):
        found = d.lookup(key)
        assert found is not None and found.contains(key)


def test_updates_follow_generations() -> None:
    whole = RangeDescriptor(range_id=1, start_key=b"", end_key=b"", voters=(1,))
    d = RangeDirectory([whole])
    left, right = whole.split(b"m", 2)
    assert d.update(right)
    assert d.lookup(b"x") == right
    assert d.lookup(b"a") is None  # the old whole range overlapped: replaced, gap until left
    assert d.update(left)
    assert d.lookup(b"a") == left
    assert not d.update(whole)  # stale news never undoes fresh news
    assert not d.update(left)  # already known
    assert [x.range_id for x in d.overlapping(b"a", b"z")] == [1, 2]
    assert [x.range_id for x in d.overlapping(b"n", b"")] == [2]
    merged = left.merge(right)
    assert d.update(merged)
    assert d.all() == [merged]


def test_leader_cache() -> None:
    d = RangeDirectory([RangeDescriptor(range_id=7, start_key=b"", end_key=b"", voters=(1,))])
    assert d.leader(7) is None
    d.set_leader(7, 3)
    assert d.leader(7) == 3
    d.set_leader(7, 0)
    assert d.leader(7) is None


class _NaiveDirectory:
    """The obvious O(n) model the indexed directory must agree with."""

    def __init__(self) -> None:
        self.descs: list[RangeDescriptor] = []

    def update(self, desc: RangeDescriptor) -> bool:
        clash = [d for d in self.descs if _meet(d, desc)]
        if desc in clash or any(d.generation >= desc.generation for d in clash):
            return False
        self.descs = sorted([d for d in self.descs if not _meet(d, desc)] + [desc],
                            key=lambda d: d.start_key)
        return True


def _meet(a: RangeDescriptor, b: RangeDescriptor) -> bool:
    return ((not a.end_key or b.start_key < a.end_key)
            and (not b.end_key or a.start_key < b.end_key))


def test_indexed_directory_agrees_with_a_naive_model_under_random_news() -> None:
    """Random splits/merges of a shared history, learnt out of order and repeatedly
    (as from reports, MISMATCH answers and stale forwards)."""
    for seed in range(30):
        rnd = random.Random(seed)
        history, live = split_merge_history(rnd, 40, voters=(1,))
        fast, slow = RangeDirectory([]), _NaiveDirectory()
        news = history + rnd.choices(history, k=len(history))
        rnd.shuffle(news)
        for desc in news:
            assert fast.update(desc) == slow.update(desc), f"seed {seed}"
            assert fast.all() == slow.descs, f"seed {seed}"
            for _ in range(3):
                key = bytes([rnd.randrange(256), rnd.randrange(256)])
                want = next((x for x in slow.descs if x.contains(key)), None)
                assert fast.lookup(key) == want, f"seed {seed}"
                assert fast.get(want.range_id) == want if want else True
        for desc in live:
            fast.update(desc)
        assert fast.all() == live, f"seed {seed}"


def test_meta_descriptor_is_kept_aside_by_id(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Meta's span is nominal (the whole key space): it must never answer a key
    lookup, a scan or a listing, yet be found by id with its leader."""
    configs = local_cluster_configs(3, tmp_path)
    layouts = [bootstrap_descriptors(c) for c in configs]
    assert layouts[0] == layouts[1] == layouts[2]
    meta, *user = layouts[0]
    assert meta.range_id == META_RANGE_ID and user == initial_descriptors(configs[0])
    d = RangeDirectory(layouts[0])
    assert d.get(META_RANGE_ID) == meta and len(d) == len(user) and d.all() == user
    assert all(x.range_id != META_RANGE_ID for x in d.overlapping(b"", b""))
    assert d.lookup(b"") == user[0]
    moved = RangeDescriptor(range_id=META_RANGE_ID, start_key=b"", end_key=b"",
                            voters=(2, 3, 4), generation=meta.generation)
    assert d.update(moved) and d.get(META_RANGE_ID) == moved  # same generation: latest wins
    assert not d.update(moved)
    newer = RangeDescriptor(range_id=META_RANGE_ID, start_key=b"", end_key=b"",
                            voters=(1,), generation=5)
    assert d.update(newer) and not d.update(moved)  # but never back to an older one
    d.set_leader(META_RANGE_ID, 2)
    assert d.leader(META_RANGE_ID) == 2 and d.all() == user


def test_replace_reports_what_it_displaced() -> None:
    whole = RangeDescriptor(range_id=1, start_key=b"", end_key=b"", voters=(1,))
    d = RangeDirectory([whole])
    left, right = whole.split(b"m", 2)
    assert d.replace(left) == [whole]
    assert d.replace(right) == []
    assert d.replace(right) is None and d.replace(whole) is None
    assert d.replace(left.merge(right)) == [left, right]
