"""On-disk format of the segmented log store (version 1).

Everything is little-endian. A store is a directory of segment files named
``%020d.seg`` after their sequence number; sequence numbers increase by one
per new segment and only a prefix of them is ever deleted (by purge).

Segment file
------------
::

    offset size  field
    0      8     magic            b"MRSEGLOG"
    8      2     version          1 (FORMAT_VERSION)
    10     2     flags            0 (reserved, must be 0 in version 1)
    12     4     header_len       40 (lets a later version grow the header)
    16     8     seq              the sequence number, equal to the file name's
    24     8     prev_size        size of segment seq-1 when it was sealed (0 for
                                  the first segment of a store)
    32     4     reserved         0
    36     4     crc32c           over bytes [0, 36)
    40     ...   records, back to back, up to end of file

``prev_size`` is how a sealed segment that lost whole records at its end
(cut exactly at a record boundary, so every remaining record is valid) is
still detected: recovery compares it with the previous file's size.

Record (one per write batch: group commit)
------------------------------------------
::

    offset  size  field
    0       4     stored_len   payload bytes as stored (after compression)
    4       4     raw_len      payload bytes once decompressed (== stored_len if raw)
    8       1     flags        bit 0: the payload is one zstd frame;
                                 bit 1: only the payload's head (everything
                                 before the blob) is compressed: stored is
                                 u32 n, then n bytes of zstd frame, then the
                                 blob raw; other bits must be 0
    9       1     rtype        1 (RTYPE_BATCH); other values reserved
    10      2     reserved     0
    12      4     crc32c       over bytes [0, 12) of this header, then the stored payload
    16      n     payload      stored_len bytes
    16+n    4     stored_len   again: the redundant trailing length (ZODB-style)
    20+n    4     trailer      b"MRec" (TRAILER_MAGIC)

The trailer is what tells a torn tail from damage in the middle: scanning the
bytes after a bad record for ``TRAILER_MAGIC`` and checking the record it
closes finds any intact record that follows, so recovery knows whether the
bad bytes are the last thing in the file (a write the crash cut short) or
sit in front of data that was written after them (corruption).

Batch payload (after decompression)
-----------------------------------
Columnar, so that encoding and decoding cost a few C-level calls per batch
rather than Python work per entry::

    0      4            n_ops
    4      4            n_entries
    8      4            n_args
    12     4            blob_len
    16     n_ops        kinds      one byte per op (OP_* below)
    ...    8*n_ops      range_ids  u64 per op
    ...    8*n_args     args       u64s, a fixed number per op kind, op order
    ...    8*n_entries  terms      u64 per entry (entries of all APPENDs, op order)
    ...    n_entries    types      u8 per entry
    ...    4*n_entries  lengths    u32 per entry (data length)
    ...    blob_len     blob       entry data back to back, then snapshot data
                                   of the SNAPSHOT_META ops in op order

Op kinds and their args. Every op is *resolved*: replaying it needs no
decision that depends on state an earlier (possibly purged) segment held.

- ``OP_APPEND`` (first_index, count): drop entries ``>= first_index``, then
  append the next ``count`` entries of the columns (indices first_index...).
- ``OP_HARD_STATE`` (term, vote, commit).
- ``OP_SNAPSHOT_META`` (index, term, data_len): record the snapshot's
  metadata only; its effect on the log is the COMPACT/RESET op after it.
- ``OP_COMPACT`` (index, term): drop entries ``<= index``; term(index) = term.
- ``OP_RESET`` (index, term): drop every entry; the log is empty after
  (index, term).
- ``OP_REMOVE`` (): forget the range.
"""

from __future__ import annotations

import struct
import sys
from array import array
from typing import Final, NamedTuple

import zstandard
from crc32c import crc32c

SEGMENT_MAGIC: Final = b"MRSEGLOG"
FORMAT_VERSION: Final = 1
SEGMENT_SUFFIX: Final = ".seg"
TORN_SUFFIX: Final = ".torn"

SEGMENT_HEADER: Final = struct.Struct("<8sHHIQQII")
SEGMENT_HEADER_CRC_SPAN: Final = 36
assert SEGMENT_HEADER.size == 40

RECORD_HEAD: Final = struct.Struct("<IIBBHI")
RECORD_HEAD_CRC_SPAN: Final = 12
assert RECORD_HEAD.size == 16
RECORD_TRAILER: Final = struct.Struct("<I4s")
assert RECORD_TRAILER.size == 8
TRAILER_MAGIC: Final = b"MRec"
RECORD_OVERHEAD: Final = RECORD_HEAD.size + RECORD_TRAILER.size

RTYPE_BATCH: Final = 1
FLAG_ZSTD: Final = 0x01
FLAG_ZSTD_HEAD: Final = 0x02
KNOWN_FLAGS: Final = FLAG_ZSTD | FLAG_ZSTD_HEAD
HEAD_LEN: Final = struct.Struct("<I")
#: Bytes of the blob compressed to decide whether it is worth compressing.
BLOB_PROBE: Final = 4096

#: The largest payload a record can frame (stored_len/raw_len are u32).
MAX_PAYLOAD: Final = (1 << 32) - 1

