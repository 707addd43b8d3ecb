"""The node<->worker duplex channel: one shared-memory ring per direction plus wake-ups.

Theory of operation
-------------------
The node creates a ``ChannelPair`` *before* forking the worker: two rings
(``to_worker``, ``to_node``), two doorbells (``node_bell`` wakes the node,
``worker_bell`` wakes the worker) and the node's pid. After ``fork`` the node
keeps ``pair.node_end(worker_pid)`` (asyncio) and the worker keeps
``pair.worker_end()`` (blocking with timeouts). One bell per process serves both
of its roles: the consumer sleeping for data and the producer sleeping for
space; a waiter always re-checks its ring after waking, so sharing is safe.

Rules
-----
- Wake-ups are rare: a side sleeps only after ``prepare_sleep`` (flag, fence,
  re-check) says its ring is still empty/full, and the other side rings the
  bell only when it sees that flag (see ``shm_ring``'s header).
- Every sleep is bounded by ``wait_interval`` and also wakes on the peer's
  death (its pidfd is in the same poll set), so a dead peer becomes
  ``PeerDead`` promptly and a lost wake-up can only cost latency.
- Back-pressure: ``send`` waits while the ring is full; nothing is dropped or
  overwritten. A record that can never fit raises ``RecordTooLarge``. A send
  to a dead peer raises ``PeerDead`` at the latest when it would have to wait
  (records that fit are published first: writing is one-way, so the liveness
  syscall stays off the hot path).
- End of stream: records published before the peer closed or died are always
  delivered first; then ``recv`` raises ``PeerClosed`` / ``PeerDead``. The
  flag/liveness is sampled *before* the ring is read, and the peer published
  its records before it closed or died, so none can be missed.
- Segments never leak: the rings' names are unlinked as soon as they are
  created, before the fork. Both processes reach the memory through the
  mapping the fork copies, so no name exists in /dev/shm while the channel
  runs and a SIGKILL of either side leaves nothing behind.
- One sending and one receiving task per end at a time (SPSC); a second
  concurrent caller gets ``RuntimeError``.
- ``close()`` ends both directions gracefully and releases this process's
  resources; ``release()`` only drops this process's copies (for channels a
  forked child inherited but does not own).
"""

from __future__ import annotations

import asyncio
import os
import select
import time
from collections.abc import Sequence
from typing import Final

from transport.errors import ClosedResourceError, PeerClosed, PeerDead
from transport.liveness import PeerWatch
from transport.shm_ring import BytesLike, ShmRing
from transport.wakeup import Wakeup

__all__ = ["DEFAULT_CAPACITY", "ChannelPair", "NodeChannel", "WorkerChannel"]

DEFAULT_CAPACITY: Final = 8 << 20
DEFAULT_WAIT_INTERVAL: Final = 0.25


class ChannelPair:
    """The resources of one node<->worker channel, made in the node before ``fork``."""

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        *,
        prefer_eventfd: bool = True,
        wait_interval: float = DEFAULT_WAIT_INTERVAL,
    ) -> None:
        """Create both rings (``capacity`` data bytes each) and both doorbells."""
        self.wait_interval = wait_interval
        self.node_pid = os.getpid()
        self._taken = False
        self.to_worker = ShmRing.create(capacity)
        try:
            self.to_node = ShmRing.create(capacity)
        except BaseException:
            self.to_worker.close()
            raise
        self.to_worker.unlink()
        self.to_node.unlink()
        self.node_bell = Wakeup(prefer_eventfd=prefer_eventfd)
        self.worker_bell = Wakeup(prefer_eventfd=prefer_eventfd)

    def node_end(self, worker_pid: int) -> NodeChannel:
        """The node's end, in the node after forking ``worker_pid``. Consumes the pair."""
        self._take()
        self.node_bell.keep_only_reader()
        self.worker_bell.keep_only_writer()
        watch = PeerWatch(worker_pid)
        return NodeChannel(self, watch)

    def worker_end(self) -> WorkerChannel:
        """The worker's end, in the forked worker. Consumes the pair."""
        self._take()
        self.worker_bell.keep_only_reader()
        self.node_bell.keep_only_writer()
        watch = PeerWatch(self.node_pid, is_parent=True)
        return WorkerChannel(self, watch)

    def release(self) -> None:
        """Drop this process's mappings and descriptors without signalling the peer."""
        self._taken = True
        self.to_worker.close()
        self.to_node.close()
        self.node_bell.close()
        self.worker_bell.close()

    def _take(self) -> None:
        if self._taken:
            raise ClosedResourceError("channel pair already split or released")
        self._taken = True


