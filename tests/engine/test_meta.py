"""engine.meta: the meta range's state machine, alone and as a raft group in a Store."""

from __future__ import annotations

import random

import pytest

from engine.kv import KVStateMachine
from engine.meta import MetaSnapshotCorrupt, MetaSplitRefused, MetaStateMachine
from engine.meta_codec import (
    META_RANGE_ID,
    AllocateIds,
    Changes,
    Ids,
    MetaCommand,
    MetaError,
    MetaResult,
    PutApplied,
    PutDescriptors,
    ReadChanges,
    ReadVersion,
    VersionInfo,
    decode_result,
    encode_command,
)
from engine.proposal import Outcome
from engine.range_desc import RangeDescriptor
from engine.range_directory import RangeDirectory
from engine.statemachine import StateMachine
from engine.testing.cluster import Cluster, even_ranges
from engine.testing.histories import split_merge_history

U64_MAX = 2**64 - 1


def run(sm: MetaStateMachine, cmd: MetaCommand) -> MetaResult:
    return decode_result(sm.apply([encode_command(cmd)])[0])


def read(sm: MetaStateMachine, cmd: MetaCommand) -> MetaResult:
    return decode_result(sm.read(encode_command(cmd)))


def whole(rid: int = 1) -> RangeDescriptor:
    return RangeDescriptor(range_id=rid, start_key=b"", end_key=b"", voters=(1, 2, 3))


def test_seeded_with_the_bootstrap_layout() -> None:
    layout = even_ranges(4, (1, 2, 3))
    sm = MetaStateMachine(layout)
    assert sm.descriptors() == layout and len(sm) == 4
    assert read(sm, ReadVersion()) == VersionInfo(version=1, next_id=5, ranges=4)
    # Every initial node derives the same bytes: the replicas start identical.
    assert list(sm.snapshot()) == list(MetaStateMachine(layout).snapshot())
    with pytest.raises(ValueError):
        MetaStateMachine([RangeDescriptor(range_id=META_RANGE_ID, start_key=b"",
                                          end_key=b"", voters=(1,))])
    big = even_ranges(10_000, (1, 2, 3))  # more than one PUT may carry: a seed is no PUT
    assert read(MetaStateMachine(big), ReadVersion()) == VersionInfo(
        version=1, next_id=10_001, ranges=10_000)


def test_puts_follow_generations_and_bump_the_version_only_on_change() -> None:
    sm = MetaStateMachine([whole()])
    left, right = whole().split(b"m", 2)
    assert run(sm, PutDescriptors((right,))) == PutApplied(version=2, applied=1)
    assert run(sm, PutDescriptors((right, left))) == PutApplied(version=3, applied=1)
    assert run(sm, PutDescriptors((left, right, whole()))) == PutApplied(version=3, applied=0)
    assert sm.descriptors() == [left, right]
    merged = left.merge(right)
    assert run(sm, PutDescriptors((merged,))) == PutApplied(version=4, applied=1)
    assert sm.descriptors() == [merged]
    assert run(sm, PutDescriptors((right,))) == PutApplied(version=4, applied=0)
    refused = run(sm, PutDescriptors((RangeDescriptor(
        range_id=META_RANGE_ID, start_key=b"", end_key=b"", voters=(1,), generation=9),)))
    assert isinstance(refused, MetaError) and sm.version == 4


def test_allocation_is_monotonic_and_skips_ids_seen_in_descriptors() -> None:
    sm = MetaStateMachine([whole()])
    assert run(sm, AllocateIds(1)) == Ids(first=2, count=1)
    assert run(sm, AllocateIds(3)) == Ids(first=3, count=3)
    left, right = whole().split(b"m", 1000)
    run(sm, PutDescriptors((left, right)))
    assert run(sm, AllocateIds(1)) == Ids(first=1001, count=1)
    version = sm.version
    run(sm, AllocateIds(2))
    assert sm.version == version  # the allocator does not make nodes refetch
    top = RangeDescriptor(range_id=META_RANGE_ID - 1, start_key=b"", end_key=b"",
                          voters=(1,), generation=50)
    run(sm, PutDescriptors((top,)))
    assert isinstance(run(sm, AllocateIds(1)), MetaError)  # exhausted, refused cleanly
    image = list(sm.snapshot())
    back = MetaStateMachine()
    back.restore(image)
    assert back.next_id == sm.next_id and isinstance(run(back, AllocateIds(1)), MetaError)


