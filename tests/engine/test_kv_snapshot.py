"""The KV snapshot image format: round trips in bounded chunks, any re-cutting
of the stream, and refusal of every kind of damage."""

from __future__ import annotations

import random
import struct

import crc32c
import msgpack
import pytest

from engine.kv_snapshot import MAGIC, Image, SnapshotCorrupt, read_image, write_image


def image(n: int, seed: int = 0) -> Image:
    rng = random.Random(seed)
    keys = sorted({rng.randbytes(rng.randrange(1, 10)) for _ in range(n)})
    values = [rng.randbytes(rng.randrange(0, 300)) for _ in keys]
    return Image(b"", b"", keys, values)


def stream(img: Image, chunk_bytes: int = 256) -> bytes:
    return b"".join(write_image(img.start, img.end, img.keys, img.values, chunk_bytes))


def test_round_trip_in_bounded_chunks() -> None:
    img = image(500)
    chunks = list(write_image(b"", b"", img.keys, img.values, 256))
    assert len(chunks) > 100
    assert all(0 < len(c) <= 256 for c in chunks)
    assert read_image(chunks) == img


def test_a_record_larger_than_a_chunk_still_streams_in_bounded_chunks() -> None:
    chunks = list(write_image(b"a", b"c", [b"b"], [b"x" * 10_000], 100))
    assert all(len(c) <= 100 for c in chunks)
    assert read_image(chunks) == Image(b"a", b"c", [b"b"], [b"x" * 10_000])


def test_empty_image_and_bounds() -> None:
    data = stream(Image(b"k", b"q", [], []))
    assert read_image([data]) == Image(b"k", b"q", [], [])


def test_any_re_cutting_of_the_stream_reads_the_same() -> None:
    img = image(40, seed=1)
    data = stream(img)
    rng = random.Random(2)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randrange(1, 30)))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        assert read_image(iter(pieces)) == img
    assert read_image([bytes([b]) for b in data]) == img
    assert read_image([b"", data, b""]) == img


def test_every_truncation_and_every_bit_flip_is_refused() -> None:
    data = stream(image(5, seed=3))
    for cut in range(len(data)):
        with pytest.raises(SnapshotCorrupt):
            read_image([data[:cut]])
    rng = random.Random(4)
    for pos in range(len(data)):
        bad = bytearray(data)
        bad[pos] ^= 1 << rng.randrange(8)
        with pytest.raises(SnapshotCorrupt):
            read_image([bytes(bad)])
    with pytest.raises(SnapshotCorrupt, match="trailing"):
        read_image([data, b"\x00"])


def _sealed(body: bytes) -> bytes:
    """``body`` plus the end marker and a valid CRC: damage the CRC cannot catch."""
    body += struct.pack("<I", 0)
    return body + struct.pack("<I", crc32c.crc32c(body))


def _header(start: bytes = b"", end: bytes = b"", count: int = 1) -> bytes:
    return (MAGIC + b"\x01" + struct.pack("<I", len(start)) + start
            + struct.pack("<I", len(end)) + end + struct.pack("<Q", count))


def _block(items: object) -> bytes:
    raw = msgpack.packb(items, use_bin_type=True)
    return struct.pack("<I", len(raw)) + raw


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (_sealed(_header(count=2) + _block([b"b", b"1", b"a", b"2"])), "strictly increasing"),
        (_sealed(_header(count=2) + _block([b"a", b"1", b"a", b"2"])), "strictly increasing"),
        (_sealed(_header(b"m", b"", 1) + _block([b"a", b"1"])), "outside"),
        (_sealed(_header(b"", b"m", 1) + _block([b"m", b"1"])), "outside"),
        (_sealed(_header(count=1) + _block(["a", b"1"])), "other than bytes"),
        (_sealed(_header(count=1) + _block({b"a": b"1"})), "list of key/value pairs"),
        (_sealed(_header(count=1) + _block([b"a"])), "list of key/value pairs"),
        (_sealed(_header(count=1) + _block([])), "list of key/value pairs"),
        (_sealed(_header(count=1) + struct.pack("<I", 2) + b"\xc1\xc1"), "undecodable"),
        (_sealed(_header(count=2) + _block([b"a", b"1"])), "announced 2"),
        (_sealed(_header(count=0) + _block([b"a", b"1"])), "more than the 0"),
        (_sealed(_header(b"q", b"b", 0)), "empty key range"),
        (_sealed(b"NOTASNAP" + _header()[8:]), "bad magic"),
        (_sealed(MAGIC + b"\x02" + _header()[9:]), "version 2"),
    ],
)
def test_structural_damage_under_a_valid_checksum_is_refused(data: bytes, match: str) -> None:
    with pytest.raises(SnapshotCorrupt, match=match):
        read_image([data])


def test_a_hostile_length_does_not_allocate_beyond_the_stream() -> None:
    data = _header(count=1) + struct.pack("<I", 0xFFFFFFFF) + b"x" * 10
    with pytest.raises(SnapshotCorrupt, match="truncated"):
        read_image([data])
