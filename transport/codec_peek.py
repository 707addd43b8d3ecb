"""The range ids of a raft record, read without decoding its messages.

Why
---
A node relays every raft record a peer sends it to the worker holding the
record's ranges. Decoding a RAFT_BATCH into message objects and encoding it
again per worker costs ~10 us per message plus ~5 us to re-encode, on the
node's one event loop, for every append and append response of every write.
Yet the ranges of one record nearly always live in one worker: a record is
built by one worker of the sending node, and a range sits in the same
worker index on every node (the bootstrap layout places it so, and a split's
right-hand side stays in its parent's worker). ``range_ids`` reads only the
fixed headers and length fields, so the node can hand the record's bytes to
that worker untouched, and decode only a record that must be split.

Rules
-----
- Every length is checked against the bytes present before it is used, the
  envelope's version and kind are checked, and the walk must end exactly at
  the end of the record; anything else raises ``DecodeError`` (the caller
  falls back to a full decode, which reports the fault).
- The message fields themselves (types, flags, entry contents) are not
  validated here: the worker decodes the record in full before stepping it,
  and drops (and logs) one that does not decode.
- Byte layouts are those of ``codec_raft`` and ``codec_heartbeat``; this
  module only walks them.
"""

from __future__ import annotations

from array import array

from transport.codec_columns import U32, U64, read_column, require
from transport.codec_header import ENVELOPE, RecordKind, read_envelope
from transport.codec_heartbeat import ROW_SIZE
from transport.codec_raft import ENTRY_FIXED_SIZE, FLAG_SNAPSHOT, MESSAGE_HEADER, SNAPSHOT_HEADER
from transport.errors import DecodeError

__all__ = ["range_ids"]

_RAFT_KINDS = frozenset((RecordKind.RAFT_BATCH, RecordKind.HEARTBEATS,
                         RecordKind.HEARTBEAT_RESPONSES))


def range_ids(buf: bytes | memoryview) -> array[int] | list[int]:
    """The range id of every message (RAFT_BATCH) or row (HEARTBEATS /
    HEARTBEAT_RESPONSES) of the record ``buf``, in order. Raises ``DecodeError``
    for a malformed record or one of another kind."""
    mv = memoryview(buf)
    kind, count = read_envelope(mv)
    if kind not in _RAFT_KINDS:
        raise DecodeError(f"record kind {kind} carries no raft messages", 1)
    off = ENVELOPE.size
    if kind != RecordKind.RAFT_BATCH:
        require(mv, off, count * ROW_SIZE, "coalesced heartbeat")
        if len(mv) != off + count * ROW_SIZE:
            raise DecodeError("coalesced heartbeat of the wrong length", off)
        ids, _ = read_column(mv, off, U64, count, "heartbeat range ids")
        return ids
    return _message_range_ids(mv, off, count)


def _message_range_ids(mv: memoryview, off: int, count: int) -> list[int]:
    require(mv, off, count * MESSAGE_HEADER.size, "raft batch")
    unpack = MESSAGE_HEADER.unpack_from
    out: list[int] = []
    end = len(mv)
    for _ in range(count):
        require(mv, off, MESSAGE_HEADER.size, "message header")
        header = unpack(mv, off)
        out.append(header[0])
        flags, context_len, n_entries = header[2], header[10], header[11]
        off += MESSAGE_HEADER.size + context_len
        if n_entries:
            require(mv, off, n_entries * ENTRY_FIXED_SIZE, "entry columns")
            lengths, after = read_column(mv, off + 17 * n_entries, U32, n_entries,
                                         "entry lengths")
            off = after + sum(lengths)
        if flags & FLAG_SNAPSHOT:
            require(mv, off, SNAPSHOT_HEADER.size, "snapshot header")
            snap = SNAPSHOT_HEADER.unpack_from(mv, off)
            off += SNAPSHOT_HEADER.size + 8 * sum(snap[3:7]) + snap[7]
        if off > end:
            raise DecodeError("raft message runs past the end of the record", end)
    if off != end:
        raise DecodeError(f"{end - off} trailing bytes after the raft batch", off)
    return out
