"""Unit tests of ``RaftLog``: storage plus the unstable tail, commit and apply."""

from __future__ import annotations

import pytest

from engine.raft import Compacted, ConfState, Entry, MemoryStorage, Unavailable
from engine.raft.log import RaftLog, entries_size, limit_size


def _log(stable_terms: list[int], unstable_terms: list[int] = (), compact: int = 0) -> RaftLog:
    st = MemoryStorage(ConfState(voters=(1,)))
    st.append([Entry(t, i) for i, t in enumerate(stable_terms, 1)])
    if compact:
        st.create_snapshot(compact, None, b"")
        st.compact(compact)
    log = RaftLog(st, 1 << 20)
    if unstable_terms:
        start = len(stable_terms) + 1
        log.append([Entry(t, i) for i, t in enumerate(unstable_terms, start)])
    return log


def test_indexes_span_storage_and_unstable() -> None:
    log = _log([1, 1, 2], [2, 3])
    assert log.first_index() == 1 and log.last_index() == 5
    assert [log.term(i) for i in range(0, 6)] == [0, 1, 1, 2, 2, 3]
    assert log.persisted_index() == 3
    with pytest.raises(Unavailable):
        log.term(6)


def test_term_below_compaction_raises() -> None:
    log = _log([1, 1, 2, 2], compact=2)
    assert log.term(2) == 1  # the snapshot's term at first_index - 1
    with pytest.raises(Compacted):
        log.term(1)
    assert log.term_or_zero(1) == 0


@pytest.mark.parametrize(
    ("ents", "conflict"),
    [
        ([(1, 1), (1, 2)], 0),          # all present
        ([(1, 2), (1, 3)], 0),
        ([(1, 2), (2, 3), (2, 4)], 3),  # conflicting term at 3
        ([(1, 3), (2, 4)], 4),          # 4 is new
        ([(3, 2), (3, 3)], 2),          # conflicting term at 2
        ([(2, 4), (2, 5)], 4),
    ],
)
def test_find_conflict(ents: list[tuple[int, int]], conflict: int) -> None:
    """The first entry that is new or conflicts (binary search over the overlap)."""
    log = _log([1, 1, 1])
    assert log.find_conflict(tuple(Entry(t, i) for t, i in ents)) == conflict


def test_maybe_append_truncates_conflict_and_commits() -> None:
    log = _log([1, 1, 1])
    last = log.maybe_append(1, 1, 3, (Entry(2, 2), Entry(2, 3), Entry(2, 4)))
    assert last == 4
    assert [log.term(i) for i in range(1, 5)] == [1, 2, 2, 2]
    assert log.committed == 3  # min(leader commit, last new index)
    assert log.maybe_append(4, 9, 4, ()) is None  # mismatching previous term


def test_maybe_append_never_truncates_committed() -> None:
    log = _log([1, 1, 1])
    log.commit_to(3)
    with pytest.raises(AssertionError):
        log.maybe_append(1, 1, 3, (Entry(5, 2),))


def test_find_conflict_by_term_walks_back_to_term() -> None:
    log = _log([1, 1, 2, 2, 4, 4])
    assert log.find_conflict_by_term(6, 3) == (4, 2)
    assert log.find_conflict_by_term(6, 4) == (6, 4)
    assert log.find_conflict_by_term(2, 0) == (0, 0)
    assert log.find_conflict_by_term(99, 4) == (6, 4)


def test_maybe_commit_only_for_given_term() -> None:
    log = _log([1, 1, 2])
    assert not log.maybe_commit(2, 2)  # index 2 has term 1
    assert log.maybe_commit(3, 2)
    assert log.committed == 3
    assert not log.maybe_commit(2, 1)  # never lowers


def test_is_up_to_date() -> None:
    log = _log([1, 2, 2])
    assert log.is_up_to_date(3, 2) and log.is_up_to_date(1, 3)
    assert not log.is_up_to_date(2, 2) and not log.is_up_to_date(9, 1)


def test_next_committed_entries_paged_and_across_boundary() -> None:
    st = MemoryStorage(ConfState(voters=(1,)))
    st.append([Entry(1, i, data=b"x" * 100) for i in range(1, 4)])
    log = RaftLog(st, 250)
    log.append([Entry(1, i, data=b"x" * 100) for i in range(4, 7)])
    log.commit_to(6)
    first = log.next_committed_entries()
    assert [e.index for e in first] == [1, 2]
    log.applied_to(2)
    assert [e.index for e in log.next_committed_entries()] == [3, 4]
    log.applied_to(6)
    assert not log.has_next_committed_entries()


def test_slice_respects_byte_budget_but_returns_one_entry() -> None:
    log = _log([1, 1, 1], [1, 1])
    assert len(log.slice(1, 6, 1)) == 1
    assert len(log.slice(1, 6, 1 << 20)) == 5
    with pytest.raises(Compacted):
        _log([1, 1, 1, 1], compact=2).slice(1, 3, 100)


def test_limit_size_and_entries_size() -> None:
    ents = [Entry(1, i, data=b"a" * 10) for i in range(5)]
    assert entries_size(ents) == 5 * 26
    assert limit_size(ents, 60) == ents[:2]
    assert limit_size(ents, 0) == ents[:1]
    assert limit_size(ents, 1000) is ents


def test_stable_to_moves_persisted_index() -> None:
    log = _log([1], [1, 2])
    log.stable_to(2, 1)
    assert log.persisted_index() == 2


def test_size_bound_shortcut_only_covers_entries_appended_through_the_log() -> None:
    """Entries in storage before this log existed (a restart) are not covered by the
    cached size bound: the budget must still be enforced on them."""
    st = MemoryStorage(ConfState(voters=(1,)))
    st.append([Entry(1, i, data=b"B" * 1000) for i in range(1, 4)])  # big, pre-existing
    log = RaftLog(st, 1 << 20)
    log.append([Entry(1, i, data=b"s") for i in range(4, 7)])  # small, tracked
    assert log.tracked_from == 4 and log.max_entry_size == 17
    assert len(log.slice(1, 7, 1500)) == 1
    assert len(log.slice(4, 7, 51)) == 3
    assert len(log.slice(4, 7, 50)) == 2
    # A conflicting append from an older index extends the tracked range.
    log.append([Entry(2, 3, data=b"t")])
    assert log.tracked_from == 3 and log.last_index() == 3
