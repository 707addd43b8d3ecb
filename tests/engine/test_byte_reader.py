"""engine.byte_reader: every move checks before it slices and raises the format's error."""

from __future__ import annotations

import struct

import pytest

from engine.byte_reader import ByteReader


class FormatError(ValueError):
    pass


class Reader(ByteReader):
    __slots__ = ()
    error = FormatError


def test_moves_and_their_refusals() -> None:
    data = struct.pack("<HI", 7, 3) + b"abc" + struct.pack("<I", 2) + b"xy"
    r = Reader(data)
    assert r.unpack(struct.Struct("<H")) == (7,)
    assert r.blob() == b"abc"
    assert r.count("items", 1) == 2
    assert r.take(2) == b"xy"
    r.finish()
    with pytest.raises(FormatError, match="truncated: 1 bytes expected, 0 left"):
        r.take(1)


def test_hostile_counts_and_trailing_bytes() -> None:
    with pytest.raises(FormatError, match="items 4294967295 exceeds the remaining 0"):
        Reader(struct.pack("<I", 0xFFFFFFFF)).count("items", 1)
    with pytest.raises(FormatError, match="items 9 exceeds the limit of 8"):
        Reader(struct.pack("<I", 9) + bytes(100)).count("items", 1, high=8)
    r = Reader(b"\x00\x01", pos=1)
    with pytest.raises(FormatError, match="1 trailing bytes"):
        r.finish()
    with pytest.raises(FormatError, match="truncated"):
        Reader(struct.pack("<I", 5) + b"abc").blob()
