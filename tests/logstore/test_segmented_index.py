"""The in-memory index: per-range arrays, record table, recent-entry cache."""

from __future__ import annotations

from array import array

from logstore.protocol import LogEntry
from logstore.segmented.index import ORD_BITS, EntryCache, RangeIndex, RecordTable


def _terms(*values: int) -> array[int]:
    return array("Q", values)


def test_append_extends_and_replaces_a_suffix() -> None:
    r = RangeIndex()
    assert (r.first, r.last, r.term(0), r.pin()) == (1, 0, 0, None)
    r.append(1, _terms(1, 1, 2), 5 << ORD_BITS)
    assert (r.last, r.term(3), r.pin()) == (3, 2, 5)
    r.append(3, _terms(3, 3), 9 << ORD_BITS)  # replaces entry 3
    assert r.terms.tolist() == [1, 1, 3, 3]
    assert [loc >> ORD_BITS for loc in r.locs] == [5, 5, 9, 9]
    assert [loc & ((1 << ORD_BITS) - 1) for loc in r.locs] == [0, 1, 0, 1]


def test_compact_and_reset() -> None:
    r = RangeIndex()
    r.append(1, _terms(1, 2, 3, 4), 0)
    r.compact(2, 2)
    assert (r.first, r.last, r.term(2), r.term(4)) == (3, 4, 2, 4)
    r.compact(4, 4)  # to the last index: empty log, position kept
    assert (r.first, r.last, r.term(4), r.pin()) == (5, 4, 4, None)
    r.reset(10, 7)
    assert (r.first, r.last, r.term(10)) == (11, 10, 7)


def test_replay_leniency_restarts_a_log_it_cannot_join() -> None:
    """After a purge, replay may meet a range in the middle of its history."""
    r = RangeIndex()
    r.append(57, _terms(4, 4), 0)  # never seen: the log restarts at 57
    assert (r.first, r.last) == (57, 58)
    r.compact(40, 3)  # below the current start: ignored (a checkpoint follows)
    assert (r.first, r.prev_term) == (57, 0)
    r.compact(56, 3)  # the checkpoint's restatement sets the true point
    assert (r.first, r.term(56), r.last) == (57, 3, 58)


def test_record_table() -> None:
    t = RecordTable()
    assert [t.add(1, 40), t.add(1, 100), t.add(2, 40), t.add(3, 40)] == [0, 1, 2, 3]
    assert t.locate(2) == (2, 40) and t.segment_of(1) == 1
    assert [t.first_rec_of(s) for s in (1, 2, 3, 4)] == [0, 2, 3, 4]
    t.drop_before(2)
    assert t.locate(3) == (3, 40) and t.first_rec_of(1) == 2 and t.next_rec == 4


def test_entry_cache_evicts_least_recently_used_by_bytes() -> None:
    ents = [LogEntry(1, 1, 0, b"x" * 100)]
    per = 100 + EntryCache.ENTRY_COST
    cache = EntryCache(3 * per)
    for rec in range(3):
        cache.put(rec, ents, 100)
    assert cache.get(0) is ents  # 0 is now the most recently used
    cache.put(3, ents, 100)
    assert cache.get(1) is None and cache.get(0) is ents and cache.get(3) is ents
    cache.drop_before(3)
    assert cache.get(0) is None and cache.get(3) is ents
    EntryCache(10).put(0, ents, 100)  # larger than the cache: simply not kept
