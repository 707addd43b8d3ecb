"""Thesis §6.2 (check-quorum: a leader steps down without a quorum) and §4.2.3
(leader lease: ignore vote requests while a leader is known)."""

from __future__ import annotations

import pytest

from engine.raft import Message, MessageType, StateRole
from tests.raft.net import Net

pytestmark = pytest.mark.timeout(10)


def test_leader_steps_down_without_quorum() -> None:
    """"a leader steps down if an election timeout elapses without a successful
    round of heartbeats to a majority of its cluster."
    Reference: thesis section 6.2"""
    net = Net.of([1, 2, 3])
    leader = net.elect(1)
    net.isolate(1)
    for _ in range(10):
        net.tick(1)
        net.stabilize()
    assert leader.role == StateRole.LEADER  # heard from a quorum in the last round
    for _ in range(10):
        net.tick(1)
        net.stabilize()
    assert leader.role == StateRole.FOLLOWER
    assert leader.leader_id == 0


def test_leader_with_quorum_stays() -> None:
    net = Net.of([1, 2, 3])
    leader = net.elect(1)
    net.isolate(3)
    net.tick_all(50)
    assert leader.role == StateRole.LEADER


def test_without_check_quorum_isolated_leader_stays() -> None:
    net = Net.of([1, 2, 3], check_quorum=False)
    leader = net.elect(1)
    net.isolate(1)
    for _ in range(40):
        net.tick(1)
        net.stabilize()
    assert leader.role == StateRole.LEADER


def test_follower_ignores_vote_request_within_leader_lease() -> None:
    """"if a server receives a RequestVote request within the minimum election
    timeout of hearing from a current leader, it does not update its term or grant
    its vote."
    Reference: thesis section 4.2.3"""
    net = Net.of([1, 2, 3], pre_vote=False)
    net.elect(1)
    node = net.nodes[2]
    node.step(Message(MessageType.VOTE, 2, 3, 5, 1, 1))
    assert node.term == 1
    assert not net.outbox(2)
    # Once the lease expired (no leader heard for an election timeout) it votes.
    net.tick(2, 10)
    net.outbox(2)
    node.step(Message(MessageType.VOTE, 2, 3, 5, 1, 1))
    assert node.term == 5
    assert [m.reject for m in net.outbox(2) if m.type == MessageType.VOTE_RESP] == [False]


def test_stale_leader_learns_new_term_from_append_response() -> None:
    """A follower answers a stale leader's heartbeat with its higher term so the
    stale leader, which cannot win elections any more, steps down."""
    net = Net.of([1, 2, 3])
    old = net.elect(1)
    net.isolate(1)
    for _ in range(40):
        net.tick(2)
        net.tick(3)
        net.stabilize()
    assert any(net.nodes[n].role == StateRole.LEADER for n in (2, 3))
    net.heal()
    old.raft.election_elapsed = 0
    net.tick(1)
    net.stabilize()
    assert old.role == StateRole.FOLLOWER
    assert old.term > 1
