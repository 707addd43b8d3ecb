"""Raft paper §5.4 (safety): election restriction, committing entries from
previous terms, leader append-only, and crash-restart through durable state."""

from __future__ import annotations

import pytest

from engine.raft import ConfState, Entry, HardState, MemoryStorage, Message, MessageType, StateRole
from tests.raft.net import Net

pytestmark = pytest.mark.timeout(10)


def _node_with_log(terms: list[int], term: int) -> Net:
    st = MemoryStorage(ConfState(voters=(1, 2, 3)))
    st.append([Entry(t, i) for i, t in enumerate(terms, 1)])
    st.set_hard_state(HardState(term=term))
    net = Net(cfg={"pre_vote": False})
    net.add_node(1, st)
    return net


@pytest.mark.parametrize(
    ("cand_last_term", "cand_last_index", "granted"),
    [
        (3, 2, True),    # later last term wins even with a shorter log
        (2, 3, True),    # same last term, same length
        (2, 4, True),    # same last term, longer
        (2, 2, False),   # same last term, shorter
        (1, 9, False),   # earlier last term loses even with a longer log
    ],
)
def test_vote_only_for_up_to_date_candidate(
    cand_last_term: int, cand_last_index: int, granted: bool
) -> None:
    """"the voter denies its vote if its own log is more up-to-date than that of
    the candidate. ... If the logs have last entries with different terms, then the
    log with the later term is more up-to-date. If the logs end with the same term,
    then whichever log is longer is more up-to-date."
    Reference: section 5.4.1"""
    net = _node_with_log([1, 2, 2], term=2)
    net.nodes[1].step(Message(MessageType.VOTE, 1, 2, 3, cand_last_term, cand_last_index))
    (resp,) = net.outbox(1)
    assert resp.type == MessageType.VOTE_RESP
    assert resp.reject is not granted


def test_leader_does_not_commit_previous_term_entry_by_counting_replicas() -> None:
    """"Raft never commits log entries from previous terms by counting replicas. Only
    log entries from the leader's current term are committed by counting replicas;
    once an entry from the current term has been committed in this way, then all
    prior entries are committed indirectly" (figure 8).
    Reference: section 5.4.2"""
    cs = ConfState(voters=(1, 2, 3))
    net = Net(cfg={"pre_vote": False})
    for nid in (1, 2):
        st = MemoryStorage(cs)
        # Index 2 (term 2) is on a majority but was never committed.
        st.append([Entry(1, 1), Entry(2, 2)])
        st.set_hard_state(HardState(term=3, commit=1))
        net.add_node(nid, st)
    leader = net.nodes[1]
    leader.campaign()
    net.deliver([m for m in net.outbox(1) if m.to == 2])
    net.deliver(net.outbox(2))
    assert leader.role == StateRole.LEADER and leader.term == 4
    net.outbox(1)
    # Node 2 acknowledges index 2 (it holds it): a majority has it, yet it is from
    # term 2, so the term-4 leader must not commit it by counting.
    leader.step(Message(MessageType.APPEND_RESP, 1, 2, 4, index=2))
    assert leader.raft.tracker.progress[2].match == 2
    assert leader.committed == 1
    # Once the current-term no-op (index 3) is on a majority, index 2 commits with it.
    net.stabilize()
    assert leader.committed == 3
    assert [e.index for e in net.applied[1]] == [1, 2, 3]


def test_leader_never_overwrites_or_deletes_its_entries() -> None:
    """Leader Append-Only: "a leader never overwrites or deletes entries in its log;
    it only appends new entries." An APPEND from a stale leader of an older term does
    not touch the current leader's log.
    Reference: section 5.3 / figure 3"""
    net = Net.of([1, 2, 3], check_quorum=False)
    leader = net.elect(1)
    leader.propose(b"keep")
    net.stabilize()
    before = [net.storages[1].term(i) for i in range(1, leader.last_index + 1)]
    leader.step(Message(MessageType.APPEND, 1, 2, 0, 0, 0, (Entry(0, 1, data=b"evil"),)))
    net.stabilize()
    after = [net.storages[1].term(i) for i in range(1, leader.last_index + 1)]
    assert after[: len(before)] == before
    assert leader.role == StateRole.LEADER


def test_new_leader_holds_all_committed_entries() -> None:
    """Leader Completeness: "If a log entry is committed in a given term, then that
    entry will be present in the logs of the leaders for all higher-numbered terms."
    A follower that missed a committed entry cannot win against the voters that hold it.
    Reference: section 5.4"""
    net = Net.of([1, 2, 3], pre_vote=False)
    net.elect(1)
    net.cut.add((1, 3))
    net.nodes[1].propose(b"committed")
    net.stabilize()
    assert net.nodes[1].committed == net.nodes[2].last_index
    net.isolate(1)
    net.cut.discard((2, 3))
    net.cut.discard((3, 2))
    net.nodes[3].campaign()
    net.stabilize()
    assert net.nodes[3].role != StateRole.LEADER  # 2 refuses: 3's log is behind
    for _ in range(100):
        net.tick_all(1)
        if net.leaders() and net.leaders() != [1]:
            break
    assert net.nodes[2].role == StateRole.LEADER
    assert b"committed" in net.data_applied(3)


def test_restart_recovers_term_vote_and_log_from_storage() -> None:
    """Fig. 2: currentTerm, votedFor and log[] are persistent state. A node rebuilt
    from its storage keeps its vote (no second vote in the term) and its log."""
    net = Net.of([1, 2, 3], pre_vote=False)
    net.elect(1)
    net.nodes[1].propose(b"durable")
    net.stabilize()
    node = net.restart(2)
    assert node.term == 1
    assert net.storages[2].hard_state.vote == 1
    node.step(Message(MessageType.VOTE, 2, 3, 1, 1, 100))
    (resp,) = net.outbox(2)
    assert resp.reject
    assert node.committed == net.nodes[1].committed
    # Entries up to ``applied`` are not handed out again.
    assert not node.ready().committed_entries


def test_follower_response_waits_for_persistence() -> None:
    """Thesis 10.2.1 / fig. 2 ("respond to RPCs ... after updating stable
    storage"): a follower's APPEND response and a granted vote are only released
    in ``persisted_messages``, after the entries and hard state of the same Ready."""
    net = Net.of([1, 2, 3], pre_vote=False)
    net.nodes[2].step(Message(MessageType.VOTE, 2, 1, 1))
    rd = net.nodes[2].ready()
    assert rd.hard_state is not None and rd.hard_state.vote == 1 and rd.must_sync
    assert not rd.messages
    assert [m.type for m in rd.persisted_messages] == [MessageType.VOTE_RESP]
