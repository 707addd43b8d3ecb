"""``RawNode`` and the ``Ready`` rules: what goes where, has_ready, advance,
status, robustness to bad input, and the memory of an idle group."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from engine.raft import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    ProgressState,
    ProposalDropped,
    RawNode,
    Snapshot,
    SnapshotMetadata,
    SoftState,
    StateRole,
    encode_conf_change,
)
from tests.raft.net import Net

pytestmark = pytest.mark.timeout(20)


def test_fresh_node_has_no_ready() -> None:
    node = RawNode(Config(1), MemoryStorage(ConfState(voters=(1, 2, 3))))
    assert not node.has_ready()
    assert node.role == StateRole.FOLLOWER and node.term == 0


def test_leader_messages_may_precede_persistence_follower_replies_may_not() -> None:
    """The leader's APPENDs are in ``messages`` (sent before its own write); the
    follower's APPEND_RESP is in ``persisted_messages`` (after its write)."""
    net = Net.of([1, 2, 3])
    leader = net.elect(1)
    leader.propose(b"x")
    rd = leader.ready()
    assert rd.entries and {m.type for m in rd.messages} == {MessageType.APPEND}
    assert not rd.persisted_messages
    net.storages[1].append(rd.entries)
    leader.advance(rd)
    net.nodes[2].step(rd.messages[0])
    frd = net.nodes[2].ready()
    assert frd.entries and frd.must_sync
    assert not frd.messages
    assert [m.type for m in frd.persisted_messages] == [MessageType.APPEND_RESP]


def test_candidate_vote_requests_wait_for_its_durable_vote() -> None:
    net = Net.of([1, 2, 3], pre_vote=False)
    net.nodes[1].campaign()
    rd = net.nodes[1].ready()
    assert rd.hard_state == HardState(1, 1, 0) and rd.must_sync
    assert not rd.messages
    assert {m.type for m in rd.persisted_messages} == {MessageType.VOTE}
    assert rd.soft_state == SoftState(0, StateRole.CANDIDATE)


def test_soft_and_hard_state_reported_only_on_change() -> None:
    net = Net.of([1, 2, 3])
    net.elect(1)
    leader = net.nodes[1]
    assert not leader.has_ready()
    leader.propose(b"y")
    net.stabilize()
    rds = []
    leader.propose(b"z")
    while leader.has_ready():
        rd = net.handle_ready(1)
        assert rd is not None
        rds.append(rd)
    assert all(rd.soft_state is None for rd in rds)
    # A commit-index-only change need not be fsynced.
    commit_only = [rd for rd in rds if rd.hard_state is not None and not rd.entries]
    assert all(not rd.must_sync for rd in commit_only)


def test_advance_marks_entries_stable_and_applied() -> None:
    net = Net.of([1])
    leader = net.elect(1)
    leader.propose(b"a")
    rd = leader.ready()
    assert leader.raft.log.unstable.entries
    net.storages[1].append(rd.entries)
    leader.advance(rd)
    assert not leader.raft.log.unstable.entries
    rd = leader.ready()
    assert [e.data for e in rd.committed_entries] == [b"a"]
    leader.advance(rd)
    assert leader.applied == leader.committed == 2
    assert not leader.has_ready()


def test_steps_between_ready_and_advance_are_kept() -> None:
    """Inputs stepped between ``ready()`` and ``advance()`` wait for the next Ready."""
    net = Net.of([1, 2, 3])
    leader = net.elect(1)
    leader.propose(b"a")
    rd = leader.ready()
    leader.propose(b"b")
    net.storages[1].append(rd.entries)
    leader.advance(rd)
    rd2 = leader.ready()
    assert [e.data for e in rd2.entries] == [b"b"]
    assert rd2.messages


def test_status_reports_progress_on_leader_only() -> None:
    net = Net.of([1, 2, 3])
    net.elect(1)
    st = net.nodes[1].status()
    assert st.id == 1 and st.soft_state == SoftState(1, StateRole.LEADER)
    assert st.progress[2] == (1, 2, ProgressState.REPLICATE)
    assert st.conf_state == ConfState(voters=(1, 2, 3))
    assert net.nodes[2].status().progress == {}
    assert net.nodes[2].leader_id == 1 and net.nodes[2].committed == 1


