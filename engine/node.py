"""``Node``: the composition root — workers, peer transport, router, servers, supervision.

Theory of operation
-------------------
``Node.run()`` (on uvloop) does, in order:

1. **Workers.** Fork ``workers`` processes (``engine.worker_handle``) before any
   socket is opened. On the cluster's first start (no ``BOOTSTRAPPED`` marker
   in ``data_dir``) a node listed in ``initial_nodes`` hands each worker its
   share of the deterministic bootstrap layout (``bootstrap_owners``:
   contiguous blocks in key order, so neighbours can merge); once every
   worker has reported (its bootstrap write was fsynced before it did) the
   marker is written, so a restart recovers instead of bootstrapping again.
   Workers report their replicas as deltas (``worker_protocol``): a node with
   10,000 replicas pays for the ones that changed, not for all of them.
2. **Peers.** A ``PeerTransport`` carries per-node records: raft records from
   a worker are forwarded to their destination node byte for byte (one
   coalesced heartbeat record per node pair per worker round stays one
   record end to end); an arriving raft record is split per owning worker
   (``_owner``: range -> worker, learnt from the workers' reports). A record
   for a range no local worker is known to own goes where ``ReplicaPlacement``
   says (``engine/placement.py``: a replica being added here, placed only
   while every worker's replicas are known, so never a second replica of a
   range), or is dropped (raft retransmits).
   Forwarded client requests/responses travel as CLIENT_REQUESTS/RESPONSES
   records; an empty RAFT_BATCH every ``ping_interval`` is the node-level
   liveness ping, and every ``_gossip_interval`` the address book
   (``engine/address_book.py``) takes its place, so a node that joins later
   (``cluster.join``) becomes reachable from every node. A peer silent for
   ``dead_after`` seconds is declared dead to every worker
   (``Store.node_dead``: its quiesced followers wake and campaign), and alive
   again when it is heard — but a stall of this node's own loop is never held
   against its peers (``_liveness_loop``).
3. **Clients.** The RESP server over a ``Router``, whose ``submit`` runs a
   command on the local worker holding the leader, or forwards it to the
   leader's node (which runs it locally only: no forwarding chains); a read
   of a range we hold a follower replica of runs on that replica (a
   linearizable ReadIndex read, answered from the leader's lease). A raft
   record from a peer whose ranges all live in one local worker is relayed
   to it byte for byte (``transport.codec_peek``), decoded only to be split.
   The admin HTTP server over ``NodeAdmin``.
4. **Supervision.** A worker that dies is reaped, logged and forked again
   after ``restart_delay``; its requests in flight were failed ``Timeout``
   (unknown outcome); it recovers from its log and snapshots.
5. **Shutdown** (SIGTERM/SIGINT): stop accepting clients (batches in flight
   finish), tell the peers this node is draining (a CONTROL_NODE_DRAINING
   row), hand every leadership held here to a live, non-draining voter (one
   wave, bounded), close the workers' channels (each answers what it holds,
   closes its log, exits 0), close the transport, exit 0.

The directory is the bootstrap layout, loaded from and kept in step with the
meta range by ``MetaSync`` (``engine/meta_sync.py``), corrected in between by
reports and MISMATCH descriptors.

The placement loop (``engine/placement.py``) splits ranges led here by size
or load through ``NodeAdmin.split``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import functools
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, TypeVar

import uvloop
from aiohttp import web

from engine.address_book import AddressBook
from engine.admin.metrics import NodeMetrics, WorkerTotals, run_loop_lag_monitor
from engine.admin.server import create_admin_app
from engine.client_errors import Timeout
from engine.config import NodeConfig
from engine.meta_sync import MetaSync
from engine.node_admin import NodeAdmin
from engine.placement import PlacementLoop, ReplicaPlacement
from engine.proposal import Outcome
from engine.raft.types import Message
from engine.range_desc import RangeDescriptor
from engine.range_directory import RangeDirectory, bootstrap_descriptors
from engine.resp.limits import Limits
from engine.resp.server import RespServer
from engine.router import Router
from engine.worker import ENGINE_TYPES, worker_dir
from engine.worker_handle import WorkerHandle, reap
from engine.worker_protocol import (
    CONTROL_NODE_ADDRESS,
    CONTROL_NODE_DRAINING,
    CONTROL_REQ_ID,
    AdminOp,
    RangeReport,
    WorkerReport,
    encode_admin,
    is_write_command,
    pack_status,
    peek_destination,
    unpack_status,
)
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
from transport.codec_header import RecordKind
from transport.codec_heartbeat import encode_heartbeats
from transport.codec_peek import range_ids

log = logging.getLogger("multiraft.node")

MARKER: Final = "BOOTSTRAPPED"
_PING: Final = encode_raft_batch([])
#: Seconds reads of a range go to its leader after our follower failed to serve one.
_LOCAL_READ_BACKOFF: Final = 1.0
_RAFT_KINDS: Final = frozenset(
    (RecordKind.RAFT_BATCH, RecordKind.HEARTBEATS, RecordKind.HEARTBEAT_RESPONSES))
_T = TypeVar("_T")


class Node:
    """One node process (see the module docstring)."""

    def __init__(
        self, config: NodeConfig, *, ping_interval: float = 0.25, dead_after: float = 2.0,
        forward_timeout: float = 3.0, restart_delay: float = 0.2, handoff_timeout: float = 5.0,
    ) -> None:
        self.config = config
        self.id = config.node.id
        self.metrics = NodeMetrics(self.id)
        self._ping_interval = ping_interval
        self._dead_after = dead_after
        self._forward_timeout = forward_timeout
        self._restart_delay = restart_delay
        self._handoff_timeout = handoff_timeout
        #: Seconds between two rounds of address-book gossip (it doubles as a ping).
        self._gossip_interval = 2.0
        #: Invariant: node -> when sending to it last failed and was logged.
        self._unsendable_logged: dict[int, float] = {}
        #: Invariant: peer -> when it announced a graceful stop. Forgotten after
        #: ``_drain_memory`` seconds (a drain is over by then: the peer is gone, or back
        #: as a new process that does not announce anything).
        self._draining: dict[int, float] = {}
        self._drain_memory = handoff_timeout + dead_after
        self._data = Path(config.node.data_dir)
        self._layout = bootstrap_descriptors(config)
        self.directory = RangeDirectory(self._layout)
        self._codec = WireCodec(ENGINE_TYPES)
        self._workers: list[WorkerHandle] = []
        #: Invariant: per worker, range id -> its replica as last reported (full
        #: report + deltas), and how many of them are quiesced.
        self._held: list[dict[int, RangeReport]] = []
        self._quiesced: list[int] = []
        #: Invariant: range id -> index of the local worker holding its replica, as last
        #: reported (bootstrap ranges are pre-seeded with their deterministic worker).
        self._owner: dict[int, int] = {}
        self._placement = ReplicaPlacement(self.id, self._owner, config.node.workers,
                                           lambda i: self._held[i], self.directory.get)
        self.book = AddressBook(self.id, config.node.listen_peer, {
            p.node_id: p.address for p in config.cluster.initial_nodes if p.node_id != self.id})
        #: Invariant: peer -> monotonic time it was last heard from.
        self._last_seen: dict[int, float] = {}
        self._dead: set[int] = set()
        self._next_forward = 1
        #: Invariant: forwarded request id -> its future, until answered or timed out.
        self._forwarded: dict[int, asyncio.Future[ClientResponse]] = {}
        #: Invariant: (deadline, request id, range id, command) of every forwarded request
        #: not yet expired, in deadline order (answered ones are skipped when popped).
        self._forward_deadlines: deque[tuple[float, int, int, bytes]] = deque()
        #: Range id -> monotonic time before which its reads skip our follower replica
        #: (it could not serve one lately).
        self._local_reads_from: dict[int, float] = {}
        #: Invariant: the pending ``_expire_forwarded`` timer while requests are in flight.
        self._forward_sweep: asyncio.TimerHandle | None = None
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
        #: The meta range's client: loads/polls the directory, pushes, allocates ids.
        self.meta = MetaSync(self.directory, self.submit, lambda: (
            r.desc for held in self._held for r in held.values() if r.is_leader))

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        self._data.mkdir(parents=True, exist_ok=True)
        initial = any(p.node_id == self.id for p in cfg.cluster.initial_nodes)
        if initial and not (self._data / MARKER).exists():
            self._bootstrap = [d for d in self._layout if self.id in d.replicas]
        n = cfg.node.workers
        owners = bootstrap_owners(self._layout, n)
        self._owner.update((d.range_id, owners[d.range_id]) for d in self._bootstrap)
        self._held = [{} for _ in range(n)]
        self._quiesced = [0] * n
        self._workers = [
            WorkerHandle(i, cfg, on_raft=self._from_worker, on_report=self._on_report,
                         on_exit=self._worker_exited) for i in range(n)]
        for w in self._workers:
            self._spawn(w)
        await self._await_first_reports()
        if self._bootstrap:
            _write_marker(self._data / MARKER)
            self._bootstrap = []
        node = cfg.node
        tcp = TcpConfig(
            node_id=self.id, cluster_id="multiraft", listen_host=node.listen_peer.host,
            listen_port=node.listen_peer.port,
            peers={p: (a.host, a.port) for p in self.book.peers()
                   if (a := self.book.address(p)) is not None})
        self.transport = PeerTransport(tcp, self._on_peer_payload)
        await _retry_bind(self.transport.start)
        lim = cfg.limits
        self.resp = RespServer(
            self.router, host=node.listen_client.host, port=node.listen_client.port,
            limits=Limits(max_key_bytes=lim.max_key_bytes, max_value_bytes=lim.max_value_bytes,
                          max_request_bytes=lim.max_request_bytes,
                          max_clients=lim.max_clients),
            observer=self.metrics)
        await _retry_bind(self.resp.start)
        admin = NodeAdmin(self)
        app = create_admin_app(admin, self.metrics,
                               max_key_bytes=lim.max_key_bytes,
                               max_value_bytes=lim.max_value_bytes)
        self._admin_runner = web.AppRunner(app, access_log=None)
        await self._admin_runner.setup()
        site = web.TCPSite(self._admin_runner, node.listen_admin.host, node.listen_admin.port,
                           reuse_address=True)
        await _retry_bind(site.start)
        now = time.monotonic()
        self._last_seen = {p: now for p in self.book.peers()}
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._liveness_loop()),
                       loop.create_task(run_loop_lag_monitor(self.metrics)),
                       loop.create_task(PlacementLoop.from_config(
                           cfg.placement, cfg.store, self._placement, self.worker_reports,
                           split=lambda rid: admin.split(rid, None),
                           merge=admin.merge, transfer=admin.transfer_leader).run())]
        self._tasks.append(loop.create_task(self.meta.run()))
        log.info("node %d up: resp %s, peer %s, admin %s, %d workers", self.id,
                 node.listen_client, node.listen_peer, node.listen_admin, n)

    async def stop(self) -> None:
        """Graceful stop: clients first, then leaderships, then workers, then peers."""
        self._stopping = True
        if self.resp is not None:
            await self.resp.close(grace=5.0)
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
        if self.transport is not None:
            self._announce_draining()
            await self._hand_off_leaderships(self._handoff_timeout)
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

    async def _await_first_reports(self, timeout: float = 900.0) -> None:
        """Until every worker has reported once (it bootstrapped or recovered its
        ranges: thousands take a while). Progress is logged; a worker that never
        reports (it keeps dying: supervision logs why) fails the start."""
        waited = 0.0
        while not self._first_reports.is_set():
            try:
                await asyncio.wait_for(self._first_reports.wait(), timeout=10.0)
            except TimeoutError:
                waited += 10.0
                if waited >= timeout:
                    raise
                log.info("node %d: waiting for workers to load their ranges (%d of %d "
                         "ready, %.0f s)", self.id, len(self._reported), len(self._workers),
                         waited)

    async def _hand_off_leaderships(self, timeout: float) -> None:
        """Transfer every leadership held here to another live voter, so that the ranges
        do not sit leaderless for an election timeout (or, quiesced, for ``dead_after``)
        once this node is gone. One wave, bounded by ``timeout``: peers that announced
        their own stop are not targets, so stopping a whole cluster does not bounce
        leaderships between its nodes; a transfer that fails leaves an election to the
        survivors, as a crash would."""
        futures = []
        for w, held in enumerate(self._held):
            for rid, rep in held.items():
                if not rep.is_leader:
                    continue
                targets = [v for v in rep.desc.voters if self._usable_peer(v)]
                if targets:
                    cmd = encode_admin(AdminOp.TRANSFER_LEADER, targets[rid % len(targets)])
                    fut = self._workers[w].request(rid, cmd)
                    fut.add_done_callback(_discard_outcome)
                    futures.append(fut)
        if not futures:
            return
        log.info("node %d: handing off %d leaderships before stopping", self.id, len(futures))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await asyncio.wait(futures, timeout=timeout)
        while loop.time() < deadline and any(map(self._usable_peer, self.book.peers())) and any(
                r.is_leader for held in self._held for r in held.values()):
            await asyncio.sleep(0.1)  # the effect shows in the workers' next reports
        left = sum(r.is_leader for held in self._held for r in held.values())
        if left:
            log.warning("node %d: stopping while leading %d ranges", self.id, left)

    def _usable_peer(self, node: int) -> bool:
        """A peer that is neither this node, nor dead, nor stopping."""
        if node == self.id or node in self._dead:
            return False
        since = self._draining.get(node)
        return since is None or time.monotonic() - since > self._drain_memory

    def _announce_draining(self) -> None:
        assert self.transport is not None
        notice = encode_client_requests(
            [ClientRequest(CONTROL_REQ_ID, CONTROL_NODE_DRAINING, 0, b"")])
        for p in self.book.peers():
            with contextlib.suppress(TransportError):
                self.transport.send(p, notice)

    # -- workers --------------------------------------------------------------------------

    def _spawn(self, w: WorkerHandle) -> None:
        owners = bootstrap_owners(self._layout, len(self._workers))
        share = [d for d in self._bootstrap if owners[d.range_id] == w.index]
        self._placement.started(w.index)
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
            self.metrics.worker_restarts.labels(worker=str(w.index)).inc()
            self._spawn(w)
            for peer in self._dead:
                w.node_liveness(peer, dead=True)

    def snapshot_path(self, range_id: int) -> Path | None:
        """Where the local worker holding ``range_id`` keeps its newest durable image
        (None: no local replica)."""
        w = self._owner.get(range_id)
        if w is None:
            return None
        return worker_dir(self.config, w) / "snapshots" / f"r{range_id}.snap"

    def worker_pids(self) -> list[int]:
        return [w.pid for w in self._workers]

    def worker_reports(self) -> list[WorkerReport]:
        """Each live worker's latest counters with every replica it holds (its last full
        report with the deltas since folded in)."""
        out = []
        for w, held in zip(self._workers, self._held, strict=True):
            if w.last_report is not None:
                out.append(dataclasses.replace(w.last_report, ranges=tuple(held.values()),
                                               full=True, removed=(), sync_seconds=()))
        return out

    def _on_report(self, index: int, report: WorkerReport) -> None:
        """Fold a worker's report into the owner map, the directory and the metrics.

        Costs the replicas in the report (a delta: those that changed), not the
        replicas the node holds."""
        held = self._held[index]
        if report.full:
            gone = {rid for rid, w in self._owner.items() if w == index}
            held.clear()
        else:
            gone = set(report.removed)
            for rid in gone:
                held.pop(rid, None)
        directory = self.directory
        me = self.id
        for r in report.ranges:
            rid = r.desc.range_id
            gone.discard(rid)
            held[rid] = r
            self._owner[rid] = index
            directory.update(r.desc)
            if r.is_leader:
                directory.set_leader(rid, me)
            elif r.leader:
                directory.set_leader(rid, r.leader)
            elif directory.leader(rid) == me:
                directory.set_leader(rid, None)
        for rid in gone:
            if self._owner.get(rid) == index:
                del self._owner[rid]
                self._placement.gone(rid, index)
                if directory.leader(rid) == me:
                    directory.set_leader(rid, None)
        if report.full or report.ranges or gone:
            self._quiesced[index] = sum(r.quiesced for r in held.values())
        m = self.metrics
        m.observe_ranges(index, len(held), self._quiesced[index])
        m.observe_worker_totals(index, WorkerTotals(
            proposals=report.proposals, commits=report.entries_applied,
            elections=report.elections, fsyncs=report.fsyncs, bytes_written=report.bytes_logged,
            cpu_seconds=report.cpu_seconds))
        for seconds in report.sync_seconds:
            m.observe_fsync(index, seconds)
        m.observe_queue_depth(index, report.inbox, report.pending)
        self._placement.reported(index)
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
            self._warn_unsendable(dest, e)

    # -- peers ----------------------------------------------------------------------------

    def _on_peer_payload(self, peer: int, payload: memoryview) -> None:
        self._heard(peer)
        if len(payload) > 1 and payload[1] in _RAFT_KINDS:
            worker = self._sole_owner(payload)
            if worker is not None:  # the common case: relayed as is, never decoded here
                self._workers[worker].send_record(bytes(payload))
                return
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
            reqs = record.requests
            if reqs and reqs[0].req_id == CONTROL_REQ_ID:
                if reqs[0].range_id == CONTROL_NODE_DRAINING:
                    self._draining[peer] = time.monotonic()
                    log.info("node %d: node %d is stopping", self.id, peer)
                elif reqs[0].range_id == CONTROL_NODE_ADDRESS:
                    self._learn_addresses(peer, reqs)
                return
            self._serve_forwarded(peer, reqs)
        elif isinstance(record, ClientResponseBatch):
            for resp in record.responses:
                fut = self._forwarded.pop(resp.req_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(resp)

    def _sole_owner(self, record: memoryview) -> int | None:
        """The local worker holding every range of the raft ``record``, or None if they
        are spread over workers, one is not placed yet, or the record is malformed
        (then the full decode splits, places or reports it)."""
        try:
            ids = range_ids(record)
        except DecodeError:
            return None
        owner = self._owner
        if not ids:
            return None
        first = owner.get(ids[0])
        if first is None:
            return None
        for rid in ids:
            if owner.get(rid) != first:
                return None
        return first

    def _route_messages(self, messages: list[tuple[int, Message]]) -> None:
        groups: dict[int, list[tuple[int, Message]]] = {}
        for rid, msg in messages:
            w = self._owner.get(rid)
            if w is None:
                w = self._placement.place(rid)
            if w is not None:
                groups.setdefault(w, []).append((rid, msg))
        for w, items in groups.items():
            self._workers[w].send_record(encode_raft_batch(items))

    def _route_heartbeats(self, hb: CoalescedHeartbeats) -> None:
        rows: dict[int, list[int]] = {}
        for i, rid in enumerate(hb.range_ids):
            w = self._owner.get(rid)
            if w is None:
                w = self._placement.place(rid)
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

    def _warn_unsendable(self, node: int, err: Exception) -> None:
        """Log why traffic for ``node`` is dropped, at most once per 10 s per node: a
        replica on a node whose address is not known yet (a joiner not heard of since
        this node restarted) would otherwise log every heartbeat."""
        now = time.monotonic()
        if now - self._unsendable_logged.get(node, -1e9) >= 10.0:
            self._unsendable_logged[node] = now
            log.warning("node %d: cannot send to node %d: %s", self.id, node, err)

    def _learn_addresses(self, sender: int, rows: list[ClientRequest]) -> None:
        """Gossip from ``sender``: dial newly learnt nodes at their addresses."""
        assert self.transport is not None
        for nid, addr in self.book.learn(sender, rows):
            self.transport.set_peer(nid, addr.host, addr.port)
            self._last_seen.setdefault(nid, time.monotonic())
            log.info("node %d: node %d is at %s", self.id, nid, addr)

    async def _liveness_loop(self) -> None:
        """Ping every peer each ``ping_interval``; declare dead a peer silent for
        ``dead_after``. Silence is only held against a peer while this node was itself
        responsive: if our own loop stalled (CPU starvation, a long burst), whatever the
        peers sent meanwhile sits unread in our sockets, so the stall is credited to
        every peer. Without that, a busy node declares its healthy peers dead, wakes
        their quiesced followers, and the elections that follow make it busier still."""
        last = time.monotonic()
        next_gossip = last
        while True:
            assert self.transport is not None
            gossip = last >= next_gossip
            if gossip:
                record = self.book.record()
                next_gossip = last + self._gossip_interval
            for p in self.book.peers():
                with contextlib.suppress(TransportError):
                    self.transport.send(p, record if gossip else _PING)
            for peer, st in self.transport.stats().items():
                if peer:
                    self.metrics.observe_peer_totals(
                        peer, frames_out=st.frames_sent, frames_in=st.frames_received,
                        bytes_out=st.bytes_sent, bytes_in=st.bytes_received,
                        dropped=st.dropped_payloads)
            now = time.monotonic()
            stalled = now - last - self._ping_interval
            last = now
            if stalled > self._ping_interval:
                for p in self.book.peers():
                    if p in self._last_seen:
                        self._last_seen[p] = min(now, self._last_seen[p] + stalled)
            for p in self.book.peers():
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

    def submit(self, desc: RangeDescriptor, command: bytes) -> asyncio.Future[ClientResponse]:
        """Run ``command`` on range ``desc`` where its leader is (``Router``'s hook).

        A plain function returning the answer's future, not a coroutine: the hot
        path costs no coroutine frame or task per request (the router awaits it)."""
        rid = desc.range_id
        leader = self.directory.leader(rid)
        local = self._owner.get(rid)
        if leader is not None and leader != self.id and leader not in self._dead:
            if local is not None and not is_write_command(command) \
                    and self._local_reads_from.get(rid, 0.0) <= time.monotonic():
                return self._local_read(local, rid, command)
            return self._forward(leader, rid, command)
        if local is not None:
            return self._local(local, rid, command)
        others = [n for n in desc.voters if n != self.id and n not in self._dead]
        if not others:
            fut: asyncio.Future[ClientResponse] = asyncio.get_running_loop().create_future()
            fut.set_result(ClientResponse(0, pack_status(Outcome.TRYAGAIN, 0), b""))
            return fut
        target = others[int(time.monotonic() * 1000) % len(others)]
        return self._forward(target, rid, command)

    def _local(self, worker: int, rid: int, command: bytes) -> asyncio.Future[ClientResponse]:
        return self._workers[worker].request(rid, command)

    def _local_read(self, worker: int, rid: int, command: bytes
                    ) -> asyncio.Future[ClientResponse]:
        """A read on our follower replica: still linearizable (the worker asks the
        leader for a read index, batched per range per round, and answers once it
        applied that far), and it spares the request two hops through the client
        forwarding path. A follower that cannot serve (no leader known, lagging past
        the read timeout, moving away) answers TRYAGAIN or MISMATCH; reads of that
        range then go to the leader for ``_LOCAL_READ_BACKOFF`` seconds."""
        fut = self._workers[worker].request(rid, command)
        fut.add_done_callback(functools.partial(self._local_read_done, rid))
        return fut

    def _local_read_done(self, rid: int, fut: asyncio.Future[ClientResponse]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        outcome, _ = unpack_status(fut.result().status)
        if outcome in (Outcome.TRYAGAIN, Outcome.MISMATCH):
            self._local_reads_from[rid] = time.monotonic() + _LOCAL_READ_BACKOFF

    def _forward(self, node: int, rid: int, command: bytes) -> asyncio.Future[ClientResponse]:
        """Queue ``command`` for ``node``; its future is answered by the peer, by
        ``_expire_forwarded`` after ``forward_timeout`` (a write: Timeout, outcome
        unknown; a read: TRYAGAIN), or TRYAGAIN at once if it could not be queued."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        req_id = self._next_forward
        self._next_forward += 1
        fut: asyncio.Future[ClientResponse] = loop.create_future()
        self._forwarded[req_id] = fut
        self._forward_deadlines.append((loop.time() + self._forward_timeout, req_id, rid,
                                        command))
        if self._forward_sweep is None:
            self._forward_sweep = loop.call_later(self._forward_timeout / 8,
                                                  self._expire_forwarded)
        self._out_requests.setdefault(node, []).append(ClientRequest(req_id, rid, 0, command))
        self._schedule_flush()
        return fut

    def _expire_forwarded(self) -> None:
        """Time out forwarded requests past their deadline. Deadlines are appended in
        order (one constant timeout), so this pops from the left only: O(1) per
        request however many are in flight, and no timer per request."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        pending = self._forward_deadlines
        while pending and pending[0][0] <= now:
            _, req_id, rid, command = pending.popleft()
            fut = self._forwarded.pop(req_id, None)
            if fut is None or fut.done():
                continue
            self.directory.set_leader(rid, None)
            if is_write_command(command):
                fut.set_exception(Timeout("the leader's node did not answer in time; "
                                          "outcome unknown"))
            else:
                fut.set_result(ClientResponse(req_id, pack_status(Outcome.TRYAGAIN, 0), b""))
        self._forward_sweep = (loop.call_later(self._forward_timeout / 8, self._expire_forwarded)
                               if pending else None)

    def _serve_forwarded(self, peer: int, requests: list[ClientRequest]) -> None:
        """A peer forwarded client commands: run them on our local replicas only (no
        forwarding chains); each answer joins the peer's next CLIENT_RESPONSES record.
        Done callbacks, not a task per request."""
        for req in requests:
            w = self._owner.get(req.range_id)
            if w is None:
                self._answer_forwarded(peer, ClientResponse(
                    req.req_id, pack_status(Outcome.MISMATCH, 0), b""))
                continue
            fut = self._workers[w].request(req.range_id, req.command)
            fut.add_done_callback(functools.partial(self._forwarded_done, peer, req.req_id))

    def _forwarded_done(self, peer: int, req_id: int,
                        fut: asyncio.Future[ClientResponse]) -> None:
        exc = fut.exception()
        if exc is None:
            got = fut.result()
            resp = ClientResponse(req_id, got.status, got.payload)
        else:  # the worker died with it: it may have been applied
            resp = ClientResponse(req_id, pack_status(Outcome.UNKNOWN, 0), b"")
        self._answer_forwarded(peer, resp)

    def _answer_forwarded(self, peer: int, resp: ClientResponse) -> None:
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
            self._warn_unsendable(node, e)
            return False

    def uptime(self) -> float:
        return time.monotonic() - self._started


def _discard_outcome(fut: asyncio.Future[ClientResponse]) -> None:
    """Retrieve a best-effort request's result or error (the worker may stop first)."""
    if not fut.cancelled():
        fut.exception()


def bootstrap_owners(layout: list[RangeDescriptor], workers: int) -> dict[int, int]:
    """Range id -> worker for the bootstrap layout: contiguous blocks in key order, so
    that neighbours share a worker (a merge needs both sides in one Store) and only
    ``workers - 1`` boundaries cannot merge. Every node computes the same answer."""
    ordered = sorted(layout, key=lambda d: d.start_key)
    return {d.range_id: i * workers // len(ordered) for i, d in enumerate(ordered)}


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
