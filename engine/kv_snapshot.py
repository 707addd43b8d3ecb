"""The KV state machine's snapshot image: a checksummed byte stream in
bounded chunks.

A snapshot travels from a leader to a follower that fell behind the
compacted log (and to disk when the store snapshots a range), so it must
stream with bounded memory, survive being re-cut by transports, and be
rejected as a whole when a single bit is wrong.

Byte layout (version 1, little-endian)
--------------------------------------
::

    header  := magic "MRKVSNAP" | version:u8 (=1) | start:blob | end:blob | count:u64
    block   := length:u32 (> 0) | msgpack array [key1, value1, key2, value2, ...]
                                  (bin items only, at least one pair)
    trailer := 0:u32 | crc32c:u32           (CRC32C of every byte before it)
    stream  := header | block* | trailer    (keys strictly increasing across
                                             blocks, all in [start, end))
    blob    := length:u32 | bytes[length]

The stream is cut into chunks of at most ``chunk_bytes`` bytes; chunk
boundaries carry no meaning, and the reader accepts the stream re-cut in
any way. A block holds records up to about ``chunk_bytes`` of payload, so
the reader never buffers much more than one block (or one large record).

Why msgpack blocks: ``loadtest/bench_kv_codec.py`` measured the record
payload three ways on the same data: a per-record ``struct`` parse loop,
a per-block table of lengths parsed with one ``unpack`` plus slicing, and a
msgpack array per block. msgpack decodes several times faster than either
(its C decoder builds the bytes objects), and validation is one C-speed
type check over the array. Untrusted blocks are safe to hand to msgpack:
its lengths are bounded by the block's own size, and every failure becomes
``SnapshotCorrupt``.

Rules
-----
- ``read_image`` returns a complete, validated image or raises
  ``SnapshotCorrupt``; the caller swaps state only after it returned, so a
  bad stream never leaves a half-restored replica.
- Everything before the trailer is covered by the CRC, including the header,
  so a flipped bit anywhere is caught even where the structure still parses.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import Final, NamedTuple

import crc32c
import msgpack

MAGIC: Final = b"MRKVSNAP"
VERSION: Final = 1

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class SnapshotCorrupt(ValueError):
    """A snapshot stream that is truncated, malformed or fails its checksum."""


class Image(NamedTuple):
    """A decoded snapshot: the range bounds and the sorted records."""

    start: bytes
    end: bytes
    keys: list[bytes]
    values: list[bytes]


def write_image(
    start: bytes, end: bytes, keys: list[bytes], values: list[bytes], chunk_bytes: int
) -> Iterator[bytes]:
    """Encode an image lazily as chunks of at most ``chunk_bytes`` bytes.
    ``keys`` must be sorted and match ``values`` one to one; the lists must not
    change while the iterator is consumed (callers pass private copies)."""
    assert len(keys) == len(values)
    buf = bytearray(MAGIC)
    buf.append(VERSION)
    buf += _U32.pack(len(start)) + start + _U32.pack(len(end)) + end + _U64.pack(len(keys))
    crc = 0
    i, n = 0, len(keys)
    while i < n:
        j, payload = i, 0
        while j < n and payload < chunk_bytes:
            payload += len(keys[j]) + len(values[j])
            j += 1
        flat: list[bytes] = [b""] * (2 * (j - i))
        flat[0::2] = keys[i:j]
        flat[1::2] = values[i:j]
        block: bytes = msgpack.packb(flat, use_bin_type=True)
        buf += _U32.pack(len(block))
        buf += block
        i = j
        if len(buf) >= chunk_bytes:
            for chunk in _take_full_chunks(buf, chunk_bytes):
                crc = crc32c.crc32c(chunk, crc)
                yield chunk
    buf += _U32.pack(0)
    # The trailer's CRC covers every byte before it, so fold in the tail first.
    buf += _U32.pack(crc32c.crc32c(buf, crc))
    yield from _take_full_chunks(buf, chunk_bytes)
    if buf:
        yield bytes(buf)


def read_image(chunks: Iterable[bytes]) -> Image:
    """Decode and validate a whole image, or raise ``SnapshotCorrupt``."""
    r = _ChunkReader(chunks)
    if r.read(len(MAGIC)) != MAGIC:
        raise SnapshotCorrupt("not a KV snapshot (bad magic)")
    version = r.read(1)[0]
    if version != VERSION:
        raise SnapshotCorrupt(f"unsupported KV snapshot version {version}")
    start = r.blob()
    end = r.blob()
    if end and end <= start:
        raise SnapshotCorrupt(f"empty key range [{start!r}, {end!r})")
    (count,) = _U64.unpack(r.read(8))
    keys: list[bytes] = []
    values: list[bytes] = []
    while True:
        (length,) = _U32.unpack(r.read(4))
        if length == 0:
            break
        flat = _decode_block(r.read(length))
        keys += flat[0::2]
        values += flat[1::2]
        if len(keys) > count:
            raise SnapshotCorrupt(f"more than the {count} records the header announced")
    expected = r.digest()
    (stored,) = _U32.unpack(r.read(4))
    if stored != expected:
        raise SnapshotCorrupt(f"checksum mismatch: stored {stored:#010x}, got {expected:#010x}")
    r.expect_end()
    if len(keys) != count:
        raise SnapshotCorrupt(f"{len(keys)} records, the header announced {count}")
    # Strictly increasing keys (checked at C speed: sorting sorted input is
    # linear), so the first and the last key bound them all.
    if len(set(keys)) != len(keys) or keys != sorted(keys):
        raise SnapshotCorrupt("keys not strictly increasing")
    for k in keys[:1] + keys[-1:]:
        if k < start or (end and k >= end):
            raise SnapshotCorrupt(f"key {k!r} outside [{start!r}, {end!r})")
    return Image(start, end, keys, values)


def _decode_block(block: bytes) -> list[bytes]:
    try:
        flat = msgpack.unpackb(block, use_list=True)
    except Exception as e:  # msgpack raises many unrelated types for bad input
        raise SnapshotCorrupt(f"undecodable record block: {type(e).__name__}: {e}") from None
    if type(flat) is not list or not flat or len(flat) % 2:
        raise SnapshotCorrupt("a record block must be a non-empty list of key/value pairs")
    if not all(type(x) is bytes for x in flat):
        raise SnapshotCorrupt("a record block holds something other than bytes")
    return flat


def _take_full_chunks(buf: bytearray, limit: int) -> list[bytes]:
    """Remove and return the full ``limit``-sized chunks at the front of ``buf``."""
    n_full = len(buf) // limit
    chunks = [bytes(buf[i * limit : (i + 1) * limit]) for i in range(n_full)]
    del buf[: n_full * limit]
    return chunks


class _ChunkReader:
    """Reads a byte stream that arrives as arbitrarily cut chunks, keeping a
    running CRC32C of the bytes consumed. Chunks are joined only when a read
    needs more bytes than are buffered, and then all at once, so tiny chunks
    or a huge block never make it quadratic."""

    __slots__ = ("_buf", "_crc", "_crc_pos", "_it", "_pos")

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._buf = b""
        # Invariant: _crc_pos <= _pos <= len(_buf); _crc covers every consumed
        # byte before _buf[_crc_pos] (including those already discarded).
        self._pos = 0
        self._crc_pos = 0
        self._crc = 0

    def read(self, n: int) -> bytes:
        if len(self._buf) - self._pos < n:
            self._fill(n)
        out = self._buf[self._pos : self._pos + n]
        self._pos += n
        return out

    def blob(self) -> bytes:
        (n,) = _U32.unpack(self.read(4))
        return self.read(n)

    def digest(self) -> int:
        """CRC32C of every byte consumed so far."""
        self._crc = crc32c.crc32c(memoryview(self._buf)[self._crc_pos : self._pos], self._crc)
        self._crc_pos = self._pos
        return self._crc

    def expect_end(self) -> None:
        if len(self._buf) > self._pos or any(self._it):
            raise SnapshotCorrupt("trailing bytes after the snapshot trailer")

    def _fill(self, need: int) -> None:
        """Make at least ``need`` unconsumed bytes available, or raise."""
        self.digest()
        parts = [self._buf[self._pos :]]
        have = len(parts[0])
        while have < need:
            chunk = next(self._it, None)
            if chunk is None:
                raise SnapshotCorrupt(f"truncated: stream ended {need - have} bytes short")
            parts.append(bytes(chunk))
            have += len(chunk)
        self._buf = b"".join(parts)
        self._pos = self._crc_pos = 0
