"""Reading segment files: header check, record scan, random record reads.

Shared by recovery (scan every record of every segment), the store's read
path (one record by offset when the cache misses) and ``multiraft logstore
check|dump``. Nothing here decides policy: a scan reports the first bad
record it meets and what follows it; ``recovery.py`` decides whether that
is a torn tail to cut or corruption to report.

A record is *valid* when its header lies within the file, its flags and type
are known, the whole frame fits, its CRC matches, its trailer repeats the
length and carries the magic, and its payload decompresses to ``raw_len``
bytes. Only valid records are ever decoded.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import zstandard
from crc32c import crc32c

from logstore.errors import Corruption
from logstore.segmented.format import (
    FLAG_ZSTD,
    FLAG_ZSTD_HEAD,
    FORMAT_VERSION,
    HEAD_LEN,
    KNOWN_FLAGS,
    RECORD_HEAD,
    RECORD_HEAD_CRC_SPAN,
    RECORD_OVERHEAD,
    RECORD_TRAILER,
    RTYPE_BATCH,
    SEGMENT_HEADER,
    SEGMENT_HEADER_CRC_SPAN,
    SEGMENT_MAGIC,
    TRAILER_MAGIC,
    parse_segment_name,
)


class BadRecord(NamedTuple):
    """The first record of a segment that is not valid, and why."""

    offset: int
    what: str
    expected: int = 0  # crc expected (stored), when the crc is what failed
    got: int = 0  # crc computed
    incomplete: bool = False  # the frame runs past end of file (or only zeros follow)


class Scan(NamedTuple):
    """The valid records of a segment, in order, and where they stop."""

    records: list[tuple[int, bytes]]  # (offset, decompressed payload)
    end: int  # offset just past the last valid record
    bad: BadRecord | None  # why the scan stopped before end of file, if it did


def list_segments(path: str) -> list[int]:
    """Sequence numbers of the segment files in ``path``, ascending."""
    seqs = [s for s in map(parse_segment_name, os.listdir(path)) if s is not None]
    seqs.sort()
    return seqs


def check_segment_header(buf: bytes | memoryview, seq: int, path: str) -> int:
    """The ``prev_size`` of segment ``seq``'s header; ``Corruption`` if it is not valid."""
    if len(buf) < SEGMENT_HEADER.size:
        raise Corruption("segment header truncated", path, 0)
    magic, version, flags, hlen, hseq, prev_size, reserved, crc = SEGMENT_HEADER.unpack_from(buf, 0)
    got = crc32c(bytes(buf[:SEGMENT_HEADER_CRC_SPAN]))
    if crc != got:
        raise Corruption("segment header crc mismatch", path, 0, crc, got)
    if magic != SEGMENT_MAGIC:
        raise Corruption(f"bad segment magic {magic!r}", path, 0)
    if version != FORMAT_VERSION or flags != 0 or hlen != SEGMENT_HEADER.size or reserved:
        raise Corruption(f"unsupported segment version {version} (flags {flags})", path, 0)
    if hseq != seq:
        raise Corruption(f"segment header says seq {hseq}, file name says {seq}", path, 0)
    return int(prev_size)


_DECOMPRESSOR = zstandard.ZstdDecompressor()


