"""``SqliteLogStore`` specifics: the overlay under a slow commit, group commit,
commit failure, the directory lock and the schema version. Its protocol
behaviour is in test_conformance / test_model / test_crash."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from logstore import HardState, InvalidArgument, LogEntry, LogStoreError, WriteBatch
from logstore.sqlite import DB_NAME, SqliteLogStore, _Job
from tests.logstore.conftest import dump, ents

pytestmark = pytest.mark.timeout(30)


class GatedStore(SqliteLogStore):
    """Commits only when the test lets it, and records group sizes."""

    def __init__(self, path: Path, **options: object) -> None:
        self.entered = threading.Semaphore(0)
        self.gate = threading.Semaphore(0)
        self.groups: list[int] = []
        self.fail_next = False
        super().__init__(path, **options)

    def _commit(self, jobs: list[_Job]) -> None:
        self.entered.release()
        assert self.gate.acquire(timeout=10)
        self.groups.append(len(jobs))
        if self.fail_next:
            raise sqlite3.OperationalError("disk I/O error (injected)")
        super()._commit(jobs)


def one(rid: int, entries: list[LogEntry]) -> WriteBatch:
    b = WriteBatch()
    b.append(rid, entries)
    return b


def test_overlay_survives_commit_of_an_older_batch(tmp_path: Path) -> None:
    """Worked race of the module header: batch 2 rewrites what batch 1 wrote
    while batch 1 commits; after batch 1 is durable reads still see batch 2."""
    s = GatedStore(tmp_path)
    try:
        f1 = s.submit(one(1, ents(1, 3)))
        assert s.entered.acquire(timeout=10)  # the writer holds batch 1
        f2 = s.submit(one(1, ents(2, 2, term=2)))
        s.gate.release()
        f1.result(timeout=10)
        assert s.entries(1, 1, 3) == ents(1, 1) + ents(2, 2, term=2)
        assert s.term(1, 2) == 2
        assert s.entered.acquire(timeout=10)
        s.gate.release()
        f2.result(timeout=10)
        assert s.entries(1, 1, 3) == ents(1, 1) + ents(2, 2, term=2)
    finally:
        s.gate.release(100)
        s.close()


def test_queued_batches_commit_as_one_group_in_order(tmp_path: Path) -> None:
    s = GatedStore(tmp_path)
    try:
        first = s.submit(one(1, ents(1, 1)))
        assert s.entered.acquire(timeout=10)
        futures = [s.submit(one(1, ents(i, i))) for i in range(2, 12)]
        s.gate.release(2)
        for f in [first, *futures]:
            f.result(timeout=10)
        assert s.groups == [1, 10]
    finally:
        s.gate.release(100)
        s.close()
    s2 = SqliteLogStore(tmp_path)
    assert s2.entries(1, 1, 12) == ents(1, 11)
    s2.close()


def test_failed_commit_fails_futures_and_store_and_keeps_prefix(tmp_path: Path) -> None:
    s = GatedStore(tmp_path)
    try:
        s.gate.release()
        s.write(one(1, ents(1, 2)))
        s.fail_next = True
        s.gate.release()
        with pytest.raises(LogStoreError, match="injected"):
            s.write(one(1, ents(3, 4)))
        with pytest.raises(LogStoreError, match="failed"):
            s.last_index(1)
        with pytest.raises(LogStoreError, match="failed"):
            s.submit(one(2, ents(1, 1)))
    finally:
        s.gate.release(100)
        s.close()
    s2 = SqliteLogStore(tmp_path)
    assert s2.entries(1, 1, 3) == ents(1, 2)
    assert s2.last_index(1) == 2
    s2.close()


def test_directory_is_locked_while_open(tmp_path: Path) -> None:
    s = SqliteLogStore(tmp_path)
    with pytest.raises(LogStoreError, match="in use"):
        SqliteLogStore(tmp_path)
    s.close()
    SqliteLogStore(tmp_path).close()  # released on close


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    SqliteLogStore(tmp_path).close()
    conn = sqlite3.connect(tmp_path / DB_NAME)
    conn.execute("PRAGMA user_version = 7")
    conn.close()
    with pytest.raises(InvalidArgument, match="schema version 7"):
        SqliteLogStore(tmp_path)


def test_missing_row_is_corruption_not_data(tmp_path: Path) -> None:
    s = SqliteLogStore(tmp_path)
    b = one(1, ents(1, 5))
    b.set_hard_state(1, HardState(1, 0, 0))
    s.write(b)
    s.close()
    conn = sqlite3.connect(tmp_path / DB_NAME)
    conn.execute("DELETE FROM entries WHERE range_id = 1 AND idx = 3")
    conn.commit()
    conn.close()
    s = SqliteLogStore(tmp_path)
    try:
        assert s.entries(1, 1, 3) == ents(1, 2)
        with pytest.raises(LogStoreError, match="entry 3 missing"):
            s.entries(1, 1, 6)
        with pytest.raises(LogStoreError, match="entry 3 missing"):
            s.term(1, 3)
    finally:
        s.close()


def test_high_range_ids_round_trip(tmp_path: Path) -> None:
    s = SqliteLogStore(tmp_path)
    ids = [0, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]
    b = WriteBatch()
    for rid in ids:
        b.append(rid, ents(1, 2, tag=str(rid).encode()))
    s.write(b)
    before = dump(s)
    s.close()
    s = SqliteLogStore(tmp_path)
    assert dump(s) == before
    assert sorted(s.range_ids()) == ids
    s.close()
