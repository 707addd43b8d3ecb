"""Thesis §9.6 (preventing disruptions when a server rejoins the cluster): the
pre-vote phase."""

from __future__ import annotations

import pytest

from engine.raft import Message, MessageType, StateRole
from tests.raft.net import Net

pytestmark = pytest.mark.timeout(10)


def test_pre_candidate_does_not_increase_term() -> None:
    """"a candidate would first ask other servers whether its log was up-to-date
    enough to get their vote. Only if the candidate believed it could get votes from
    a majority of the cluster would it increment its term and start a normal election."
    Reference: thesis section 9.6"""
    net = Net.of([1, 2, 3])
    net.tick(1, 20)
    node = net.nodes[1]
    assert node.role == StateRole.PRE_CANDIDATE
    assert node.term == 0
    sent = net.outbox(1)
    pre = [m for m in sent if m.type == MessageType.PRE_VOTE]
    assert sorted(m.to for m in pre) == [2, 3]
    assert all(m.term == 1 for m in pre)  # the term it would campaign in
    assert net.storages[1].hard_state.term == 0


def test_pre_vote_majority_leads_to_real_election() -> None:
    """After a majority of pre-votes the candidate runs a normal election.
    Reference: thesis section 9.6"""
    net = Net.of([1, 2, 3])
    net.tick(1, 20)
    net.stabilize()
    assert net.nodes[1].role == StateRole.LEADER
    assert net.nodes[1].term == 1
    assert net.sent(MessageType.PRE_VOTE) and net.sent(MessageType.VOTE)


def test_pre_vote_requests_go_out_before_persistence() -> None:
    """A pre-vote changes no durable state, so its request is not held back behind the
    Ready's write (unlike a real VOTE request)."""
    net = Net.of([1, 2, 3])
    net.nodes[1].campaign()
    rd = net.nodes[1].ready()
    assert {m.type for m in rd.messages} == {MessageType.PRE_VOTE}
    assert not rd.persisted_messages


def test_rejoining_partitioned_node_does_not_disrupt_leader() -> None:
    """"a server that has been partitioned ... will not be able to increment its term,
    since it cannot receive permission from a majority of the cluster. Then, when it
    rejoins the cluster, it will still not be able to increment its term."
    Reference: thesis section 9.6"""
    net = Net.of([1, 2, 3])
    leader = net.elect(1)
    net.isolate(3)
    for _ in range(50):
        net.tick(3)
        net.stabilize()
    assert net.nodes[3].term == 1
    net.heal()
    net.tick_all(3)
    assert leader.role == StateRole.LEADER and leader.term == 1
    assert net.nodes[3].term == 1 and net.nodes[3].leader_id == 1


def test_pre_vote_rejected_by_majority_returns_to_follower() -> None:
    """A pre-candidate whose log is behind gets rejections and gives up."""
    net = Net.of([1, 2, 3])
    net.elect(1)
    net.isolate(2)
    net.nodes[1].propose(b"x")
    net.stabilize()
    net.heal()
    node = net.nodes[2]
    node.raft.lead = 0
    node.raft.election_elapsed = 100  # outside the others' leases below
    for nid in (1, 3):
        net.nodes[nid].raft.election_elapsed = 100
        net.nodes[nid].raft.lead = 0 if nid == 3 else 1
    node.campaign()
    assert node.role == StateRole.PRE_CANDIDATE
    net.deliver(net.outbox(2))
    replies = net.outbox(1) + net.outbox(3)
    assert all(m.reject for m in replies if m.type == MessageType.PRE_VOTE_RESP)
    net.deliver(replies)
    assert node.role == StateRole.FOLLOWER and node.term == 1


def test_pre_vote_from_higher_term_does_not_change_voter_term() -> None:
    """Answering a pre-vote never changes the voter's term or vote."""
    net = Net.of([1, 2, 3])
    node = net.nodes[2]
    node.step(Message(MessageType.PRE_VOTE, 2, 1, 5, 0, 0))
    (resp,) = net.outbox(2)
    assert resp.type == MessageType.PRE_VOTE_RESP and not resp.reject and resp.term == 5
    assert node.term == 0 and net.storages[2].hard_state.vote == 0