def test_bad_commands_and_wrong_paths_change_nothing() -> None:
    sm = MetaStateMachine([whole()])
    image = list(sm.snapshot())
    for raw in (b"", b"\xb0", b"\xb0\x63", b"\x01\x10garbage", encode_command(ReadVersion())[:1]):
        assert isinstance(decode_result(sm.apply([raw])[0]), MetaError)
    assert isinstance(read(sm, AllocateIds(1)), MetaError)  # writes never on the read path
    assert isinstance(read(sm, PutDescriptors((whole(),))), MetaError)
    assert list(sm.snapshot()) == image
    with pytest.raises(MetaSplitRefused):
        sm.split(b"m")
    with pytest.raises(MetaSplitRefused):
        sm.absorb(MetaStateMachine())
    assert sm.split_key() is None


def _follow(sm: MetaStateMachine, view: RangeDirectory, since: int, limit: int) -> int:
    """What ``MetaSync.refresh`` does, against the state machine directly."""
    after = U64_MAX
    while True:
        page = read(sm, ReadChanges(since=since, after_id=after, limit=limit))
        assert isinstance(page, Changes)
        for at, d in page.entries:
            view.update(d)
            since, after = at, d.range_id
        if not page.more:
            return page.version


def test_pushes_converge_in_any_order_and_readers_follow_by_deltas() -> None:
    """Idempotent and commutative: the history pushed shuffled, with repeats, in random
    batches, ends at the live tiling; a reader following the change pages from its last
    version (pages of random size, pushes between pages) ends equal to meta."""
    for seed in range(25):
        rnd = random.Random(seed)
        history, live = split_merge_history(rnd, 30)
        sm = MetaStateMachine([whole()])
        view = RangeDirectory([])
        version = 0
        news = history + rnd.choices(history, k=len(history))
        rnd.shuffle(news)
        while news:
            k = rnd.randint(1, 4)
            batch, news = news[:k], news[k:]
            run(sm, PutDescriptors(tuple(batch)))
            if rnd.random() < 0.3:
                version = _follow(sm, view, version, rnd.randint(1, 5))
        assert sm.descriptors() == live, f"seed {seed}"
        _follow(sm, view, version, 3)
        assert view.all() == live, f"seed {seed}"


def test_changes_pages_only_what_changed() -> None:
    layout = even_ranges(50, (1, 2, 3))
    sm = MetaStateMachine(layout)
    left, right = layout[7].split(layout[7].start_key + b"x", 51)
    run(sm, PutDescriptors((left, right)))
    page = read(sm, ReadChanges(since=1, after_id=U64_MAX))
    assert isinstance(page, Changes) and not page.more
    assert [d for _, d in page.entries] == [left, right] and page.version == 2
    first = read(sm, ReadChanges(since=0, after_id=0, limit=20))
    assert isinstance(first, Changes) and first.more and len(first.entries) == 20
    assert read(sm, ReadChanges(since=2)) == Changes(version=2, more=False, entries=())


