"""A cross-process wake-up signal: an eventfd, or a pipe where eventfd is missing.

Theory of operation
-------------------
A ``Wakeup`` is a level-triggered doorbell that one process rings and another
waits on. It carries no data: the ring buffers carry the data, and the doorbell
only ends a sleep. Rules that follow:

- ``signal()`` never blocks and never fails because the bell is already rung:
  an eventfd counter just grows; a full pipe already guarantees the reader
  will wake, so ``EAGAIN`` is ignored.
- ``drain()`` never blocks: it clears the bell (reads the eventfd counter, or
  empties the pipe) so the next wait sleeps again. Spurious wake-ups are
  allowed; every waiter re-checks its real condition after waking.
- ``fileno()`` is the readable end, for ``select.poll`` (the worker's blocking
  wait) or ``loop.add_reader`` (the node's asyncio loop).
- The object is shared by ``fork``: both processes keep the same descriptors.
  With the pipe fallback each process may drop the end it never uses with
  ``keep_only_reader()`` / ``keep_only_writer()``.

eventfd is preferred because one descriptor serves both ends, a signal is one
8-byte ``write`` that can never fill up, and the counter coalesces any number of
signals into one wake-up.
"""

from __future__ import annotations

import os

__all__ = ["Wakeup"]

_PIPE_DRAIN_CHUNK = 4096


class Wakeup:
    """A doorbell between processes. See the module header for its rules."""

    __slots__ = ("_closed", "_read_fd", "_write_fd", "uses_eventfd")

    def __init__(self, *, prefer_eventfd: bool = True) -> None:
        """Create the bell; ``prefer_eventfd=False`` forces the pipe fallback (tests use it)."""
        # Invariant: _read_fd and _write_fd are both -1 or open non-blocking
        # descriptors; with eventfd they are the same descriptor.
        self._closed = False
        if prefer_eventfd and hasattr(os, "eventfd"):
            fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._read_fd = fd
            self._write_fd = fd
            self.uses_eventfd = True
        else:
            r, w = os.pipe()
            os.set_blocking(r, False)
            os.set_blocking(w, False)
            self._read_fd = r
            self._write_fd = w
            self.uses_eventfd = False

    def fileno(self) -> int:
        """The descriptor that becomes readable when the bell is rung."""
        if self._read_fd < 0:
            raise ValueError("wakeup has no read end in this process")
        return self._read_fd

    def signal(self) -> None:
        """Ring the bell. Never blocks; ringing a rung bell is a no-op."""
        try:
            if self.uses_eventfd:
                os.eventfd_write(self._write_fd, 1)
            else:
                os.write(self._write_fd, b"\x01")
        except BlockingIOError:
            # Pipe full (or eventfd counter saturated): the reader is already
            # guaranteed to wake, which is all a signal promises.
            pass

    def drain(self) -> bool:
        """Clear the bell without blocking; return whether it had been rung."""
        if self.uses_eventfd:
            try:
                os.eventfd_read(self._read_fd)
            except BlockingIOError:
                return False
            return True
        rung = False
        try:
            while os.read(self._read_fd, _PIPE_DRAIN_CHUNK):
                rung = True
        except BlockingIOError:
            pass  # emptied
        return rung

    def keep_only_reader(self) -> None:
        """Drop the write end in this process (pipe fallback only; eventfd keeps its one fd)."""
        if not self.uses_eventfd and self._write_fd >= 0:
            os.close(self._write_fd)
            self._write_fd = -1

    def keep_only_writer(self) -> None:
        """Drop the read end in this process (pipe fallback only; eventfd keeps its one fd)."""
        if not self.uses_eventfd and self._read_fd >= 0:
            os.close(self._read_fd)
            self._read_fd = -1

    def close(self) -> None:
        """Close this process's descriptors. Idempotent."""
        if self._closed:
            return
        self._closed = True
        fds = {self._read_fd, self._write_fd} - {-1}
        self._read_fd = self._write_fd = -1
        for fd in fds:
            os.close(fd)

    @property
    def closed(self) -> bool:
        """Whether ``close()`` ran in this process."""
        return self._closed
