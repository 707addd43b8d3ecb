"""The 6-byte envelope that starts every codec record: version, kind, count.

Byte layout (little-endian)
---------------------------
::

    offset size field
    0      1    version   codec version the record was written with (CODEC_VERSION)
    1      1    kind      RecordKind: what follows
    2      4    count     u32: number of items in the record (messages, ranges, requests)
    6      ...  body      kind-specific, see codec_raft / codec_heartbeat / codec_client

Rules
-----
- A reader accepts exactly the versions in ``SUPPORTED_VERSIONS``; anything
  else is a ``DecodeError`` (peers agree on a version in the TCP handshake, so
  a mismatch here means corruption or a bug, never a negotiation).
- The body must be consumed exactly: trailing bytes are a ``DecodeError``.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Final

from transport.codec_columns import require
from transport.errors import DecodeError

#: The codec version this build writes.
CODEC_VERSION: Final = 1
#: The codec versions this build reads (and offers in the TCP handshake).
SUPPORTED_VERSIONS: Final = frozenset({1})

ENVELOPE: Final = struct.Struct("<BBI")
assert ENVELOPE.size == 6


class RecordKind(IntEnum):
    """What a record's body holds."""

    RAFT_BATCH = 1
    HEARTBEATS = 2
    HEARTBEAT_RESPONSES = 3
    CLIENT_REQUESTS = 4
    CLIENT_RESPONSES = 5


_KINDS: Final = frozenset(int(k) for k in RecordKind)


def pack_envelope(kind: RecordKind, count: int) -> bytes:
    """The envelope of a record of ``count`` items of ``kind`` at the current version."""
    return ENVELOPE.pack(CODEC_VERSION, kind, count)


def read_envelope(mv: memoryview) -> tuple[int, int]:
    """Validate the envelope; return ``(kind, count)``. Raises ``DecodeError``."""
    require(mv, 0, ENVELOPE.size, "record envelope")
    version, kind, count = ENVELOPE.unpack_from(mv, 0)
    if version not in SUPPORTED_VERSIONS:
        raise DecodeError(f"unsupported codec version {version}", 0)
    if kind not in _KINDS:
        raise DecodeError(f"unknown record kind {kind}", 1)
    return kind, count


def require_consumed(mv: memoryview, off: int) -> None:
    """Raise ``DecodeError`` if bytes remain after a fully decoded body."""
    if off != len(mv):
        raise DecodeError(f"{len(mv) - off} trailing bytes after the record", off)
