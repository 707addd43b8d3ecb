"""Raft paper §5.2 (leader election) and §5.1 (terms), checked on RawNodes."""

from __future__ import annotations

import pytest

from engine.raft import ConfState, HardState, MemoryStorage, Message, MessageType, StateRole
from tests.raft.net import Net

pytestmark = pytest.mark.timeout(10)


def _types(msgs: list[Message]) -> list[MessageType]:
    return [MessageType(m.type) for m in msgs]


def test_follower_starts_election_after_timeout() -> None:
    """"If a follower receives no communication over a period of time called the
    election timeout, then it assumes there is no viable leader and begins an
    election to choose a new leader. ... a follower increments its current term
    and transitions to candidate state. It then votes for itself and issues
    RequestVote RPCs in parallel to each of the other servers."
    Reference: section 5.2"""
    net = Net.of([1, 2, 3], pre_vote=False)
    node = net.nodes[1]
    net.tick(1, 2 * 10)
    assert node.role == StateRole.CANDIDATE
    assert node.term == 1
    sent = net.outbox(1)
    assert net.storages[1].hard_state.vote == 1
    votes = [m for m in sent if m.type == MessageType.VOTE]
    assert sorted(m.to for m in votes) == [2, 3]
    assert all(m.term == 1 and m.frm == 1 for m in votes)


def test_follower_does_not_start_election_before_timeout() -> None:
    """"Raft uses randomized election timeouts ... chosen randomly from a fixed
    interval": no election before the minimum of that interval.
    Reference: section 5.2"""
    net = Net.of([1, 2, 3], pre_vote=False)
    net.tick(1, 9)
    assert net.nodes[1].role == StateRole.FOLLOWER
    assert net.nodes[1].term == 0


@pytest.mark.parametrize("seed", range(5))
def test_election_timeout_is_randomized(seed: int) -> None:
    """"election timeouts are chosen randomly from a fixed interval (e.g.,
    150-300ms)": here [election_ticks, 2 * election_ticks), from the seeded
    PRNG, so two nodes rarely time out together.
    Reference: section 5.2"""
    net = Net.of([1, 2, 3, 4, 5], pre_vote=False, rng_seed=seed)
    timeouts = set()
    for nid in net.nodes:
        r = net.nodes[nid].raft
        for _ in range(20):
            r._reset_randomized_election_timeout()
            assert 10 <= r.randomized_election_timeout < 20
            timeouts.add(r.randomized_election_timeout)
    assert len(timeouts) >= 5


def test_candidate_wins_with_majority_and_sends_heartbeats() -> None:
    """"A candidate wins an election if it receives votes from a majority of the
    servers in the full cluster for the same term. ... Once a candidate wins an
    election, it becomes leader. It then sends heartbeat messages to all of the
    other servers to establish its authority."
    Reference: section 5.2"""
    net = Net.of([1, 2, 3, 4, 5], pre_vote=False)
    net.nodes[1].campaign()
    sent = net.outbox(1)
    votes = [m for m in sent if m.type == MessageType.VOTE]
    # Two grants plus its own vote make a majority of five.
    net.deliver(votes[:2])
    for nid in (2, 3):
        net.deliver(net.outbox(nid))
    assert net.nodes[1].role == StateRole.LEADER
    appends = [m for m in net.outbox(1) if m.type == MessageType.APPEND]
    assert sorted(m.to for m in appends) == [2, 3, 4, 5]
    net.stabilize()
    net.tick(1)
    beats = [m for m in net.outbox(1) if m.type == MessageType.HEARTBEAT]
    assert sorted(m.to for m in beats) == [2, 3, 4, 5]


def test_candidate_without_majority_stays_candidate() -> None:
    """A candidate with only a minority of votes has not won.
    Reference: section 5.2"""
    net = Net.of([1, 2, 3, 4, 5], pre_vote=False)
    net.nodes[1].campaign()
    votes = [m for m in net.outbox(1) if m.type == MessageType.VOTE]
    net.deliver(votes[:1])
    net.deliver(net.outbox(2))
    assert net.nodes[1].role == StateRole.CANDIDATE


def test_voter_grants_at_most_one_vote_per_term() -> None:
    """"Each server will vote for at most one candidate in a given term, on a
    first-come-first-served basis."
    Reference: section 5.2"""
    net = Net.of([1, 2, 3], pre_vote=False)
    net.nodes[2].step(Message(MessageType.VOTE, 2, 1, 1))
    first = net.outbox(2)
    assert first[0].type == MessageType.VOTE_RESP and not first[0].reject
    net.nodes[2].step(Message(MessageType.VOTE, 2, 3, 1))
    second = net.outbox(2)
    assert second[0].type == MessageType.VOTE_RESP and second[0].reject
    # Repeating the request of the candidate it voted for is granted again (idempotent).
    net.nodes[2].step(Message(MessageType.VOTE, 2, 1, 1))
    assert not net.outbox(2)[0].reject
    assert net.storages[2].hard_state.vote == 1


def test_candidate_returns_to_follower_on_append_from_leader_of_same_term() -> None:
    """"While waiting for votes, a candidate may receive an AppendEntries RPC from
    another server claiming to be leader. If the leader's term ... is at least as
    large as the candidate's current term, then the candidate recognizes the leader
    as legitimate and returns to follower state."
    Reference: section 5.2"""
    net = Net.of([1, 2, 3], pre_vote=False)
    net.nodes[1].campaign()
    net.outbox(1)
    assert net.nodes[1].role == StateRole.CANDIDATE
    net.nodes[1].step(Message(MessageType.APPEND, 1, 2, 1))
    assert net.nodes[1].role == StateRole.FOLLOWER
    assert net.nodes[1].leader_id == 2


