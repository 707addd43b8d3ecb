"""``SqliteLogStore``: every range's raft log in one stdlib sqlite3 database.

This is the "one shared embedded database" design the seeds started from and
the baseline the segmented store is measured against, so it is built to be as
fast as sqlite reasonably gets while staying honest about durability:

- WAL journal, ``synchronous=FULL``: a transaction is durable when COMMIT
  returns (the WAL is fsynced on every commit).
- ``entries`` is a ``WITHOUT ROWID`` table clustered on ``(range_id, idx)``:
  one B-tree, an append is one ordered insert, a range read one index scan.
- ``ranges`` holds the per-range metadata (compaction point and its term,
  hard state, snapshot record); the last index is derived on open with one
  ``MAX(idx)`` probe per range, so appends need not rewrite the metadata row.
- Statements go through ``executemany`` with consecutive inserts of a batch
  merged into one call.

Schema (``PRAGMA user_version = 1``)::

    entries(range_id, idx, term, type, data BLOB)  PK (range_id, idx)  WITHOUT ROWID
    ranges(range_id PK, compact_index, compact_term,
           hs_term, hs_vote, hs_commit,          -- NULL: no hard state
           snap_index, snap_term, snap_data)     -- NULL: no snapshot

Range ids are unsigned 64-bit; sqlite integers are signed, so ids >= 2**63
are stored as ``id - 2**64`` (``_to_sql``/``_from_sql``).

Theory of operation
-------------------
``submit`` runs on the caller's thread: it validates the batch
(``logstore.rules.plan_batch``), applies it to the in-memory metadata and to
an *overlay* of not-yet-committed entries, turns it into SQL statements and
queues them. A writer thread takes every queued batch, runs them in ONE
transaction (group commit: the batches commit together or not at all, in
submission order, so a crash still leaves a prefix) and COMMITs; sqlite
releases the GIL while it writes and fsyncs. Then it completes the batches'
futures.

Read-your-writes without waiting for the commit comes from the overlay: for
each range with uncommitted changes it holds the range's entries from some
index ``lo`` up to its last index. Every uncommitted change to the range's
entries (append, truncation, dropping snapshot, removal) lies at or above
``lo``, so a read takes ``[lo, last]`` from the overlay and anything below
from the database (read through a second connection, which in WAL mode sees
the last committed state without blocking the writer). An overlay is dropped
once every batch that touched it is committed.

Worked race: batch 7 appends range 3 entries 10..12 (overlay lo=10, seq 7);
the writer commits batches 5..7; meanwhile batch 8 truncates range 3 at 11
(overlay lo stays 10, seq 8). After the commit the writer drops only overlays
with seq <= 7, so range 3's overlay stays and reads of 11 see batch 8's entry,
not the committed one from batch 7.

If a commit fails (IO error), its futures and every later one fail with the
error and the store refuses further use: memory and disk no longer agree, and
only a reopen (recovery from the database) can tell what is durable.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future
from pathlib import Path

from logstore.errors import (
    Corruption,
    InvalidArgument,
    LogStoreError,
)
from logstore.protocol import HardState, LogEntry, PurgeResult, SnapshotMeta, WriteBatch
from logstore.range_meta import NO_RANGE, MetaReads, RangeMeta
from logstore.rules import (
    ENTRY_OVERHEAD,
    Append,
    Compact,
    Remove,
    Resolved,
    SetHardState,
    Snapshot,
    check_slice,
    plan_batch,
)

DB_NAME = "raftlog.sqlite3"
LOCK_NAME = "LOCK"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE entries (
    range_id INTEGER NOT NULL,
    idx      INTEGER NOT NULL,
    term     INTEGER NOT NULL,
    type     INTEGER NOT NULL,
    data     BLOB NOT NULL,
    PRIMARY KEY (range_id, idx)
) WITHOUT ROWID;
CREATE TABLE ranges (
    range_id      INTEGER PRIMARY KEY,
    compact_index INTEGER NOT NULL,
    compact_term  INTEGER NOT NULL,
    hs_term       INTEGER,
    hs_vote       INTEGER,
    hs_commit     INTEGER,
    snap_index    INTEGER,
    snap_term     INTEGER,
    snap_data     BLOB
);
"""

