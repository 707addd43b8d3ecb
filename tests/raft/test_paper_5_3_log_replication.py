"""Raft paper §5.3 (log replication), with flow control (probe/replicate,
inflights, message size), fast backtracking and the proposal rules."""

from __future__ import annotations

import pytest

from engine.raft import (
    ConfState,
    Entry,
    MemoryStorage,
    Message,
    MessageType,
    ProgressState,
    ProposalDropped,
    StateRole,
)
from tests.raft.net import Net

pytestmark = pytest.mark.timeout(10)


def test_leader_appends_replicates_and_commits_on_majority() -> None:
    """"The leader appends the command to its log as a new entry, then issues
    AppendEntries RPCs in parallel to each of the other servers ... When the entry
    has been safely replicated ... the leader applies the entry to its state
    machine." An entry is committed once a majority has it.
    Reference: section 5.3"""
    net = Net.of([1, 2, 3])
    leader = net.elect(1)
    leader.propose(b"cmd")
    sent = net.outbox(1)
    appends = [m for m in sent if m.type == MessageType.APPEND]
    assert sorted(m.to for m in appends) == [2, 3]
    assert all(m.entries[-1].data == b"cmd" for m in appends)
    idx = appends[0].entries[-1].index
    assert leader.committed < idx
    # One follower's acknowledgement plus the leader's own durable copy: a majority.
    net.deliver([m for m in appends if m.to == 2])
    net.deliver(net.outbox(2))
    assert leader.committed == idx
    net.stabilize()
    for nid in (1, 2, 3):
        assert net.data_applied(nid) == [b"cmd"]


def test_follower_learns_commit_index_from_leader() -> None:
    """"The leader keeps track of the highest index it knows to be committed, and it
    includes that index in future AppendEntries RPCs (including heartbeats) so that
    the other servers eventually find out."
    Reference: section 5.3"""
    net = Net.of([1, 2, 3])
    leader = net.elect(1)
    leader.propose(b"a")
    net.stabilize()
    assert net.nodes[3].committed == leader.committed
    net.drop_types.add(MessageType.APPEND)
    leader.propose(b"b")
    net.stabilize()
    net.heal()
    # A heartbeat carries min(match, commit), never a commit beyond what 3 holds.
    net.tick(1)
    beats = [m for m in net.outbox(1) if m.type == MessageType.HEARTBEAT]
    assert all(m.commit <= net.nodes[m.to].last_index for m in beats)
    net.deliver(beats)
    net.stabilize()
    assert net.data_applied(3) == [b"a", b"b"]


def test_follower_rejects_append_with_mismatching_previous_entry() -> None:
    """"When sending an AppendEntries RPC, the leader includes the index and term of
    the entry in its log that immediately precedes the new entries. If the follower
    does not find an entry in its log with the same index and term, then it refuses
    the new entries."
    Reference: section 5.3"""
    st = MemoryStorage(ConfState(voters=(1, 2)))
    st.append([Entry(1, 1), Entry(1, 2)])
    net = Net.of([1])
    node = net.add_node(2, st)
    node.step(Message(MessageType.APPEND, 2, 1, 2, log_term=2, index=2,
                      entries=(Entry(2, 3),)))
    (resp,) = net.outbox(2)
    assert resp.reject and resp.index == 2
    # The hint names the follower's last entry with term <= the probed term.
    assert (resp.reject_hint, resp.log_term) == (2, 1)
    assert node.last_index == 2


def test_conflicting_follower_entries_are_overwritten() -> None:
    """"If an existing entry conflicts with a new one (same index but different
    terms), delete the existing entry and all that follow it" (fig. 2); the leader
    forces followers' logs to duplicate its own.
    Reference: section 5.3"""
    st = MemoryStorage(ConfState(voters=(1, 2)))
    st.append([Entry(1, 1), Entry(2, 2), Entry(2, 3), Entry(2, 4)])
    net = Net.of([1])
    node = net.add_node(2, st)
    node.step(Message(MessageType.APPEND, 2, 1, 3, log_term=1, index=1,
                      entries=(Entry(3, 2, data=b"x"),), commit=0))
    (resp,) = net.outbox(2)
    assert not resp.reject and resp.index == 2
    assert st.last_index() == 2 and st.term(2) == 3


def test_append_of_already_present_entries_does_not_truncate() -> None:
    """A duplicated (older) APPEND must not cut entries the follower already has
    beyond it ("If an existing entry conflicts ..." only conflicts truncate).
    Reference: section 5.3"""
    st = MemoryStorage(ConfState(voters=(1, 2)))
    st.append([Entry(1, 1), Entry(1, 2), Entry(1, 3)])
    net = Net.of([1])
    node = net.add_node(2, st)
    node.step(Message(MessageType.APPEND, 2, 1, 1, log_term=0, index=0,
                      entries=(Entry(1, 1),)))
    (resp,) = net.outbox(2)
    assert not resp.reject and resp.index == 1
    assert st.last_index() == 3


