"""Unit tests of ``Unstable``: the not-yet-durable tail of the log."""

from __future__ import annotations

from engine.raft import ConfState, Entry, Snapshot, SnapshotMetadata
from engine.raft.log_unstable import Unstable


def _ents(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i) for i in range(lo, hi)]


def test_empty_unstable_knows_nothing() -> None:
    u = Unstable(5)
    assert u.maybe_first_index() is None
    assert u.maybe_last_index() is None
    assert u.maybe_term(5) is None


def test_append_and_lookup() -> None:
    u = Unstable(5)
    u.truncate_and_append(_ents(5, 8))
    assert u.maybe_last_index() == 7
    assert u.maybe_term(6) == 1
    assert u.maybe_term(8) is None
    assert u.slice(5, 7) == _ents(5, 7)


def test_truncate_and_append_replaces_conflicting_suffix() -> None:
    u = Unstable(5)
    u.truncate_and_append(_ents(5, 9))
    u.truncate_and_append(_ents(7, 8, term=2))
    assert [(e.index, e.term) for e in u.entries] == [(5, 1), (6, 1), (7, 2)]
    # Replacing from before the offset: storage answers below the new offset.
    u.truncate_and_append(_ents(3, 4, term=3))
    assert u.offset == 3 and [(e.index, e.term) for e in u.entries] == [(3, 3)]


def test_stable_to_drops_prefix_only_if_term_matches() -> None:
    u = Unstable(1)
    u.truncate_and_append(_ents(1, 5))
    u.stable_to(2, 9)  # term mismatch: replaced since ready(), not durable
    assert u.offset == 1
    u.stable_to(2, 1)
    assert u.offset == 3 and [e.index for e in u.entries] == [3, 4]
    u.stable_to(10, 1)  # beyond: ignored
    assert u.offset == 3


def test_snapshot_restore_and_stable_snap_to() -> None:
    u = Unstable(1)
    u.truncate_and_append(_ents(1, 3))
    snap = Snapshot(SnapshotMetadata(10, 4, ConfState(voters=(1,))))
    u.restore(snap)
    assert u.entries == [] and u.offset == 11
    assert u.maybe_first_index() == 11
    assert u.maybe_last_index() == 10
    assert u.maybe_term(10) == 4
    u.stable_snap_to(9)
    assert u.snapshot is snap
    u.stable_snap_to(10)
    assert u.snapshot is None
