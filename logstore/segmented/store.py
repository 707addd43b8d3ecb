"""``SegmentedLogStore``: the default log store, one directory of segment files.

Theory of operation
-------------------
``submit(batch)``: a batch of the hot shape (appends extending each range's
log, plus hard states) is recognised and encoded with column-wide C calls
(``fastpath.py``); any other batch goes through the protocol's planner
(``logstore.rules.plan_batch``), which validates it against the index and
resolves it (or raises ``InvalidArgument`` before anything changes), and the
resolved ops are encoded as one columnar payload (``batch.py``). Either way
the batch becomes one record (``format.py``), written to the active segment
on the caller's thread (``writer.py``), then applied to the in-memory index
(``index.py``; recovery replays the same record to the same index) and its
entries put in the recent-entry cache. The returned future completes when
the background syncer's next fsync covers the record.

Recovery on open (``recovery.py``, ``replay.py``) and purge (``purge.py``)
are described in their modules; the byte layout in ``logstore/FORMAT.md``.

Reads are answered from the index (bounds, terms, metadata: never the disk)
and, for entry payloads, from the cache or by reading and verifying the
record on disk.

Threading: every public method holds one lock, so the store may be shared
between threads; the syncer thread touches only the writer's fds and
futures. Waiting for durability happens outside the lock.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from typing import NamedTuple

import zstandard

from logstore.errors import (
    Closed,
    Corruption,
    InvalidArgument,
    LogStoreError,
)
from logstore.protocol import HardState, LogEntry, PurgeResult, SnapshotMeta, WriteBatch
from logstore.rules import check_slice, check_term_index, limit_size, plan_batch
from logstore.segmented import purge as purge_plan
from logstore.segmented.batch import (
    DiskOp,
    EncodedBatch,
    PayloadError,
    StoredEntries,
    decode_payload,
    encode_batch,
)
from logstore.segmented.fastpath import apply_extension, plan_extension
from logstore.segmented.format import SEGMENT_HEADER, Columns, frame_record, segment_name
from logstore.segmented.index import (
    MAX_RECORD_ENTRIES,
    ORD_BITS,
    ORD_MASK,
    CachedRecord,
    EntryCache,
    RangeIndex,
    RecordTable,
    apply_columns,
)
from logstore.segmented.reader import list_segments, read_record
from logstore.segmented.recovery import RECOVERY_MODES, RecoveryMode, RecoveryReport, recover
from logstore.segmented.replay import Replayer
from logstore.segmented.writer import SegmentWriter, SyncMode, create_segment, fsync_dir

_MIB = 1 << 20
#: Entry data per rewrite record during purge (a range is never split).
_REWRITE_CHUNK = 8 * _MIB


class Options(NamedTuple):
    """Tuning of a segmented store; every field has a default."""

    segment_bytes: int = 64 * _MIB
    compression_threshold: int = 512
    compression_level: int = 1
    recovery_mode: RecoveryMode = "tolerate_tail"
    cache_bytes: int = 32 * _MIB
    sync: SyncMode = "fdatasync"
    rewrite_lag_segments: int = 4

    @classmethod
    def parse(cls, options: dict[str, object]) -> Options:
        """Check names, types and values; ``InvalidArgument`` on anything wrong."""
        unknown = set(options) - set(cls._fields)
        if unknown:
            raise InvalidArgument(f"unknown segmented log store option(s): {sorted(unknown)}")
        for name in (
            "segment_bytes",
            "compression_threshold",
            "compression_level",
            "cache_bytes",
            "rewrite_lag_segments",
        ):
            value = options.get(name, 0)
            if type(value) is not int or value < 0:
                raise InvalidArgument(f"option {name} must be a non-negative int, got {value!r}")
        opts = cls(**options)  # type: ignore[arg-type]  # types checked here
        if opts.segment_bytes < 4096:
            raise InvalidArgument(f"segment_bytes must be >= 4096, got {opts.segment_bytes}")
        if opts.recovery_mode not in RECOVERY_MODES:
            raise InvalidArgument(f"recovery_mode must be one of {RECOVERY_MODES}")
        if opts.sync not in ("fdatasync", "fsync"):
            raise InvalidArgument("sync must be 'fdatasync' or 'fsync'")
        if not 1 <= opts.compression_level <= 22:
            raise InvalidArgument("compression_level must be in 1..22")
        if opts.rewrite_lag_segments < 1:
            raise InvalidArgument("rewrite_lag_segments must be >= 1")
        return opts


_EMPTY = RangeIndex()


class SegmentedLogStore:
    """A ``LogStore`` over append-only, CRC-framed segment files (see FORMAT.md)."""

    def __init__(self, path: str | os.PathLike[str], **options: object) -> None:
        self._opts = Options.parse(options)
        self._dir = os.fspath(path)
        os.makedirs(self._dir, exist_ok=True)
        self._lock_fd = _lock_dir(self._dir)
        self._lock = threading.RLock()
        self._compressor = zstandard.ZstdCompressor(level=self._opts.compression_level)
        # Invariant: _ranges holds exactly the ranges with some state, as the
        # log replayed up to the last written record defines them.
        self._ranges: dict[int, RangeIndex] = {}
        self._table = RecordTable()
        self._cache = EntryCache(self._opts.cache_bytes)
        # Invariant: _read_fds[seq] is an O_RDONLY fd of live segment seq.
        self._read_fds: dict[int, int] = {}
        self._closed = False
        replayer = Replayer(self._ranges)

        def on_recovered(seq: int, offset: int, cols: Columns) -> None:
            replayer.add(self._table.add(seq, offset), cols)

        try:
            self.recovery: RecoveryReport = recover(
                self._dir, self._opts.recovery_mode, on_recovered
            )
            replayer.flush()
            self._writer = self._open_writer(self.recovery)
        except BaseException:
            os.close(self._lock_fd)
            raise
        # Invariant: live segments are _oldest_seq .. _writer.seq, all present.
        self._oldest_seq = list_segments(self._dir)[0]

    def _open_writer(self, rep: RecoveryReport) -> SegmentWriter:
        opts = self._opts
        if rep.last_seq == 0:
            seq, fd, end = 1, create_segment(self._dir, 1, 0, opts.sync), SEGMENT_HEADER.size
        else:
            seq, end = rep.last_seq, rep.last_end
            fd = os.open(os.path.join(self._dir, segment_name(seq)), os.O_WRONLY | os.O_CLOEXEC)
        return SegmentWriter(
            self._dir, seq=seq, fd=fd, offset=end, segment_bytes=opts.segment_bytes, mode=opts.sync
        )

    # -- writes -----------------------------------------------------------------

    def write(self, batch: WriteBatch, sync: bool = True) -> None:
        if sync:
            self.submit(batch).result()
            return
        with self._lock:
            self._check_open()
            self._write_batch(batch)

    def submit(self, batch: WriteBatch) -> Future[None]:
        with self._lock:
            self._check_open()
            ticket = self._write_batch(batch)
            return self._writer.syncer.request(ticket)

    def _write_batch(self, batch: WriteBatch) -> int:
        """Validate and write ``batch``; the ticket its durability waits for."""
        ext = plan_extension(batch.ops, self._ranges)
        if ext is not None:
            rec = self._write_record(ext.encoded)
            apply_extension(self._ranges, rec, ext)
            self._cache.put(rec, ext.encoded.entries, ext.encoded.data_bytes)
            return self._writer.syncer.last_ticket()
        ops = plan_batch(batch, self)
        if ops:
            self._write_ops(ops)
        return self._writer.syncer.last_ticket()

    def _write_ops(self, ops: Sequence[DiskOp]) -> None:
        """Encode, write and index one record of resolved ops."""
        try:
            enc = encode_batch(ops)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidArgument(f"batch cannot be encoded: {exc}") from exc
        rec = self._write_record(enc)
        apply_columns(self._ranges, rec, enc.columns)
        self._cache.put(rec, enc.entries, enc.data_bytes)

    def _write_record(self, enc: EncodedBatch) -> int:
        """Frame and write one encoded batch; its record number (index not yet updated)."""
        if len(enc.entries) > MAX_RECORD_ENTRIES:
            raise InvalidArgument(f"{len(enc.entries)} entries exceed {MAX_RECORD_ENTRIES}")
        try:
            parts = frame_record(
                enc.head, enc.columns.blob, self._compressor, self._opts.compression_threshold
            )
        except ValueError as exc:
            raise InvalidArgument(f"batch cannot be framed: {exc}") from exc
        seq, offset = self._writer.append(parts)
        return self._table.add(seq, offset)

    # -- planner view (logstore.rules.BaseView) ---------------------------------

    def bounds(self, range_id: int) -> tuple[int, int, int]:
        r = self._ranges.get(range_id, _EMPTY)
        return r.first, r.first + len(r.terms) - 1, r.prev_term

    def base_term(self, range_id: int, index: int) -> int:
        r = self._ranges[range_id]
        return r.terms[index - r.first]

    # -- reads ------------------------------------------------------------------

    def entries(
        self, range_id: int, lo: int, hi: int, max_bytes: int | None = None
    ) -> list[LogEntry]:
        with self._lock:
            self._check_open()
            r = self._ranges.get(range_id, _EMPTY)
            check_slice(range_id, lo, hi, r.first, r.last)
            return limit_size(self._read(r, lo, hi, max_bytes), max_bytes)

    def _read(self, r: RangeIndex, lo: int, hi: int, max_bytes: int | None) -> list[LogEntry]:
        """Entries ``[lo, hi)`` of ``r``, stopping early once past ``max_bytes``."""
        out: list[LogEntry] = []
        locs = r.locs
        k, end = lo - r.first, hi - r.first
        budget = -1 if max_bytes is None else max_bytes
        while k < end:
            loc = locs[k]
            n = 1
            while k + n < end and locs[k + n] == loc + n:
                n += 1
            o = loc & ORD_MASK
            held = self._record_entries(loc >> ORD_BITS)
            run = held[o : o + n] if isinstance(held, list) else held.take(o, n, r.first + k)
            out += run
            k += n
            if budget >= 0:
                budget -= sum(len(e.data) for e in run)
                if budget < 0:
                    break
        return out

    def _record_entries(self, rec: int) -> CachedRecord:
        """A record's entries, from the cache or verified from disk."""
        hit = self._cache.get(rec)
        if hit is not None:
            return hit
        seq, offset = self._table.locate(rec)
        fd = self._read_fds.get(seq)
        path = os.path.join(self._dir, segment_name(seq))
        if fd is None:
            fd = self._read_fds[seq] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            stored = StoredEntries(decode_payload(read_record(fd, offset, path)))
        except PayloadError as exc:
            raise Corruption(f"record payload inconsistent: {exc}", path, offset) from exc
        self._cache.put_sized(rec, stored, stored.nbytes)
        return stored

    def term(self, range_id: int, index: int) -> int:
        with self._lock:
            self._check_open()
            r = self._ranges.get(range_id, _EMPTY)
            check_term_index(range_id, index, r.first, r.last)
            return r.term(index)

    def first_index(self, range_id: int) -> int:
        with self._lock:
            self._check_open()
            return self._ranges.get(range_id, _EMPTY).first

    def last_index(self, range_id: int) -> int:
        with self._lock:
            self._check_open()
            return self._ranges.get(range_id, _EMPTY).last

    def hard_state(self, range_id: int) -> HardState | None:
        with self._lock:
            self._check_open()
            return self._ranges.get(range_id, _EMPTY).hard_state

    def snapshot_meta(self, range_id: int) -> SnapshotMeta | None:
        with self._lock:
            self._check_open()
            return self._ranges.get(range_id, _EMPTY).snapshot

    def range_ids(self) -> Iterable[int]:
        with self._lock:
            self._check_open()
            return list(self._ranges)

    # -- space ------------------------------------------------------------------

    def purge(self) -> PurgeResult:
        """Delete the oldest segments nothing live needs (see ``purge.py``)."""
        with self._lock:
            self._check_open()
            active = self._writer.seq
            lagging = purge_plan.find_lagging(self._ranges, self._table, active)
            limit = active - self._opts.rewrite_lag_segments
            rewrite = sorted(rid for rid, seq in lagging.items() if seq <= limit)
            self._rewrite(rewrite)
            active = self._writer.seq
            keep = purge_plan.keep_from(self._ranges, self._table, active)
            removed_files = removed_bytes = 0
            if keep > self._oldest_seq:
                first_kept = self._table.first_rec_of(keep)
                ckpt = purge_plan.checkpoint_ops(self._ranges, first_kept)
                if ckpt:
                    self._write_ops(ckpt)
                self._sync_locked()
                removed_files, removed_bytes = self._delete_segments(keep, first_kept)
            still = purge_plan.find_lagging(self._ranges, self._table, self._writer.seq)
            return PurgeResult(removed_files, removed_bytes, tuple(sorted(still)), tuple(rewrite))

    def _rewrite(self, rids: list[int]) -> None:
        """Copy the live entries of ``rids`` forward, one whole range per record at least."""
        ops: list[DiskOp] = []
        size = 0
        for rid in rids:
            r = self._ranges[rid]
            ops += purge_plan.rewrite_ops(rid, r, self._read_all)
            size += len(r.terms) * 16 + 64
            if size >= _REWRITE_CHUNK:
                self._write_ops(ops)
                ops, size = [], 0
        if ops:
            self._write_ops(ops)

    def _read_all(self, rid: int, lo: int, hi: int) -> list[LogEntry]:
        return self._read(self._ranges[rid], lo, hi, None)

    def _delete_segments(self, keep: int, first_kept: int) -> tuple[int, int]:
        """Delete segments ``_oldest_seq .. keep - 1`` (durable), oldest first."""
        files = size = 0
        for seq in range(self._oldest_seq, keep):
            fd = self._read_fds.pop(seq, None)
            if fd is not None:
                os.close(fd)
            path = os.path.join(self._dir, segment_name(seq))
            size += os.path.getsize(path)
            os.unlink(path)
            files += 1
            self._oldest_seq = seq + 1
        fsync_dir(self._dir)
        self._table.drop_before(first_kept)
        self._cache.drop_before(first_kept)
        return files, size

    # -- lifecycle --------------------------------------------------------------

    @property
    def fsyncs(self) -> int:
        """Number of fsyncs done by this open (for benchmarks and tests)."""
        return self._writer.syncer.fsyncs

    def sync(self) -> None:
        with self._lock:
            self._check_open()
            fut = self._writer.syncer.request(self._writer.syncer.last_ticket())
        fut.result()

    def _sync_locked(self) -> None:
        self._writer.syncer.request(self._writer.syncer.last_ticket()).result()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                try:
                    self._sync_locked()
                finally:
                    self._writer.close()
            finally:
                for fd in self._read_fds.values():
                    os.close(fd)
                self._read_fds.clear()
                self._ranges = {}
                os.close(self._lock_fd)

    def _check_open(self) -> None:
        if self._closed:
            raise Closed("segmented log store is closed")


def _lock_dir(path: str) -> int:
    """Hold an exclusive lock on the directory for this open (released on exit/crash)."""
    fd = os.open(os.path.join(path, "LOCK"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise LogStoreError(f"log store {path} is in use by another process") from exc
    return fd
