"""Counters of the TCP peer transport, per peer node, for the node's metrics export.

Counters only ever increase (Prometheus counter semantics); gauges such as the
bytes currently queued are read from the transport directly.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(slots=True)
class PeerStats:
    """Counters for one peer node (node id 0 collects connections that never identified)."""

    #: DATA frames / their bytes (header included) / payloads written to the socket.
    frames_sent: int = 0
    bytes_sent: int = 0
    payloads_sent: int = 0
    #: DATA frames / bytes / payloads received and delivered.
    frames_received: int = 0
    bytes_received: int = 0
    payloads_received: int = 0
    #: Payloads (and their bytes) dropped because the peer's outgoing queue was full.
    dropped_payloads: int = 0
    dropped_bytes: int = 0
    #: Frames with a bad length, kind, CRC or body; each closed its connection.
    bad_frames: int = 0
    #: Handshakes refused, by either side.
    handshake_refusals: int = 0
    #: Dial attempts that failed before a handshake (refused, timed out, unreachable).
    connect_failures: int = 0
    #: Outbound connections established, and how many of them replaced a lost one.
    connects: int = 0
    reconnects: int = 0

    def add(self, other: PeerStats) -> None:
        """Add ``other``'s counters into this one (to build totals)."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def copy(self) -> PeerStats:
        """An independent snapshot."""
        snapshot = PeerStats()
        snapshot.add(self)
        return snapshot
