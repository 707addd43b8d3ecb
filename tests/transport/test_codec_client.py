"""Client request/response envelopes between node and worker."""

from __future__ import annotations

import pytest

from transport.codec import (
    MIRROR_TYPES,
    ClientRequest,
    ClientRequestBatch,
    ClientResponse,
    ClientResponseBatch,
    WireCodec,
    encode_client_requests,
    encode_client_responses,
)
from transport.codec_header import ENVELOPE, RecordKind
from transport.errors import DecodeError

CODEC = WireCodec(MIRROR_TYPES)


def test_requests_round_trip() -> None:
    reqs = [ClientRequest(i, i * 3, 2**64 - 1 - i, b"SET k%d v" % i) for i in range(50)]
    reqs.append(ClientRequest(999, 1, 0, b""))
    got = CODEC.decode(encode_client_requests(reqs))
    assert got == ClientRequestBatch(reqs)
    assert isinstance(got, ClientRequestBatch) and type(got.requests[0]) is ClientRequest


def test_responses_round_trip() -> None:
    resps = [ClientResponse(i, i % 4, bytes(range(i % 256))) for i in range(300)]
    got = CODEC.decode(encode_client_responses(resps))
    assert got == ClientResponseBatch(resps)


def test_empty_batches() -> None:
    assert CODEC.decode(encode_client_requests([])) == ClientRequestBatch([])
    assert CODEC.decode(encode_client_responses([])) == ClientResponseBatch([])


def test_lengths_beyond_the_buffer_are_decode_errors() -> None:
    with pytest.raises(DecodeError, match="client requests"):
        CODEC.decode(ENVELOPE.pack(1, RecordKind.CLIENT_REQUESTS, 1 << 30))
    enc = bytearray(encode_client_responses([ClientResponse(1, 0, b"abc")]))
    enc[ENVELOPE.size + 12 : ENVELOPE.size + 16] = (1 << 31).to_bytes(4, "little")
    with pytest.raises(DecodeError, match="payloads"):
        CODEC.decode(bytes(enc))


def test_status_outside_u32_fails_at_encode() -> None:
    with pytest.raises(OverflowError):
        encode_client_responses([ClientResponse(1, 1 << 32, b"")])
