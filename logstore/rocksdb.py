"""``RocksdbLogStore``: every range's raft log in one RocksDB (via ``rocksdict``).

Optional backend: registered only when the ``rocksdict`` wheel is installed.
It is the design CockroachDB used before its own log store: all ranges in one
LSM tree, one atomic ``WriteBatch`` per log-store batch.

Key layout (raw bytes, big-endian so that keys sort by range, then index)::

    b"e" | range_id u64 | index u64   ->  term u64 | type u8 | data
    b"m" | range_id u64               ->  compact_index u64 | compact_term u64 | flags u8
                                          [| hs term u64 | vote u64 | commit u64]   (flags & 1)
                                          [| snap index u64 | term u64 | data]      (flags & 2)

The last index is not stored: on open it is the key before
``e|range|2**64-1`` (one ``seek_for_prev`` per range), or the compaction
point when the range holds no entry.

Theory of operation
-------------------
``submit`` validates the batch (``logstore.rules.plan_batch``), applies it to
the in-memory metadata, and writes the RocksDB ``WriteBatch`` with
``sync=False`` on the caller's thread: the batch is then in the memtable
(read-your-writes) and in the WAL's OS buffer. A syncer thread calls
``flush_wal(sync=True)``: one WAL fsync covers every batch written before it
(group commit), and futures complete in order; ``flush_wal`` releases the
GIL, so the caller keeps working meanwhile. RocksDB's WAL is one sequential
log replayed in *point-in-time* recovery mode (set explicitly): replay stops
at the first bad record, so a crash keeps a prefix of the batches, each whole.

Truncations use point deletes (a few keys); compactions and removals use
range deletions (one tombstone however many entries they drop).
"""

from __future__ import annotations

import struct
import threading
from concurrent.futures import Future
from pathlib import Path

import rocksdict  # type: ignore[import-untyped,import-not-found,unused-ignore]

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
    limit_size,
    plan_batch,
)

_RID = struct.Struct(">Q")
_EKEY = struct.Struct(">cQQ")
_EVAL = struct.Struct(">QB")
_MHEAD = struct.Struct(">QQB")
_U64X3 = struct.Struct(">QQQ")
_U64X2 = struct.Struct(">QQ")
_HAS_HS = 1
_HAS_SNAP = 2
_END = (1 << 64) - 1  # past every index (indices fit 63 bits)


def _ekey(rid: int, index: int) -> bytes:
    return _EKEY.pack(b"e", rid, index)


def _mkey(rid: int) -> bytes:
    return b"m" + _RID.pack(rid)


class _Meta(RangeMeta):
    """A range's metadata, with how rocksdb persists it."""

    __slots__ = ()

    def encode(self) -> bytes:
        flags = (_HAS_HS if self.hard_state else 0) | (_HAS_SNAP if self.snapshot else 0)
        out = [_MHEAD.pack(self.first - 1, self.prev_term, flags)]
        if self.hard_state is not None:
            out.append(_U64X3.pack(*self.hard_state))
        if self.snapshot is not None:
            out.append(_U64X2.pack(self.snapshot.index, self.snapshot.term))
            out.append(self.snapshot.data)
        return b"".join(out)

    @classmethod
    def decode(cls, raw: bytes) -> _Meta:
        c_idx, c_term, flags = _MHEAD.unpack_from(raw)
        m = cls(c_idx + 1, c_idx, c_term)
        off = _MHEAD.size
        if flags & _HAS_HS:
            m.hard_state = HardState(*_U64X3.unpack_from(raw, off))
            off += _U64X3.size
        if flags & _HAS_SNAP:
            s_idx, s_term = _U64X2.unpack_from(raw, off)
            m.snapshot = SnapshotMeta(s_idx, s_term, bytes(raw[off + _U64X2.size :]))
        return m


