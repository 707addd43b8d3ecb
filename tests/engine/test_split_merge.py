"""Split and merge: payload codecs, refusals, and whole-cluster behaviour."""

from __future__ import annotations

import pytest

from engine.kv import KVStateMachine
from engine.kv_codec import Get, Put, decode_result, encode_command
from engine.proposal import Completion, Outcome
from engine.range_desc import RangeDescriptor
from engine.split_merge import (
    MergeCommand,
    SplitCommand,
    decode_merge,
    decode_split,
    encode_merge,
    encode_split,
    merge_refusal,
    split_refusal,
)
from engine.store_config import StoreConfig
from engine.testing.cluster import Cluster

NODES = (1, 2, 3)
LEFT = RangeDescriptor(range_id=1, start_key=b"", end_key=b"m", voters=NODES, generation=3)
RIGHT = RangeDescriptor(range_id=2, start_key=b"m", end_key=b"", voters=NODES, generation=2)


def test_payloads_round_trip() -> None:
    s = SplitCommand(9, 4, b"key")
    assert decode_split(encode_split(s)) == s
    m = MergeCommand(3, RIGHT, b"image bytes")
    assert decode_merge(encode_merge(m)) == m


def test_refusals_say_why() -> None:
    assert split_refusal(LEFT, SplitCommand(5, 3, b"c")) is None
    assert "generation" in (split_refusal(LEFT, SplitCommand(5, 2, b"c")) or "")
    assert "inside" in (split_refusal(LEFT, SplitCommand(5, 3, b"m")) or "")
    assert merge_refusal(LEFT, MergeCommand(3, RIGHT, b"")) is None
    assert "generation" in (merge_refusal(LEFT, MergeCommand(2, RIGHT, b"")) or "")
    other = RangeDescriptor(range_id=2, start_key=b"m", end_key=b"", voters=(1, 2))
    assert "replica sets differ" in (merge_refusal(LEFT, MergeCommand(3, other, b"")) or "")
    far = RangeDescriptor(range_id=2, start_key=b"n", end_key=b"", voters=NODES)
    assert "adjacent" in (merge_refusal(LEFT, MergeCommand(3, far, b"")) or "")


def one_range(seed: int = 21, **cfg: object) -> Cluster:
    c = Cluster(3, seed=seed, cfg=StoreConfig(seed=seed, **cfg))  # type: ignore[arg-type]
    c.bootstrap([RangeDescriptor(range_id=1, start_key=b"", end_key=b"", voters=NODES)])
    c.elect_all()
    return c


def do(c: Cluster, node: int, req: int) -> Completion:
    got = c.wait_for(node, req)
    assert got is not None, f"request {req} on n{node} never completed (seed {c.seed})"
    return got


def put(c: Cluster, rid: int, key: bytes, value: bytes) -> Completion:
    leader = c.leader_of(rid)
    assert leader is not None
    return do(c, leader, c.stores[leader].propose(rid, encode_command(Put(key, value)),
                                                  keys=[key]))


def get(c: Cluster, rid: int, key: bytes) -> bytes | None:
    leader = c.leader_of(rid)
    assert leader is not None
    got = do(c, leader, c.stores[leader].read(rid, encode_command(Get(key)), keys=[key]))
    assert got.outcome == Outcome.OK
    return getattr(decode_result(got.result), "value", None)


def keys_of(c: Cluster, node: int, rid: int) -> list[bytes]:
    rep = c.stores[node].replica(rid)
    assert rep is not None and isinstance(rep.sm, KVStateMachine)
    return [k for k, _ in rep.sm.items()]


def split_at_m(c: Cluster) -> None:
    for k in (b"a", b"f", b"m", b"q", b"z"):
        assert put(c, 1, k, k.upper()).outcome == Outcome.OK
    leader = c.leader_of(1)
    assert leader is not None
    assert do(c, leader, c.stores[leader].split(1, b"m", 2)).outcome == Outcome.OK
    c.settle()
    c.run(3)


def test_split_divides_data_and_every_replica_creates_the_right_hand_range() -> None:
    c = one_range()
    split_at_m(c)
    for n in NODES:
        assert keys_of(c, n, 1) == [b"a", b"f"]
        assert keys_of(c, n, 2) == [b"m", b"q", b"z"]
        rhs = c.stores[n].replica(2)
        assert rhs is not None and rhs.desc.start_key == b"m" and rhs.desc.generation == 1
    assert c.leader_of(2) == c.leader_of(1), "the left-hand leader campaigns the right side"
    leader = c.leader_of(1)
    assert leader is not None
    mismatch = do(c, leader, c.stores[leader].propose(1, b"", keys=[b"q"]))
    assert mismatch.outcome == Outcome.MISMATCH and mismatch.descriptor is not None
    assert mismatch.descriptor.end_key == b"m"
    assert put(c, 2, b"r", b"R").outcome == Outcome.OK
    assert get(c, 2, b"q") == b"Q" and get(c, 1, b"a") == b"A"


