"""Client request/response envelopes between the node and its workers.

The node routes a client command to the worker that owns the range; the
worker answers. The transport only frames these: what ``command`` and
``payload`` hold, and what ``status`` means, is the engine's business.

Byte layout (little-endian; follows the 6-byte envelope of ``codec_header``,
``count = n``)
--------------------------------------------------------------------------
CLIENT_REQUESTS::

    req_ids u64[n] | range_ids u64[n] | generations u64[n] | command_lens u32[n] | commands

CLIENT_RESPONSES::

    req_ids u64[n] | statuses u32[n] | payload_lens u32[n] | payloads

Columns keep a batch of small requests cheap: four array copies and one
blob cut per record rather than a ``struct`` call per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Final, NamedTuple

from transport.codec_columns import (
    U32,
    U64,
    build_rows,
    pack_column,
    read_blobs,
    read_column,
    require,
)
from transport.codec_header import RecordKind, pack_envelope

#: Fixed bytes per request / response across the columns.
REQUEST_ROW_SIZE: Final = 8 + 8 + 8 + 4
RESPONSE_ROW_SIZE: Final = 8 + 4 + 4


class ClientRequest(NamedTuple):
    """A client command for ``range_id`` as of range ``generation`` (detects stale routing)."""

    req_id: int
    range_id: int
    generation: int
    command: bytes


class ClientResponse(NamedTuple):
    """The answer to request ``req_id``; ``status`` and ``payload`` are engine-defined."""

    req_id: int
    status: int
    payload: bytes


_req_id = attrgetter("req_id")
_range_id = attrgetter("range_id")
_generation = attrgetter("generation")
_command = attrgetter("command")
_status = attrgetter("status")
_payload = attrgetter("payload")


def encode_client_requests(requests: Sequence[ClientRequest]) -> bytes:
    """One CLIENT_REQUESTS record holding ``requests`` in order."""
    commands = list(map(_command, requests))
    return b"".join((
        pack_envelope(RecordKind.CLIENT_REQUESTS, len(requests)),
        pack_column(U64, map(_req_id, requests)),
        pack_column(U64, map(_range_id, requests)),
        pack_column(U64, map(_generation, requests)),
        pack_column(U32, map(len, commands)),
        *commands,
    ))


def encode_client_responses(responses: Sequence[ClientResponse]) -> bytes:
    """One CLIENT_RESPONSES record holding ``responses`` in order."""
    payloads = list(map(_payload, responses))
    return b"".join((
        pack_envelope(RecordKind.CLIENT_RESPONSES, len(responses)),
        pack_column(U64, map(_req_id, responses)),
        pack_column(U32, map(_status, responses)),
        pack_column(U32, map(len, payloads)),
        *payloads,
    ))


def decode_request_columns(
    mv: memoryview, off: int, n: int
) -> tuple[list[ClientRequest], int]:
    """Decode ``n`` requests at ``off``; return them and the end."""
    require(mv, off, n * REQUEST_ROW_SIZE, "client requests")
    req_ids, off = read_column(mv, off, U64, n, "request ids")
    range_ids, off = read_column(mv, off, U64, n, "request range ids")
    generations, off = read_column(mv, off, U64, n, "request generations")
    lengths, off = read_column(mv, off, U32, n, "request command lengths")
    commands, off = read_blobs(mv, off, lengths, "request commands")
    return list(build_rows(ClientRequest, req_ids, range_ids, generations, commands)), off


def decode_response_columns(
    mv: memoryview, off: int, n: int
) -> tuple[list[ClientResponse], int]:
    """Decode ``n`` responses at ``off``; return them and the end."""
    require(mv, off, n * RESPONSE_ROW_SIZE, "client responses")
    req_ids, off = read_column(mv, off, U64, n, "response ids")
    statuses, off = read_column(mv, off, U32, n, "response statuses")
    lengths, off = read_column(mv, off, U32, n, "response payload lengths")
    payloads, off = read_blobs(mv, off, lengths, "response payloads")
    return list(build_rows(ClientResponse, req_ids, statuses, payloads)), off