def _diverged_net() -> Net:
    """Leader 1 at term 4 with log terms [1,1,1,4,4]; follower 2 holds [1,1,1,2,2,2,3,3]
    (figure 7 style: extra uncommitted entries from old terms)."""
    cs = ConfState(voters=(1, 2, 3))
    s1 = MemoryStorage(cs)
    s1.append([Entry(t, i) for i, t in enumerate([1, 1, 1, 4, 4], 1)])
    s1.set_hard_state(s1.hard_state._replace(term=4))
    s2 = MemoryStorage(cs)
    s2.append([Entry(t, i) for i, t in enumerate([1, 1, 1, 2, 2, 2, 3, 3], 1)])
    s2.set_hard_state(s2.hard_state._replace(term=3))
    s3 = MemoryStorage(cs)
    s3.append([Entry(t, i) for i, t in enumerate([1, 1, 1, 4, 4], 1)])
    s3.set_hard_state(s3.hard_state._replace(term=4))
    net = Net(cfg={"pre_vote": False})
    for nid, st in ((1, s1), (2, s2), (3, s3)):
        net.add_node(nid, st)
    return net


def test_leader_repairs_divergent_follower_with_fast_backtracking() -> None:
    """"the leader must find the latest log entry where the two logs agree, delete
    any entries in the follower's log after that point, and send the follower all of
    the leader's entries after that point." With the reject hint (the follower's
    conflicting term) this takes a few round trips, not one per entry.
    Reference: section 5.3"""
    net = _diverged_net()
    net.elect(1)
    rejects = [m for m in net.sent(MessageType.APPEND_RESP) if m.frm == 2 and m.reject]
    assert 1 <= len(rejects) <= 2
    terms = [net.storages[2].term(i) for i in range(1, net.storages[2].last_index() + 1)]
    assert terms == [1, 1, 1, 4, 4, 5]
    assert net.nodes[1].status().progress[2][2] is ProgressState.REPLICATE


def test_progress_probe_then_replicate() -> None:
    """A follower whose log position is unknown is probed with one message at a
    time; after it accepts, the leader streams optimistically (replicate state).
    Reference: section 5.3 (etcd progress states)"""
    net = Net.of([1, 2, 3])
    leader = net.elect(1)
    r = leader.raft
    pr = r.tracker.progress[2]
    pr.become_probe()
    leader.propose(b"a")
    leader.propose(b"b")
    to2 = [m for m in net.outbox(1) if m.to == 2 and m.type == MessageType.APPEND]
    assert len(to2) == 1  # paused after the first probe
    assert pr.probe_sent
    net.deliver(to2)
    net.deliver(net.outbox(2))
    assert pr.state is ProgressState.REPLICATE
    leader.propose(b"c")
    leader.propose(b"d")
    to2 = [m for m in net.outbox(1) if m.to == 2 and m.type == MessageType.APPEND and m.entries]
    assert len(to2) >= 2  # streaming without waiting


def test_inflight_count_window_pauses_replication() -> None:
    """At most ``max_inflight_msgs`` unacknowledged APPENDs per follower.
    Reference: section 5.3 (flow control)"""
    net = Net.of([1, 2, 3], max_inflight_msgs=2)
    leader = net.elect(1)
    for i in range(5):
        leader.propose(b"%d" % i)
    to2 = [m for m in net.outbox(1) if m.to == 2 and m.type == MessageType.APPEND]
    assert len(to2) == 2
    net.deliver(to2[:1])
    net.deliver(net.outbox(2))
    more = [m for m in net.outbox(1) if m.to == 2 and m.type == MessageType.APPEND]
    assert more and more[0].entries[0].index == to2[1].entries[-1].index + 1


def test_inflight_bytes_window_pauses_replication() -> None:
    """The window is also bounded in bytes (``max_inflight_bytes``).
    Reference: section 5.3 (flow control)"""
    net = Net.of([1, 2, 3], max_inflight_bytes=300)
    leader = net.elect(1)
    for _ in range(6):
        leader.propose(b"x" * 100)
    sent = net.outbox(1)
    to2 = [m for m in sent if m.to == 2 and m.type == MessageType.APPEND]
    assert len(to2) == 3  # 3 x 116 bytes reach the 300-byte bound
    net.deliver(sent)
    net.stabilize()
    assert net.data_applied(2) == [b"x" * 100] * 6


