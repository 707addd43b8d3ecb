"""Errors of the ``transport`` package: one root, specific subclasses.

Rules
-----
- Everything ``transport`` raises on purpose derives from ``TransportError``,
  so the composition root can catch the package's failures in one place.
- A subclass carries what broke (offset, expected/actual values, peer id) so a
  log line or a metric label can say it without parsing the message.
"""

from __future__ import annotations


class TransportError(Exception):
    """Root of every error the transport package raises on purpose."""


# --- wire codec, framing and TCP peers (transport/codec*.py, frame.py, tcp*.py) ---


class DecodeError(TransportError):
    """Untrusted bytes are not a valid codec record.

    The only exception the codec's decoders raise. ``offset`` is where in the
    record the problem was found (``-1`` when not tied to one position).
    """

    def __init__(self, what: str, offset: int = -1) -> None:
        super().__init__(f"{what} (at offset {offset})" if offset >= 0 else what)
        self.what = what
        self.offset = offset


class FrameError(TransportError):
    """A frame on a peer connection is malformed: bad length, CRC or kind.

    The connection that carried it is closed and the event counted; nothing
    from the frame is delivered.
    """

    def __init__(self, what: str, *, expected_crc: int = 0, got_crc: int = 0) -> None:
        super().__init__(what)
        self.what = what
        self.expected_crc = expected_crc
        self.got_crc = got_crc


class HandshakeError(TransportError):
    """A peer connection was refused during the handshake (wrong cluster, version, node id)."""

    def __init__(self, reason: str, peer_node_id: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.peer_node_id = peer_node_id


class PayloadTooLarge(TransportError):
    """A payload handed to ``send`` cannot fit in one frame of the configured maximum size."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"payload of {size} bytes exceeds the frame limit of {limit} bytes")
        self.size = size
        self.limit = limit


class UnknownPeer(TransportError):
    """``send`` named a node id that has no configured address."""

    def __init__(self, node_id: int) -> None:
        super().__init__(f"no address configured for node {node_id}")
        self.node_id = node_id


# --- shared-memory rings and node<->worker channels (shm_ring.py, wakeup.py, channel.py) ---


class ClosedResourceError(TransportError):
    """This side already closed the ring or channel it is being asked to use.

    A local programming/ordering error: the caller closed the resource itself.
    """


class BrokenResourceError(TransportError):
    """The other side of a ring or channel is gone; nothing more will flow.

    Records the peer published before it went away are still delivered first;
    this is raised only once the ring is drained.
    """


class PeerClosed(BrokenResourceError):
    """The peer closed its end on purpose (a graceful end of stream)."""


class PeerDead(BrokenResourceError):
    """The peer process exited or was killed without closing its end."""

    def __init__(self, pid: int) -> None:
        super().__init__(f"peer process {pid} is dead")
        self.pid = pid


class RecordTooLarge(TransportError):
    """A record can never fit in the ring: it is rejected, not chunked.

    ``limit`` is the largest record payload the ring accepts (about half its
    capacity, so a frame always fits once the consumer has drained the ring).
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"record of {size} bytes exceeds the ring's limit of {limit} bytes")
        self.size = size
        self.limit = limit


class RingCorrupted(TransportError):
    """The shared ring holds bytes that break its layout (a peer bug or a stray write)."""

    def __init__(self, what: str, position: int) -> None:
        super().__init__(f"{what} (at ring position {position})")
        self.what = what
        self.position = position


class UnsupportedPlatform(TransportError):
    """The shared-memory ring's memory-ordering argument does not hold on this CPU.

    The ring relies on x86-64's total store order (see ``shm_ring``'s header);
    on weakly ordered CPUs plain stores from Python could publish a ``tail``
    before the bytes below it, so the ring refuses to run rather than corrupt.
    """

    def __init__(self, machine: str) -> None:
        super().__init__(f"shared-memory rings need x86-64 store ordering, not {machine!r}")
        self.machine = machine