_INSERT = "INSERT INTO entries (range_id, idx, term, type, data) VALUES (?, ?, ?, ?, ?)"
_DELETE_FROM = "DELETE FROM entries WHERE range_id = ? AND idx >= ?"
_DELETE_UPTO = "DELETE FROM entries WHERE range_id = ? AND idx <= ?"
_DELETE_ALL = "DELETE FROM entries WHERE range_id = ?"
_UPSERT_META = "INSERT OR REPLACE INTO ranges VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_DELETE_META = "DELETE FROM ranges WHERE range_id = ?"
_SELECT_RANGE = (
    "SELECT idx, term, type, data FROM entries "
    "WHERE range_id = ? AND idx >= ? AND idx < ? ORDER BY idx"
)
_SELECT_TERM = "SELECT term FROM entries WHERE range_id = ? AND idx = ?"

_DEFAULTS: dict[str, int] = {
    # Page size of a new database (ignored for an existing one). With 4 KiB
    # pages a WITHOUT ROWID row over ~1000 bytes spills into a whole overflow
    # page: a 1 KiB entry then costs 4.6 KiB on disk and runs 3x slower.
    # 16 KiB pages keep rows up to ~4 KiB inline (measured best of 4/8/16 KiB
    # for 100 B and 1 KiB entries on the 10,000-range workload).
    "page_size": 16384,
    # Page cache per connection, KiB (sqlite's default is 2 MiB: too small
    # for the B-tree of thousands of ranges).
    "cache_kib": 64 * 1024,
    # WAL pages before an automatic checkpoint (sqlite's default; with 16 KiB
    # pages a ~16 MiB WAL). Larger values measured no better.
    "wal_autocheckpoint": 1000,
    # Most batches merged into one transaction by the writer thread.
    "max_group": 256,
}

_I64_SPAN = 1 << 64
_I64_MAX = (1 << 63) - 1


def _to_sql(range_id: int) -> int:
    return range_id - _I64_SPAN if range_id > _I64_MAX else range_id


def _from_sql(value: int) -> int:
    return value + _I64_SPAN if value < 0 else value


class _Meta(RangeMeta):
    """A range's metadata, with how sqlite persists it."""

    __slots__ = ()

    def row(self, range_id: int) -> tuple[object, ...]:
        hs, snap = self.hard_state, self.snapshot
        return (
            _to_sql(range_id),
            self.first - 1,
            self.prev_term,
            *(hs if hs is not None else (None, None, None)),
            *(snap if snap is not None else (None, None, None)),
        )


class _Overlay:
    """A range's entries ``[lo, last]`` while some change to them is uncommitted."""

    __slots__ = ("ents", "lo", "seq")

    def __init__(self, lo: int, seq: int) -> None:
        # Invariant: ents[i].index == lo + i, and lo + len(ents) - 1 == the
        # range's last index (or ents is empty and the range ends below lo).
        self.lo = lo
        self.ents: list[LogEntry] = []
        # Invariant: seq is the last batch that changed this range's entries.
        self.seq = seq


class _Job:
    """One submitted batch, as SQL, waiting for the writer thread."""

    __slots__ = ("future", "metas", "seq", "stmts", "touched")

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.stmts: list[tuple[str, list[tuple[object, ...]]]] = []
        # range id -> its ``ranges`` row after this batch, None if removed.
        self.metas: dict[int, tuple[object, ...] | None] = {}
        # Ranges whose overlay this batch (re)stamped with its seq.
        self.touched: set[int] = set()
        self.future: Future[None] = Future()

    def emit(self, sql: str, rows: Iterable[tuple[object, ...]]) -> None:
        if self.stmts and self.stmts[-1][0] is sql:
            self.stmts[-1][1].extend(rows)
        else:
            self.stmts.append((sql, list(rows)))


