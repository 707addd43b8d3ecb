"""The on-disk format: constants, segment header, record framing, batch payload."""

from __future__ import annotations

import os
import struct

import pytest
import zstandard
from crc32c import crc32c

from logstore.errors import Corruption
from logstore.protocol import HardState, LogEntry, SnapshotMeta
from logstore.rules import Append, Compact, Remove, SetHardState, Snapshot
from logstore.segmented import format as fmt
from logstore.segmented.batch import (
    PayloadError,
    Reset,
    SetSnapshotMeta,
    StoredEntries,
    assemble_payload,
    decode_payload,
    encode_batch,
)
from logstore.segmented.reader import check_segment_header, scan_segment


def test_layout_sizes_match_the_documented_layout() -> None:
    assert fmt.SEGMENT_HEADER.size == 40 and fmt.SEGMENT_HEADER_CRC_SPAN == 36
    assert fmt.RECORD_HEAD.size == 16 and fmt.RECORD_TRAILER.size == 8
    assert fmt.RECORD_OVERHEAD == 24 and fmt.PAYLOAD_HEAD.size == 16
    assert len(fmt.OP_ARGS) == len(fmt.OP_NAMES) == fmt.OP_REMOVE + 1


def test_segment_names() -> None:
    assert fmt.segment_name(42) == "00000000000000000042.seg"
    assert fmt.parse_segment_name(fmt.segment_name(42)) == 42
    for other in ("LOCK", "00000000000000000042.seg.torn", "0042.seg", "0000000000000000004x.seg"):
        assert fmt.parse_segment_name(other) is None


def test_segment_header_round_trip_and_checks() -> None:
    head = fmt.pack_segment_header(7, 12345)
    assert head[:8] == fmt.SEGMENT_MAGIC
    assert check_segment_header(head, 7, "p") == 12345
    with pytest.raises(Corruption, match="file name says"):
        check_segment_header(head, 8, "p")
    for i in range(len(head)):
        bad = bytearray(head)
        bad[i] ^= 0x01
        with pytest.raises(Corruption):
            check_segment_header(bytes(bad), 7, "p")
    with pytest.raises(Corruption, match="truncated"):
        check_segment_header(head[:39], 7, "p")


def _frame(
    head: bytes, blob: bytes = b"", comp: zstandard.ZstdCompressor | None = None, threshold: int = 0
) -> tuple[bytes, bytes, bytes]:
    """``(record header, stored payload, trailer)`` of one framed record."""
    parts = fmt.frame_record(head, blob, comp, threshold)
    return parts[0], b"".join(parts[1:-1]), parts[-1]


def _segment(*payloads: bytes, threshold: int = 1 << 30) -> bytes:
    comp = zstandard.ZstdCompressor(level=1)
    parts = [fmt.pack_segment_header(1, 0)]
    for p in payloads:
        parts += fmt.frame_record(p, b"", comp, threshold)
    return b"".join(parts)


def test_record_frame_fields_and_crc() -> None:
    payload = os.urandom(100)
    head, stored, trailer = _frame(payload[:30], payload[30:])
    stored_len, raw_len, flags, rtype, reserved, crc = fmt.RECORD_HEAD.unpack(head)
    assert (stored_len, raw_len, flags, rtype, reserved) == (100, 100, 0, fmt.RTYPE_BATCH, 0)
    assert stored == payload and crc == crc32c(payload, crc32c(head[:12]))
    assert trailer == struct.pack("<I", 100) + fmt.TRAILER_MAGIC


def test_zstd_only_when_it_helps() -> None:
    comp = zstandard.ZstdCompressor(level=1)
    compressible = b"abc" * 1000
    head, stored, _ = _frame(compressible[:100], compressible[100:], comp, 512)
    assert fmt.RECORD_HEAD.unpack(head)[2] == fmt.FLAG_ZSTD and len(stored) < 3000
    head, stored, _ = _frame(os.urandom(3000), b"", comp, 512)
    assert fmt.RECORD_HEAD.unpack(head)[2] == 0 and len(stored) == 3000
    head, _, _ = _frame(compressible[:500], b"", comp, 512)  # under the threshold
    assert fmt.RECORD_HEAD.unpack(head)[2] == 0
    scan = scan_segment(_segment(compressible, os.urandom(50), threshold=512), 40)
    assert next(p for _, p in scan.records) == compressible and scan.bad is None


