"""Raft paper §7 (log compaction): snapshots sent to followers behind the
compacted log, their installation, and report_snapshot / report_unreachable."""

from __future__ import annotations

import pytest

from engine.raft import (
    ConfState,
    Entry,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    ProgressState,
    Snapshot,
    SnapshotMetadata,
    SnapshotTemporarilyUnavailable,
)
from tests.raft.net import Net

pytestmark = pytest.mark.timeout(10)


def _compact_leader(net: Net, leader_id: int) -> int:
    st = net.storages[leader_id]
    applied = net.applied[leader_id][-1].index
    st.create_snapshot(applied, net.nodes[leader_id].status().conf_state, b"image@%d" % applied)
    st.compact(applied)
    return applied


def _lagging_follower_net() -> tuple[Net, int]:
    net = Net.of([1, 2, 3])
    leader = net.elect(1)
    net.isolate(3)
    for i in range(5):
        leader.propose(b"e%d" % i)
    net.stabilize()
    snap_index = _compact_leader(net, 1)
    net.heal()
    return net, snap_index


def test_follower_behind_compacted_log_receives_snapshot() -> None:
    """"the leader must occasionally send snapshots to followers that lag behind.
    This happens when the leader has already discarded the next log entry that it
    needs to send to a follower." The follower installs it (SNAPSHOT in its Ready,
    installed first) and then follows the log again.
    Reference: section 7"""
    net, snap_index = _lagging_follower_net()
    net.tick_all(1)
    net.stabilize()
    snaps = net.sent(MessageType.SNAPSHOT)
    assert [m.to for m in snaps] == [3]
    assert net.storages[3].snapshot().metadata.index == snap_index
    assert net.storages[3].snapshot().data == b"image@%d" % snap_index
    net.nodes[1].propose(b"after")
    net.stabilize()
    assert net.data_applied(3) == [b"after"]  # the rest came in the image
    assert net.nodes[1].status().progress[3][2] is ProgressState.REPLICATE


def test_snapshot_ready_installs_snapshot_before_entries() -> None:
    """A follower's Ready carries the snapshot to install FIRST, with its hard
    state's commit at the snapshot index; ``applied`` jumps to the snapshot."""
    cs = ConfState(voters=(1, 2))
    net = Net(cfg={})
    node = net.add_node(2, MemoryStorage(cs))
    snap = Snapshot(SnapshotMetadata(10, 3, cs), b"img")
    node.step(Message(MessageType.SNAPSHOT, 2, 1, 3, snapshot=snap))
    rd = node.ready()
    assert rd.snapshot == snap
    assert rd.hard_state == HardState(3, 0, 10)
    assert not rd.committed_entries
    assert [(m.type, m.index) for m in rd.persisted_messages] == [(MessageType.APPEND_RESP, 10)]
    net.storages[2].apply_snapshot(snap)
    node.advance(rd)
    assert node.applied == 10 and node.last_index == 10


def test_stale_snapshot_is_ignored() -> None:
    """A snapshot at or below the commit index adds nothing: the follower answers with
    its commit index and installs nothing."""
    net = Net.of([1, 2, 3])
    net.elect(1)
    net.nodes[1].propose(b"x")
    net.stabilize()
    node = net.nodes[2]
    snap = Snapshot(SnapshotMetadata(1, 1, ConfState(voters=(1, 2, 3))), b"old")
    node.step(Message(MessageType.SNAPSHOT, 2, 1, 1, snapshot=snap))
    rd = node.ready()
    assert rd.snapshot is None
    assert [m.index for m in rd.persisted_messages] == [node.committed]


def test_failed_snapshot_report_returns_to_probe() -> None:
    """``report_snapshot(ok=False)`` lets the leader retry: the follower goes back to
    probe (paused until the next heartbeat response)."""
    net, _ = _lagging_follower_net()
    net.drop_types.add(MessageType.SNAPSHOT)
    net.tick_all(1)
    pr = net.nodes[1].raft.tracker.progress[3]
    assert pr.state is ProgressState.SNAPSHOT and pr.is_paused()
    net.nodes[1].report_snapshot(3, False)
    assert pr.state is ProgressState.PROBE and pr.probe_sent and pr.pending_snapshot == 0
    net.heal()
    net.tick_all(2)
    assert net.storages[3].snapshot().metadata.index > 0


def test_successful_snapshot_report_resumes_after_snapshot() -> None:
    net, snap_index = _lagging_follower_net()
    net.drop_types.add(MessageType.SNAPSHOT)
    net.tick_all(1)
    leader = net.nodes[1]
    leader.report_snapshot(3, True)
    pr = leader.raft.tracker.progress[3]
    assert pr.state is ProgressState.PROBE and pr.next == snap_index + 1


def test_snapshot_temporarily_unavailable_is_retried_later() -> None:
    """Storage may be building the snapshot: the leader sends nothing and retries."""

    class SlowSnapshots(MemoryStorage):
        ready = False

        def snapshot(self) -> Snapshot:
            if not self.ready:
                raise SnapshotTemporarilyUnavailable("building")
            return super().snapshot()

    cs = ConfState(voters=(1, 2))
    st = SlowSnapshots(cs)
    st.append([Entry(1, i) for i in range(1, 6)])
    st.set_hard_state(HardState(1, 1, 5))
    st.create_snapshot(5, cs, b"five")
    st.compact(5)
    net = Net(cfg={"pre_vote": False})
    net.add_node(1, st, applied=5)
    net.add_node(2, MemoryStorage(cs))
    net.nodes[1].campaign()
    net.stabilize()
    assert not net.sent(MessageType.SNAPSHOT)
    st.ready = True
    net.tick_all(3)
    assert net.sent(MessageType.SNAPSHOT)
    assert net.storages[2].snapshot().data == b"five"


def test_report_unreachable_moves_replicate_to_probe() -> None:
    """The transport reporting a failed send stops optimistic streaming."""
    net = Net.of([1, 2, 3])
    leader = net.elect(1)
    pr = leader.raft.tracker.progress[2]
    assert pr.state is ProgressState.REPLICATE
    leader.report_unreachable(2)
    assert pr.state is ProgressState.PROBE
    leader.report_unreachable(99)  # unknown peer: ignored


def test_restart_after_snapshot_starts_from_it() -> None:
    """A node restarted on a compacted storage starts after its snapshot."""
    net, snap_index = _lagging_follower_net()
    node = net.restart(1)
    assert node.committed >= snap_index
    assert node.applied >= snap_index
    assert not any(e.index <= snap_index for e in node.ready().committed_entries)
