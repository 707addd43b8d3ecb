"""engine.range_directory: the bootstrap layout and generation-ordered updates."""

from __future__ import annotations

import itertools

from engine.config import local_cluster_configs
from engine.range_desc import RangeDescriptor
from engine.range_directory import RangeDirectory, initial_descriptors


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
