"""In-memory index of the segmented store: per-range state, record table, entry cache.

Rules
-----
- The index is rebuilt from the log on open and kept in step with it by
  applying every written record's *columns* (what is on disk, not the
  caller's batch) with ``apply_columns``, the function replay uses, so that
  what a reader sees after a write is what recovery rebuilds after a crash.
  Its specialisations for the hot shape (``fastpath.apply_extension`` on
  writes, ``replay.Replayer`` on recovery) are tested to build the same.
- Records are numbered ``0, 1, 2, ...`` in log order *per open*: record
  numbers never reach the disk, so the numbering can restart on every open.
- An entry's location is one u64: ``record_no << ORD_BITS | ordinal``, the
  ordinal being the entry's position in its record's entry columns. Per range
  two ``array('Q')`` columns hold term and location of every live entry
  (16 bytes per entry, no Python object per entry), so ``term()`` never
  touches the disk and replay appends with C-level ``extend``.

Replay leniency
---------------
Purge deletes a prefix of segments, so replay may meet a range in the middle
of its history (e.g. an append at index 57 for a range it has never seen).
``RangeIndex.append`` therefore accepts an append that does not touch the
current log by restarting the log there (and a compaction below the current
start is ignored). The state replayed this way may be wrong until the purge
checkpoint record that follows, which restates every range's compaction
point and any metadata whose record was deleted; see ``purge.py`` for why
the state is exact from there on.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from typing import cast

from logstore.protocol import HardState, LogEntry, SnapshotMeta
from logstore.segmented.batch import StoredEntries
from logstore.segmented.format import (
    OP_APPEND,
    OP_COMPACT,
    OP_HARD_STATE,
    OP_REMOVE,
    OP_RESET,
    OP_SNAPSHOT_META,
    Columns,
)

#: Bits of an entry location holding the ordinal inside its record.
ORD_BITS = 24
ORD_MASK = (1 << ORD_BITS) - 1
#: The most entries one record may carry.
MAX_RECORD_ENTRIES = ORD_MASK + 1

#: Record number meaning "the built-in initial state" (no record to restate).
NO_RECORD = -1


class RangeIndex:
    """One range's log positions, terms and metadata."""

    __slots__ = (
        "first",
        "hard_state",
        "hs_rec",
        "locs",
        "prev_term",
        "snap_rec",
        "snapshot",
        "terms",
    )

    def __init__(self) -> None:
        # Invariant: first >= 1; the live entries are first .. first + len(terms) - 1.
        self.first = 1
        # Invariant: prev_term == term(first - 1).
        self.prev_term = 0
        # Invariant: terms[i] is the term of entry first + i.
        self.terms: array[int] = array("Q")
        # Invariant: len(locs) == len(terms); locs[i] locates entry first + i;
        # record numbers in locs never decrease.
        self.locs: array[int] = array("Q")
        self.hard_state: HardState | None = None
        self.snapshot: SnapshotMeta | None = None
        # Invariant: the record that last set the hard state (the snapshot
        # metadata), NO_RECORD if none did.
        self.hs_rec = NO_RECORD
        self.snap_rec = NO_RECORD

    @property
    def last(self) -> int:
        return self.first + len(self.terms) - 1

    def term(self, index: int) -> int:
        """Term at ``index``; the caller has checked ``first - 1 <= index <= last``."""
        if index == self.first - 1:
            return self.prev_term
        return self.terms[index - self.first]

    def pin(self) -> int | None:
        """The oldest record holding a live entry, ``None`` if the log is empty."""
        return (self.locs[0] >> ORD_BITS) if self.locs else None

    def append(self, lo: int, terms: array[int], loc0: int) -> None:
        """Replace entries ``>= lo`` with ``terms`` at locations ``loc0, loc0+1, ...``."""
        k = lo - self.first
        n = len(self.terms)
        if k != n:
            if 0 <= k < n:
                del self.terms[k:]
                del self.locs[k:]
            else:  # only in replay after a purge: see "Replay leniency"
                self.first = lo
                self.prev_term = 0
                self.terms = array("Q")
                self.locs = array("Q")
        self.terms.extend(terms)
        self.locs.extend(range(loc0, loc0 + len(terms)))

    def compact(self, index: int, term: int) -> None:
        """Drop entries ``<= index``; ``term(index) == term`` from now on."""
        k = index + 1 - self.first
        if k < 0:  # only in replay after a purge: see "Replay leniency"
            return
        if k >= len(self.terms):
            self.terms = array("Q")
            self.locs = array("Q")
        else:
            del self.terms[:k]
            del self.locs[:k]
        self.first = index + 1
        self.prev_term = term

    def reset(self, index: int, term: int) -> None:
        """Drop every entry; the log is empty after ``(index, term)``."""
        self.terms = array("Q")
        self.locs = array("Q")
        self.first = index + 1
        self.prev_term = term


def apply_columns(ranges: dict[int, RangeIndex], rec: int, cols: Columns) -> None:
    """Apply one record's ops to ``ranges`` (writes and recovery share this)."""
    m = _leading_extensions(ranges, rec, cols)
    _apply_ops(ranges, rec, cols, m)