def test_incompressible_blob_is_stored_raw_behind_a_compressed_head() -> None:
    comp = zstandard.ZstdCompressor(level=1)
    head_part, blob = bytes(2000), os.urandom(20000)
    head, stored, trailer = _frame(head_part, blob, comp, 512)
    assert fmt.RECORD_HEAD.unpack(head)[2] == fmt.FLAG_ZSTD_HEAD
    assert stored.endswith(blob) and len(stored) < len(head_part) + len(blob) - 1500
    seg = b"".join((fmt.pack_segment_header(1, 0), head, stored, trailer))
    scan = scan_segment(seg, 40)
    assert scan.records == [(40, head_part + blob)] and scan.bad is None
    # a compressible blob is compressed with the rest
    head, stored, _ = _frame(bytes(5000), bytes(25000), comp, 512)
    assert fmt.RECORD_HEAD.unpack(head)[2] == fmt.FLAG_ZSTD and len(stored) < 1000
    scan = scan_segment(_segment(bytes(30000), threshold=512), 40)
    assert scan.records == [(40, bytes(30000))]


def test_scan_stops_at_the_first_bad_record() -> None:
    seg = bytearray(_segment(b"one" * 10, b"two" * 10, b"three" * 10))
    second = 40 + 24 + 30
    seg[second + 20] ^= 0x04
    scan = scan_segment(bytes(seg), 40)
    assert [p for _, p in scan.records] == [b"one" * 10]
    assert scan.bad is not None and scan.bad.offset == second and "crc" in scan.bad.what
    assert scan.end == second


def _all_kinds() -> list[object]:
    e = [LogEntry(3, 5, 1, b"five"), LogEntry(3, 6, 0, b""), LogEntry(4, 7, 2, b"seven" * 50)]
    return [
        Append(9, e, False),
        SetHardState(9, HardState(4, 2, 6)),
        Snapshot(10, SnapshotMeta(20, 3, b"conf"), True),
        Snapshot(11, SnapshotMeta(30, 3, b""), False),
        Compact(9, 5, 3),
        Reset(12, 40, 5),
        SetSnapshotMeta(12, SnapshotMeta(40, 5, b"meta")),
        Append(12, [LogEntry(6, 41, 0, b"x")], False),
        Remove(13),
    ]


def test_batch_round_trip_every_op_kind() -> None:
    enc = encode_batch(_all_kinds())  # type: ignore[arg-type]
    cols = decode_payload(enc.payload)
    assert cols == enc.columns
    assert list(cols.kinds) == [
        fmt.OP_APPEND, fmt.OP_HARD_STATE, fmt.OP_SNAPSHOT_META, fmt.OP_COMPACT,
        fmt.OP_SNAPSHOT_META, fmt.OP_RESET, fmt.OP_COMPACT, fmt.OP_RESET,
        fmt.OP_SNAPSHOT_META, fmt.OP_APPEND, fmt.OP_REMOVE,
    ]  # fmt: skip
    stored = StoredEntries(cols)
    assert stored.take(0, 3, 5) == enc.entries[:3]
    assert stored.take(1, 2, 6) == enc.entries[1:3]
    assert stored.take(3, 1, 41) == enc.entries[3:]
    assert enc.data_bytes == 4 + 0 + 250 + 1
    assert cols.blob.endswith(b"confmeta")  # snapshot data after entry data, op order


def test_inconsistent_payloads_are_rejected() -> None:
    cols = encode_batch(_all_kinds()).columns  # type: ignore[arg-type]
    payload = assemble_payload(cols)
    with pytest.raises(PayloadError):
        decode_payload(payload[:-1])
    with pytest.raises(PayloadError):
        decode_payload(payload[:10])
    bad_kind = bytearray(payload)
    bad_kind[fmt.PAYLOAD_HEAD.size] = 99
    with pytest.raises(PayloadError, match="unknown op kind"):
        decode_payload(bytes(bad_kind))
    lying = cols._replace(lengths=cols.lengths[:-1] + type(cols.lengths)("I", [0]))
    with pytest.raises(PayloadError, match="add up"):
        decode_payload(assemble_payload(lying))
