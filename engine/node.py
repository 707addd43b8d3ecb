"""``Node``: the composition root — workers, peer transport, router, servers, supervision.

Theory of operation
-------------------
``Node.run()`` (on uvloop) does, in order:

1. **Workers.** Fork ``workers`` processes (``engine.worker_handle``) before any
   socket is opened. On the cluster's first start (no ``BOOTSTRAPPED`` marker
   in ``data_dir``) a node listed in ``initial_nodes`` hands each worker its
   share of the deterministic bootstrap layout (``initial_descriptors``;
   range ``r`` goes to worker ``(r - 1) mod workers``); once every worker has
   reported (its bootstrap write was fsynced before it did) the marker is
   written, so a restart recovers instead of bootstrapping again.
2. **Peers.** A ``PeerTransport`` carries per-node records: raft records from
   a worker are forwarded to their destination node byte for byte (one
   coalesced heartbeat record per node pair per worker round stays one
   record end to end); an arriving raft record is split per owning worker
   (``_owner``: range -> worker, learnt from the workers' reports). A record
   for a range no local worker is known to own is dropped (raft retransmits):
   routing it to a guessed worker could create a second replica of a range.
   Forwarded client requests/responses travel as CLIENT_REQUESTS/RESPONSES
   records; an empty RAFT_BATCH every ``ping_interval`` is the node-level
   liveness ping. A peer silent for ``dead_after`` seconds is declared dead to
   every worker (``Store.node_dead``: its quiesced followers wake and
   campaign), and alive again when it is heard.
3. **Clients.** The RESP server over a ``Router``, whose ``submit`` runs a
   command on the local worker holding the leader, or forwards it to the
   leader's node (which runs it locally only: no forwarding chains). The
   admin HTTP server over ``NodeAdmin``.
4. **Supervision.** A worker that dies is reaped, logged and forked again
   after ``restart_delay``; its requests in flight were failed ``Timeout``
   (unknown outcome); it recovers from its log and snapshots.
5. **Shutdown** (SIGTERM/SIGINT): stop accepting clients (batches in flight
   finish), close the workers' channels (each answers what it holds, closes
   its log, exits 0), close the transport, exit 0.

Not built yet (said plainly): the meta range (the directory is the
bootstrap layout corrected by reports and MISMATCH descriptors), replica
changes through the admin API (split, merge and leader transfer are built:
``engine/node_admin.py``), and moving leaderships away before a graceful
shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, TypeVar

import uvloop
from aiohttp import web

from engine.admin.metrics import NodeMetrics, WorkerTotals, run_loop_lag_monitor
from engine.admin.server import create_admin_app
from engine.client_errors import Timeout
from engine.config import NodeConfig
from engine.node_admin import NodeAdmin
from engine.proposal import Outcome
from engine.raft.types import Message
from engine.range_desc import RangeDescriptor
from engine.range_directory import RangeDirectory, initial_descriptors
from engine.resp.limits import Limits
from engine.resp.server import RespServer
from engine.router import Router
from engine.worker import ENGINE_TYPES
from engine.worker_handle import WorkerHandle, reap
from engine.worker_protocol import WorkerReport, is_write_command, pack_status, peek_destination
from transport import (
    ClientRequest,
    ClientResponse,
    ClientResponseBatch,
    CoalescedHeartbeats,
    DecodeError,
    PayloadTooLarge,
    PeerTransport,
    RaftBatch,
    TcpConfig,
    TransportError,
    UnknownPeer,
    WireCodec,
    encode_raft_batch,
)
from transport.codec import ClientRequestBatch, encode_client_requests, encode_client_responses
from transport.codec_heartbeat import encode_heartbeats

log = logging.getLogger("multiraft.node")

MARKER: Final = "BOOTSTRAPPED"
_PING: Final = encode_raft_batch([])
_T = TypeVar("_T")


class Node:
    """One node process (see the module docstring)."""

    def __init__(
        self, config: NodeConfig, *, ping_interval: float = 0.25, dead_after: float = 2.0,
        forward_timeout: float = 3.0, restart_delay: float = 0.2,
    ) -> None:
        self.config = config
        self.id = config.node.id
        self.metrics = NodeMetrics(self.id)
        self._ping_interval = ping_interval
        self._dead_after = dead_after
        self._forward_timeout = forward_timeout
        self._restart_delay = restart_delay
        self._data = Path(config.node.data_dir)
        self._layout = initial_descriptors(config)
        self.directory = RangeDirectory(self._layout)
        self._codec = WireCodec(ENGINE_TYPES)
        self._workers: list[WorkerHandle] = []
        #: Invariant: range id -> index of the local worker holding its replica, as last
        #: reported (bootstrap ranges are pre-seeded with their deterministic worker).
        self._owner: dict[int, int] = {}
        self._peers = [p.node_id for p in config.cluster.initial_nodes if p.node_id != self.id]
        #: Invariant: peer -> monotonic time it was last heard from.
        self._last_seen: dict[int, float] = {}
        self._dead: set[int] = set()
        self._next_forward = 1
        #: Invariant: forwarded request id -> its future, until answered or timed out.
        self._forwarded: dict[int, asyncio.Future[ClientResponse]] = {}
        self._out_requests: dict[int, list[ClientRequest]] = {}
        self._out_responses: dict[int, list[ClientResponse]] = {}
        self._flush_scheduled = False
        self._stopping = False
        self._started = time.monotonic()
        self._bootstrap: list[RangeDescriptor] = []
        self._reported: set[int] = set()
        self._first_reports = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.transport: PeerTransport | None = None
        self.resp: RespServer | None = None
        self._admin_runner: web.AppRunner | None = None
        self.router = Router(self.directory, self.submit)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        self._data.mkdir(parents=True, exist_ok=True)
        initial = any(p.node_id == self.id for p in cfg.cluster.initial_nodes)
        if initial and not (self._data / MARKER).exists():
            self._bootstrap = [d for d in self._layout if self.id in d.replicas]
        n = cfg.node.workers
        for d in self._layout:
            if self.id in d.replicas:
                self._owner[d.range_id] = (d.range_id - 1) % n
        self._workers = [
            WorkerHandle(i, cfg, on_raft=self._from_worker, on_report=self._on_report,
                         on_exit=self._worker_exited) for i in range(n)]
        for w in self._workers:
            self._spawn(w)
        await asyncio.wait_for(self._first_reports.wait(), timeout=60)
        if self._bootstrap:
            _write_marker(self._data / MARKER)
            self._bootstrap = []
        node = cfg.node
        tcp = TcpConfig(
            node_id=self.id, cluster_id="multiraft", listen_host=node.listen_peer.host,
            listen_port=node.listen_peer.port,
            peers={p.node_id: (p.address.host, p.address.port)
                   for p in cfg.cluster.initial_nodes if p.node_id != self.id})
        self.transport = PeerTransport(tcp, self._on_peer_payload)
        await _retry_bind(self.transport.start)
        lim = cfg.limits
        self.resp = RespServer(
            self.router, host=node.listen_client.host, port=node.listen_client.port,
            limits=Limits(max_key_bytes=lim.max_key_bytes, max_value_bytes=lim.max_value_bytes,
                          max_request_bytes=lim.max_request_bytes))
        await _retry_bind(self.resp.start)
        app = create_admin_app(NodeAdmin(self), self.metrics,
                               max_key_bytes=lim.max_key_bytes,
                               max_value_bytes=lim.max_value_bytes)
        self._admin_runner = web.AppRunner(app, access_log=None)
        await self._admin_runner.setup()
        site = web.TCPSite(self._admin_runner, node.listen_admin.host, node.listen_admin.port,
                           reuse_address=True)
        await _retry_bind(site.start)
        now = time.monotonic()
        self._last_seen = {p: now for p in self._peers}
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._liveness_loop()),
                       loop.create_task(run_loop_lag_monitor(self.metrics))]
        log.info("node %d up: resp %s, peer %s, admin %s, %d workers", self.id,
                 node.listen_client, node.listen_peer, node.listen_admin, n)

    async def stop(self) -> None:
        """Graceful stop: clients first, then workers, then peers."""
        self._stopping = True
        if self.resp is not None:
            await self.resp.close(grace=5.0)
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await asyncio.gather(*(w.stop() for w in self._workers))
        if self.transport is not None:
            await self.transport.close()
        log.info("node %d stopped", self.id)

    async def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, stop gracefully; the exit code."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
            await stop.wait()
        finally:
            await self.stop()
        return 0

    # -- workers --------------------------------------------------------------------------

    def _spawn(self, w: WorkerHandle) -> None:
        share = [d for d in self._bootstrap
                 if (d.range_id - 1) % len(self._workers) == w.index]
        w.spawn(share, [o for o in self._workers if o is not w])

    def _worker_exited(self, w: WorkerHandle) -> None:
        if self._stopping:
            return
        log.error("node %d: worker %d (pid %d) died; restarting it", self.id, w.index, w.pid)
        asyncio.get_running_loop().create_task(self._restart(w))

    async def _restart(self, w: WorkerHandle) -> None:
        await reap(w.pid, 5.0)
        await asyncio.sleep(self._restart_delay)
        if not self._stopping:
            w.restarts += 1
            self._spawn(w)
            for peer in self._dead:
                w.node_liveness(peer, dead=True)

    def worker_pids(self) -> list[int]:
        return [w.pid for w in self._workers]

    def worker_reports(self) -> list[WorkerReport]:
        return [w.last_report for w in self._workers if w.last_report is not None]

    def _on_report(self, index: int, report: WorkerReport) -> None:
        held = set()
        quiesced = 0
        for r in report.ranges:
            rid = r.desc.range_id
            held.add(rid)
            self._owner[rid] = index
            self.directory.update(r.desc)
            if r.is_leader:
                self.directory.set_leader(rid, self.id)
            elif r.leader:
                self.directory.set_leader(rid, r.leader)
            elif self.directory.leader(rid) == self.id:
                self.directory.set_leader(rid, None)
            quiesced += r.quiesced
        for rid in [r for r, w in self._owner.items() if w == index and r not in held]:
            del self._owner[rid]
        self.metrics.observe_ranges(index, len(held), quiesced)
        self.metrics.observe_worker_totals(index, WorkerTotals(
            proposals=0, commits=report.entries_applied, elections=0, fsyncs=report.fsyncs,
            bytes_written=0, cpu_seconds=report.cpu_seconds))
        if index not in self._reported:
            self._reported.add(index)
            if len(self._reported) == len(self._workers):
                self._first_reports.set()

    def _from_worker(self, record: bytes) -> None:
        """A per-node raft record from a worker: forward it to its node as is."""
        try:
            dest = peek_destination(record)
        except ValueError as e:
            log.error("node %d: worker record without destination: %s", self.id, e)
            return
        if dest == self.id or self.transport is None:
            return  # a replica never messages itself; before start(): raft retransmits
        try:
            self.transport.send(dest, record)
        except (UnknownPeer, PayloadTooLarge) as e:
            log.warning("node %d: cannot send to node %d: %s", self.id, dest, e)

    # -- peers ----------------------------------------------------------------------------

    def _on_peer_payload(self, peer: int, payload: memoryview) -> None:
        self._heard(peer)
        try:
            record = self._codec.decode(payload)
        except DecodeError as e:
            log.warning("node %d: bad record from node %d: %s", self.id, peer, e)
            return
        if isinstance(record, RaftBatch):
            self._route_messages(record.messages)
        elif isinstance(record, CoalescedHeartbeats):
            self._route_heartbeats(record)
        elif isinstance(record, ClientRequestBatch):
            for req in record.requests:
                asyncio.get_running_loop().create_task(self._serve_forwarded(peer, req))
        elif isinstance(record, ClientResponseBatch):
            for resp in record.responses:
                fut = self._forwarded.pop(resp.req_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(resp)

    def _route_messages(self, messages: list[tuple[int, Message]]) -> None:
        groups: dict[int, list[tuple[int, Message]]] = {}
        for rid, msg in messages:
            w = self._owner.get(rid)
            if w is not None:
                groups.setdefault(w, []).append((rid, msg))
        for w, items in groups.items():
            self._workers[w].send_record(encode_raft_batch(items))

    def _route_heartbeats(self, hb: CoalescedHeartbeats) -> None:
        rows: dict[int, list[int]] = {}
        for i, rid in enumerate(hb.range_ids):
            w = self._owner.get(rid)
            if w is not None:
                rows.setdefault(w, []).append(i)
        for w, idx in rows.items():
            part = CoalescedHeartbeats.build(
                range_ids=(hb.range_ids[i] for i in idx), frm=(hb.frm[i] for i in idx),
                to=(hb.to[i] for i in idx), terms=(hb.terms[i] for i in idx),
                commits=(hb.commits[i] for i in idx), flags=(hb.flags[i] for i in idx),
                response=hb.response)
            self._workers[w].send_record(encode_heartbeats(part))

    def _heard(self, peer: int) -> None:
        self._last_seen[peer] = time.monotonic()
        if peer in self._dead:
            self._dead.discard(peer)
            log.info("node %d: node %d is alive again", self.id, peer)
            for w in self._workers:
                w.node_liveness(peer, dead=False)

    async def _liveness_loop(self) -> None:
        while True:
            assert self.transport is not None
            for p in self._peers:
                with contextlib.suppress(TransportError):
                    self.transport.send(p, _PING)
            now = time.monotonic()
            for p in self._peers:
                if p not in self._dead and now - self._last_seen.get(p, now) > self._dead_after:
                    self._dead.add(p)
                    log.warning("node %d: node %d declared dead", self.id, p)
                    for w in self._workers:
                        w.node_liveness(p, dead=True)
                    for d in self.directory.all():
                        if self.directory.leader(d.range_id) == p:
                            self.directory.set_leader(d.range_id, None)
            await asyncio.sleep(self._ping_interval)

    # -- client requests --------------------------------------------------------------------

    async def submit(self, desc: RangeDescriptor, command: bytes) -> ClientResponse:
        """Run ``command`` on range ``desc`` where its leader is (``Router``'s hook)."""
        rid = desc.range_id
        leader = self.directory.leader(rid)
        local = self._owner.get(rid)
        if leader is not None and leader != self.id and leader not in self._dead:
            return await self._forward(leader, rid, command)
        if local is not None:
            return await self._local(local, rid, command)
        others = [n for n in desc.voters if n != self.id and n not in self._dead]
        if not others:
            return ClientResponse(0, pack_status(Outcome.TRYAGAIN, 0), b"")
        target = others[int(time.monotonic() * 1000) % len(others)]
        return await self._forward(target, rid, command)

    async def _local(self, worker: int, rid: int, command: bytes) -> ClientResponse:
        return await self._workers[worker].request(rid, command)

    async def _forward(self, node: int, rid: int, command: bytes) -> ClientResponse:
        assert self.transport is not None
        req_id = self._next_forward
        self._next_forward += 1
        fut: asyncio.Future[ClientResponse] = asyncio.get_running_loop().create_future()
        self._forwarded[req_id] = fut
        self._out_requests.setdefault(node, []).append(ClientRequest(req_id, rid, 0, command))
        self._schedule_flush()
        try:
            return await asyncio.wait_for(fut, self._forward_timeout)
        except TimeoutError:
            self._forwarded.pop(req_id, None)
            self.directory.set_leader(rid, None)
            if is_write_command(command):
                raise Timeout(f"node {node} did not answer in time; outcome unknown") from None
            return ClientResponse(req_id, pack_status(Outcome.TRYAGAIN, 0), b"")

    async def _serve_forwarded(self, peer: int, req: ClientRequest) -> None:
        """A peer forwarded a client command: run it on our local replica only."""
        w = self._owner.get(req.range_id)
        if w is None:
            resp = ClientResponse(req.req_id, pack_status(Outcome.MISMATCH, 0), b"")
        else:
            try:
                got = await self._workers[w].request(req.range_id, req.command)
                resp = ClientResponse(req.req_id, got.status, got.payload)
            except Timeout:
                resp = ClientResponse(req.req_id, pack_status(Outcome.UNKNOWN, 0), b"")
        self._out_responses.setdefault(peer, []).append(resp)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """One CLIENT_REQUESTS and one CLIENT_RESPONSES record per peer per iteration."""
        self._flush_scheduled = False
        assert self.transport is not None
        reqs, self._out_requests = self._out_requests, {}
        resps, self._out_responses = self._out_responses, {}
        for node, rows in reqs.items():
            if not self._send(node, encode_client_requests(rows)):
                for r in rows:  # never sent: nothing applied, safe to retry
                    fut = self._forwarded.pop(r.req_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(ClientResponse(r.req_id, pack_status(Outcome.TRYAGAIN, 0),
                                                      b""))
        for node, resp_rows in resps.items():
            self._send(node, encode_client_responses(resp_rows))

    def _send(self, node: int, payload: bytes) -> bool:
        assert self.transport is not None
        try:
            return self.transport.send(node, payload)
        except (UnknownPeer, PayloadTooLarge) as e:
            log.warning("node %d: cannot send to node %d: %s", self.id, node, e)
            return False

    def uptime(self) -> float:
        return time.monotonic() - self._started


def _write_marker(path: Path) -> None:
    """Create ``path`` durably (file and directory entry fsynced)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, b"bootstrapped\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


async def _retry_bind(start: Callable[[], Awaitable[_T]], timeout: float = 10.0) -> _T:
    """``start()``, retried while the address is in use: a node restarted right after a
    SIGKILL may find the port still held for a moment (by the killed process's last
    descriptors, or another process that is about to let go) — wait rather than fail."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await start()
        except OSError as e:
            if e.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def run_node(config: NodeConfig) -> int:
    """``multiraft node``: run one node on uvloop until SIGTERM/SIGINT."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return uvloop.run(Node(config).run())
