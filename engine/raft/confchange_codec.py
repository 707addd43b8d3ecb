"""Byte encoding of ``ConfChange`` (the ``data`` of a CONF_CHANGE log entry).

Byte layout (version 1, little-endian)::

    offset  size  field
    0       1     version            = 1
    1       1     transition         ConfChangeTransition
    2       2     n                  number of single changes
    4       4     context length     L
    8       9*n   changes            each: u8 type (ConfChangeType), u64 node id
    8+9n    L     context            opaque bytes

Rules
-----
- Decoding validates everything (version, enum values, exact length) and
  raises ``ConfChangeDecodeError``: a log entry is input from disk or a peer.
- The version byte comes first so later versions can be told apart.
"""

from __future__ import annotations

import struct

from engine.raft.errors import RaftError
from engine.raft.types import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
)

VERSION = 1
_HEADER = struct.Struct("<BBHI")
_CHANGE = struct.Struct("<BQ")
assert _HEADER.size == 8 and _CHANGE.size == 9


class ConfChangeDecodeError(RaftError):
    """The bytes are not a valid encoded ``ConfChange``."""


def encode_conf_change(cc: ConfChange) -> bytes:
    n = len(cc.changes)
    if n > 0xFFFF:
        raise ValueError(f"too many changes in one ConfChange: {n}")
    parts = [_HEADER.pack(VERSION, int(cc.transition), n, len(cc.context))]
    parts.extend(_CHANGE.pack(int(ch.type), ch.node_id) for ch in cc.changes)
    parts.append(cc.context)
    return b"".join(parts)


def decode_conf_change(data: bytes) -> ConfChange:
    if len(data) < _HEADER.size:
        raise ConfChangeDecodeError(f"{len(data)} bytes: shorter than the header")
    version, transition, n, ctx_len = _HEADER.unpack_from(data, 0)
    if version != VERSION:
        raise ConfChangeDecodeError(f"unknown ConfChange version {version}")
    try:
        tr = ConfChangeTransition(transition)
    except ValueError:
        raise ConfChangeDecodeError(f"unknown transition {transition}") from None
    want = _HEADER.size + n * _CHANGE.size + ctx_len
    if len(data) != want:
        raise ConfChangeDecodeError(f"length {len(data)}, expected {want}")
    changes = []
    pos = _HEADER.size
    for _ in range(n):
        typ, node = _CHANGE.unpack_from(data, pos)
        pos += _CHANGE.size
        try:
            ct = ConfChangeType(typ)
        except ValueError:
            raise ConfChangeDecodeError(f"unknown change type {typ}") from None
        changes.append(ConfChangeSingle(ct, node))
    return ConfChange(tuple(changes), tr, bytes(data[pos : pos + ctx_len]))