def test_unknown_stale_and_garbage_messages_are_ignored() -> None:
    """``step`` raises nothing for stale-term, unknown-peer or out-of-role messages."""
    net = Net.of([1, 2, 3])
    leader = net.elect(1)
    for m in (
        Message(MessageType.APPEND_RESP, 1, 99, 1, index=5),       # unknown peer
        Message(MessageType.HEARTBEAT_RESP, 1, 99, 1),
        Message(MessageType.VOTE_RESP, 1, 2, 1),                   # not a candidate
        Message(MessageType.READ_INDEX_RESP, 1, 2, 1),
        Message(MessageType.TIMEOUT_NOW, 1, 2, 0),
        Message(MessageType.APPEND_RESP, 1, 2, 0, index=100),      # term 0 response
        Message(MessageType.APPEND_RESP, 1, 2, 1, index=100),      # beyond our log
        Message(99, 1, 2, 1),                                      # unknown type
        Message(MessageType.APPEND, 7, 2, 9),                      # not addressed to us
    ):
        leader.step(m)
    assert leader.role == StateRole.LEADER and leader.term == 1
    net.stabilize()


def test_restart_with_applied_skips_applied_entries() -> None:
    cs = ConfState(voters=(1,))
    st = MemoryStorage(cs)
    st.append([Entry(1, i, data=b"%d" % i) for i in range(1, 6)])
    st.set_hard_state(HardState(1, 1, 5))
    node = RawNode(Config(1, applied=3), st)
    rd = node.ready()
    assert [e.index for e in rd.committed_entries] == [4, 5]


def test_idle_group_memory_under_2kib() -> None:
    """Multi-raft hosts 10,000s of groups per process: an idle 3-voter group with an
    empty log (RawNode and everything it owns, storage excluded) stays <= 2 KiB."""
    storage = MemoryStorage(ConfState(voters=(1, 2, 3)))
    n = 2000
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    nodes = [RawNode(Config(1 + i % 3, rng_seed=i), storage) for i in range(n)]
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    per_group = sum(s.size_diff for s in after.compare_to(before, "filename")) / n
    assert len(nodes) == n
    assert per_group <= 2048, per_group


def test_propose_batch_is_all_or_none_and_one_forward() -> None:
    """``propose_batch`` appends consecutive entries in one call, forwards them from a
    follower in one message, and drops all of them together."""
    net = Net.of([1, 2, 3], max_uncommitted_size=500)
    leader = net.elect(1)
    net.nodes[2].propose_batch([b"a", b"b", b"c"])
    fwd = [m for m in net.outbox(2) if m.type == MessageType.PROPOSE]
    assert len(fwd) == 1 and [e.data for e in fwd[0].entries] == [b"a", b"b", b"c"]
    net.deliver(fwd)
    net.stabilize()
    assert net.data_applied(3) == [b"a", b"b", b"c"]
    net.isolate(1)
    before = leader.last_index
    leader.propose_batch([b"x" * 100] * 3)
    with pytest.raises(ProposalDropped, match="uncommitted"):
        leader.propose_batch([b"y" * 100] * 3)
    assert leader.last_index == before + 3
    leader.propose_batch([])  # nothing to do
    assert leader.last_index == before + 3


def test_snapshot_stepped_between_ready_and_advance_is_refused_until_applied() -> None:
    """A snapshot can arrive while the caller still applies an older Ready holding a
    conf change. Installing it then would make the change apply on top of the
    snapshot's newer configuration (SIM_FINDINGS F4/F4b), so the follower refuses
    it with a rejection at its index; once the Ready is advanced the leader's
    retry installs it."""
    cs = ConfState(voters=(1, 2, 3))
    add4 = ConfChange((ConfChangeSingle(ConfChangeType.ADD_LEARNER, 4),))
    st = MemoryStorage(cs)
    st.append([Entry(1, 1), Entry(1, 2, EntryType.CONF_CHANGE, encode_conf_change(add4))])
    st.set_hard_state(HardState(1, 0, 2))
    node = RawNode(Config(2), st)
    rd = node.ready()
    assert [e.index for e in rd.committed_entries] == [1, 2]
    newer = ConfState(voters=(1, 2, 3), learners=(4, 5))
    snap = Snapshot(SnapshotMetadata(9, 1, newer), b"img")
    node.step(Message(MessageType.SNAPSHOT, 2, 1, 1, snapshot=snap))
    assert node.apply_conf_change(add4) == ConfState(voters=(1, 2, 3), learners=(4,))
    node.advance(rd)
    rd2 = node.ready()
    refusal = [m for m in rd2.messages + rd2.persisted_messages
               if m.type == MessageType.APPEND_RESP]
    assert [(m.index, m.reject, m.reject_hint) for m in refusal] == [(9, True, 2)]
    assert rd2.snapshot is None
    node.advance(rd2)
    node.step(Message(MessageType.SNAPSHOT, 2, 1, 1, snapshot=snap))  # the retry
    rd3 = node.ready()
    assert rd3.snapshot == snap and not rd3.committed_entries
    st.apply_snapshot(snap)
    node.advance(rd3)
    assert node.status().conf_state == newer and node.applied == 9
