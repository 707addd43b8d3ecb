"""The wire codec: raft message batches, coalesced heartbeats, client envelopes.

Every byte that crosses a process boundary (a shared-memory ring record
between node and worker, the payload of a TCP frame between nodes) is one
*record* of this codec. No pickle: untrusted bytes only ever reach ``struct``
and ``array`` parsers that check every length first.

Byte layout, version 1 (little-endian throughout)
-------------------------------------------------
::

    record   := envelope body
    envelope := version u8 | kind u8 | count u32            (codec_header)

    kind 1 RAFT_BATCH           count x message, each tagged with its range id
                                (fixed 74-byte header, context, entry columns,
                                optional snapshot)                  (codec_raft)
    kind 2 HEARTBEATS           range_ids u64[n] | frm u64[n] | to u64[n] |
    kind 3 HEARTBEAT_RESPONSES  terms u64[n] | commits u64[n] | flags u8[n]
                                                               (codec_heartbeat)
    kind 4 CLIENT_REQUESTS      req_ids u64[n] | range_ids u64[n] |
                                generations u64[n] | lens u32[n] | commands
    kind 5 CLIENT_RESPONSES     req_ids u64[n] | statuses u32[n] | lens u32[n] |
                                payloads                           (codec_client)

Each sub-module documents its body byte by byte at its top. Repeated fields
are stored column-wise (all terms, then all indexes, ...) so that a batch
costs a few ``array`` copies instead of one ``struct`` call per field.

Rules
-----
- Decoding yields a valid value or raises ``DecodeError`` — never another
  exception, never a hang, never an allocation sized by a length field that
  was not first checked against the bytes actually present. A record must be
  consumed exactly (no trailing bytes).
- Encoding trusts its caller: a field outside its wire range (negative, or a
  u8 type above 255) raises ``struct.error``/``OverflowError``/``ValueError``.
- ``transport`` imports nothing from ``engine``: the raft values are built
  by the constructors in a ``RaftTypes`` passed in by the composition root
  (``engine.raft.types``); ``MIRROR_TYPES`` is the transport's own stand-in.
- Bump ``CODEC_VERSION`` for any layout change; peers agree on a version in
  the TCP handshake.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic

from transport.codec_client import (
    ClientRequest,
    ClientResponse,
    decode_request_columns,
    decode_response_columns,
    encode_client_requests,
    encode_client_responses,
)
from transport.codec_columns import Chunk, as_byte_view
from transport.codec_header import (
    CODEC_VERSION,
    ENVELOPE,
    SUPPORTED_VERSIONS,
    RecordKind,
    pack_envelope,
    read_envelope,
    require_consumed,
)
from transport.codec_heartbeat import (
    CoalescedHeartbeats,
    decode_heartbeat_columns,
    encode_heartbeats,
)
from transport.codec_raft import (
    MIRROR_TYPES,
    MessageLike,
    MsgT,
    RaftTypes,
    decode_messages,
    encode_messages,
)
from transport.errors import DecodeError

__all__ = [
    "CODEC_VERSION",
    "MIRROR_TYPES",
    "SUPPORTED_VERSIONS",
    "ClientRequest",
    "ClientRequestBatch",
    "ClientResponse",
    "ClientResponseBatch",
    "CoalescedHeartbeats",
    "DecodeError",
    "MessageLike",
    "RaftBatch",
    "RaftTypes",
    "Record",
    "RecordKind",
    "WireCodec",
    "encode_client_requests",
    "encode_client_responses",
    "encode_heartbeats",
    "encode_raft_batch",
]


@dataclass(frozen=True, slots=True)
class RaftBatch(Generic[MsgT]):
    """A decoded RAFT_BATCH: ``(range_id, message)`` pairs in wire order."""

    messages: list[tuple[int, MsgT]]


@dataclass(frozen=True, slots=True)
class ClientRequestBatch:
    """A decoded CLIENT_REQUESTS record."""

    requests: list[ClientRequest]


@dataclass(frozen=True, slots=True)
class ClientResponseBatch:
    """A decoded CLIENT_RESPONSES record."""

    responses: list[ClientResponse]


#: Any decoded record; dispatch with ``match``/``isinstance``.
Record = RaftBatch[MsgT] | CoalescedHeartbeats | ClientRequestBatch | ClientResponseBatch

Buffer = bytes | bytearray | memoryview


def encode_raft_batch(items: Iterable[tuple[int, MessageLike]]) -> bytes:
    """One RAFT_BATCH record of ``(range_id, message)`` pairs, in order."""
    parts: list[Chunk] = [b""]
    count = encode_messages(parts, items)
    parts[0] = pack_envelope(RecordKind.RAFT_BATCH, count)  # back-patched: count known now
    return b"".join(parts)


class WireCodec(Generic[MsgT]):
    """Decodes records, building raft values with the constructors it was given.

    Stateless apart from ``types``; one instance per process is enough.
    """

    __slots__ = ("types",)

    def __init__(self, types: RaftTypes[MsgT]) -> None:
        self.types = types

    def decode(self, buf: Buffer) -> Record[MsgT]:
        """Decode one record of any kind. Raises ``DecodeError`` and nothing else."""
        try:
            mv = as_byte_view(buf)
            kind, count = read_envelope(mv)
            off = ENVELOPE.size
            record: Record[MsgT]
            if kind == RecordKind.RAFT_BATCH:
                messages, off = decode_messages(self.types, mv, off, count)
                record = RaftBatch(messages)
            elif kind in (RecordKind.HEARTBEATS, RecordKind.HEARTBEAT_RESPONSES):
                response = kind == RecordKind.HEARTBEAT_RESPONSES
                record, off = decode_heartbeat_columns(mv, off, count, response)
            elif kind == RecordKind.CLIENT_REQUESTS:
                requests, off = decode_request_columns(mv, off, count)
                record = ClientRequestBatch(requests)
            else:
                assert kind == RecordKind.CLIENT_RESPONSES
                responses, off = decode_response_columns(mv, off, count)
                record = ClientResponseBatch(responses)
            require_consumed(mv, off)
            return record
        except DecodeError:
            raise
        except (struct.error, ValueError, TypeError, OverflowError, IndexError) as exc:
            # Safety net only: every length is checked before use above, and the
            # fuzz tests hold that this branch is unreachable. If it ever is
            # reached, the caller still sees the one documented error.
            raise DecodeError(f"malformed record: {exc!r}") from exc

    def decode_raft_batch(self, buf: Buffer) -> list[tuple[int, MsgT]]:
        """Decode a record that must be a RAFT_BATCH; return its pairs."""
        record = self.decode(buf)
        if not isinstance(record, RaftBatch):
            raise DecodeError(f"expected a raft batch, got {type(record).__name__}")
        return record.messages
