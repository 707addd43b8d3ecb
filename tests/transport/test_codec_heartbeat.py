"""Coalesced heartbeats: packed columns, value checks, bounds."""

from __future__ import annotations

import struct
from array import array

import pytest

from transport.codec import MIRROR_TYPES, CoalescedHeartbeats, WireCodec, encode_heartbeats
from transport.codec_header import ENVELOPE, RecordKind
from transport.codec_heartbeat import ROW_SIZE
from transport.errors import DecodeError

CODEC = WireCodec(MIRROR_TYPES)


def make(n: int, response: bool = False) -> CoalescedHeartbeats:
    return CoalescedHeartbeats.build(
        range_ids=range(1000, 1000 + n), frm=[1] * n, to=[2] * n,
        terms=[i % 7 for i in range(n)], commits=range(n), flags=[i & 1 for i in range(n)],
        response=response,
    )


def test_ten_thousand_ranges_round_trip() -> None:
    hb = make(10_000)
    enc = encode_heartbeats(hb)
    assert len(enc) == ENVELOPE.size + 10_000 * ROW_SIZE
    got = CODEC.decode(enc)
    assert got == hb
    assert isinstance(got, CoalescedHeartbeats) and not got.response
    assert len(got) == 10_000


def test_response_kind_round_trips() -> None:
    enc = encode_heartbeats(make(3, response=True))
    assert enc[1] == RecordKind.HEARTBEAT_RESPONSES
    got = CODEC.decode(enc)
    assert isinstance(got, CoalescedHeartbeats) and got.response


def test_column_layout() -> None:
    enc = encode_heartbeats(CoalescedHeartbeats.build(
        range_ids=[5, 6], frm=[1, 1], to=[2, 3], terms=[9, 9], commits=[4, 0], flags=[1, 0]))
    assert enc[ENVELOPE.size :] == struct.pack("<10Q2B", 5, 6, 1, 1, 2, 3, 9, 9, 4, 0, 1, 0)


def test_empty_heartbeat() -> None:
    assert CODEC.decode(encode_heartbeats(make(0))) == make(0)


def test_mismatched_columns_are_refused() -> None:
    with pytest.raises(ValueError, match="length"):
        CoalescedHeartbeats.build(range_ids=[1, 2], frm=[1], to=[2], terms=[1], commits=[1])
    with pytest.raises(ValueError, match="array"):
        CoalescedHeartbeats(array("I"), array("Q"), array("Q"), array("Q"), array("Q"),
                            array("B"))


def test_claimed_row_count_is_bounded_by_the_buffer() -> None:
    with pytest.raises(DecodeError, match="coalesced heartbeat"):
        CODEC.decode(ENVELOPE.pack(1, RecordKind.HEARTBEATS, 0xFFFFFFFF))
    enc = encode_heartbeats(make(4))
    with pytest.raises(DecodeError):
        CODEC.decode(enc[:-1])
