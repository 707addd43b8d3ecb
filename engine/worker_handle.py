"""The node's side of one worker process: fork, batched requests, responses, restart.

Theory of operation
-------------------
``WorkerHandle.spawn`` makes a ``ChannelPair`` and forks; the child runs
``engine.worker.worker_main`` and never returns into the node's code. In the
node, two things happen per worker:

- *sending*: ``request`` and ``send_record`` only append to a queue and, at
  most once per loop iteration, schedule a flush; the flush encodes every
  queued client request into ONE ``CLIENT_REQUESTS`` record and publishes it
  with the queued raft records (``send_nowait``; whatever does not fit is
  handed to one background ``await send``, keeping the ring's single
  producer);
- *receiving*: one task awaits ``recv``; raft records go to ``on_raft``
  (the node forwards them to peers), responses resolve their futures, status
  reports go to ``on_report``.

When the worker dies (``PeerDead``) every request it still owed is failed
with ``Timeout`` (outcome unknown: it may have been committed) and
``on_exit`` is called; until it is forked again new requests are answered
TRYAGAIN (never sent, so never applied); the node decides whether to ``spawn`` again. A
restarted worker recovers from its log and snapshot directories.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Callable
from typing import Final

from engine.client_errors import Timeout
from engine.config import NodeConfig
from engine.proposal import Outcome
from engine.range_desc import RangeDescriptor
from engine.worker import ENGINE_TYPES, worker_main
from engine.worker_protocol import (
    CONTROL_NODE_LIVENESS,
    CONTROL_REQ_ID,
    WorkerReport,
    decode_report,
    pack_status,
)
from transport import (
    ChannelPair,
    ClientRequest,
    ClientResponse,
    ClientResponseBatch,
    ClosedResourceError,
    DecodeError,
    NodeChannel,
    PeerClosed,
    PeerDead,
    WireCodec,
)
from transport.codec_client import encode_client_requests
from transport.codec_header import RecordKind

log = logging.getLogger("multiraft.node")

_RAFT_KINDS: Final = frozenset(
    (RecordKind.RAFT_BATCH, RecordKind.HEARTBEATS, RecordKind.HEARTBEAT_RESPONSES))


class WorkerHandle:
    """One forked worker as the node drives it (see the module docstring)."""

    def __init__(
        self, index: int, config: NodeConfig, *,
        on_raft: Callable[[bytes], None],
        on_report: Callable[[int, WorkerReport], None],
        on_exit: Callable[[WorkerHandle], None],
    ) -> None:
        self.index = index
        self._config = config
        self._on_raft = on_raft
        self._on_report = on_report
        self._on_exit = on_exit
        self.pid = 0
        self._chan: NodeChannel | None = None
        self._next_req = 1
        #: Invariant: every request published or queued to the current process and not
        #: yet answered; failed with Timeout when the process ends.
        self._pending: dict[int, asyncio.Future[ClientResponse]] = {}
        self._queued_requests: list[ClientRequest] = []
        self._queued_records: list[bytes] = []
        self._flush_scheduled = False
        #: Invariant: at most one background ``send`` (the ring has one producer).
        self._sender: asyncio.Task[None] | None = None
        self._receiver: asyncio.Task[None] | None = None
        self.last_report: WorkerReport | None = None

    @property
    def alive(self) -> bool:
        return self._chan is not None

    def spawn(self, bootstrap: list[RangeDescriptor], siblings: list[WorkerHandle]) -> None:
        """Fork the worker process (``bootstrap`` only on the cluster's first start)."""
        pair = ChannelPair()
        pid = os.fork()
        if pid == 0:  # the child: never return into the node's code
            code = 1
            try:
                for other in siblings:
                    other.release_in_child()
                _close_inherited_sockets()
                code = worker_main(self.index, self._config, pair.worker_end(), bootstrap)
            finally:
                os._exit(code)
        self.pid = pid
        self._chan = pair.node_end(pid)
        self._receiver = asyncio.get_running_loop().create_task(
            self._receive(self._chan), name=f"worker-{self.index}-recv")

    def release_in_child(self) -> None:
        """In a freshly forked sibling: drop the copies of this channel (not ours)."""
        if self._chan is not None:
            self._chan.release()

    # -- sending ----------------------------------------------------------------------

    def request(self, range_id: int, command: bytes) -> asyncio.Future[ClientResponse]:
        """Queue a client command for ``range_id``; the future gets the worker's answer."""
        fut: asyncio.Future[ClientResponse] = asyncio.get_running_loop().create_future()
        if self._chan is None:  # restarting: nothing is sent, so nothing can apply
            fut.set_result(ClientResponse(0, pack_status(Outcome.TRYAGAIN, 0), b""))
            return fut
        rid = self._next_req
        self._next_req += 1
        self._pending[rid] = fut
        self._queued_requests.append(ClientRequest(rid, range_id, 0, command))
        self._schedule_flush()
        return fut

    def send_record(self, record: bytes) -> None:
        """Queue a raft record from a peer (dropped while the worker restarts: raft
        retransmits)."""
        if self._chan is not None:
            self._queued_records.append(record)
            self._schedule_flush()

    def node_liveness(self, node: int, dead: bool) -> None:
        self._queued_requests.append(ClientRequest(
            CONTROL_REQ_ID, CONTROL_NODE_LIVENESS, node, b"\x01" if dead else b"\x00"))
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._chan is None or self._sender is not None:
            return  # the background sender picks the queue up when it is done
        records = self._take_queue()
        if not records:
            return
        done = self._chan.send_nowait(records)
        if done < len(records):
            self._sender = asyncio.get_running_loop().create_task(
                self._send_rest(self._chan, records[done:]))

    def _take_queue(self) -> list[bytes]:
        records, self._queued_records = self._queued_records, []
        if self._queued_requests:
            records.append(encode_client_requests(self._queued_requests))
            self._queued_requests = []
        return records

    async def _send_rest(self, chan: NodeChannel, records: list[bytes]) -> None:
        try:
            while records:
                await chan.send(records)
                records = self._take_queue()
        except (PeerDead, PeerClosed, ClosedResourceError):
            pass
        finally:
            self._sender = None

    # -- receiving ---------------------------------------------------------------------

    async def _receive(self, chan: NodeChannel) -> None:
        codec = WireCodec(ENGINE_TYPES)
        try:
            while True:
                for rec in await chan.recv():
                    if rec[1] in _RAFT_KINDS:
                        self._on_raft(rec)
                        continue
                    try:
                        record = codec.decode(rec)
                    except DecodeError as e:
                        log.error("worker %d sent an undecodable record: %s", self.index, e)
                        continue
                    if isinstance(record, ClientResponseBatch):
                        self._responses(record.responses)
        except (PeerDead, PeerClosed, ClosedResourceError):
            pass
        self._ended(chan)

    def _responses(self, responses: list[ClientResponse]) -> None:
        for r in responses:
            if r.req_id == CONTROL_REQ_ID:
                try:
                    self.last_report = decode_report(r.payload)
                except ValueError as e:
                    log.error("worker %d sent a bad report: %s", self.index, e)
                    continue
                self._on_report(self.index, self.last_report)
                continue
            fut = self._pending.pop(r.req_id, None)
            if fut is not None and not fut.done():
                fut.set_result(r)

    def _ended(self, chan: NodeChannel) -> None:
        chan.close()
        if self._chan is chan:
            self._chan = None
        pending, self._pending = self._pending, {}
        self._queued_requests, self._queued_records = [], []
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(Timeout(f"worker {self.index} stopped; outcome unknown"))
        self._on_exit(self)

    # -- stopping ----------------------------------------------------------------------

    async def stop(self, timeout: float = 10.0) -> None:
        """Close the channel (the worker drains, answers, closes its log, exits 0) and
        reap the process."""
        if self._chan is not None:
            self._chan.close()
        if self._receiver is not None:
            await asyncio.wait([self._receiver], timeout=timeout)
        await reap(self.pid, timeout)


def _close_inherited_sockets() -> None:
    """In a forked worker: close every socket inherited from the node (listeners, client
    and peer connections). Otherwise a connection the node closes stays open in the
    worker (its client never sees EOF), and a listener outlives a killed node. The
    worker's own descriptors (rings, bells, pidfd) are not sockets; 0-2 are kept."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd <= 2:
            continue
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.close(fd)
        except OSError:
            continue  # the listing's own descriptor, already gone


async def reap(pid: int, timeout: float) -> int | None:
    """Wait (without blocking the loop) for child ``pid`` to exit; its status or None."""
    if pid <= 0:
        return None
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return status
        if asyncio.get_running_loop().time() > deadline:
            return None
        await asyncio.sleep(0.02)
