"""The replica-change admin ops on a leader's Store: idempotent steps, refusals, progress."""

from __future__ import annotations

import pytest

from engine.kv import KVStateMachine
from engine.kv_codec import Put, encode_command
from engine.proposal import Outcome
from engine.raft.tracker.progress import ProgressState
from engine.raft.types import ConfChangeSingle, ConfChangeType
from engine.range_desc import RangeDescriptor
from engine.replica_change import (
    ReplicaProgress,
    decode_progress,
    encode_progress,
    needed_change,
    run_replica_op,
)
from engine.testing.cluster import Cluster
from engine.worker_protocol import AdminOp, unpack_status

pytestmark = pytest.mark.timeout(30)

DESC = RangeDescriptor(range_id=7, start_key=b"a", end_key=b"m", voters=(1, 2), learners=(3,))


def test_progress_payload_round_trips() -> None:
    p = ReplicaProgress(2, 41, {1: (40, 1), 2: (41, 1), 3: (12, 2)}, DESC)
    assert decode_progress(encode_progress(p)) == p


def test_caught_up_needs_replicate_state_and_a_small_lag() -> None:
    p = ReplicaProgress(1, 100, {1: (100, ProgressState.REPLICATE),
                                 2: (99, ProgressState.REPLICATE),
                                 3: (100, ProgressState.SNAPSHOT)}, DESC)
    assert p.caught_up(2, 1) and not p.caught_up(2, 0)
    assert not p.caught_up(3, 64), "a learner still taking a snapshot is not caught up"
    assert not p.caught_up(4, 64), "not a member"
    assert p.best_voter_except(1) == 2
    solo = RangeDescriptor(range_id=1, start_key=b"", end_key=b"", voters=(1,))
    assert ReplicaProgress(1, 1, {}, solo).best_voter_except(1) is None


@pytest.mark.parametrize(("op", "node", "want"), [
    (AdminOp.ADD_LEARNER, 4, ConfChangeSingle(ConfChangeType.ADD_LEARNER, 4)),
    (AdminOp.ADD_LEARNER, 3, None),              # already a learner: done
    (AdminOp.ADD_LEARNER, 2, None),              # already a voter: done
    (AdminOp.PROMOTE_VOTER, 3, ConfChangeSingle(ConfChangeType.ADD_VOTER, 3)),
    (AdminOp.PROMOTE_VOTER, 2, None),
    (AdminOp.PROMOTE_VOTER, 4, "not a learner"),
    (AdminOp.REMOVE_REPLICA, 3, ConfChangeSingle(ConfChangeType.REMOVE_NODE, 3)),
    (AdminOp.REMOVE_REPLICA, 2, ConfChangeSingle(ConfChangeType.REMOVE_NODE, 2)),
    (AdminOp.REMOVE_REPLICA, 4, None),           # not a member: done
    (AdminOp.REMOVE_REPLICA, 1, "transfer leadership first"),
])
def test_needed_change(op: AdminOp, node: int, want: object) -> None:
    got = needed_change(DESC, op, node, leader=1)
    if isinstance(want, str):
        assert isinstance(got, str) and want in got
    else:
        assert got == want


def test_the_last_voter_is_never_removed() -> None:
    solo = RangeDescriptor(range_id=1, start_key=b"", end_key=b"", voters=(2,))
    got = needed_change(solo, AdminOp.REMOVE_REPLICA, 2, leader=9)
    assert isinstance(got, str) and "last voter" in got


def op(c: Cluster, node: int, kind: AdminOp, target: int = 0) -> tuple[Outcome, bytes]:
    """Run ``kind`` on ``node``'s store to completion: (outcome, payload)."""
    got = run_replica_op(c.stores[node], 1, kind, target)
    if isinstance(got, tuple):
        outcome, _ = unpack_status(got[0])
        return outcome, got[1]
    done = c.wait_for(node, got)
    assert done is not None, f"op {kind.name} never completed (seed {c.seed})"
    return done.outcome, done.result


def test_add_then_remove_through_the_ops_is_idempotent() -> None:
    c = Cluster(3, seed=5)
    c.bootstrap([RangeDescriptor(range_id=1, start_key=b"", end_key=b"", voters=(1, 2))])
    c.elect_all()
    leader = c.leader_of(1)
    assert leader is not None
    follower = 2 if leader == 1 else 1
    req = c.stores[leader].propose(1, encode_command(Put(b"k", b"v")), keys=[b"k"])
    done = c.wait_for(leader, req)
    assert done is not None and done.outcome == Outcome.OK

    assert op(c, follower, AdminOp.REPLICA_PROGRESS)[0] == Outcome.TRYAGAIN
    assert op(c, 3, AdminOp.REPLICA_PROGRESS)[0] == Outcome.MISMATCH
    assert op(c, leader, AdminOp.PROMOTE_VOTER, 3)[0] == Outcome.ERROR, "learner first"

    assert op(c, leader, AdminOp.ADD_LEARNER, 3) == (Outcome.OK, b"")
    c.run(10)
    prog = decode_progress(op(c, leader, AdminOp.REPLICA_PROGRESS)[1])
    assert prog.leader == leader and prog.desc.learners == (3,)
    assert prog.caught_up(3, 0), prog
    again = run_replica_op(c.stores[leader], 1, AdminOp.ADD_LEARNER, 3)
    assert isinstance(again, tuple), "a retry answers at once"

    assert op(c, leader, AdminOp.PROMOTE_VOTER, 3)[0] == Outcome.OK
    assert isinstance(run_replica_op(c.stores[leader], 1, AdminOp.PROMOTE_VOTER, 3), tuple)
    c.run(5)
    rep3 = c.stores[3].replica(1)
    assert rep3 is not None and isinstance(rep3.sm, KVStateMachine)
    assert rep3.desc.voters == (1, 2, 3) and dict(rep3.sm.items()) == {b"k": b"v"}

    outcome, why = op(c, leader, AdminOp.REMOVE_REPLICA, leader)
    assert outcome == Outcome.ERROR and b"transfer" in why
    assert op(c, leader, AdminOp.REMOVE_REPLICA, follower)[0] == Outcome.OK
    c.run(10)
    assert c.stores[follower].replica(1) is None
    assert isinstance(run_replica_op(c.stores[leader], 1, AdminOp.REMOVE_REPLICA, follower),
                      tuple), "removing a non-member is done already"
    prog = decode_progress(op(c, leader, AdminOp.REPLICA_PROGRESS)[1])
    assert prog.desc.voters == tuple(sorted((leader, 3)))
