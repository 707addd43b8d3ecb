"""Purge: which segments can go, which ranges hold them, what to restate first.

Theory of operation
-------------------
Only a *prefix* of the sealed segments is ever deleted, oldest first, so the
surviving log is always a suffix of the written one and replay order is kept.
A segment may go when nothing in it is still needed:

1. **Live entries.** A range's live entries sit in records that never get
   older as the index grows (``RangeIndex.pin`` is the oldest). A range whose
   pin is in a sealed segment holds that segment and every later one:
   it is *lagging* and reported, so the caller can snapshot and compact it.
   A range lagging ``rewrite_lag_segments`` or more behind the active segment
   is *rewritten*: one record (atomic: never split, or a crash between two
   parts would replay a ``RESET`` without all the entries) carrying
   ``RESET(first-1, prev_term)``, its live entries, its hard state and
   snapshot metadata. Its pin then moves to the active segment.
2. **Metadata.** Before deleting the prefix, a *checkpoint* record restates
   every range's compaction point (``COMPACT(first-1, prev_term)``) and the
   hard state / snapshot metadata of the ranges whose record for them
   (``hs_rec``/``snap_rec``) is doomed, and is made durable. Removed ranges
   need nothing: a removal leaves no state.

Replay of the suffix then rebuilds the same index. Every live entry is
appended by a surviving record (its pin) and no later op drops it. Replay
*before* the checkpoint may get a compaction point wrong: an append that
replaced entries held only by deleted records looks like a gap and restarts
the log there (``index.py``, "Replay leniency"), losing the point set by a
surviving ``COMPACT`` before it. That is why the checkpoint restates the
point of *every* range, not only of those whose own record is doomed: after
the checkpoint the replayed state is exact, and later records replay as
they were written. Hard states and snapshot metadata are only ever set by
their own ops, so a surviving record for them stays the last word.

A crash at any point of a purge is harmless: the rewrite and checkpoint
records only restate what is already true, and files are deleted only after
they are durable, oldest first.
"""

from __future__ import annotations

from collections.abc import Callable

from logstore.protocol import LogEntry
from logstore.rules import Append, Compact, SetHardState
from logstore.segmented.batch import DiskOp, Reset, SetSnapshotMeta
from logstore.segmented.index import NO_RECORD, RangeIndex, RecordTable


def find_lagging(
    ranges: dict[int, RangeIndex], table: RecordTable, active_seq: int
) -> dict[int, int]:
    """Ranges whose live entries pin a sealed segment: range id -> oldest pinned segment."""
    out: dict[int, int] = {}
    for rid, r in ranges.items():
        pin = r.pin()
        if pin is not None:
            seq = table.segment_of(pin)
            if seq < active_seq:
                out[rid] = seq
    return out


def rewrite_ops(
    rid: int, r: RangeIndex, read: Callable[[int, int, int], list[LogEntry]]
) -> list[DiskOp]:
    """Ops that restate range ``rid`` whole; ``read(rid, lo, hi)`` reads its entries."""
    ops: list[DiskOp] = [Reset(rid, r.first - 1, r.prev_term)]
    if r.terms:
        ops.append(Append(rid, read(rid, r.first, r.last + 1), True))
    ops.extend(_metadata_ops(rid, r))
    return ops


def keep_from(ranges: dict[int, RangeIndex], table: RecordTable, active_seq: int) -> int:
    """The oldest segment still holding a live entry (``active_seq`` if none older)."""
    oldest = active_seq
    for r in ranges.values():
        pin = r.pin()
        if pin is not None:
            oldest = min(oldest, table.segment_of(pin))
    return oldest


def checkpoint_ops(ranges: dict[int, RangeIndex], first_kept_rec: int) -> list[DiskOp]:
    """Ops restating every range's compaction point, and the hard state and
    snapshot metadata of every range whose record for them is doomed."""
    ops: list[DiskOp] = []
    for rid, r in ranges.items():
        ops.append(Compact(rid, r.first - 1, r.prev_term))
        if NO_RECORD < r.hs_rec < first_kept_rec and r.hard_state is not None:
            ops.append(SetHardState(rid, r.hard_state))
        if NO_RECORD < r.snap_rec < first_kept_rec and r.snapshot is not None:
            ops.append(SetSnapshotMeta(rid, r.snapshot))
    return ops


def _metadata_ops(rid: int, r: RangeIndex) -> list[DiskOp]:
    ops: list[DiskOp] = []
    if r.hard_state is not None:
        ops.append(SetHardState(rid, r.hard_state))
    if r.snapshot is not None:
        ops.append(SetSnapshotMeta(rid, r.snapshot))
    return ops