def test_snapshot_restore_round_trip_and_corruption() -> None:
    layout = even_ranges(300, (1, 2, 3))
    sm = MetaStateMachine(layout, chunk_bytes=1000)
    run(sm, AllocateIds(7))
    chunks = list(sm.snapshot())
    assert len(chunks) > 5 and all(len(c) <= 1000 for c in chunks)
    back = MetaStateMachine([whole(9)])
    back.restore(iter(chunks))
    assert back.descriptors() == layout and back.version == 1 and back.next_id == sm.next_id
    assert b"".join(back.snapshot()) == b"".join(chunks)
    # Changes survive the image: a reader at version 0 still gets everything.
    page = read(back, ReadChanges(since=0, limit=1000))
    assert isinstance(page, Changes) and len(page.entries) == 300
    data = b"".join(chunks)
    rnd = random.Random(7)
    for _ in range(50):
        bad = bytearray(data)
        bad[rnd.randrange(len(bad))] ^= 1 << rnd.randrange(8)
        before = b"".join(back.snapshot())
        with pytest.raises(MetaSnapshotCorrupt):
            back.restore([bytes(bad)])
        assert b"".join(back.snapshot()) == before  # validate first, swap last
    with pytest.raises(MetaSnapshotCorrupt):
        back.restore([data[:-9]])


# --- the meta range as a raft group in a Store ------------------------------------------


def _factory(layout: list[RangeDescriptor]):  # type: ignore[no-untyped-def]
    def make(desc: RangeDescriptor) -> StateMachine:
        if desc.range_id == META_RANGE_ID:
            return MetaStateMachine(layout)
        return KVStateMachine(desc.start_key, desc.end_key)
    return make


def _meta_call(c: Cluster, cmd: MetaCommand) -> MetaResult:
    leader = c.leader_of(META_RANGE_ID)
    assert leader is not None
    store = c.stores[leader]
    raw = encode_command(cmd)
    write = isinstance(cmd, (PutDescriptors, AllocateIds))
    req = store.propose(META_RANGE_ID, raw) if write else store.read(META_RANGE_ID, raw)
    done = c.wait_for(leader, req)
    assert done is not None and done.outcome == Outcome.OK, done
    return decode_result(done.result)


@pytest.mark.timeout(60)
def test_meta_is_a_raft_group_like_any_other(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Bootstrap with meta beside user ranges (meta's nominal span overlaps them all);
    split a user range with an id from meta, push the halves, read them back; crash
    and restart a store: every replica, meta's included, recovers."""
    layout = even_ranges(4, (1, 2, 3))
    meta = RangeDescriptor(range_id=META_RANGE_ID, start_key=b"", end_key=b"",
                           voters=(1, 2, 3))
    c = Cluster(3, seed=5, backend="segmented", path=str(tmp_path),
                sm_factory=_factory(layout))
    c.bootstrap([meta, *layout])
    c.elect_all()
    ids = _meta_call(c, AllocateIds(1))
    assert ids == Ids(first=5, count=1)
    rid = 2
    leader = c.leader_of(rid)
    assert leader is not None
    key = layout[1].start_key + b"/half"
    done = c.wait_for(leader, c.stores[leader].split(rid, key, ids.first))
    assert done is not None and done.outcome == Outcome.OK, done
    left, right = layout[1].split(key, ids.first)
    assert _meta_call(c, PutDescriptors((left, right))) == PutApplied(version=2, applied=2)
    c.elect_all()
    page = _meta_call(c, ReadChanges(since=1))
    assert isinstance(page, Changes) and [d for _, d in page.entries] == [left, right]
    for n in c.node_ids:
        assert set(c.stores[n].range_ids()) == {META_RANGE_ID, 1, 2, 3, 4, ids.first}
    c.crash(2)
    c.restart(2)
    assert set(c.stores[2].range_ids()) == {META_RANGE_ID, 1, 2, 3, 4, ids.first}
    rep = c.stores[2].replica(META_RANGE_ID)
    assert rep is not None and isinstance(rep.sm, MetaStateMachine)
    c.elect_all()
    for _ in range(20):  # the restarted follower catches up on meta's log
        c.run(5)
        rep = c.stores[2].replica(META_RANGE_ID)
        assert rep is not None and isinstance(rep.sm, MetaStateMachine)
        if rep.sm.descriptors() == [layout[0], left, right, *layout[2:]]:
            break
    else:
        raise AssertionError("the restarted meta replica did not catch up")