class _End:
    """What both ends share: the rings of their roles, the bells and the peer watch."""

    def __init__(
        self,
        *,
        out_ring: ShmRing,
        in_ring: ShmRing,
        my_bell: Wakeup,
        peer_bell: Wakeup,
        watch: PeerWatch,
        wait_interval: float,
    ) -> None:
        # Invariant: this process is the only producer of _out and the only
        # consumer of _in; _my_bell is read here, _peer_bell only signalled.
        self._out = out_ring
        self._in = in_ring
        self._my_bell = my_bell
        self._peer_bell = peer_bell
        self._watch = watch
        self._wait_interval = wait_interval
        # Invariant: once True, every operation raises ClosedResourceError.
        self._closed = False
        # Invariant: True while a send (resp. recv) call is in progress (SPSC guard).
        self._sending = False
        self._receiving = False

    @property
    def record_limit(self) -> int:
        """The largest record payload ``send`` accepts."""
        return self._out.record_limit

    @property
    def peer_pid(self) -> int:
        """The pid of the process on the other end."""
        return self._watch.pid

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedResourceError("channel is closed")

    def _enter(self, sending: bool) -> None:
        self._check_open()
        if (self._sending if sending else self._receiving):
            raise RuntimeError("another task is already using this end of the channel (SPSC)")
        if sending:
            self._sending = True
        else:
            self._receiving = True

    def _leave(self, sending: bool) -> None:
        if sending:
            self._sending = False
        else:
            self._receiving = False

    def _write_some(self, records: Sequence[BytesLike], start: int) -> int:
        """Publish what fits, ring the peer if it sleeps; raise if it can never read."""
        self._check_open()
        if self._out.consumer_closed:
            raise PeerClosed("peer stopped reading")
        done, wake = self._out.try_write(records, start)
        if wake:
            self._peer_bell.signal()
        if done < len(records) and not self._watch.poll_alive():
            raise PeerDead(self._watch.pid)
        return done

    def _read_some(self) -> list[bytes]:
        """Take what was published; raise once the ring is drained and the peer is gone."""
        self._check_open()
        records, wake = self._in.try_read()
        if not records:
            # Sample the peer's state first, then read again: anything it
            # published before closing or dying is visible to the second read.
            closed = self._in.producer_closed
            alive = closed or self._watch.poll_alive()
            records, wake = self._in.try_read()
            if not records and closed:
                raise PeerClosed("peer ended the stream")
            if not records and not alive:
                raise PeerDead(self._watch.pid)
        if wake:
            self._peer_bell.signal()
        return records

    def _finish(self, graceful: bool) -> None:
        """Close both directions (if graceful) and drop this process's resources."""
        if self._closed:
            return
        self._closed = True
        if graceful:
            wake = self._out.close_producer()
            wake = self._in.close_consumer() or wake
            if wake:
                self._peer_bell.signal()
        self._out.close()
        self._in.close()
        self._my_bell.close()
        self._peer_bell.close()
        self._watch.close()


class WorkerChannel(_End):
    """The worker's end: blocking calls with timeouts (the worker's tick bounds them)."""

    def __init__(self, pair: ChannelPair, watch: PeerWatch) -> None:
        """Use ``ChannelPair.worker_end()``."""
        super().__init__(
            out_ring=pair.to_node,
            in_ring=pair.to_worker,
            my_bell=pair.worker_bell,
            peer_bell=pair.node_bell,
            watch=watch,
            wait_interval=pair.wait_interval,
        )
        self._poller = select.poll()
        self._poller.register(self._my_bell.fileno(), select.POLLIN)
        if watch.fileno() >= 0:
            self._poller.register(watch.fileno(), select.POLLIN)

    def send(self, records: Sequence[BytesLike], timeout: float | None = None) -> int:
        """Publish ``records`` in order, waiting for space up to ``timeout`` seconds.

        Returns how many were published: ``len(records)`` unless the timeout
        expired first (the rest were not written). ``None`` waits indefinitely
        (still bounded per sleep, and ended by the node's death).
        """
        self._enter(True)
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            done = self._write_some(records, 0)
            while done < len(records):
                if self._out.producer_prepare_sleep():
                    try:
                        if not self._block(deadline):
                            return self._write_some(records, done)
                    finally:
                        self._out.producer_end_sleep()
                done = self._write_some(records, done)
            return done
        finally:
            self._leave(True)

    def recv(self, timeout: float | None = None) -> list[bytes]:
        """Every record the node published, waiting up to ``timeout`` seconds for one.

        Returns ``[]`` when the timeout expires with nothing to read.
        """
        self._enter(False)
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                records = self._read_some()
                if records:
                    return records
                if self._in.consumer_prepare_sleep():
                    try:
                        if not self._block(deadline):
                            return self._read_some()
                    finally:
                        self._in.consumer_end_sleep()
        finally:
            self._leave(False)

    def _block(self, deadline: float | None) -> bool:
        """Sleep until the bell, the peer's death, one wait interval, or the deadline.

        Returns False only when the deadline passed.
        """
        wait = self._wait_interval
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            wait = min(wait, left)
        if self._poller.poll(max(1, int(wait * 1000 + 0.999))):
            self._my_bell.drain()
        return deadline is None or time.monotonic() < deadline

    def close(self) -> None:
        """End both directions: the node drains what was sent, then sees ``PeerClosed``."""
        self._finish(graceful=True)

    def release(self) -> None:
        """Drop this process's resources without telling the node (e.g. before ``exec``)."""
        self._finish(graceful=False)


