"""Column helpers: packing, bounds checks, fast row construction."""

from __future__ import annotations

from array import array
from typing import NamedTuple

import pytest

from transport.codec_columns import (
    U8,
    U32,
    U64,
    as_byte_view,
    build_rows,
    pack_column,
    read_blobs,
    read_bytes,
    read_column,
)
from transport.errors import DecodeError


class Row(NamedTuple):
    a: int
    b: bytes


class CheckedRow(Row):
    def __new__(cls, a: int, b: bytes) -> CheckedRow:
        if a < 0:
            raise ValueError("negative")
        return super().__new__(cls, a, b)


def test_pack_is_little_endian() -> None:
    assert bytes(pack_column(U64, [1])) == b"\x01" + b"\x00" * 7
    assert bytes(pack_column(U32, array(U32, [258]))) == b"\x02\x01\x00\x00"
    assert bytes(pack_column(U8, [255])) == b"\xff"
    assert bytes(pack_column(U64, array(U32, [1]))) == b"\x01" + b"\x00" * 7  # widened
    with pytest.raises(OverflowError):
        pack_column(U64, [-1])


def test_read_column_checks_bounds_first() -> None:
    mv = as_byte_view(pack_column(U64, [7, 8]))
    col, end = read_column(mv, 0, U64, 2, "x")
    assert list(col) == [7, 8] and end == 16
    with pytest.raises(DecodeError, match="x: column of 3 items"):
        read_column(mv, 0, U64, 3, "x")


def test_read_blobs_and_bytes() -> None:
    mv = as_byte_view(b"abcdef")
    blobs, end = read_blobs(mv, 1, [2, 0, 3], "p")
    assert blobs == [b"bc", b"", b"def"] and end == 6
    assert read_blobs(mv, 0, [], "p") == ([], 0)
    with pytest.raises(DecodeError):
        read_blobs(mv, 0, [4, 3], "p")
    assert read_bytes(mv, 2, 0, "q") == (b"", 2)
    with pytest.raises(DecodeError):
        read_bytes(mv, 5, 2, "q")


def test_build_rows_fast_path_and_subclass_path() -> None:
    assert list(build_rows(Row, [1, 2], [b"x", b"y"])) == [Row(1, b"x"), Row(2, b"y")]
    assert all(type(r) is Row for r in build_rows(Row, [1], [b""]))
    # A subclass may validate in __new__: it must not be bypassed.
    with pytest.raises(ValueError, match="negative"):
        list(build_rows(CheckedRow, [-1], [b""]))
    assert list(build_rows(lambda a, b: (b, a), [1], [b"z"])) == [(b"z", 1)]


def test_byte_view_of_non_byte_formats() -> None:
    mv = as_byte_view(memoryview(array(U32, [1])))
    assert mv.format == "B" and len(mv) == 4
