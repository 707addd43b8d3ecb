"""The codec's public entry points, the envelope, and its contract with engine.raft.types."""

from __future__ import annotations

import pytest

from engine.raft import types as rt
from transport import codec_mirror
from transport.codec import (
    CODEC_VERSION,
    MIRROR_TYPES,
    ClientRequest,
    ClientRequestBatch,
    ClientResponse,
    ClientResponseBatch,
    CoalescedHeartbeats,
    RaftBatch,
    RaftTypes,
    WireCodec,
    encode_client_requests,
    encode_client_responses,
    encode_heartbeats,
    encode_raft_batch,
)
from transport.codec_header import ENVELOPE, RecordKind
from transport.errors import DecodeError, TransportError

REAL_TYPES = RaftTypes(
    message=rt.Message,
    entry=rt.Entry,
    snapshot=rt.Snapshot,
    snapshot_metadata=rt.SnapshotMetadata,
    conf_state=rt.ConfState,
)

PAIRS = [
    (rt.Entry, codec_mirror.Entry),
    (rt.ConfState, codec_mirror.ConfState),
    (rt.SnapshotMetadata, codec_mirror.SnapshotMetadata),
    (rt.Snapshot, codec_mirror.Snapshot),
    (rt.Message, codec_mirror.Message),
]


@pytest.mark.parametrize(("real", "mirror"), PAIRS, ids=lambda t: t.__name__)
def test_mirror_layout_equals_engine_types(real: type, mirror: type) -> None:
    # The decoder calls the constructors positionally: names, order and
    # defaults must match exactly or real values would be built scrambled.
    assert mirror._fields == real._fields
    # NamedTuples compare as tuples, so nested defaults compare by value.
    assert mirror._field_defaults == real._field_defaults


def real_messages() -> list[tuple[int, rt.Message]]:
    entries = (
        rt.Entry(3, 10, rt.EntryType.NORMAL, b"put a 1"),
        rt.Entry(3, 11, rt.EntryType.CONF_CHANGE, b"\x00\x01"),
        rt.Entry(4, 12),
    )
    snapshot = rt.Snapshot(
        rt.SnapshotMetadata(100, 7, rt.ConfState((1, 2, 3), (4,), (1, 2, 5), (5,), True)),
        b"state machine image",
    )
    return [
        (1, rt.Message(rt.MessageType.APPEND, 2, 1, 4, 3, 9, entries, 11)),
        (1, rt.Message(rt.MessageType.APPEND_RESP, 1, 2, 4, 3, 9, reject=True, reject_hint=7)),
        (2**64 - 1, rt.Message(rt.MessageType.VOTE, 3, 1, 5, 4, 12,
                                context=rt.CAMPAIGN_TRANSFER)),
        (9, rt.Message(rt.MessageType.SNAPSHOT, 5, 1, 7, snapshot=snapshot)),
        (9, rt.Message(rt.MessageType.SNAPSHOT, 5, 1, 7, snapshot=rt.EMPTY_SNAPSHOT)),
        (10, rt.Message(rt.MessageType.HEARTBEAT, 2, 1, 4, commit=11, context=b"req-17")),
    ]


def test_real_engine_messages_round_trip_with_real_constructors() -> None:
    codec = WireCodec(REAL_TYPES)
    items = real_messages()
    decoded = codec.decode_raft_batch(encode_raft_batch(items))
    assert decoded == items
    for (_, got), (_, want) in zip(decoded, items, strict=True):
        assert type(got) is rt.Message
        assert all(type(e) is rt.Entry for e in got.entries)
        if want.snapshot is not None:
            assert type(got.snapshot) is rt.Snapshot
            assert type(got.snapshot.metadata.conf_state) is rt.ConfState
            assert got.snapshot.is_empty == want.snapshot.is_empty
        else:
            assert got.snapshot is None


def test_mirror_codec_decodes_what_engine_values_encode() -> None:
    decoded = WireCodec(MIRROR_TYPES).decode_raft_batch(encode_raft_batch(real_messages()))
    assert [(r, tuple(m)) for r, m in decoded] == [(r, tuple(m)) for r, m in real_messages()]


def test_decode_dispatches_on_kind() -> None:
    codec = WireCodec(MIRROR_TYPES)
    hb = CoalescedHeartbeats.build(range_ids=[1], frm=[1], to=[2], terms=[3], commits=[4])
    reqs = [ClientRequest(1, 2, 3, b"GET k")]
    resps = [ClientResponse(1, 0, b"v")]
    assert isinstance(codec.decode(encode_raft_batch([])), RaftBatch)
    assert codec.decode(encode_heartbeats(hb)) == hb
    assert codec.decode(encode_client_requests(reqs)) == ClientRequestBatch(reqs)
    assert codec.decode(encode_client_responses(resps)) == ClientResponseBatch(resps)
    with pytest.raises(DecodeError, match="expected a raft batch"):
        codec.decode_raft_batch(encode_client_responses(resps))


def test_envelope_is_checked() -> None:
    codec = WireCodec(MIRROR_TYPES)
    good = encode_raft_batch([])
    assert good == ENVELOPE.pack(CODEC_VERSION, RecordKind.RAFT_BATCH, 0)
    with pytest.raises(DecodeError, match="unsupported codec version 99"):
        codec.decode(ENVELOPE.pack(99, RecordKind.RAFT_BATCH, 0))
    with pytest.raises(DecodeError, match="unknown record kind 77"):
        codec.decode(ENVELOPE.pack(CODEC_VERSION, 77, 0))
    with pytest.raises(DecodeError, match="trailing"):
        codec.decode(good + b"\x00")
    with pytest.raises(DecodeError, match="envelope"):
        codec.decode(good[:5])
    assert issubclass(DecodeError, TransportError)


def test_decode_accepts_any_buffer_type() -> None:
    codec = WireCodec(MIRROR_TYPES)
    enc = encode_raft_batch(real_messages())
    want = codec.decode(enc)
    assert codec.decode(bytearray(enc)) == want
    assert codec.decode(memoryview(enc)) == want
    padded = b"xx" + enc + b"yy"
    assert codec.decode(memoryview(padded)[2:-2]) == want


def test_every_truncation_of_a_valid_record_is_a_decode_error() -> None:
    codec = WireCodec(MIRROR_TYPES)
    enc = encode_raft_batch(real_messages())
    for cut in range(len(enc)):
        with pytest.raises(DecodeError):
            codec.decode(enc[:cut])
