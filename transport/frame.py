"""Framing of the byte stream between two nodes: length, kind, CRC32C, body.

Byte layout (little-endian)
---------------------------
::

    offset size field
    0      4    body_len   u32: bytes of body that follow the 12-byte header
    4      1    kind       FrameKind
    5      3    reserved   must be zero (room for flags in a later version)
    8      4    crc32c     CRC32C of header bytes [0, 8) followed by the body
    12     ...  body

    DATA body  := payload+            at least one
    payload    := len u32 | bytes     one opaque payload handed to send()

A DATA frame carries every payload queued for the peer during one loop
iteration (write coalescing): one header, one CRC and one ``write`` for the
lot. HELLO and REFUSE bodies belong to the handshake (``tcp_handshake``).

Theory of operation (reading)
-----------------------------
``FrameReader`` keeps received chunks in a deque with a read position in the
first chunk, instead of concatenating every ``data_received`` onto one growing
buffer (which is quadratic for large frames). A frame lying inside one chunk
is returned as a zero-copy ``memoryview`` of it; a frame spanning chunks is
gathered with a single ``join``. Received chunks are immutable ``bytes``, so
the views stay valid after the reader moves on.

Rules
-----
- ``body_len`` is checked against ``max_body`` as soon as the header is
  in, before any byte of the body is buffered for it, so a hostile peer
  cannot make the reader hold more than ``max_body`` + one read chunk.
- A bad length, kind, reserved byte, CRC or DATA body raises ``FrameError``.
  The stream has no resynchronisation point after that: the caller closes
  the connection. Nothing of a bad frame is ever handed out.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Sequence
from enum import IntEnum
from typing import Final, NamedTuple

from crc32c import crc32c

from transport.errors import FrameError

HEADER: Final = struct.Struct("<IB3xI")
assert HEADER.size == 12
#: The header bytes the CRC covers ahead of the body (length, kind, reserved).
_CRC_PREFIX: Final = struct.Struct("<IB3x")
_PAYLOAD_LEN: Final = struct.Struct("<I")
PAYLOAD_OVERHEAD: Final = _PAYLOAD_LEN.size

#: Default ceiling of a frame body; also bounds one payload.
DEFAULT_MAX_BODY: Final = 8 * 1024 * 1024
#: Ceiling of a frame body before the peer has identified itself: HELLO and
#: REFUSE are small, so an unauthenticated connection cannot make us buffer
#: megabytes.
HANDSHAKE_MAX_BODY: Final = 1024


class FrameKind(IntEnum):
    HELLO = 1
    REFUSE = 2
    DATA = 3


_KINDS: Final = frozenset(int(k) for k in FrameKind)


class Frame(NamedTuple):
    """One verified frame. ``body`` is read-only and stays valid indefinitely."""

    kind: int
    body: memoryview


def frame_header(kind: FrameKind, body: bytes | memoryview) -> bytes:
    """The 12-byte header of a frame of ``kind`` carrying ``body``."""
    prefix = _CRC_PREFIX.pack(len(body), kind)
    return HEADER.pack(len(body), kind, crc32c(body, crc32c(prefix)))


def encode_frame(kind: FrameKind, body: bytes) -> bytes:
    """A whole frame as one ``bytes`` (for the small handshake frames)."""
    return frame_header(kind, body) + body


def pack_data_body(payloads: Sequence[bytes]) -> bytes:
    """The body of a DATA frame carrying ``payloads`` in order.

    Length prefixes and payloads are interleaved with slice assignment: no
    Python-level loop per payload (profiled: the per-payload loop was a
    third of the sender's time in ``loadtest/bench_tcp.py``).
    """
    parts: list[bytes] = [b""] * (2 * len(payloads))
    parts[0::2] = map(_PAYLOAD_LEN.pack, map(len, payloads))
    parts[1::2] = payloads
    return b"".join(parts)


def split_data_body(body: memoryview) -> list[memoryview]:
    """The payloads of a verified DATA body. Raises ``FrameError`` if they do not tile it."""
    out: list[memoryview] = []
    off = 0
    end = len(body)
    unpack_len = _PAYLOAD_LEN.unpack_from
    while off < end:
        if off + PAYLOAD_OVERHEAD > end:
            raise FrameError(f"truncated payload length at body offset {off}")
        (n,) = unpack_len(body, off)
        off += PAYLOAD_OVERHEAD
        if off + n > end:
            raise FrameError(f"payload of {n} bytes overruns the frame body at offset {off}")
        out.append(body[off : off + n])
        off += n
    if not out:
        raise FrameError("DATA frame without payloads")
    return out


class FrameReader:
    """Incremental, bounded frame parser over a chunked receive buffer."""

    __slots__ = ("_chunks", "_head", "_pending", "_size", "max_body")

    def __init__(self, max_body: int = DEFAULT_MAX_BODY) -> None:
        #: Invariant: every chunk is non-empty ``bytes``; ``_head`` < len(_chunks[0]).
        self._chunks: deque[bytes] = deque()
        #: Invariant: read position inside ``_chunks[0]`` (0 when the deque is empty).
        self._head = 0
        #: Invariant: ``_size`` == sum of chunk lengths minus ``_head``.
        self._size = 0
        #: Largest body accepted; may be changed between frames (a connection
        #: keeps it small until the peer has identified itself).
        self.max_body = max_body
        #: The parsed header ``(body_len, kind, crc)`` of the frame whose body
        #: is still arriving, or None between frames.
        self._pending: tuple[int, int, int] | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return self._size

    def feed(self, data: bytes) -> None:
        """Append received bytes (must be immutable ``bytes``: views are handed out)."""
        if data:
            self._chunks.append(data)
            self._size += len(data)

    def next_frame(self) -> Frame | None:
        """The next complete, verified frame, or None until more bytes arrive."""
        if self._pending is None:
            if self._size < HEADER.size:
                return None
            header = self._take(HEADER.size)
            body_len, kind, crc = HEADER.unpack(header)
            if any(header[5:8]):  # struct's "x" skips them unchecked
                raise FrameError("non-zero reserved header bytes")
            if kind not in _KINDS:
                raise FrameError(f"unknown frame kind {kind}")
            if body_len > self.max_body:
                raise FrameError(f"frame body of {body_len} bytes exceeds {self.max_body}")
            self._pending = (body_len, kind, crc)
        body_len, kind, crc = self._pending
        if self._size < body_len:
            return None
        self._pending = None
        body = self._take(body_len)
        got = crc32c(body, crc32c(_CRC_PREFIX.pack(body_len, kind)))
        if got != crc:
            raise FrameError("frame CRC mismatch", expected_crc=crc, got_crc=got)
        return Frame(kind, body)

    def _take(self, n: int) -> memoryview:
        """Remove and return the next ``n`` buffered bytes (caller checked ``n <= _size``)."""
        first = self._chunks[0] if self._chunks else b""
        head = self._head
        if head + n <= len(first):
            view = memoryview(first)[head : head + n]
            self._advance_within_first(n)
        else:
            pieces: list[bytes | memoryview] = []
            need = n
            while need:
                chunk = self._chunks[0]
                avail = len(chunk) - self._head
                take = min(avail, need)
                pieces.append(memoryview(chunk)[self._head : self._head + take])
                self._advance_within_first(take)
                need -= take
            view = memoryview(b"".join(pieces))
        self._size -= n
        return view

    def _advance_within_first(self, n: int) -> None:
        self._head += n
        if self._head == len(self._chunks[0]):
            self._chunks.popleft()
            self._head = 0