class SqliteLogStore(MetaReads):
    """A ``LogStore`` in ``<path>/raftlog.sqlite3`` (``path`` is a directory).

    Options: ``page_size``, ``cache_kib``, ``wal_autocheckpoint``,
    ``max_group`` (see ``_DEFAULTS``); any other option is an ``InvalidArgument``.
    """

    BACKEND = "sqlite"

    def __init__(self, path: str | os.PathLike[str], **options: object) -> None:
        opts = _parse_options(options)
        self._dir = Path(path)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock_dir(self._dir)
        conns: list[sqlite3.Connection] = []
        try:
            db = str(self._dir / DB_NAME)
            conns.append(_connect(db, opts))
            _ensure_schema(conns[0])
            conns.append(_connect(db, opts))
            conns[1].execute("PRAGMA query_only = 1")
            meta = _load_meta(conns[1])
        except BaseException:
            for conn in conns:
                conn.close()
            os.close(self._lock_fd)
            raise
        # The writer thread's connection, and the readers' (under _lock).
        self._wconn, self._rconn = conns
        self._max_group = opts["max_group"]
        # Guards everything below and the read connection.
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        # Invariant: one entry per range with any state, as of the last submit.
        self._meta: dict[int, _Meta] = meta
        self._overlay: dict[int, _Overlay] = {}
        self._queue: deque[_Job] = deque()
        # Invariant: _durable_seq <= _seq; batches 1.._durable_seq are committed.
        self._seq = 0
        self._durable_seq = 0
        self._last_future: Future[None] | None = None
        self._failure: BaseException | None = None
        self._closed = False
        self._stopping = False
        self._writer = threading.Thread(target=self._run_writer, name="sqlite-log-writer")
        self._writer.daemon = True
        self._writer.start()

    # -- writes -----------------------------------------------------------------

    def write(self, batch: WriteBatch, sync: bool = True) -> None:
        fut = self.submit(batch)
        if sync:
            fut.result()

    def submit(self, batch: WriteBatch) -> Future[None]:
        with self._lock:
            self._check_usable()
            plan = plan_batch(batch, self)
            self._seq += 1
            job = _Job(self._seq)
            for op in plan:
                self._apply(op, job)
            self._queue.append(job)
            self._last_future = job.future
            self._cv.notify()
        return job.future

    def _apply(self, op: Resolved, job: _Job) -> None:
        """Apply one resolved op to memory and express it as SQL in ``job``."""
        rid = op.range_id
        sid = _to_sql(rid)
        if isinstance(op, Remove):
            job.emit(_DELETE_ALL, ((sid,),))
            self._meta.pop(rid, None)
            job.metas[rid] = None
            self._overlay[rid] = _Overlay(1, job.seq)
            job.touched.add(rid)
            return
        m = self._meta.get(rid)
        created = m is None
        if m is None:
            m = self._meta[rid] = _Meta()
        if isinstance(op, Append):
            lo = op.entries[0].index
            if op.truncates:
                job.emit(_DELETE_FROM, ((sid, lo),))
            job.emit(_INSERT, ((sid, e[1], e[0], e[2], e[3]) for e in op.entries))
            m.last = op.entries[-1].index
            self._overlay_append(rid, op, job.seq)
            job.touched.add(rid)
            if created:
                job.metas[rid] = m.row(rid)  # a new range needs its row
            return
        if isinstance(op, SetHardState):
            m.hard_state = op.hard_state
        elif isinstance(op, Snapshot):
            m.snapshot = op.meta
            self._drop_through(rid, m, op.meta.index, op.meta.term, keep=op.keep, job=job)
        else:
            assert isinstance(op, Compact)
            self._drop_through(rid, m, op.index, op.term, keep=True, job=job)
        job.metas[rid] = m.row(rid)

    def _drop_through(
        self, rid: int, m: _Meta, index: int, term: int, *, keep: bool, job: _Job
    ) -> None:
        sid = _to_sql(rid)
        m.first, m.prev_term = index + 1, term
        ov = self._overlay.get(rid)
        if keep:
            job.emit(_DELETE_UPTO, ((sid, index),))
            if ov is not None and ov.lo <= index:
                del ov.ents[: index + 1 - ov.lo]
                ov.lo = index + 1
        else:
            job.emit(_DELETE_ALL, ((sid,),))
            m.last = index
            self._overlay[rid] = _Overlay(index + 1, job.seq)
            job.touched.add(rid)

    def _overlay_append(self, rid: int, op: Append, seq: int) -> None:
        lo = op.entries[0].index
        ov = self._overlay.get(rid)
        if ov is None or lo < ov.lo:
            ov = self._overlay[rid] = _Overlay(lo, seq)
        else:
            del ov.ents[lo - ov.lo :]
            ov.seq = seq
        ov.ents.extend(op.entries)

    # -- planner view (logstore.rules.BaseView); called with the lock held ------

    def bounds(self, range_id: int) -> tuple[int, int, int]:
        m = self._meta.get(range_id, NO_RANGE)
        return m.first, m.last, m.prev_term

    def base_term(self, range_id: int, index: int) -> int:
        ov = self._overlay.get(range_id)
        if ov is not None and index >= ov.lo:
            return ov.ents[index - ov.lo].term
        row = self._rconn.execute(_SELECT_TERM, (_to_sql(range_id), index)).fetchone()
        if row is None:
            raise Corruption(f"range {range_id}: entry {index} missing from the database")
        return int(row[0])

    # -- reads ------------------------------------------------------------------

    def entries(
        self, range_id: int, lo: int, hi: int, max_bytes: int | None = None
    ) -> list[LogEntry]:
        with self._lock:
            self._check_usable()
            m = self._meta.get(range_id, NO_RANGE)
            check_slice(range_id, lo, hi, m.first, m.last)
            budget = _Budget(max_bytes)
            ov = self._overlay.get(range_id)
            split = hi if ov is None else max(lo, min(hi, ov.lo))
            out = self._read_db(range_id, lo, split, budget) if lo < split else []
            if split < hi and not budget.exhausted:
                assert ov is not None
                for e in ov.ents[split - ov.lo : hi - ov.lo]:
                    if not budget.take(e, len(out)):
                        break
                    out.append(e)
            return out

    def _read_db(self, range_id: int, lo: int, hi: int, budget: _Budget) -> list[LogEntry]:
        out: list[LogEntry] = []
        cur = self._rconn.execute(_SELECT_RANGE, (_to_sql(range_id), lo, hi))
        try:
            for idx, term, etype, data in cur:
                if idx != lo + len(out):
                    break
                e = LogEntry(term, idx, etype, data)
                if not budget.take(e, len(out)):
                    return out
                out.append(e)
        finally:
            cur.close()
        if len(out) != hi - lo:
            raise Corruption(f"range {range_id}: entry {lo + len(out)} missing from the database")
        return out

    # -- lifecycle --------------------------------------------------------------

    def purge(self) -> PurgeResult:
        """Nothing to do: compaction deletes rows and sqlite reuses their pages
        from its freelist; the file itself never shrinks (no VACUUM on the
        write path)."""
        with self._lock:
            self._check_usable()
        return PurgeResult()

    def sync(self) -> None:
        with self._lock:
            self._check_usable()
            fut = self._last_future
        if fut is not None:
            fut.result()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stopping = True
            self._cv.notify()
        self._writer.join()
        self._rconn.close()
        self._wconn.close()
        os.close(self._lock_fd)
        with self._lock:
            self._meta = {}
            self._overlay = {}

    # -- the writer thread ------------------------------------------------------

    def _run_writer(self) -> None:
        """Commit queued batches in groups until closed, then drain and exit."""
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._cv.wait()
                if not self._queue:
                    return
                n = min(len(self._queue), self._max_group)
                jobs = [self._queue.popleft() for _ in range(n)]
                failure = self._failure
            if failure is None:
                try:
                    self._commit(jobs)
                except (sqlite3.Error, OSError) as exc:
                    failure = exc
                    self._rollback()
                    with self._lock:
                        self._failure = exc
            if failure is not None:
                err = LogStoreError(f"sqlite commit failed: {failure}")
                for job in jobs:
                    job.future.set_exception(err)
                continue
            with self._lock:
                self._durable_seq = jobs[-1].seq
                for job in jobs:
                    for rid in job.touched:
                        self._maybe_drop_overlay(rid)
            for job in jobs:
                job.future.set_result(None)

    def _maybe_drop_overlay(self, rid: int) -> None:
        ov = self._overlay.get(rid)
        if ov is not None and ov.seq <= self._durable_seq:
            del self._overlay[rid]

    def _commit(self, jobs: list[_Job]) -> None:
        conn = self._wconn
        conn.execute("BEGIN IMMEDIATE")
        merged = _Job(0)
        metas: dict[int, tuple[object, ...] | None] = {}
        for job in jobs:
            for sql, rows in job.stmts:
                merged.emit(sql, rows)
            metas.update(job.metas)
        for sql, rows in merged.stmts:
            conn.executemany(sql, rows)
        upserts = [row for row in metas.values() if row is not None]
        removed = [(_to_sql(rid),) for rid, row in metas.items() if row is None]
        if removed:
            conn.executemany(_DELETE_META, removed)
        if upserts:
            conn.executemany(_UPSERT_META, upserts)
        conn.execute("COMMIT")

    def _rollback(self) -> None:
        # The failed COMMIT may already have ended the transaction.
        with contextlib.suppress(sqlite3.Error):
            self._wconn.execute("ROLLBACK")


