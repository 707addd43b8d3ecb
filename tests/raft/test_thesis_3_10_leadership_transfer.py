"""Thesis §3.10 (leadership transfer extension): TIMEOUT_NOW, catching up the
transferee first, dropping proposals meanwhile, aborting after a timeout."""

from __future__ import annotations

import pytest

from engine.raft import CAMPAIGN_TRANSFER, MessageType, ProposalDropped, StateRole
from tests.raft.net import Net

pytestmark = pytest.mark.timeout(10)


def test_transfer_to_up_to_date_follower() -> None:
    """"The prior leader sends a TimeoutNow request to the target server. This
    request has the same effect as the target server's election timer firing: the
    target server starts a new election (incrementing its term)."
    Reference: thesis section 3.10"""
    net = Net.of([1, 2, 3])
    net.elect(1)
    net.nodes[1].transfer_leader(2)
    net.stabilize()
    assert net.sent(MessageType.TIMEOUT_NOW)
    assert net.nodes[2].role == StateRole.LEADER
    assert net.nodes[2].term == 2
    assert net.nodes[1].role == StateRole.FOLLOWER
    # The forced election skips pre-vote and overrides the voters' leader lease.
    votes = [m for m in net.sent(MessageType.VOTE) if m.term == 2]
    assert votes and all(m.context == CAMPAIGN_TRANSFER for m in votes)


def test_transfer_to_lagging_follower_catches_it_up_first() -> None:
    """"The prior leader sends its log entries to the target server ... until the
    target server's log is up to date" before sending TimeoutNow.
    Reference: thesis section 3.10"""
    net = Net.of([1, 2, 3])
    leader = net.elect(1)
    net.isolate(3)
    leader.propose(b"missed-by-3")
    net.stabilize()
    net.heal()
    leader.transfer_leader(3)
    assert leader.status().lead_transferee == 3
    sent = net.outbox(1)
    assert not any(m.type == MessageType.TIMEOUT_NOW for m in sent)
    net.deliver(sent)
    net.stabilize()
    assert net.nodes[3].role == StateRole.LEADER
    assert b"missed-by-3" in net.data_applied(3)


def test_proposals_are_dropped_during_transfer() -> None:
    """"the prior leader stops accepting new client requests" during the transfer.
    Reference: thesis section 3.10"""
    net = Net.of([1, 2, 3])
    leader = net.elect(1)
    net.isolate(2)
    leader.transfer_leader(2)
    with pytest.raises(ProposalDropped, match="transfer"):
        leader.propose(b"x")


def test_transfer_aborts_after_election_timeout() -> None:
    """"If the transfer does not complete within about one election timeout, the
    prior leader aborts the transfer and resumes accepting client requests."
    Reference: thesis section 3.10"""
    net = Net.of([1, 2, 3])
    leader = net.elect(1)
    net.isolate(2)
    leader.transfer_leader(2)
    for _ in range(10):
        net.tick(1)
        net.stabilize()
    assert leader.status().lead_transferee == 0
    assert leader.role == StateRole.LEADER
    leader.propose(b"resumed")


def test_transfer_to_self_learner_or_stranger_is_ignored() -> None:
    net = Net.of([1, 2, 3], learners=[4])
    leader = net.elect(1)
    for target in (1, 4, 99):
        leader.transfer_leader(target)
        assert leader.status().lead_transferee == 0


def test_follower_forwards_transfer_request() -> None:
    net = Net.of([1, 2, 3])
    net.elect(1)
    net.nodes[3].transfer_leader(3)
    net.stabilize()
    assert net.sent(MessageType.TRANSFER_LEADER)
    assert net.nodes[3].role == StateRole.LEADER


def test_new_transfer_replaces_pending_one() -> None:
    net = Net.of([1, 2, 3])
    leader = net.elect(1)
    net.isolate(2)
    leader.transfer_leader(2)
    leader.transfer_leader(3)
    assert leader.status().lead_transferee in (0, 3)
    net.stabilize()
    assert net.nodes[3].role == StateRole.LEADER