def _check_record(buf: memoryview, off: int) -> tuple[bytes, int] | BadRecord:
    """Verify the record at ``off``: ``(payload, end)`` or why it is bad."""
    size = len(buf)
    if off + RECORD_HEAD.size > size:
        return BadRecord(off, "record header truncated", incomplete=True)
    stored, raw, flags, rtype, reserved, crc = RECORD_HEAD.unpack_from(buf, off)
    end = off + RECORD_OVERHEAD + stored
    if end > size:
        return BadRecord(off, f"record of {stored} bytes runs past end of file", incomplete=True)
    pstart = off + RECORD_HEAD.size
    got = crc32c(buf[pstart : pstart + stored], crc32c(buf[off : off + RECORD_HEAD_CRC_SPAN]))
    if got != crc:
        return BadRecord(off, "record crc mismatch", crc, got)
    if flags & ~KNOWN_FLAGS or rtype != RTYPE_BATCH or reserved:
        return BadRecord(off, f"unknown record flags {flags:#x} / type {rtype}")
    tlen, tmagic = RECORD_TRAILER.unpack_from(buf, end - RECORD_TRAILER.size)
    if tlen != stored or tmagic != TRAILER_MAGIC:
        return BadRecord(off, "record trailer does not repeat its length")
    try:
        payload = _unpack(buf[pstart : pstart + stored], raw, flags)
    except (ValueError, zstandard.ZstdError) as exc:
        return BadRecord(off, f"payload does not decode: {exc}")
    if len(payload) != raw:
        return BadRecord(off, f"payload decodes to {len(payload)} bytes, not {raw}")
    return payload, end


def _unpack(stored: memoryview, raw: int, flags: int) -> bytes:
    """The payload of a CRC-valid record, per its compression flags."""
    if flags == 0:
        return bytes(stored)
    if flags == FLAG_ZSTD:
        return _DECOMPRESSOR.decompress(bytes(stored), max_output_size=raw)
    if flags != FLAG_ZSTD_HEAD or len(stored) < HEAD_LEN.size:
        raise ValueError(f"bad compression flags {flags:#x}")
    (n,) = HEAD_LEN.unpack_from(stored, 0)
    if HEAD_LEN.size + n > len(stored):
        raise ValueError("compressed head runs past the payload")
    rest = stored[HEAD_LEN.size + n :]
    cols = _DECOMPRESSOR.decompress(
        bytes(stored[HEAD_LEN.size : HEAD_LEN.size + n]), max_output_size=raw
    )
    return cols + rest


def scan_segment(buf: bytes, start: int) -> Scan:
    """Verify records from ``start`` until end of file or the first bad one."""
    records: list[tuple[int, bytes]] = []
    off = start
    size = len(buf)
    mv = memoryview(buf)
    while off < size:
        res = _check_record(mv, off)
        if isinstance(res, BadRecord):
            if not res.incomplete and buf.count(0, off) == size - off:
                res = res._replace(what=res.what + " (only zeros follow)", incomplete=True)
            return Scan(records, off, res)
        records.append((off, res[0]))
        off = res[1]
    return Scan(records, off, None)


def valid_record_after(buf: bytes, off: int) -> int | None:
    """Offset of some valid record starting after ``off``, ``None`` if there is none.

    Finds candidates through the trailer magic (a C-level search), so it
    costs a few checks per candidate rather than one per byte.
    """
    mv = memoryview(buf)
    pos = buf.find(TRAILER_MAGIC, off + RECORD_HEAD.size + RECORD_TRAILER.size - 4)
    while pos >= 0:
        stored = int.from_bytes(buf[pos - 4 : pos], "little")
        start = pos + 4 - RECORD_OVERHEAD - stored
        if start > off and not isinstance(_check_record(mv, start), BadRecord):
            return start
        pos = buf.find(TRAILER_MAGIC, pos + 1)
    return None


def read_record(fd: int, offset: int, path: str) -> bytes:
    """Read and verify the record at ``offset`` of an open segment; its payload.

    Used for cache misses: the record was valid when it was written or
    recovered, so anything wrong now is ``Corruption`` (never returned as data).
    """
    head = os.pread(fd, RECORD_HEAD.size, offset)
    if len(head) < RECORD_HEAD.size:
        raise Corruption("record header truncated", path, offset)
    stored = RECORD_HEAD.unpack_from(head, 0)[0]
    frame = head + os.pread(fd, stored + RECORD_TRAILER.size, offset + RECORD_HEAD.size)
    res = _check_record(memoryview(frame), 0)
    if isinstance(res, BadRecord):
        raise Corruption(res.what, path, offset, res.expected, res.got)
    return res[0]