def test_bad_split_is_refused_with_a_reason() -> None:
    c = one_range()
    leader = c.leader_of(1)
    assert leader is not None
    got = do(c, leader, c.stores[leader].split(1, b"", 2))
    assert got.outcome == Outcome.ERROR and b"inside" in got.result


def test_follower_that_missed_the_split_gets_the_right_side_by_snapshot() -> None:
    c = one_range(seed=23, snapshot_entries=5)
    leader = c.leader_of(1)
    assert leader is not None
    lagger = next(n for n in NODES if n != leader)
    c.crash(lagger)
    split_at_m(c)
    for i in range(20):  # push both logs well past compaction
        assert put(c, 1, b"b%02d" % i, b"x").outcome == Outcome.OK
        assert put(c, 2, b"n%02d" % i, b"y").outcome == Outcome.OK
    c.restart(lagger)
    c.run(40)
    assert keys_of(c, lagger, 1) == keys_of(c, leader, 1)
    assert keys_of(c, lagger, 2) == keys_of(c, leader, 2)
    assert c.stores[lagger].stats.snapshots_installed >= 1


def test_split_then_restart_recovers_both_ranges() -> None:
    c = one_range(seed=25)
    split_at_m(c)
    for n in NODES:
        c.crash(n)
    for n in NODES:
        c.restart(n)
    c.elect_all()
    assert get(c, 1, b"f") == b"F" and get(c, 2, b"z") == b"Z"


@pytest.mark.timeout(30)
def test_merge_absorbs_the_right_hand_range_everywhere() -> None:
    c = one_range(seed=27)
    split_at_m(c)
    leader = c.leader_of(1)
    assert leader is not None and c.leader_of(2) == leader
    got = do(c, leader, c.stores[leader].merge(1))
    assert got.outcome == Outcome.OK, got
    c.run(5)
    for n in NODES:
        assert c.stores[n].replica(2) is None, f"n{n} still has the right-hand range"
        assert keys_of(c, n, 1) == [b"a", b"f", b"m", b"q", b"z"]
        rep = c.stores[n].replica(1)
        assert rep is not None and rep.desc.end_key == b"" and rep.desc.generation == 2
    assert put(c, 1, b"y", b"Y").outcome == Outcome.OK
    assert get(c, 1, b"q") == b"Q"
    for n in NODES:  # and the merge survives a restart
        c.crash(n)
        c.restart(n)
    c.elect_all()
    assert get(c, 1, b"z") == b"Z" and c.stores[1].range_ids() == [1]


def test_merge_with_different_replica_sets_is_refused() -> None:
    c = Cluster(3, seed=29)
    c.bootstrap([
        RangeDescriptor(range_id=1, start_key=b"", end_key=b"m", voters=NODES),
        RangeDescriptor(range_id=2, start_key=b"m", end_key=b"", voters=(1, 2)),
    ])
    c.elect_all()
    leader = c.leader_of(1)
    assert leader in (1, 2)
    got = do(c, leader, c.stores[leader].merge(1))
    assert got.outcome == Outcome.ERROR and b"replica sets differ" in got.result


def test_merge_needs_both_leaders_here() -> None:
    c = one_range(seed=31)
    split_at_m(c)
    leader = c.leader_of(1)
    assert leader is not None
    other = next(n for n in NODES if n != leader)
    assert c.stores[leader].transfer_leader(2, other)
    for _ in range(20):
        c.run(1)
        if c.leader_of(2) == other:
            break
    assert c.leader_of(2) == other
    got = do(c, leader, c.stores[leader].merge(1))
    assert got == Completion(got.request_id, Outcome.TRYAGAIN, leader_hint=other)


def test_right_hand_messages_before_the_local_split_create_no_group() -> None:
    c = one_range(seed=33)
    leader = c.leader_of(1)
    assert leader is not None
    lagger = next(n for n in NODES if n != leader)
    for n in NODES:
        if n != lagger:
            c.partition(lagger, n)
    split_at_m(c)  # commits with the other two; the lagger hears nothing
    assert c.stores[lagger].replica(2) is None
    assert put(c, 2, b"r", b"R").outcome == Outcome.OK
    c.heal()
    c.run(20)
    lag = c.stores[lagger]
    assert lag.stats.dropped_unknown_range > 0, "right-hand traffic arrived before the split"
    assert lag.stats.snapshots_installed == 0, "the split itself created the right side"
    assert keys_of(c, lagger, 2) == [b"m", b"q", b"r", b"z"]
    assert keys_of(c, lagger, 1) == [b"a", b"f"]