def _leading_extensions(ranges: dict[int, RangeIndex], rec: int, cols: Columns) -> int:
    """Apply the record's leading one-entry APPENDs at once if they all extend
    distinct ranges' logs (the hot shape); the number of ops applied (0 if not).

    Recovery time is dominated by this case (a batch of one entry for each of
    thousands of ranges), so it is checked with column-wide C calls and the
    per-op Python is cut down to two ``array.append``.
    """
    kinds = cols.kinds
    m = len(kinds) - len(kinds.lstrip(b"\x01"))  # leading OP_APPENDs
    if m < 2:
        return 0
    args = cols.args
    rids = cols.range_ids[:m]
    if args[1 : 2 * m : 2].count(1) != m or len(set(rids)) != m:
        return 0
    found = list(map(ranges.get, rids))
    if None in found:
        targets = [
            r if r is not None else ranges.setdefault(rid, RangeIndex())
            for r, rid in zip(found, rids, strict=True)
        ]
    else:
        targets = cast(list[RangeIndex], found)
    if [r.first + len(r.terms) for r in targets] != args[0 : 2 * m : 2].tolist():
        return 0  # some append replaces entries: the general path does it all
    base = rec << ORD_BITS
    for r, term, loc in zip(targets, cols.terms, range(base, base + m), strict=False):
        r.terms.append(term)
        r.locs.append(loc)
    return m


def _apply_ops(ranges: dict[int, RangeIndex], rec: int, cols: Columns, start: int) -> None:
    """Apply ops ``start..`` of a record; ops before ``start`` are one-entry APPENDs."""
    args = cols.args
    terms = cols.terms
    blob = cols.blob
    a = 2 * start  # next arg
    o = start  # next entry ordinal
    s = sum(cols.lengths)  # next snapshot data byte
    base = rec << ORD_BITS
    get = ranges.get
    kinds = cols.kinds[start:] if start else cols.kinds
    rids = cols.range_ids[start:] if start else cols.range_ids
    for kind, rid in zip(kinds, rids, strict=True):
        r = get(rid)
        if r is None:
            if kind == OP_REMOVE:
                continue
            r = ranges[rid] = RangeIndex()
        if kind == OP_APPEND:
            n = args[a + 1]
            r.append(args[a], terms[o : o + n], base + o)
            o += n
            a += 2
        elif kind == OP_HARD_STATE:
            r.hard_state = HardState(args[a], args[a + 1], args[a + 2])
            r.hs_rec = rec
            a += 3
        elif kind == OP_SNAPSHOT_META:
            size = args[a + 2]
            r.snapshot = SnapshotMeta(args[a], args[a + 1], blob[s : s + size])
            r.snap_rec = rec
            s += size
            a += 3
        elif kind == OP_COMPACT:
            r.compact(args[a], args[a + 1])
            a += 2
        elif kind == OP_RESET:
            r.reset(args[a], args[a + 1])
            a += 2
        else:
            del ranges[rid]


class RecordTable:
    """Where each record of this open lives: record number -> (segment, offset)."""

    __slots__ = ("_base", "_offs", "_segs")

    def __init__(self) -> None:
        # Invariant: record base + i is in segment _segs[i] at offset _offs[i];
        # segments and (within a segment) offsets increase with i.
        self._base = 0
        self._segs: array[int] = array("Q")
        self._offs: array[int] = array("Q")

    def add(self, seq: int, offset: int) -> int:
        """Register the next record; return its number."""
        self._segs.append(seq)
        self._offs.append(offset)
        return self._base + len(self._segs) - 1

    @property
    def next_rec(self) -> int:
        return self._base + len(self._segs)

    def locate(self, rec: int) -> tuple[int, int]:
        i = rec - self._base
        assert 0 <= i < len(self._segs), f"record {rec} is not live"
        return self._segs[i], self._offs[i]

    def segment_of(self, rec: int) -> int:
        return self._segs[rec - self._base]

    def first_rec_of(self, seq: int) -> int:
        """First record number in segment ``seq`` or later (``next_rec`` if none)."""
        lo, hi = 0, len(self._segs)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._segs[mid] < seq:
                lo = mid + 1
            else:
                hi = mid
        return self._base + lo

    def drop_before(self, rec: int) -> None:
        """Forget records ``< rec`` (their segments were deleted)."""
        k = rec - self._base
        if k > 0:
            del self._segs[:k]
            del self._offs[:k]
            self._base = rec


#: What the cache holds per record: the writer's own entries (records written
#: by this open), or the lazily decoded columns of a record read from disk.
CachedRecord = list[LogEntry] | StoredEntries


class EntryCache:
    """Entries of recent records, bounded by bytes, least recently used out.

    Records just written go in with the caller's own ``LogEntry`` objects, so
    replication reads of recent entries cost a list slice, not a disk read;
    records read from disk go in as ``StoredEntries``.
    """

    __slots__ = ("_bytes", "_cap", "_recs")

    #: Per-entry cost counted on top of the data (the tuple and its ints).
    ENTRY_COST = 120

    def __init__(self, cap_bytes: int) -> None:
        self._cap = cap_bytes
        # Invariant: _bytes == sum of the sizes stored in _recs and <= _cap
        # after every put (a single record larger than _cap is not kept).
        self._recs: OrderedDict[int, tuple[CachedRecord, int]] = OrderedDict()
        self._bytes = 0

    def get(self, rec: int) -> CachedRecord | None:
        hit = self._recs.get(rec)
        if hit is None:
            return None
        self._recs.move_to_end(rec)
        return hit[0]

    def put(self, rec: int, entries: list[LogEntry], data_bytes: int) -> None:
        """Cache a record just written (its entries in ordinal order)."""
        if entries:
            self.put_sized(rec, entries, data_bytes + self.ENTRY_COST * len(entries))

    def put_sized(self, rec: int, entries: CachedRecord, size: int) -> None:
        if size > self._cap:
            return
        self._recs[rec] = (entries, size)
        self._bytes += size
        while self._bytes > self._cap:
            _, (_, old) = self._recs.popitem(last=False)
            self._bytes -= old

    def drop_before(self, rec: int) -> None:
        """Forget records ``< rec``."""
        for r in [r for r in self._recs if r < rec]:
            self._bytes -= self._recs.pop(r)[1]
