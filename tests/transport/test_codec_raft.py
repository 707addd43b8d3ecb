"""Raft message bodies: byte layout, flags, entry columns, snapshots, bounds."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

import pytest

from transport.codec import MIRROR_TYPES, WireCodec, encode_raft_batch
from transport.codec_header import ENVELOPE
from transport.codec_mirror import ConfState, Entry, Message, Snapshot, SnapshotMetadata
from transport.codec_raft import FLAG_REJECT, MESSAGE_HEADER, RaftTypes
from transport.errors import DecodeError

CODEC = WireCodec(MIRROR_TYPES)


def test_header_layout_is_as_documented() -> None:
    m = Message(1, 2, 3, 4, 5, 6, (), 7, True, 8, b"ctx")
    enc = encode_raft_batch([(99, m)])
    body = enc[ENVELOPE.size :]
    assert struct.unpack_from("<QBBQQQQQQQII", body) == (99, 1, FLAG_REJECT, 2, 3, 4, 5, 6, 7, 8,
                                                          3, 0)
    assert body[MESSAGE_HEADER.size :] == b"ctx"


def test_entries_are_stored_column_wise() -> None:
    entries = (Entry(1, 5, 0, b"ab"), Entry(2, 6, 1, b"c"))
    enc = encode_raft_batch([(1, Message(1, 2, 1, 2, entries=entries))])
    cols = enc[ENVELOPE.size + MESSAGE_HEADER.size :]
    assert cols == struct.pack("<QQQQBBII", 1, 2, 5, 6, 0, 1, 2, 1) + b"abc"
    assert CODEC.decode_raft_batch(enc)[0][1].entries == entries


def test_none_and_empty_snapshot_stay_distinct() -> None:
    none_snap = Message(7, 1, 2, 3)
    empty_snap = Message(7, 1, 2, 3, snapshot=Snapshot())
    got = CODEC.decode_raft_batch(encode_raft_batch([(1, none_snap), (1, empty_snap)]))
    assert got[0][1].snapshot is None
    assert got[1][1].snapshot == Snapshot()


def test_snapshot_round_trip_with_joint_config() -> None:
    snap = Snapshot(SnapshotMetadata(9, 2, ConfState((1, 2), (3,), (1, 4), (4,), True)), b"img")
    [(_, got)] = CODEC.decode_raft_batch(encode_raft_batch([(3, Message(7, 1, 2, 3,
                                                                        snapshot=snap))]))
    assert got.snapshot == snap


def test_unknown_flags_are_rejected() -> None:
    enc = bytearray(encode_raft_batch([(1, Message(1, 2, 3, 4))]))
    enc[ENVELOPE.size + 9] |= 0x80
    with pytest.raises(DecodeError, match="flags"):
        CODEC.decode(bytes(enc))


def test_bad_auto_leave_byte_is_rejected() -> None:
    enc = bytearray(encode_raft_batch([(1, Message(7, 1, 2, 3, snapshot=Snapshot()))]))
    enc[ENVELOPE.size + MESSAGE_HEADER.size + 16] = 2
    with pytest.raises(DecodeError, match="auto_leave"):
        CODEC.decode(bytes(enc))


def test_huge_counts_fail_before_allocating() -> None:
    # A message claiming 2**32-1 entries and a 4 GiB context in a tiny buffer.
    header = MESSAGE_HEADER.pack(1, 1, 0, 2, 1, 1, 0, 0, 0, 0, 0, 0xFFFFFFFF)
    with pytest.raises(DecodeError, match="entry columns"):
        CODEC.decode(ENVELOPE.pack(1, 1, 1) + header)
    header = MESSAGE_HEADER.pack(1, 1, 0, 2, 1, 1, 0, 0, 0, 0, 0xFFFFFFFF, 0)
    with pytest.raises(DecodeError, match="context"):
        CODEC.decode(ENVELOPE.pack(1, 1, 1) + header)
    with pytest.raises(DecodeError, match="raft batch"):
        CODEC.decode(ENVELOPE.pack(1, 1, 0xFFFFFFFF))


def test_snapshot_id_counts_are_bounded() -> None:
    enc = bytearray(encode_raft_batch([(1, Message(7, 1, 2, 3, snapshot=Snapshot()))]))
    off = ENVELOPE.size + MESSAGE_HEADER.size + 17
    enc[off : off + 4] = struct.pack("<I", 0xFFFFFFFF)
    with pytest.raises(DecodeError, match="voters"):
        CODEC.decode(bytes(enc))


def test_entry_payload_overrun_is_rejected() -> None:
    enc = bytearray(encode_raft_batch([(1, Message(1, 2, 1, 2, entries=(Entry(1, 1, 0, b"x"),)))]))
    lens_off = ENVELOPE.size + MESSAGE_HEADER.size + 8 + 8 + 1
    enc[lens_off : lens_off + 4] = struct.pack("<I", 2)
    with pytest.raises(DecodeError, match="entry data"):
        CODEC.decode(bytes(enc))


def test_out_of_range_fields_fail_at_encode() -> None:
    with pytest.raises((struct.error, OverflowError)):
        encode_raft_batch([(-1, Message(1, 2, 3, 4))])
    with pytest.raises(ValueError):
        encode_raft_batch([(1, Message(1, 2, 3, 4, entries=(Entry(1, 1, 256),)))])


def test_custom_constructors_are_used() -> None:
    built: list[str] = []

    def message(*fields: object) -> tuple[object, ...]:
        built.append("message")
        return fields

    def entry(*fields: object) -> tuple[object, ...]:
        built.append("entry")
        return fields

    codec = WireCodec(RaftTypes(message, entry, Snapshot, SnapshotMetadata, ConfState))
    [(_, m)] = codec.decode_raft_batch(
        encode_raft_batch([(1, Message(1, 2, 3, 4, entries=(Entry(1, 1),)))])
    )
    assert built == ["entry", "message"]
    assert m[6] == ((1, 1, 0, b""),)


def test_entries_of_any_shape_encode_like_namedtuples() -> None:
    # The zip fast path is for NamedTuples laid out like Entry; anything else
    # with the attributes (or a mixed tuple) goes through attribute access.
    @dataclass(frozen=True)
    class DataclassEntry:
        data: bytes
        type: int
        index: int
        term: int

    class OtherTuple(NamedTuple):
        data: bytes
        type: int
        index: int
        term: int

    want = (Entry(3, 1, 0, b"a"), Entry(3, 2, 1, b"bc"))
    for entries in (
        (DataclassEntry(b"a", 0, 1, 3), DataclassEntry(b"bc", 1, 2, 3)),
        (OtherTuple(b"a", 0, 1, 3), OtherTuple(b"bc", 1, 2, 3)),
        (Entry(3, 1, 0, b"a"), OtherTuple(b"bc", 1, 2, 3)),
    ):
        msg = Message(1, 2, 1, 3, entries=entries)  # type: ignore[arg-type]
        [(_, got)] = CODEC.decode_raft_batch(encode_raft_batch([(1, msg)]))
        assert got.entries == want