class NodeChannel(_End):
    """The node's end: coroutines for the asyncio/uvloop loop, plus non-blocking calls.

    The bell and the worker's pidfd are registered with ``loop.add_reader`` on
    first use in the running loop (and moved if a later call runs in another
    loop). Their callback resolves the futures of the sleeping coroutines; a
    sleeper also wakes after one wait interval. No wake-up can slip in between
    ``prepare_sleep`` and the ``await``: the loop runs callbacks only while the
    coroutine is suspended.
    """

    def __init__(self, pair: ChannelPair, watch: PeerWatch) -> None:
        """Use ``ChannelPair.node_end(worker_pid)``."""
        super().__init__(
            out_ring=pair.to_worker,
            in_ring=pair.to_node,
            my_bell=pair.node_bell,
            peer_bell=pair.worker_bell,
            watch=watch,
            wait_interval=pair.wait_interval,
        )
        # Invariant: _loop is the loop the readers are registered with, or None.
        self._loop: asyncio.AbstractEventLoop | None = None
        # Invariant: the futures of coroutines sleeping in send/recv right now
        # (at most one each, by the SPSC guard).
        self._waiters: list[asyncio.Future[None]] = []

    def send_nowait(self, records: Sequence[BytesLike]) -> int:
        """Publish the records that fit now; return how many (the rest were not written)."""
        self._enter(True)
        try:
            return self._write_some(records, 0)
        finally:
            self._leave(True)

    async def send(self, records: Sequence[BytesLike]) -> None:
        """Publish ``records`` in order, awaiting space while the ring is full."""
        self._enter(True)
        try:
            loop = self._register()
            done = self._write_some(records, 0)
            while done < len(records):
                if self._out.producer_prepare_sleep():
                    try:
                        await self._sleep(loop)
                    finally:
                        self._out.producer_end_sleep()
                done = self._write_some(records, done)
        finally:
            self._leave(True)

    def recv_nowait(self) -> list[bytes]:
        """Every record published so far (possibly none); never waits."""
        self._enter(False)
        try:
            return self._read_some()
        finally:
            self._leave(False)

    async def recv(self) -> list[bytes]:
        """Every record the worker published, awaiting at least one."""
        self._enter(False)
        try:
            loop = self._register()
            while True:
                records = self._read_some()
                if records:
                    return records
                if self._in.consumer_prepare_sleep():
                    try:
                        await self._sleep(loop)
                    finally:
                        self._in.consumer_end_sleep()
        finally:
            self._leave(False)

    async def _sleep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait for the bell, the peer's exit, close(), or one wait interval."""
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(self._wait_interval, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiters.remove(waiter)

    def _register(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return loop
        self._unregister()
        loop.add_reader(self._my_bell.fileno(), self._on_bell)
        if self._watch.fileno() >= 0:
            loop.add_reader(self._watch.fileno(), self._on_peer_exit)
        self._loop = loop
        return loop

    def _unregister(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None or loop.is_closed():
            return
        loop.remove_reader(self._my_bell.fileno())
        if self._watch.fileno() >= 0:
            loop.remove_reader(self._watch.fileno())

    def _wake_all(self) -> None:
        for waiter in self._waiters:
            _resolve(waiter)

    def _on_bell(self) -> None:
        self._my_bell.drain()
        self._wake_all()

    def _on_peer_exit(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._watch.fileno())
        self._wake_all()

    def close(self) -> None:
        """End both directions: the worker drains what was sent, then sees ``PeerClosed``.

        A coroutine still sleeping in ``send``/``recv`` wakes and gets
        ``ClosedResourceError``.
        """
        if self._closed:
            return
        self._unregister()
        self._wake_all()
        self._finish(graceful=True)

    def release(self) -> None:
        """Drop this process's resources without telling the worker (in a forked child)."""
        self._loop = None  # the child's loop never registered these descriptors
        self._finish(graceful=False)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
