"""Reproductions of what the simulator found in the raft core
(tests/raft/SIM_FINDINGS.md has the write-ups).

A finding's test is ``xfail(strict=True)`` while the core still has the
problem, so it turns into a failure (XPASS) the moment the core is fixed, and
the marker must then be removed to keep the regression test.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from engine.raft.testing import (
    FaultProfile,
    RaftParams,
    SimOptions,
    Simulator,
)
from engine.raft.testing.membership import is_joint
from engine.raft.types import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
    Message,
    MessageType,
    StateRole,
)

pytestmark = pytest.mark.timeout(30)


def calm(voters: int, spares: int, pre_vote: bool, check_quorum: bool = True) -> Simulator:
    opts = SimOptions(seed=5, steps=0, voters=voters, spares=spares)
    profile = FaultProfile.quiet(RaftParams(pre_vote=pre_vote, check_quorum=check_quorum))
    return Simulator(opts, profile)


def deliver(sim: Simulator, keep: Callable[[Message], bool]) -> None:
    """Deliver every due message ``keep`` accepts; lose the others."""
    while (popped := sim.net.pop()) is not None:
        m = popped[0].msg
        node = sim.nodes[m.to]
        if node.raw is None or not keep(m):
            continue
        node.raw.step(m)
        sim.process(m.to)


@pytest.mark.parametrize(("pre_vote", "demote"), [
    (True, False),
    (False, False),
    (True, True),  # F1b (fixed): the leader is demoted to a learner, not removed
])
def test_f1_removed_leader_crash_strands_joint_config(pre_vote: bool, demote: bool) -> None:
    """F1. C_old={1,2} -> C_new={2,3}, leader 1 (being removed). Log after the
    leave-joint entry E: 1 holds E,P,Q; 2 holds E,P but never learns E
    committed (still joint); 3 holds E and learns it committed (C_new). Leader 1
    crashes and restarts as a removed, non-promotable node. Node 3 needs 2's
    vote (2's log is newer); node 2, still joint, needs 1's vote (1's log is
    newer); node 1 may not campaign. Every node is up and the network is
    perfect, yet no leader was ever elected (fixed in the core: the removed
    node campaigns as a caretaker). F1b: the same when 1 is demoted to a
    learner instead of removed."""
    sim = calm(voters=2, spares=1, pre_vote=pre_vote)
    n1 = sim.nodes[1]
    assert n1.raw is not None
    n1.raw.campaign()
    sim.process(1)
    sim.run_ticks(3)
    assert n1.raw.role == StateRole.LEADER
    add, remove = ConfChangeType.ADD_VOTER, ConfChangeType.REMOVE_NODE
    assert sim.propose_conf_change(1, ConfChange(
        (ConfChangeSingle(ConfChangeType.ADD_LEARNER, 3),)))
    sim.run_ticks(5)
    out = ConfChangeSingle(ConfChangeType.ADD_LEARNER if demote else remove, 1)
    assert sim.propose_conf_change(1, ConfChange(
        (ConfChangeSingle(add, 3), out), ConfChangeTransition.JOINT_EXPLICIT))
    sim.run_ticks(5)
    assert all(is_joint(n.conf_state) for n in sim.nodes.values())

    e = n1.raw.last_index + 1
    assert sim.propose_conf_change(1, ConfChange())  # E: leave joint
    assert sim.propose(1, b"P")
    assert sim.propose(1, b"Q")

    def keep(m: Message) -> bool:
        if m.frm != 1:
            return True
        last = m.entries[-1].index if m.entries else m.index
        if m.to == 2:
            return m.type == MessageType.APPEND and last <= e + 1
        return (m.type == MessageType.APPEND and last <= e) or m.type == MessageType.HEARTBEAT

    deliver(sim, keep)
    sim.tick()  # a heartbeat tells 3 (only) that E committed
    deliver(sim, keep)
    assert not is_joint(sim.nodes[3].conf_state), "3 should know C_new"
    assert is_joint(sim.nodes[2].conf_state), "2 should still be joint"
    assert 1 not in sim.nodes[3].conf_state.voters
    sim.crash(1)
    sim.restart(1)
    logs = {nid: n.chain.last for nid, n in sim.nodes.items()}
    assert logs == {1: e + 2, 2: e + 1, 3: e}, logs
    sim.heal_and_check_liveness()
    final = sim.leader()
    assert final is not None and set(final.conf_state.voters) == {2, 3}


def _single(kind: ConfChangeType, *nodes: int) -> tuple[ConfChangeSingle, ...]:
    return tuple(ConfChangeSingle(kind, n) for n in nodes)


def _change(sim: Simulator, cc: ConfChange) -> None:
    """Propose ``cc`` at the current leader and let it apply everywhere reachable."""
    for _ in range(100):
        leader = sim.leader()
        if leader is not None and sim.leader_committed_in_term(leader):
            break
        sim.run_ticks(1)
    else:
        raise AssertionError("no leader to propose a membership change")
    assert sim.propose_conf_change(leader.id, cc), cc
    sim.run_ticks(30)


@pytest.mark.parametrize(("pre_vote", "check_quorum"), [
    (False, False),  # F2 (fixed: a stale-term APPEND/HEARTBEAT now gets a reply)
    (True, False),
    (False, True),
])
def test_f2_learners_with_higher_term_never_rejoin(pre_vote: bool, check_quorum: bool) -> None:
    """F2. Membership moves {1,2,3} -> {4,5,6} -> {1,2,3} (4,5,6 learners)
    while node D (one of 4,5,6) is partitioned, so D still believes it is a
    voter of {4,5,6}. D can reach only the other two; without pre-vote its
    elections raise their term above the leader's. The leader's heartbeats
    were then ignored (lower term) without a reply, so the leader never
    learned of the higher term, and the learners never caught up; D never
    learned its demotion and kept campaigning to the learners only."""
    sim = calm(voters=3, spares=3, pre_vote=pre_vote, check_quorum=check_quorum)
    voter, learner = ConfChangeType.ADD_VOTER, ConfChangeType.ADD_LEARNER
    _change(sim, ConfChange(_single(learner, 4, 5, 6)))
    _change(sim, ConfChange(_single(voter, 4, 5, 6) + _single(learner, 1, 2, 3),
                            ConfChangeTransition.JOINT_EXPLICIT))
    _change(sim, ConfChange())
    sim.run_ticks(30)
    leader = sim.leader()
    assert leader is not None and set(leader.conf_state.voters) == {4, 5, 6}
    d = next(n for n in (4, 5, 6) if n != leader.id)
    others = set(sim.nodes) - {d}
    sim.net.partition({d}, others)
    _change(sim, ConfChange(_single(voter, 1, 2, 3) + _single(learner, 4, 5, 6),
                            ConfChangeTransition.JOINT_EXPLICIT))
    _change(sim, ConfChange())
    sim.run_ticks(30)
    leader = sim.leader()
    assert leader is not None and set(leader.conf_state.voters) == {1, 2, 3}
    assert set(sim.nodes[d].conf_state.voters) == {4, 5, 6}
    sim.net.heal()
    for x in (1, 2, 3):
        sim.net.block(x, d)
        sim.net.block(d, x)
    sim.run_ticks(60)
    sim.heal_and_check_liveness()
    final = sim.leader()
    assert final is not None and set(final.conf_state.voters) == {1, 2, 3}


def test_f3_lease_read_served_by_a_deposed_leader() -> None:
    """F3. Thesis 6.4.1: a lease read is safe only while no other leader can
    exist. Check-quorum runs once per election timeout, so a leader cut off
    right after a successful check keeps leading (and answering lease reads)
    for up to two timeouts, while the others may elect a new leader after one
    and commit. Every isolation phase is tried (0..2 timeouts after the
    election); on each tick where both leaders exist the old one is asked for
    a read, which the checker requires to be at or above the new commits
    (fixed in the core: the lease now ends an election timeout after the
    quorum's acknowledged heartbeats were sent)."""
    e = RaftParams().election_ticks
    for phase in range(2 * e):
        sim = Simulator(SimOptions(seed=9, steps=0, voters=3, spares=0),
                        FaultProfile.quiet(RaftParams(lease_reads=True)))
        n1 = sim.nodes[1]
        assert n1.raw is not None
        n1.raw.campaign()
        sim.process(1)
        sim.run_ticks(phase)
        assert n1.raw.role == StateRole.LEADER
        sim.net.partition({1}, {2, 3})
        for _ in range(3 * e):
            sim.run_ticks(1)
            other = sim.leader()
            if other is not None and other.id != 1 and n1.raw.role == StateRole.LEADER:
                sim.read(1)
        assert n1.raw.role != StateRole.LEADER


def test_f3_randomized_lease_reads() -> None:
    """Randomized runs with LEASE_BASED reads (no crashes, no clock skew: the
    lease's own assumptions hold) must keep every read linearizable."""
    for seed in range(30):
        Simulator(SimOptions(seed=seed, steps=2000, lease_reads=True)).run()


def _hold(sim: Simulator, held: list[Message], hold: Callable[[Message], bool]) -> None:
    """Deliver every due message, except that those ``hold`` picks are kept
    aside in ``held`` (a network delaying them arbitrarily)."""
    while (popped := sim.net.pop()) is not None:
        m = popped[0].msg
        node = sim.nodes[m.to]
        if hold(m):
            held.append(m)
        elif node.raw is not None:
            node.raw.step(m)
            sim.process(m.to)


def test_f4_snapshot_between_ready_and_advance() -> None:
    """F4. Node 3 takes a Ready (kept pending: asynchronous persistence) whose
    committed entries hold a simple change C (+L4), then is stepped with a
    delayed SNAPSHOT at a later index whose configuration is joint; the
    caller then applies C as it must. F4 was a ConfChangeError there; F4b
    was the core handing back the snapshot's (joint) configuration for C.
    Fixed by refusing the snapshot while the Ready's committed entries are
    being applied (the leader retries it). The checker requires every node
    to end with the same configuration after the change at a given index."""
    sim = Simulator(SimOptions(seed=3, steps=0, voters=3, spares=1),
                    FaultProfile.quiet(RaftParams()))
    n1, n3 = sim.nodes[1], sim.nodes[3]
    assert n1.raw is not None and n3.raw is not None
    n1.raw.campaign()
    sim.process(1)
    sim.run_ticks(3)
    assert n1.raw.role == StateRole.LEADER
    c = n1.raw.last_index + 1
    held: list[Message] = []

    def to3(m: Message) -> bool:
        return m.frm == 1 and m.to == 3

    assert sim.propose_conf_change(1, ConfChange(
        (ConfChangeSingle(ConfChangeType.ADD_LEARNER, 4),)))
    _hold(sim, held, lambda m: to3(m) and m.commit >= c)  # 3 appends C, not told it commits
    for _ in range(5):
        sim.tick()
        _hold(sim, held, to3)  # 4 catches up as a learner
    held.clear()
    assert sim.propose_conf_change(1, ConfChange(
        (ConfChangeSingle(ConfChangeType.ADD_VOTER, 4),
         ConfChangeSingle(ConfChangeType.REMOVE_NODE, 2)),
        ConfChangeTransition.JOINT_EXPLICIT))
    _hold(sim, held, to3)
    append_j = next(m for m in held if m.type == MessageType.APPEND and m.commit >= c)
    assert sim.propose(1, b"P")
    _hold(sim, held, to3)
    assert is_joint(n1.conf_state) and n1.take_snapshot(keep=0)
    held.clear()
    n1.raw.report_unreachable(3)
    assert sim.propose(1, b"Q")  # 3's next entry is compacted: a snapshot goes out
    _hold(sim, held, to3)
    snap = next(m for m in held if m.type == MessageType.SNAPSHOT)
    sim.profile.async_ready = 1.0  # 3 keeps this Ready pending
    n3.raw.step(append_j)
    sim.process(3)
    sim.profile.async_ready = 0.0
    assert n3.pending is not None and [e.index for e in n3.pending.committed_entries] == [c]
    n3.raw.step(snap)  # allowed between ready() and advance()
    sim.process(3)
    sim.tick()  # the pending Ready completes: C is applied
    sim.heal_and_check_liveness()