def test_candidate_rejects_append_from_lower_term() -> None:
    """"If the term in the RPC is smaller than the candidate's current term, then
    the candidate rejects the RPC and continues in candidate state."
    Reference: section 5.2"""
    net = Net.of([1, 2, 3], pre_vote=False)
    net.nodes[1].campaign()
    net.nodes[1].campaign()  # term 2
    net.outbox(1)
    net.nodes[1].step(Message(MessageType.APPEND, 1, 2, 1))
    assert net.nodes[1].role == StateRole.CANDIDATE
    assert net.nodes[1].term == 2
    resp = net.outbox(1)
    # The stale leader is told the newer term so that it steps down.
    assert [(m.type, m.term) for m in resp] == [(MessageType.APPEND_RESP, 2)]


def test_split_vote_times_out_into_new_election() -> None:
    """"If many followers become candidates at the same time, votes could be split
    ... each candidate will time out and start a new election by incrementing its
    term."
    Reference: section 5.2"""
    net = Net.of([1, 2, 3, 4], pre_vote=False)
    net.nodes[1].campaign()
    net.nodes[3].campaign()
    # Each gets one other vote: 2 votes each of 4, no majority.
    for m in net.outbox(1) + net.outbox(3):
        if m.type == MessageType.VOTE and m.to in (2, 4) and (m.frm, m.to) in ((1, 2), (3, 4)):
            net.nodes[m.to].step(m)
    net.deliver([m for m in net.outbox(2) + net.outbox(4)])
    assert net.nodes[1].role == StateRole.CANDIDATE
    net.tick(1, 20)
    assert net.nodes[1].term == 2
    assert net.nodes[1].role == StateRole.CANDIDATE


def test_higher_term_converts_any_role_to_follower() -> None:
    """"If a server's current term is smaller than the other's, then it updates
    its current term to the larger value. If a candidate or leader discovers that
    its term is out of date, it immediately reverts to follower state."
    Reference: section 5.1"""
    net = Net.of([1, 2, 3], pre_vote=False, check_quorum=False)
    net.elect(1)
    net.nodes[1].step(Message(MessageType.APPEND, 1, 2, 7))
    assert net.nodes[1].role == StateRole.FOLLOWER
    assert net.nodes[1].term == 7
    assert net.nodes[1].leader_id == 2


def test_stale_term_requests_are_rejected() -> None:
    """"If a server receives a request with a stale term number, it rejects the
    request": a vote request from an older term is not granted.
    Reference: section 5.1"""
    net = Net.of([1, 2, 3], pre_vote=False)
    net.elect(1)
    net.nodes[2].step(Message(MessageType.VOTE, 2, 3, 0, 0, 100))
    assert net.storages[2].hard_state.vote == 1
    assert not any(m.type == MessageType.VOTE_RESP and not m.reject for m in net.outbox(2))


def test_single_voter_elects_itself() -> None:
    """A one-voter cluster is its own majority. Reference: section 5.2"""
    net = Net.of([1])
    net.tick(1, 20)
    net.stabilize()
    assert net.nodes[1].role == StateRole.LEADER
    net.nodes[1].propose(b"solo")
    net.stabilize()
    assert net.data_applied(1) == [b"solo"]


def test_learner_never_starts_an_election() -> None:
    """Learners do not vote and do not campaign (thesis 4.2.1 non-voting members);
    the only exception, a caretaker holding uncommitted entries, is tested in the
    membership tests. Reference: section 5.2"""
    net = Net.of([1, 2], learners=[3])
    net.tick(3, 100)
    net.nodes[3].campaign()
    assert net.nodes[3].role == StateRole.FOLLOWER
    assert not net.outbox(3)


def test_stale_append_is_answered_with_current_term_even_without_options() -> None:
    """"If a server receives a request with a stale term number, it rejects the
    request" — and the reply carries the newer term so the stale leader steps down,
    whatever check-quorum/pre-vote say (a learner never campaigns to spread it).
    Reference: section 5.1"""
    net = Net.of([1, 2, 3], pre_vote=False, check_quorum=False)
    node = net.nodes[2]
    node.step(Message(MessageType.APPEND, 2, 3, 4))
    net.outbox(2)
    node.step(Message(MessageType.HEARTBEAT, 2, 1, 2))
    assert [(m.type, m.term, m.to) for m in net.outbox(2)] == [(MessageType.APPEND_RESP, 4, 1)]


def test_a_pre_agreed_vote_makes_a_leader_without_an_election() -> None:
    """"Each server will vote for at most one candidate in a given term": when every
    voter's durable state already holds its vote for node 1 in term 1 (a deterministic
    bootstrap writes it), node 1 may lead term 1 at once — no other node can win it —
    and the group commits through it with no vote message ever sent.
    Reference: section 5.2"""
    net = Net(cfg={"pre_vote": True, "check_quorum": True})
    cs = ConfState(voters=(1, 2, 3))
    for nid in (1, 2, 3):
        st = MemoryStorage(cs)
        st.set_hard_state(HardState(term=1, vote=1, commit=0))
        net.add_node(nid, st)
    with pytest.raises(ValueError):
        net.nodes[2].lead_by_agreement()  # it voted for node 1, not for itself
    net.nodes[1].lead_by_agreement()
    assert net.nodes[1].raft.role == StateRole.LEADER and net.nodes[1].raft.term == 1
    with pytest.raises(ValueError):
        net.nodes[1].lead_by_agreement()  # already leading
    net.stabilize()
    sent = net.delivered
    assert sent and not any(m.type in (MessageType.VOTE, MessageType.PRE_VOTE) for m in sent)
    for nid in (2, 3):
        assert net.nodes[nid].raft.lead == 1 and net.nodes[nid].raft.term == 1
    assert net.nodes[1].raft.log.committed == 1  # its empty term-1 entry, on a quorum
