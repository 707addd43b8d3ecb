"""Frame layout, incremental reading over arbitrary chunking, and every rejection path."""

from __future__ import annotations

import random
import struct

import pytest
from crc32c import crc32c

from transport.errors import FrameError
from transport.frame import (
    HEADER,
    FrameKind,
    FrameReader,
    encode_frame,
    frame_header,
    pack_data_body,
    split_data_body,
)


def data_frame(payloads: list[bytes]) -> bytes:
    body = pack_data_body(payloads)
    return frame_header(FrameKind.DATA, body) + body


def drain(reader: FrameReader) -> list[tuple[int, bytes]]:
    out = []
    while (frame := reader.next_frame()) is not None:
        out.append((frame.kind, bytes(frame.body)))
    return out


def test_layout() -> None:
    frame = encode_frame(FrameKind.HELLO, b"abc")
    length, kind, crc = HEADER.unpack_from(frame)
    assert (length, kind) == (3, FrameKind.HELLO)
    assert crc == crc32c(frame[:8] + b"abc")
    assert frame[5:8] == b"\0\0\0" and frame[12:] == b"abc"
    assert pack_data_body([b"x", b""]) == struct.pack("<I", 1) + b"x" + struct.pack("<I", 0)


def test_split_data_body() -> None:
    payloads = [b"one", b"", b"three" * 100]
    got = split_data_body(memoryview(pack_data_body(payloads)))
    assert [bytes(p) for p in got] == payloads
    with pytest.raises(FrameError, match="without payloads"):
        split_data_body(memoryview(b""))
    with pytest.raises(FrameError, match="overruns"):
        split_data_body(memoryview(struct.pack("<I", 5) + b"abc"))
    with pytest.raises(FrameError, match="truncated"):
        split_data_body(memoryview(pack_data_body([b"a"]) + b"\x01\x00"))


def test_any_chunking_yields_the_same_frames() -> None:
    rng = random.Random(7)
    frames = [data_frame([bytes([i]) * rng.randrange(0, 300) for _ in range(rng.randrange(1, 4))])
              for i in range(30)]
    stream = b"".join(frames)
    want = [(FrameKind.DATA, f[12:]) for f in frames]
    for trial in range(50):
        reader = FrameReader()
        got: list[tuple[int, bytes]] = []
        pos = 0
        while pos < len(stream):
            step = rng.choice([1, 2, 5, 11, 12, 13, 100, 1000])
            reader.feed(stream[pos : pos + step])
            pos += step
            got.extend(drain(reader))
        assert got == want, f"trial {trial}"
        assert reader.buffered == 0


def test_frame_inside_one_chunk_is_zero_copy() -> None:
    chunk = data_frame([b"payload"]) * 2
    reader = FrameReader()
    reader.feed(chunk)
    frame = reader.next_frame()
    assert frame is not None and frame.body.obj is chunk


def test_crc_mismatch() -> None:
    frame = bytearray(data_frame([b"hello"]))
    frame[-1] ^= 0x01
    reader = FrameReader()
    reader.feed(bytes(frame))
    with pytest.raises(FrameError, match="CRC") as info:
        reader.next_frame()
    assert info.value.expected_crc != info.value.got_crc


def test_header_corruption_is_caught_by_the_crc() -> None:
    # A flipped kind bit that still names a valid kind must not pass.
    frame = bytearray(encode_frame(FrameKind.HELLO, b"x"))
    frame[4] = FrameKind.DATA
    reader = FrameReader()
    reader.feed(bytes(frame))
    with pytest.raises(FrameError, match="CRC"):
        reader.next_frame()


@pytest.mark.parametrize(
    ("header", "match"),
    [
        (struct.pack("<IB3sI", 1, FrameKind.DATA, b"\0\0\1", 0), "reserved"),
        (struct.pack("<IB3xI", 1, 99, 0), "unknown frame kind"),
        (struct.pack("<IB3xI", 2**32 - 1, FrameKind.DATA, 0), "exceeds"),
    ],
)
def test_bad_headers_fail_before_the_body_arrives(header: bytes, match: str) -> None:
    reader = FrameReader(max_body=1 << 20)
    reader.feed(header)  # no body bytes at all: the header alone must be judged
    with pytest.raises(FrameError, match=match):
        reader.next_frame()


def test_partial_frames_wait() -> None:
    frame = data_frame([b"abc"])
    reader = FrameReader()
    reader.feed(frame[:5])
    assert reader.next_frame() is None
    reader.feed(frame[5:-1])
    assert reader.next_frame() is None
    reader.feed(frame[-1:])
    assert drain(reader) == [(FrameKind.DATA, frame[12:])]