def test_lost_appends_in_replicate_state_are_recovered() -> None:
    """Optimistically streamed APPENDs that are lost leave the window full; heartbeat
    responses free it and the follower's rejection sends the leader back to probing.
    Reference: section 5.3 ("the leader retries AppendEntries RPCs indefinitely")"""
    net = Net.of([1, 2, 3], max_inflight_msgs=2)
    leader = net.elect(1)
    for i in range(4):
        leader.propose(b"%d" % i)
    lost = net.outbox(1)  # never delivered
    assert lost
    for _ in range(5):
        net.tick_all(1)
    assert net.data_applied(2) == [b"0", b"1", b"2", b"3"]


def test_max_size_per_msg_splits_appends_but_always_sends_one_entry() -> None:
    """Entries are batched up to ``max_size_per_msg`` bytes; one oversized entry is
    still sent alone so it cannot stall replication.
    Reference: section 5.3"""
    net = Net.of([1, 2, 3], max_size_per_msg=250)
    leader = net.elect(1)
    net.isolate(2)
    leader.propose_batch([b"y" * 100] * 5 + [b"z" * 1000])
    net.stabilize()
    net.heal()
    net.delivered.clear()
    net.tick_all(1)
    net.stabilize()
    sizes = [len(m.entries) for m in net.sent(MessageType.APPEND) if m.to == 2 and m.entries]
    assert sizes and max(sizes) <= 2
    assert net.data_applied(2)[-1] == b"z" * 1000


def test_committed_entries_are_paged_per_ready() -> None:
    """``max_committed_size_per_ready`` bounds the committed entries of one Ready;
    the rest follow in later Readies, in order.
    Reference: section 5.3"""
    net = Net.of([1], max_committed_size_per_ready=300)
    leader = net.elect(1)
    leader.propose_batch([b"p" * 100] * 7)
    sizes = []
    while leader.has_ready():
        rd = net.handle_ready(1)
        assert rd is not None
        if rd.committed_entries:
            sizes.append(len(rd.committed_entries))
    assert max(sizes) <= 3 and sum(sizes) >= 7
    assert net.data_applied(1) == [b"p" * 100] * 7


def test_uncommitted_size_limit_drops_proposals() -> None:
    """A leader bounds the bytes of uncommitted entries (``max_uncommitted_size``);
    proposals beyond it are dropped with a reason, and accepted again once the
    backlog commits."""
    net = Net.of([1, 2, 3], max_uncommitted_size=1000)
    leader = net.elect(1)
    net.isolate(1)
    leader.propose_batch([b"u" * 100] * 5)
    with pytest.raises(ProposalDropped, match="uncommitted"):
        leader.propose_batch([b"u" * 100] * 5)
    net.heal()
    net.stabilize()
    net.tick_all(2)
    leader.propose_batch([b"v" * 100] * 5)
    net.stabilize()
    assert net.data_applied(3)[-1] == b"v" * 100


def test_proposal_without_leader_is_dropped() -> None:
    """Nothing is appended without a leader: the caller gets ``ProposalDropped``."""
    net = Net.of([1, 2, 3])
    with pytest.raises(ProposalDropped, match="no leader"):
        net.nodes[2].propose(b"x")


def test_follower_forwards_proposal_to_leader() -> None:
    """A follower forwards a proposal to the leader it knows."""
    net = Net.of([1, 2, 3])
    net.elect(1)
    net.nodes[2].propose(b"fwd")
    net.stabilize()
    assert net.sent(MessageType.PROPOSE)
    assert all(net.data_applied(n) == [b"fwd"] for n in (1, 2, 3))


def test_forwarding_disabled_drops_proposal_at_follower() -> None:
    net = Net.of([1, 2, 3], disable_proposal_forwarding=True)
    net.elect(1)
    with pytest.raises(ProposalDropped, match="forwarding is disabled"):
        net.nodes[2].propose(b"x")


def test_leader_sends_before_persisting_but_counts_itself_only_when_durable() -> None:
    """Thesis 10.2.1: the leader may replicate entries in parallel with writing them
    to its own disk, but an entry is committed only when durable on a majority: the
    leader's own copy counts once its Ready is advanced."""
    net = Net.of([1])
    leader = net.elect(1)
    leader.propose(b"x")
    rd = leader.ready()
    assert rd.entries and rd.entries[-1].data == b"x"
    assert leader.committed < rd.entries[-1].index  # not yet durable anywhere
    net.storages[1].append(rd.entries)
    leader.advance(rd)
    assert leader.committed == rd.entries[-1].index


def test_leader_appends_noop_entry_on_election() -> None:
    """A new leader appends an empty entry of its term so that earlier entries can
    commit (§5.4.2) and reads can be served (§8)."""
    net = Net.of([1, 2, 3])
    leader = net.elect(1)
    assert net.applied[1][-1] == Entry(1, 1)
    assert leader.role == StateRole.LEADER and leader.committed == 1