class _Budget:
    """A byte budget for ``entries()``: admits at least one entry."""

    __slots__ = ("exhausted", "left")

    def __init__(self, max_bytes: int | None) -> None:
        # Invariant: left is None (no limit) or the bytes still admissible.
        self.left = max_bytes
        self.exhausted = False

    def take(self, e: LogEntry, taken: int) -> bool:
        if self.left is None:
            return True
        self.left -= len(e.data) + ENTRY_OVERHEAD
        if self.left < 0 and taken > 0:
            self.exhausted = True
            return False
        return True


def _parse_options(options: dict[str, object]) -> dict[str, int]:
    unknown = sorted(set(options) - set(_DEFAULTS))
    if unknown:
        raise InvalidArgument(
            f"unknown sqlite log store option(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_DEFAULTS))}"
        )
    opts = dict(_DEFAULTS)
    for key, value in options.items():
        if type(value) is not int or value <= 0:
            raise InvalidArgument(f"sqlite option {key} must be a positive int, got {value!r}")
        opts[key] = value
    size = opts["page_size"]
    if not 512 <= size <= 65536 or size & (size - 1):
        raise InvalidArgument(f"sqlite page_size must be a power of two in 512..65536, got {size}")
    return opts


def _lock_dir(directory: Path) -> int:
    """Hold an exclusive advisory lock on the directory: two stores on one
    database would each trust their own in-memory metadata."""
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LogStoreError(f"log store {directory} is in use by another store") from None
    return fd


