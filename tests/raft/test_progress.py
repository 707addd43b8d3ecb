"""Unit tests of ``Progress``: probe / replicate / snapshot states."""

from __future__ import annotations

from engine.raft.tracker import Progress, ProgressState


def _pr(match: int = 0, nxt: int = 1, cap: int = 2) -> Progress:
    return Progress(nxt, (cap, 0), match=match)


def test_probe_pauses_after_one_send_until_ack() -> None:
    pr = _pr(nxt=5)
    assert not pr.is_paused()
    pr.sent_entries(7, 0)
    assert pr.is_paused() and pr.next == 5  # probing does not move next
    assert pr.maybe_update(7)
    assert not pr.is_paused() and pr.next == 8


def test_replicate_moves_next_optimistically_and_fills_window() -> None:
    pr = _pr(match=4, nxt=5)
    pr.become_replicate()
    pr.sent_entries(6, 10)
    pr.sent_entries(8, 10)
    assert pr.next == 9 and pr.is_paused()
    assert pr.inflight_count == 2 and pr.inflight_bytes == 20
    pr.maybe_update(6)
    pr.free_inflights_le(6)
    assert not pr.is_paused()
    pr.free_inflights_le(8)
    assert pr._inflights is None  # an idle follower holds no window object


def test_maybe_decr_to_in_replicate_ignores_stale_rejects() -> None:
    pr = _pr(match=5, nxt=10)
    pr.become_replicate()
    assert not pr.maybe_decr_to(5, 0)
    assert pr.maybe_decr_to(8, 0)
    assert pr.next == 6


def test_maybe_decr_to_in_probe_uses_hint() -> None:
    pr = _pr(match=0, nxt=10)
    assert not pr.maybe_decr_to(5, 0)  # not the probe in flight
    assert pr.maybe_decr_to(9, 3)
    assert pr.next == 4
    pr.probe_sent = True
    assert pr.maybe_decr_to(3, 99)  # hint beyond rejected: back off by one only
    assert pr.next == 3 and not pr.probe_sent


def test_snapshot_state_paused_and_resumes_after_snapshot() -> None:
    pr = _pr(match=2, nxt=3)
    pr.become_snapshot(20)
    assert pr.is_paused() and pr.state is ProgressState.SNAPSHOT
    pr.become_probe()
    assert pr.state is ProgressState.PROBE and pr.next == 21


def test_reset_forgets_everything() -> None:
    pr = _pr(match=4, nxt=9)
    pr.become_replicate()
    pr.sent_entries(10, 1)
    pr.recent_active = True
    pr.reset(12)
    assert (pr.match, pr.next, pr.state, pr.recent_active, pr.inflight_count) == (
        0, 12, ProgressState.PROBE, False, 0)