PAYLOAD_HEAD: Final = struct.Struct("<IIII")
assert PAYLOAD_HEAD.size == 16

OP_APPEND: Final = 1
OP_HARD_STATE: Final = 2
OP_SNAPSHOT_META: Final = 3
OP_COMPACT: Final = 4
OP_RESET: Final = 5
OP_REMOVE: Final = 6

#: Number of u64 args each op kind carries (index = kind).
OP_ARGS: Final = (0, 2, 3, 3, 2, 2, 0)
OP_NAMES: Final = ("?", "append", "hard_state", "snapshot_meta", "compact", "reset", "remove")

# The columns are written with ``array`` (native order) for speed; a
# big-endian host byte-swaps them (see ``le_bytes``/``le_array``).
assert array("Q").itemsize == 8 and array("I").itemsize == 4
_BIG_ENDIAN: Final = sys.byteorder == "big"


def segment_name(seq: int) -> str:
    """File name of segment ``seq`` (fixed width so names sort like numbers)."""
    return f"{seq:020d}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    """Sequence number of a segment file name, ``None`` for any other file."""
    stem = name[: -len(SEGMENT_SUFFIX)]
    if len(name) == 20 + len(SEGMENT_SUFFIX) and name.endswith(SEGMENT_SUFFIX) and stem.isdigit():
        return int(stem)
    return None


def pack_segment_header(seq: int, prev_size: int) -> bytes:
    """The header of segment ``seq`` whose predecessor was sealed at ``prev_size`` bytes."""
    fields = (SEGMENT_MAGIC, FORMAT_VERSION, 0, SEGMENT_HEADER.size, seq, prev_size, 0)
    value = crc32c(SEGMENT_HEADER.pack(*fields, 0)[:SEGMENT_HEADER_CRC_SPAN])
    return SEGMENT_HEADER.pack(*fields, value)


def le_bytes(col: array[int]) -> bytes:
    """A column's bytes in little-endian order."""
    if _BIG_ENDIAN:
        col = array(col.typecode, col)
        col.byteswap()
    return col.tobytes()


def le_array(typecode: str, data: bytes | memoryview) -> array[int]:
    """A column decoded from little-endian bytes."""
    col = array(typecode)
    col.frombytes(data)
    if _BIG_ENDIAN:
        col.byteswap()
    return col


class Columns(NamedTuple):
    """A decoded batch payload (see the layout above).

    ``blob`` holds entry data then snapshot data; ``lengths`` the entry data
    lengths; the snapshot data lengths are in the SNAPSHOT_META args.
    """

    kinds: bytes
    range_ids: array[int]
    args: array[int]
    terms: array[int]
    types: bytes
    lengths: array[int]
    blob: bytes


def payload_size(n_ops: int, n_entries: int, n_args: int, blob_len: int) -> int:
    """Exact size of a payload with these counts (checked on decode)."""
    return PAYLOAD_HEAD.size + 9 * n_ops + 8 * n_args + 13 * n_entries + blob_len


def frame_record(
    head: bytes,
    blob: bytes,
    compressor: zstandard.ZstdCompressor | None,
    threshold: int,
) -> list[bytes]:
    """Frame the payload ``head + blob`` as buffers to write in order (record
    header, stored payload in one or more parts, trailer), compressed where
    that makes it smaller; ``blob`` is never copied.

    Entry data is often incompressible (already compressed, encrypted,
    random); compressing it costs CPU on every write and every recovery for
    nothing. A probe of the blob's first ``BLOB_PROBE`` bytes decides: if it
    does not shrink by a tenth, only ``head`` (the columns, which always
    compress well) is compressed.
    """
    raw_len = len(head) + len(blob)
    if raw_len > MAX_PAYLOAD:
        raise ValueError(f"batch payload of {raw_len} bytes exceeds the record limit")
    stored, flags = [head, blob], 0
    if compressor is not None and raw_len >= threshold:
        probe = blob[:BLOB_PROBE]
        if len(blob) >= BLOB_PROBE and len(compressor.compress(probe)) * 10 > len(probe) * 9:
            packed = compressor.compress(head)
            if HEAD_LEN.size + len(packed) < len(head):
                stored, flags = [HEAD_LEN.pack(len(packed)), packed, blob], FLAG_ZSTD_HEAD
        else:
            cobj = compressor.compressobj(size=raw_len)
            packed = b"".join((cobj.compress(head), cobj.compress(blob), cobj.flush()))
            if len(packed) < raw_len:
                stored, flags = [packed], FLAG_ZSTD
    stored_len = sum(map(len, stored))
    rec_head = RECORD_HEAD.pack(stored_len, raw_len, flags, RTYPE_BATCH, 0, 0)
    crc = crc32c(rec_head[:RECORD_HEAD_CRC_SPAN])
    for part in stored:
        crc = crc32c(part, crc)
    rec_head = RECORD_HEAD.pack(stored_len, raw_len, flags, RTYPE_BATCH, 0, crc)
    return [rec_head, *stored, RECORD_TRAILER.pack(stored_len, TRAILER_MAGIC)]