def _connect(db: str, opts: dict[str, int]) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA page_size = {opts['page_size']}")  # before WAL: new databases only
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(f"PRAGMA cache_size = -{opts['cache_kib']}")
    conn.execute(f"PRAGMA wal_autocheckpoint = {opts['wal_autocheckpoint']}")
    conn.execute("PRAGMA temp_store = MEMORY")
    return conn


def _ensure_schema(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == 0:
        conn.executescript(
            f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA user_version = {SCHEMA_VERSION};COMMIT;"
        )
    elif version != SCHEMA_VERSION:
        raise InvalidArgument(f"sqlite log store schema version {version} is not supported")


def _load_meta(conn: sqlite3.Connection) -> dict[int, _Meta]:
    """Rebuild the per-range metadata: one row per range plus a MAX(idx) probe."""
    metas: dict[int, _Meta] = {}
    rows = conn.execute("SELECT * FROM ranges").fetchall()
    for sid, c_idx, c_term, hs_t, hs_v, hs_c, s_idx, s_term, s_data in rows:
        (top,) = conn.execute("SELECT MAX(idx) FROM entries WHERE range_id = ?", (sid,)).fetchone()
        m = _Meta(c_idx + 1, c_idx if top is None else top, c_term)
        if hs_t is not None:
            m.hard_state = HardState(hs_t, hs_v, hs_c)
        if s_idx is not None:
            m.snapshot = SnapshotMeta(s_idx, s_term, s_data)
        metas[_from_sql(sid)] = m
    return metas
