"""PeerStats: totals and snapshots."""

from __future__ import annotations

from dataclasses import fields

from transport.tcp_stats import PeerStats


def test_add_sums_every_counter_and_copy_is_independent() -> None:
    a = PeerStats(frames_sent=2, dropped_payloads=5, reconnects=1)
    b = PeerStats(frames_sent=3, bad_frames=4)
    total = PeerStats()
    total.add(a)
    total.add(b)
    assert total == PeerStats(frames_sent=5, dropped_payloads=5, reconnects=1, bad_frames=4)
    snap = total.copy()
    total.frames_sent += 1
    assert snap.frames_sent == 5
    every = PeerStats(**{f.name: 1 for f in fields(PeerStats)})
    doubled = every.copy()
    doubled.add(every)
    assert all(getattr(doubled, f.name) == 2 for f in fields(PeerStats))
