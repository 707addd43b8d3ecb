"""Replica changes through the Store: add a learner, promote, remove; leadership transfer."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.kv import KVStateMachine
from engine.kv_codec import Put, encode_command
from engine.outbox import NodeBatch
from engine.proposal import Completion, Outcome
from engine.raft.types import ConfChangeSingle, ConfChangeType, Message, MessageType, Snapshot
from engine.range_desc import RangeDescriptor
from engine.testing.cluster import Cluster


def do(c: Cluster, node: int, req: int) -> Completion:
    got = c.wait_for(node, req)
    assert got is not None, f"request {req} on n{node} never completed (seed {c.seed})"
    return got


def keys_of(c: Cluster, node: int, rid: int) -> list[bytes]:
    rep = c.stores[node].replica(rid)
    assert rep is not None and isinstance(rep.sm, KVStateMachine)
    return [k for k, _ in rep.sm.items()]


def two_node_range() -> Cluster:
    c = Cluster(3, seed=41)
    c.bootstrap([RangeDescriptor(range_id=1, start_key=b"", end_key=b"", voters=(1, 2))])
    c.elect_all()
    leader = c.leader_of(1)
    assert leader is not None
    for k in (b"a", b"b", b"c"):
        req = c.stores[leader].propose(1, encode_command(Put(k, k)), keys=[k])
        assert do(c, leader, req).outcome == Outcome.OK
    return c


def test_add_learner_gets_a_snapshot_then_promote_then_remove_the_old_voter() -> None:
    c = two_node_range()
    assert c.stores[3].replica(1) is None
    leader = c.leader_of(1)
    assert leader is not None
    add = c.stores[leader].change_replicas(
        1, [ConfChangeSingle(ConfChangeType.ADD_LEARNER, 3)])
    assert do(c, leader, add).outcome == Outcome.OK
    c.run(10)
    rep3 = c.stores[3].replica(1)
    assert rep3 is not None and rep3.desc.learners == (3,)
    assert keys_of(c, 3, 1) == [b"a", b"b", b"c"]
    promote = c.stores[leader].change_replicas(
        1, [ConfChangeSingle(ConfChangeType.ADD_VOTER, 3)])
    assert do(c, leader, promote).outcome == Outcome.OK
    c.run(5)
    assert rep3.desc.voters == (1, 2, 3)
    other = 2 if leader == 1 else 1
    remove = c.stores[leader].change_replicas(
        1, [ConfChangeSingle(ConfChangeType.REMOVE_NODE, other)])
    assert do(c, leader, remove).outcome == Outcome.OK
    c.run(10)
    assert c.stores[other].replica(1) is None, "the removed node destroyed its replica"
    assert c.snapshots[other].load(1) is None
    rep_l = c.stores[leader].replica(1)
    assert rep_l is not None and rep_l.desc.voters == tuple(sorted((leader, 3)))
    req = c.stores[leader].propose(1, encode_command(Put(b"d", b"d")), keys=[b"d"])
    assert do(c, leader, req).outcome == Outcome.OK
    c.run(3)
    assert keys_of(c, 3, 1) == [b"a", b"b", b"c", b"d"]


def test_leader_cannot_remove_itself() -> None:
    c = two_node_range()
    leader = c.leader_of(1)
    assert leader is not None
    req = c.stores[leader].change_replicas(
        1, [ConfChangeSingle(ConfChangeType.REMOVE_NODE, leader)])
    got = do(c, leader, req)
    assert got.outcome == Outcome.ERROR and b"transfer" in got.result


def test_transfer_leadership() -> None:
    c = two_node_range()
    leader = c.leader_of(1)
    assert leader is not None
    target = 2 if leader == 1 else 1
    assert not c.stores[target].transfer_leader(1, leader), "only the leader transfers"
    assert c.stores[leader].transfer_leader(1, target)
    for _ in range(10):
        c.run(1)
        if c.leader_of(1) == target:
            break
    assert c.leader_of(1) == target


def stale_snapshot(c: Cluster, leader: int, to: int) -> Message:
    """The SNAPSHOT the leader of range 1 would send ``to`` right now (kept to be
    delivered later, when it is stale)."""
    rep = c.stores[leader].replica(1)
    assert rep is not None
    snap = rep.raft_snapshot()
    data = b"".join(rep.outgoing_images.pop())
    return Message(MessageType.SNAPSHOT, to, leader, rep.raw.term,
                   snapshot=Snapshot(snap.metadata, data))


@pytest.mark.timeout(30)
def test_a_removed_replica_is_not_recreated_by_a_stale_snapshot(tmp_path: Path) -> None:
    c = Cluster(3, seed=47, backend="segmented", path=str(tmp_path))
    c.bootstrap([RangeDescriptor(range_id=1, start_key=b"", end_key=b"", voters=(1, 2, 3))])
    c.elect_all()
    leader = c.leader_of(1)
    assert leader is not None
    victim = next(n for n in (1, 2, 3) if n != leader)
    for k in (b"a", b"b"):
        req = c.stores[leader].propose(1, encode_command(Put(k, k)), keys=[k])
        assert do(c, leader, req).outcome == Outcome.OK
    stale = stale_snapshot(c, leader, victim)
    remove = c.stores[leader].change_replicas(
        1, [ConfChangeSingle(ConfChangeType.REMOVE_NODE, victim)])
    assert do(c, leader, remove).outcome == Outcome.OK
    c.run(5)
    assert c.stores[victim].replica(1) is None
    tomb = c.stores[victim].tombstone(1)
    assert tomb is not None and tomb.index >= stale.snapshot.metadata.index  # type: ignore[union-attr]
    for restart in (False, True):
        if restart:  # the tombstone is durable
            c.crash(victim)
            c.restart(victim)
        s = c.stores[victim]
        s.deliver(NodeBatch(messages=[(1, stale)]))
        s.process()
        assert s.replica(1) is None, f"recreated from a stale snapshot (restart={restart})"
        assert s.stats.dropped_tombstoned == 1
    # Re-adding the node later works: its snapshot is newer than the tombstone.
    add = c.stores[leader].change_replicas(
        1, [ConfChangeSingle(ConfChangeType.ADD_VOTER, victim)])
    assert do(c, leader, add).outcome == Outcome.OK
    c.run(20)
    assert keys_of(c, victim, 1) == [b"a", b"b"]
    for n in c.stores:
        c.logs[n].close()
