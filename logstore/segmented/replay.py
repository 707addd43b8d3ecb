"""Replay of recovered records into the index, batched so recovery time is
dominated by reading the disk, not by Python work per entry.

Theory of operation
-------------------
A log written by a worker is mostly *hot-shape* records: one entry for each
of many ranges, appended at each range's ``last + 1``, then hard states,
and consecutive records name the same ranges in the same order. Replaying
such records one op at a time costs a few Python operations per entry
(``apply_columns``); 1 GiB of 100-byte entries is ten million of them.

``Replayer`` instead collects a run of consecutive records whose op kinds and
range-id columns are byte-identical (one C comparison per record), then
applies the run *per range*: range ``i``'s terms across the run are the
strided slice ``terms[i::m]`` of the run's concatenated terms, and its
locations an arithmetic progression (``rec << ORD_BITS | i`` for consecutive
``rec``): two C-level ``extend`` calls per range per run instead of two
``append`` per entry. Only the last record's hard states matter (every
record of the run sets the same ranges' hard states in the same order).

Every range's appends are checked before anything is applied (the run's
indexes for range ``i`` must continue its log one by one); if one does not,
the run is replayed record by record with the general ``apply_columns``.
Either way the index ends up exactly as ``apply_columns`` would build it.
"""

from __future__ import annotations

from array import array

from logstore.protocol import HardState
from logstore.segmented.format import OP_APPEND, OP_HARD_STATE, Columns
from logstore.segmented.index import ORD_BITS, RangeIndex, apply_columns

#: Records per run: bounds what a run holds in memory (its terms and args columns).
MAX_RUN = 256

_APPEND = bytes((OP_APPEND,))
_HARD_STATE = bytes((OP_HARD_STATE,))


class Replayer:
    """Feeds recovered records, in log order, into ``ranges``; ``flush`` at the end."""

    def __init__(self, ranges: dict[int, RangeIndex]) -> None:
        self._ranges = ranges
        # Invariant: _run holds consecutive hot-shape records (without their
        # blobs, which they do not need), none applied yet, all with op kinds
        # and range ids equal to _key; _m is their number of APPENDs.
        self._run: list[tuple[int, Columns]] = []
        self._key = b""
        self._m = 0

    def add(self, rec: int, cols: Columns) -> None:
        """Apply record ``rec``, now or at a later ``add``/``flush``."""
        m = _hot_appends(cols)
        key = cols.kinds + cols.range_ids.tobytes() if m else b""
        if (
            not key
            or key != self._key
            or len(self._run) >= MAX_RUN
            or (self._run and rec != self._run[-1][0] + 1)
        ):
            self.flush()
        if not key:
            apply_columns(self._ranges, rec, cols)
            return
        self._key, self._m = key, m
        self._run.append((rec, cols._replace(blob=b"")))

    def flush(self) -> None:
        """Apply every record added so far."""
        run, m = self._run, self._m
        self._run, self._key, self._m = [], b"", 0
        if len(run) > 1 and _apply_run(self._ranges, run, m):
            return
        for rec, cols in run:
            apply_columns(self._ranges, rec, cols)


def _hot_appends(cols: Columns) -> int:
    """``m`` if the record is ``m >= 2`` one-entry APPENDs then only HARD_STATEs, else 0."""
    kinds = cols.kinds
    rest = kinds.lstrip(_APPEND)
    m = len(kinds) - len(rest)
    if m < 2 or rest.lstrip(_HARD_STATE) or len(cols.terms) != m:
        return 0
    return m


def _apply_run(ranges: dict[int, RangeIndex], run: list[tuple[int, Columns]], m: int) -> bool:
    """Apply a run per range; ``False``, with nothing applied, if it does not extend
    every range's log one entry per record."""
    first_cols = run[0][1]
    rids = first_cols.range_ids[:m]
    if len(set(rids)) != m:
        return False
    k = len(run)
    terms: array[int] = array("Q")
    firsts: array[int] = array("Q")
    for _, cols in run:
        terms.extend(cols.terms)
        firsts.extend(cols.args[0 : 2 * m : 2])
    found = [ranges.get(rid) for rid in rids]
    starts = [1 if r is None else r.first + len(r.terms) for r in found]
    if firsts[0:m].tolist() != starts:
        return False
    for i, start in enumerate(starts):  # record j must append start + j to range i
        if firsts[i::m] != array("Q", range(start, start + k)):
            return False
    rec0 = run[0][0]
    step = 1 << ORD_BITS
    for i, (rid, known) in enumerate(zip(rids, found, strict=True)):
        r = known if known is not None else ranges.setdefault(rid, RangeIndex())
        r.terms.extend(terms[i::m])
        r.locs.extend(range((rec0 << ORD_BITS) + i, ((rec0 + k) << ORD_BITS) + i, step))
    _apply_hard_states(ranges, run[-1][0], run[-1][1], m)
    return True


def _apply_hard_states(ranges: dict[int, RangeIndex], rec: int, cols: Columns, m: int) -> None:
    args = cols.args
    a = 2 * m
    for rid in cols.range_ids[m:]:
        r = ranges.get(rid)
        if r is None:
            r = ranges[rid] = RangeIndex()
        r.hard_state = HardState(args[a], args[a + 1], args[a + 2])
        r.hs_rec = rec
        a += 3
