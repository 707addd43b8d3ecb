"""Thesis §6.4 (processing read-only queries more efficiently): ReadIndex with a
heartbeat round (SAFE) and leader leases (LEASE_BASED, §6.4.1)."""

from __future__ import annotations

import pytest

from engine.raft import (
    Config,
    InvalidConfig,
    MessageType,
    ProposalDropped,
    ReadOnlyOption,
    ReadState,
    StateRole,
)
from tests.raft.net import Net

pytestmark = pytest.mark.timeout(10)


def test_read_index_confirmed_by_heartbeat_quorum() -> None:
    """"1. ... the leader saves its current commit index in a local variable
    readIndex. 2. The leader needs to make sure it hasn't been superseded ... it
    issues a new round of heartbeats and waits for their acknowledgments from a
    majority of the cluster." Then the read may proceed once applied >= readIndex.
    Reference: thesis section 6.4"""
    net = Net.of([1, 2, 3])
    leader = net.elect(1)
    leader.propose(b"w")
    net.stabilize()
    leader.read_index(b"r1")
    sent = net.outbox(1)
    beats = [m for m in sent if m.type == MessageType.HEARTBEAT]
    assert sorted(m.to for m in beats) == [2, 3]
    assert all(m.context == b"r1" for m in beats)
    assert not net.read_states[1]
    net.deliver(beats[:1])
    net.deliver(net.outbox(beats[0].to))
    net.stabilize()
    assert net.read_states[1] == [ReadState(leader.committed, b"r1")]


def test_partitioned_leader_cannot_answer_safe_read() -> None:
    """A deposed leader that cannot reach a majority never confirms a read: it might
    miss newer writes (thesis 6.4 step 2)."""
    net = Net.of([1, 2, 3])
    leader = net.elect(1)
    net.isolate(1)
    leader.read_index(b"stale?")
    net.stabilize()
    assert not net.read_states[1]


def test_read_waits_for_first_commit_in_term() -> None:
    """"If the leader has not yet marked an entry from its current term committed,
    it waits until it has done so" (the no-op of a new leader).
    Reference: thesis section 6.4"""
    net = Net.of([1, 2, 3])
    net.nodes[1].campaign()
    # Deliver only until 1 is leader; its no-op is not committed yet.
    for _ in range(6):
        for nid in (1, 2, 3):
            while net.handle_ready(nid):
                pass
        net.in_flight = [m for m in net.in_flight if m.type != MessageType.APPEND]
        net.deliver_all()
    leader = net.nodes[1]
    assert leader.committed == 0 and leader.role == 2
    leader.read_index(b"early")
    net.stabilize()
    assert not net.read_states[1]
    net.tick_all(1)  # heartbeats unpause the probes; the no-op commits
    assert leader.committed == 1
    assert net.read_states[1] == [ReadState(1, b"early")]


def test_follower_read_index_is_served_by_leader() -> None:
    """A follower asks the leader for the read index and serves the read itself once
    applied (thesis 6.4: "followers ... could also ... request the current readIndex
    from the leader")."""
    net = Net.of([1, 2, 3])
    net.elect(1)
    net.nodes[1].propose(b"w")
    net.stabilize()
    net.nodes[3].read_index(b"f-read")
    net.stabilize()
    assert net.sent(MessageType.READ_INDEX) and net.sent(MessageType.READ_INDEX_RESP)
    assert net.read_states[3] == [ReadState(net.nodes[1].committed, b"f-read")]
    assert net.nodes[3].applied >= net.read_states[3][0].index


def test_read_index_without_leader_is_dropped() -> None:
    net = Net.of([1, 2, 3])
    with pytest.raises(ProposalDropped, match="no leader"):
        net.nodes[1].read_index(b"x")


def test_lease_based_read_needs_no_heartbeat_round() -> None:
    """Thesis 6.4.1: with a leader lease (check-quorum), the leader answers from its
    commit index without a round of heartbeats, while a quorum acknowledged
    heartbeats it sent less than an election timeout ago."""
    net = Net.of([1, 2, 3], read_only_option=ReadOnlyOption.LEASE_BASED)
    leader = net.elect(1)
    net.tick_all(1)  # one acknowledged heartbeat round starts the lease
    leader.read_index(b"lease")
    assert not [m for m in net.outbox(1) if m.type == MessageType.HEARTBEAT]
    assert net.read_states[1] == [ReadState(leader.committed, b"lease")]


def test_lease_read_without_fresh_quorum_falls_back_to_heartbeats() -> None:
    """No lease before the first acknowledged round, nor once the acknowledged round
    is older than the election timeout minus the clock margin: the read then goes
    through a heartbeat round like a SAFE read, and an isolated leader never answers.
    (The followers may elect a new leader one election timeout after they last
    heard from it: SIM_FINDINGS F3.)"""
    net = Net.of([1, 2, 3], read_only_option=ReadOnlyOption.LEASE_BASED)
    leader = net.elect(1)
    leader.read_index(b"early")
    assert [m.context for m in net.outbox(1) if m.type == MessageType.HEARTBEAT] == [
        b"early", b"early"]
    net.tick_all(1)
    net.isolate(1)
    # The round was sent at tick 1; with election_ticks=10 the lease holds while
    # now - 1 <= 10 - 2, i.e. up to tick 9.
    for _ in range(8):
        net.tick(1)
        net.stabilize()
    leader.read_index(b"in-lease")
    net.tick(1)
    net.stabilize()
    assert leader.role == StateRole.LEADER
    leader.read_index(b"late")
    net.stabilize()
    answered = [rs.request_ctx for rs in net.read_states[1]]
    assert b"in-lease" in answered and b"late" not in answered


def test_leadership_transfer_revokes_the_lease() -> None:
    """A forced election (TIMEOUT_NOW) ignores leases, so after sending one the
    leader serves no more lease reads in its term."""
    net = Net.of([1, 2, 3], read_only_option=ReadOnlyOption.LEASE_BASED)
    leader = net.elect(1)
    net.tick_all(1)
    net.drop_types.add(MessageType.TIMEOUT_NOW)
    leader.transfer_leader(2)
    net.stabilize()
    assert leader.raft.lease_revoked
    net.heal()
    for _ in range(10):
        net.tick_all(1)
    assert leader.role == StateRole.LEADER
    leader.read_index(b"after-transfer")
    assert [m for m in net.outbox(1) if m.type == MessageType.HEARTBEAT]


def test_lease_based_reads_require_check_quorum() -> None:
    """A lease is only safe if the leader steps down when it loses its quorum."""
    with pytest.raises(InvalidConfig, match="check_quorum"):
        Config(1, read_only_option=ReadOnlyOption.LEASE_BASED, check_quorum=False)


def test_single_voter_answers_read_immediately() -> None:
    net = Net.of([1])
    leader = net.elect(1)
    leader.read_index(b"solo")
    net.stabilize()
    assert net.read_states[1] == [ReadState(1, b"solo")]


def test_later_confirmation_releases_earlier_reads() -> None:
    """A heartbeat quorum for a later read also proves leadership for earlier ones."""
    net = Net.of([1, 2, 3])
    leader = net.elect(1)
    leader.read_index(b"a")
    net.outbox(1)  # the first round is lost
    leader.read_index(b"b")
    net.stabilize()
    assert [rs.request_ctx for rs in net.read_states[1]] == [b"a", b"b"]
