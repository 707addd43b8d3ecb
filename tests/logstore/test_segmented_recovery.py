"""Recovery policy of the segmented store: what is cut, what is reported, per mode."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from logstore.errors import Corruption
from logstore.protocol import HardState, LogEntry, WriteBatch
from logstore.segmented import SegmentedLogStore
from logstore.segmented.format import SEGMENT_HEADER, segment_name

SEG = 4096


def _fill(path: Path, batches: int, **opts: object) -> list[tuple[int, int, int]]:
    """Write ``batches`` one-entry batches to range 1; per batch (seq, start, end)."""
    store = SegmentedLogStore(path, segment_bytes=SEG, **opts)
    spans = []
    for i in range(1, batches + 1):
        seq, start = store._writer.seq, store._writer.offset
        b = WriteBatch()
        b.append(1, [LogEntry(1, i, 0, os.urandom(300))])
        store.write(b)
        if store._writer.seq != seq:
            seq, start = store._writer.seq, SEGMENT_HEADER.size
        spans.append((seq, start, store._writer.offset))
    store.close()
    return spans


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x10]))


def test_torn_tail_is_cut_saved_aside_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spans = _fill(tmp_path, 5)
    seq, start, _end = spans[-1]
    seg = tmp_path / segment_name(seq)
    original = seg.read_bytes()
    cut_at = start + 7
    os.truncate(seg, cut_at)
    with caplog.at_level(logging.WARNING, logger="logstore.segmented"):
        store = SegmentedLogStore(tmp_path, segment_bytes=SEG)
    assert store.last_index(1) == 4
    (cut,) = store.recovery.cuts
    assert (cut.path, cut.offset, cut.length) == (str(seg), start, 7)
    assert Path(cut.saved_to).read_bytes() == original[start:cut_at]
    assert seg.stat().st_size == start
    assert str(seg) in caplog.text and f"offset {start}" in caplog.text
    store.close()


def test_mid_log_corruption_names_file_offset_and_crcs(tmp_path: Path) -> None:
    spans = _fill(tmp_path, 30)
    seq, start, _ = spans[0]
    assert spans[-1][0] > seq, "needs a sealed segment"
    _flip(tmp_path / segment_name(seq), start + 20)
    with pytest.raises(Corruption) as info:
        SegmentedLogStore(tmp_path)
    err = info.value
    assert err.path == str(tmp_path / segment_name(seq)) and err.offset == start
    assert err.expected != err.got and err.expected and err.got
    assert "crc" in str(err)


def test_corruption_followed_by_valid_records_in_last_segment_is_reported(tmp_path: Path) -> None:
    spans = _fill(tmp_path, 4)
    seq, start, _ = spans[1]
    _flip(tmp_path / segment_name(seq), start + 30)
    with pytest.raises(Corruption, match="followed by valid data"):
        SegmentedLogStore(tmp_path)


def test_absolute_mode_reports_a_complete_bad_tail_but_cuts_an_incomplete_one(
    tmp_path: Path,
) -> None:
    spans = _fill(tmp_path, 4)
    seq, start, end = spans[-1]
    seg = tmp_path / segment_name(seq)
    _flip(seg, start + 30)
    with pytest.raises(Corruption, match="at the tail"):
        SegmentedLogStore(tmp_path, recovery_mode="absolute")
    os.truncate(seg, end - 3)  # now plainly incomplete: the frame runs past end of file
    store = SegmentedLogStore(tmp_path, recovery_mode="absolute")
    assert store.last_index(1) == 3
    store.close()


def test_zero_filled_tail_is_incomplete(tmp_path: Path) -> None:
    """A crash can leave the file extended with zeros (size updated, data not)."""
    spans = _fill(tmp_path, 3)
    seq, _, end = spans[-1]
    with open(tmp_path / segment_name(seq), "ab") as f:
        f.write(bytes(777))
    store = SegmentedLogStore(tmp_path, recovery_mode="absolute")
    assert store.last_index(1) == 3 and store.recovery.cuts[0].offset == end
    store.close()


def test_tolerate_any_keeps_the_longest_valid_prefix(tmp_path: Path) -> None:
    spans = _fill(tmp_path, 30)
    seq, start, _ = spans[5]
    later = sorted({s for s, _, _ in spans if s > seq})
    assert later
    _flip(tmp_path / segment_name(seq), start + 40)
    store = SegmentedLogStore(tmp_path, recovery_mode="tolerate_any", segment_bytes=SEG)
    assert (store.first_index(1), store.last_index(1)) == (1, 5)
    for s in later:
        assert not (tmp_path / segment_name(s)).exists()
        assert (tmp_path / (segment_name(s) + ".torn")).exists()
    b = WriteBatch()
    b.append(1, [LogEntry(2, 6)])
    store.write(b)
    store.close()
    store = SegmentedLogStore(tmp_path, segment_bytes=SEG)
    assert store.entries(1, 6, 7) == [LogEntry(2, 6)]
    store.close()


def test_torn_header_of_last_segment_is_set_aside(tmp_path: Path) -> None:
    spans = _fill(tmp_path, 3)
    seq = spans[-1][0]
    (tmp_path / segment_name(seq + 1)).write_bytes(b"MRSEG")  # crash while creating it
    store = SegmentedLogStore(tmp_path, segment_bytes=SEG)
    assert store.last_index(1) == 3
    assert (tmp_path / (segment_name(seq + 1) + ".torn")).exists()
    for i in range(4, 30):  # rolls into seq + 1 again
        b = WriteBatch()
        b.append(1, [LogEntry(1, i, 0, os.urandom(300))])
        store.write(b)
    store.close()
    store = SegmentedLogStore(tmp_path, segment_bytes=SEG)
    assert store.last_index(1) == 29
    store.close()


def test_missing_segment_is_corruption(tmp_path: Path) -> None:
    spans = _fill(tmp_path, 40)
    seqs = sorted({s for s, _, _ in spans})
    assert len(seqs) >= 3
    os.unlink(tmp_path / segment_name(seqs[1]))
    with pytest.raises(Corruption, match="missing"):
        SegmentedLogStore(tmp_path)


def test_sealed_segment_cut_at_a_record_boundary_is_corruption(tmp_path: Path) -> None:
    """Every remaining record is valid; only the next header's prev_size tells."""
    spans = _fill(tmp_path, 30)
    first_seq = spans[0][0]
    last_in_first = [s for s in spans if s[0] == first_seq][-1]
    os.truncate(tmp_path / segment_name(first_seq), last_in_first[1])
    with pytest.raises(Corruption, match="when sealed"):
        SegmentedLogStore(tmp_path)


def test_recovery_report(tmp_path: Path) -> None:
    spans = _fill(tmp_path, 30)
    store = SegmentedLogStore(tmp_path)
    rep = store.recovery
    assert rep.records == 30 and rep.segments == len({s for s, _, _ in spans})
    assert rep.bytes_read == sum(p.stat().st_size for p in tmp_path.glob("*.seg"))
    assert rep.seconds > 0 and rep.cuts == ()
    store.close()


def test_unwritten_store_recovers_empty(tmp_path: Path) -> None:
    store = SegmentedLogStore(tmp_path / "new")
    assert list(store.range_ids()) == [] and store.recovery.records == 0
    b = WriteBatch()
    b.set_hard_state(3, HardState(1, 1, 0))
    store.write(b)
    store.close()
    store = SegmentedLogStore(tmp_path / "new")
    assert store.hard_state(3) == HardState(1, 1, 0)
    store.close()