class RocksdbLogStore(MetaReads):
    """A ``LogStore`` in a RocksDB at directory ``path``. Takes no options."""

    BACKEND = "rocksdb"

    def __init__(self, path: str | Path, **options: object) -> None:
        if options:
            raise InvalidArgument(
                f"rocksdb log store takes no options, got {', '.join(sorted(options))}"
            )
        opts = rocksdict.Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.set_wal_recovery_mode(rocksdict.DBRecoveryMode.point_in_time())
        try:
            self._db = rocksdict.Rdict(str(path), opts)
        except Exception as exc:  # rocksdict raises plain Exception (e.g. the LOCK is held)
            raise LogStoreError(f"cannot open rocksdb log store {path}: {exc}") from exc
        self._nosync = rocksdict.WriteOptions()
        self._nosync.sync = False
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        # Invariant: one entry per range with any state, as of the last submit.
        self._meta: dict[int, _Meta] = self._load_meta()
        # Invariant: tickets 1.._written were written; _waiters holds the
        # (ticket, future) pairs not yet covered by a WAL fsync, in order.
        self._written = 0
        self._waiters: list[tuple[int, Future[None]]] = []
        self._last_future: Future[None] | None = None
        self._failure: BaseException | None = None
        self._closed = False
        self._syncer = threading.Thread(target=self._run_syncer, name="rocksdb-log-syncer")
        self._syncer.daemon = True
        self._syncer.start()

    def _load_meta(self) -> dict[int, _Meta]:
        metas: dict[int, _Meta] = {}
        it = self._db.iter()
        it.seek(b"m")
        while it.valid() and it.key()[:1] == b"m":
            rid = _RID.unpack_from(it.key(), 1)[0]
            metas[rid] = _Meta.decode(it.value())
            it.next()
        for rid, m in metas.items():
            it.seek_for_prev(_ekey(rid, _END))
            if it.valid():
                tag, krid, idx = _EKEY.unpack(it.key())
                if tag == b"e" and krid == rid and idx >= m.first:
                    m.last = idx
        del it
        return metas

    # -- writes -----------------------------------------------------------------

    def write(self, batch: WriteBatch, sync: bool = True) -> None:
        fut = self.submit(batch)
        if sync:
            fut.result()

    def submit(self, batch: WriteBatch) -> Future[None]:
        fut: Future[None] = Future()
        with self._lock:
            self._check_usable()
            plan = plan_batch(batch, self)
            wb = rocksdict.WriteBatch(raw_mode=True)
            dirty: set[int] = set()
            for op in plan:
                self._apply(op, wb, dirty)
            for rid in dirty:
                m = self._meta.get(rid)
                if m is None:
                    wb.delete(_mkey(rid))
                else:
                    wb.put(_mkey(rid), m.encode())
            try:
                self._db.write(wb, self._nosync)
            except Exception as exc:
                # Memory is ahead of the database now: refuse further use.
                self._failure = exc
                raise LogStoreError(f"rocksdb write failed: {exc}") from exc
            self._written += 1
            self._waiters.append((self._written, fut))
            self._last_future = fut
            self._cv.notify()
        return fut

    def _apply(self, op: Resolved, wb: rocksdict.WriteBatch, dirty: set[int]) -> None:
        rid = op.range_id
        dirty.add(rid)
        if isinstance(op, Remove):
            wb.delete_range(_ekey(rid, 0), _ekey(rid, _END))
            self._meta.pop(rid, None)
            return
        m = self._meta.get(rid)
        if m is None:
            m = self._meta[rid] = _Meta()
        if isinstance(op, Append):
            new_last = op.entries[-1].index
            for i in range(new_last + 1, m.last + 1):
                wb.delete(_ekey(rid, i))
            for e in op.entries:
                wb.put(_ekey(rid, e[1]), _EVAL.pack(e[0], e[2]) + e[3])
            m.last = new_last
        elif isinstance(op, SetHardState):
            m.hard_state = op.hard_state
        elif isinstance(op, Snapshot):
            m.snapshot = op.meta
            self._drop_through(rid, m, op.meta.index, op.meta.term, keep=op.keep, wb=wb)
        else:
            assert isinstance(op, Compact)
            self._drop_through(rid, m, op.index, op.term, keep=True, wb=wb)

    @staticmethod
    def _drop_through(
        rid: int, m: _Meta, index: int, term: int, *, keep: bool, wb: rocksdict.WriteBatch
    ) -> None:
        m.first, m.prev_term = index + 1, term
        if keep:
            wb.delete_range(_ekey(rid, 0), _ekey(rid, index + 1))
        else:
            wb.delete_range(_ekey(rid, 0), _ekey(rid, _END))
            m.last = index

    # -- planner view (logstore.rules.BaseView); called with the lock held ------

    def bounds(self, range_id: int) -> tuple[int, int, int]:
        m = self._meta.get(range_id, NO_RANGE)
        return m.first, m.last, m.prev_term

    def base_term(self, range_id: int, index: int) -> int:
        raw = self._db.get(_ekey(range_id, index))
        if raw is None:
            raise Corruption(f"range {range_id}: entry {index} missing from rocksdb")
        return int(_EVAL.unpack_from(raw)[0])

    # -- reads ------------------------------------------------------------------

    def entries(
        self, range_id: int, lo: int, hi: int, max_bytes: int | None = None
    ) -> list[LogEntry]:
        with self._lock:
            self._check_usable()
            m = self._meta.get(range_id, NO_RANGE)
            check_slice(range_id, lo, hi, m.first, m.last)
            out: list[LogEntry] = []
            total = 0
            it = self._db.iter()
            it.seek(_ekey(range_id, lo))
            for i in range(lo, hi):
                if not it.valid() or it.key() != _ekey(range_id, i):
                    raise Corruption(f"range {range_id}: entry {i} missing from rocksdb")
                raw = it.value()
                term, etype = _EVAL.unpack_from(raw)
                e = LogEntry(term, i, etype, bytes(raw[_EVAL.size :]))
                total += len(e.data) + ENTRY_OVERHEAD
                out.append(e)
                if max_bytes is not None and total > max_bytes:
                    break  # limit_size below cuts exactly
                it.next()
            del it
            return limit_size(out, max_bytes)

    # -- lifecycle --------------------------------------------------------------

    def purge(self) -> PurgeResult:
        """Nothing to do here: RocksDB's own compactions drop deleted entries."""
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
            self._cv.notify()
        self._syncer.join()
        self._db.close()
        del self._db
        with self._lock:
            self._meta = {}

    # -- the syncer thread ------------------------------------------------------

    def _run_syncer(self) -> None:
        """Fsync the WAL once per wake-up, completing every batch it covers."""
        while True:
            with self._lock:
                while not self._waiters and not self._closed:
                    self._cv.wait()
                if not self._waiters:
                    return
                upto = self._written
                done = [w for w in self._waiters if w[0] <= upto]
                self._waiters = [w for w in self._waiters if w[0] > upto]
            err: BaseException | None = None
            try:
                self._db.flush_wal(True)
            except Exception as exc:
                err = LogStoreError(f"rocksdb WAL sync failed: {exc}")
                with self._lock:
                    self._failure = exc
            for _, fut in done:
                if err is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(err)
