"""Appending records to the active segment, and making them durable.

Rules
-----
- ``append`` does the ``write`` syscall on the caller's thread, so a batch is
  in the page cache (visible to a crash-surviving kernel, readable by us)
  when ``submit`` returns. The fsync runs on the ``Syncer`` thread; CPython
  releases the GIL during ``fsync``, so the caller keeps encoding the next
  batch meanwhile.
- **Coalescing.** Each written record gets a ticket ``1, 2, 3, ...``. The
  syncer, when woken, notes the highest ticket written so far, syncs once,
  and completes every waiter up to that ticket: one fsync covers every batch
  written before it, however many queued up while the previous one ran.
- **Durable order.** Tickets complete in order, and a segment is rolled only
  after everything written to it is durable (``roll`` waits), so a crash can
  leave a torn tail only in the *last* segment: recovery relies on that.
- New segments are created with their header written and synced and the
  directory fsynced before any record goes in.
- ``fdatasync`` is safe here: the file only grows by appends, and
  ``fdatasync`` flushes the size change needed to read the data back.
- A failed ``write`` is undone with ``ftruncate`` to the old end so the next
  record does not land behind garbage. A failed fsync is final (the page
  cache may have dropped the dirty pages): the writer refuses all later work.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import Future
from typing import Literal

from logstore.errors import Closed, LogStoreError
from logstore.segmented.format import SEGMENT_HEADER, pack_segment_header, segment_name

SyncMode = Literal["fdatasync", "fsync"]


def fsync_dir(path: str) -> None:
    """Make creations, renames and deletions in directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_segment(dir_path: str, seq: int, prev_size: int, sync: SyncMode) -> int:
    """Create segment ``seq`` with its header, durable with its directory entry; its fd."""
    path = os.path.join(dir_path, segment_name(seq))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        header = pack_segment_header(seq, prev_size)
        if os.write(fd, header) != len(header):
            raise OSError(f"short write of the header of {path}")
        _sync_fd(fd, sync)
        fsync_dir(dir_path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _sync_fd(fd: int, mode: SyncMode) -> None:
    if mode == "fsync":
        os.fsync(fd)
    else:
        os.fdatasync(fd)


class Syncer:
    """The background thread that turns written tickets into durable ones."""

    def __init__(self, fd: int, mode: SyncMode, name: str) -> None:
        self._mode: SyncMode = mode
        self._cond = threading.Condition()
        # Invariant: _fd is the active segment's fd; retired fds are closed
        # only by the syncer thread, between syncs (never while in use).
        self._fd = fd
        self._retired: list[int] = []
        # Invariant: 0 <= _durable <= _written; tickets <= _durable are durable.
        self._written = 0
        self._durable = 0
        # Invariant: tickets in _waiters are > _durable and increasing.
        self._waiters: deque[tuple[int, Future[None]]] = deque()
        self._failed: BaseException | None = None
        self._closing = False
        self.fsyncs = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Raise if the writer cannot take more work."""
        if self._failed is not None:
            raise LogStoreError(f"log store failed: {self._failed!r}") from self._failed
        if self._closing:
            raise Closed("segmented log store is closed")

    def written(self) -> int:
        """Register one more written record; its ticket."""
        with self._cond:
            self._written += 1
            return self._written

    def request(self, ticket: int) -> Future[None]:
        """A future completed once ``ticket`` is durable."""
        fut: Future[None] = Future()
        with self._cond:
            if self._failed is not None:
                fut.set_exception(self._failed)
            elif ticket <= self._durable:
                fut.set_result(None)
            else:
                self._waiters.append((ticket, fut))
                self._cond.notify()
        return fut

    def last_ticket(self) -> int:
        with self._cond:
            return self._written

    def swap_fd(self, fd: int) -> None:
        """Make ``fd`` the active segment; the old one is closed by the thread."""
        with self._cond:
            self._retired.append(self._fd)
            self._fd = fd
            self._cond.notify()

    def close(self) -> None:
        """Finish pending syncs, stop the thread, close the fds."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
        for fd in (*self._retired, self._fd):
            os.close(fd)
        self._retired.clear()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiters and not self._retired and not self._closing:
                    self._cond.wait()
                for fd in self._retired:
                    os.close(fd)
                self._retired.clear()
                if not self._waiters:
                    if self._closing:
                        return
                    continue
                target, fd = self._written, self._fd
            try:
                _sync_fd(fd, self._mode)
            except OSError as exc:
                self._fail(exc)
                return
            self.fsyncs += 1
            done: list[Future[None]] = []
            with self._cond:
                self._durable = target
                while self._waiters and self._waiters[0][0] <= target:
                    done.append(self._waiters.popleft()[1])
            for fut in done:
                fut.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        with self._cond:
            self._failed = exc
            waiters = list(self._waiters)
            self._waiters.clear()
        for _, fut in waiters:
            fut.set_exception(exc)


class SegmentWriter:
    """The active segment: appends framed records, rolls to a new file when full."""

    def __init__(
        self,
        dir_path: str,
        *,
        seq: int,
        fd: int,
        offset: int,
        segment_bytes: int,
        mode: SyncMode,
    ) -> None:
        self.dir_path = dir_path
        self._mode: SyncMode = mode
        self._segment_bytes = segment_bytes
        # Invariant: records go to segment `seq` at byte `offset` (its size).
        self.seq = seq
        self.offset = offset
        self.syncer = Syncer(fd, mode, f"logstore-sync-{os.path.basename(dir_path)}")
        self._fd = fd

    def append(self, parts: list[bytes]) -> tuple[int, int]:
        """Write one framed record (its buffers, in order); ``(seq, offset)``.
        Rolls to a new segment first if the record does not fit."""
        self.syncer.check()
        size = sum(map(len, parts))
        if self.offset + size > self._segment_bytes and self.offset > SEGMENT_HEADER.size:
            self._roll()
        off = self.offset
        try:
            done = os.pwritev(self._fd, parts, off)
            if done != size:  # regular files write in full unless out of space
                raise OSError(f"short write: {done} of {size} bytes")
        except OSError:
            os.ftruncate(self._fd, off)  # if this fails too, the error propagates
            raise
        self.offset = off + size
        self.syncer.written()
        return self.seq, off

    def _roll(self) -> None:
        """Seal the active segment (durable first) and start the next one."""
        self.syncer.request(self.syncer.last_ticket()).result()
        fd = create_segment(self.dir_path, self.seq + 1, self.offset, self._mode)
        self.syncer.swap_fd(fd)
        self._fd = fd
        self.seq += 1
        self.offset = SEGMENT_HEADER.size

    def close(self) -> None:
        self.syncer.close()
