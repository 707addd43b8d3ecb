"""The worker process: one ``Store`` over its own log directory, driven by its ring.

Theory of operation
-------------------
The node forks a worker with one end of a ``ChannelPair``; the worker owns
``data_dir/w<i>/`` (``log/`` for the log store, ``snapshots/`` for the
``DirSnapshotStore``) and runs one blocking loop:

1. ``recv`` every record the node published, waiting at most until the next
   tick is due (no wait at all while the Store says it has more work or a
   round's write is in flight);
2. hand them to the Store: peer raft traffic -> ``deliver``, client rows ->
   ``propose``/``read`` (request id remembered), control rows -> liveness;
3. if a round's write is in flight: ``step_arrivals`` (what came in while it
   synced), ``finish_round`` and publish its outgoing raft records (one per
   destination node and kind) and one CLIENT_RESPONSES record, in one
   ``send``; every ``report_interval`` a status report rides along;
4. tick by the worker's own monotonic clock (a late loop drops ticks rather
   than bunching them: a burst of ticks after a stall would start elections);
5. ``begin_round``: one log write batch, its fsync submitted to the log's
   sync thread; a round with nothing to sync is finished and published at
   once, otherwise the loop goes round (step 1, without waiting) so that
   the fsync overlaps taking in the next records. (A deliberate batching
   window before each round was measured: it cost more than it saved.)

Reads are served from the leader's lease (``engine/read_lease.py``) when
check-quorum is on, on the real clock; a worker that recovered replicas
from disk holds back their votes for an election timeout first.

Rules
-----
- The worker never touches the node's sockets or event loop it inherited by
  ``fork``; it ignores SIGINT (Ctrl-C reaches the whole process group: the
  node decides) and ends when the node closes the channel or dies.
- A client request is answered exactly once: by its Completion, or by
  ``Store.close()`` (UNKNOWN/TRYAGAIN) when the worker stops.
- Nothing on the ring is pickled: ``transport.codec`` envelopes and
  ``engine.worker_protocol`` payloads only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import resource
import signal
import time
from collections.abc import Callable, Iterable, Sized
from pathlib import Path

from engine.config import NodeConfig
from engine.kv import KVStateMachine
from engine.kv_codec import KVCodecError, decode_command
from engine.meta import MetaStateMachine
from engine.meta_codec import META_RANGE_ID, is_meta_command
from engine.outbox import NodeBatch
from engine.proposal import Completion, Outcome
from engine.raft.types import ConfState, Entry, Message, Snapshot, SnapshotMetadata
from engine.range_desc import RangeDescriptor
from engine.range_directory import initial_descriptors
from engine.replica_change import REPLICA_OPS, run_replica_op
from engine.snapshot_store import DirSnapshotStore
from engine.statemachine import StateMachine
from engine.store import RoundInFlight, RoundOutput, Store
from engine.worker_protocol import (
    CONTROL_NODE_LIVENESS,
    CONTROL_REQ_ID,
    AdminOp,
    RangeReport,
    WorkerReport,
    command_keys,
    decode_admin,
    encode_report,
    is_write_command,
    pack_status,
)
from logstore.factory import open_log_store
from transport import (
    ClientRequest,
    ClientRequestBatch,
    ClientResponse,
    CoalescedHeartbeats,
    DecodeError,
    PeerClosed,
    PeerDead,
    RaftBatch,
    RaftTypes,
    WireCodec,
    WorkerChannel,
    encode_raft_batch,
)
from transport.codec import encode_client_responses, encode_heartbeats

log = logging.getLogger("multiraft.worker")

#: The engine's raft values, for decoding wire records in the node and the workers.
ENGINE_TYPES: RaftTypes[Message] = RaftTypes(
    message=Message, entry=Entry, snapshot=Snapshot, snapshot_metadata=SnapshotMetadata,
    conf_state=ConfState,
)


def state_machine_factory(config: NodeConfig) -> Callable[[RangeDescriptor], StateMachine]:
    """The Store's state-machine factory: the meta range (by its well-known id) runs
    ``MetaStateMachine``, every other range the KV machine. A fresh meta machine
    already holds the bootstrap layout's user ranges (every initial node derives the
    same from its config, so the meta range starts identical everywhere without
    coordination); where a replica is recovered or installed from a snapshot,
    ``restore`` replaces that seed."""
    layout = initial_descriptors(config)

    def make(desc: RangeDescriptor) -> StateMachine:
        if desc.range_id == META_RANGE_ID:
            return MetaStateMachine(layout)
        return KVStateMachine(desc.start_key, desc.end_key)

    return make


def worker_dir(config: NodeConfig, index: int) -> Path:
    return Path(config.node.data_dir) / f"w{index}"


class Worker:
    """The loop of one worker process (see the module docstring)."""

    def __init__(
        self, index: int, config: NodeConfig, chan: WorkerChannel,
        bootstrap: list[RangeDescriptor], *, report_interval: float = 0.5,
        full_report_interval: float = 30.0,
    ) -> None:
        self.index = index
        self._chan = chan
        base = worker_dir(config, index)
        self._log = open_log_store(config.logstore.backend, str(base / "log"),
                                   **config.logstore.options())
        self.store = Store(config.node.id, self._log, DirSnapshotStore(base / "snapshots"),
                           state_machine_factory(config),
                           cfg=config.store_config(seed=config.node.id * 1009 + index))
        #: Replicas were recovered from disk: with lease reads their votes are held back.
        self._recovered = bool(self.store.range_ids())
        if bootstrap:
            self.store.bootstrap(bootstrap)
        self._codec = WireCodec(ENGINE_TYPES)
        self._tick_s = config.raft.tick_ms / 1000.0
        self._report_interval = report_interval
        self._full_report_interval = full_report_interval
        self._next_full_report = 0.0
        #: Invariant: range id -> what the node was last told of it (full + deltas).
        self._sent: dict[int, RangeReport] = {}
        #: Records found on the ring at the latest drain (a queue-depth gauge).
        self._inbox_depth = 0
        #: Invariant: Store request id -> node request id, for every request not yet answered.
        self._requests: dict[int, int] = {}
        self._responses: list[ClientResponse] = []
        #: Invariant: Store request id -> split key, for split requests not yet answered.
        self._split_keys: dict[int, bytes] = {}

    def run(self) -> None:
        """Loop until the node closes the channel or dies; then answer what is pending."""
        next_tick = time.monotonic() + self._tick_s
        self._next_report = 0.0
        more = False
        if self.store.cfg.check_quorum and self.store.cfg.lease_reads:
            # Lease reads on the real clock in tick units: ticks are dropped when the
            # loop is late, so the Store's tick counter would stretch the lease.
            tick_s = self._tick_s
            self.store.use_lease_reads(lambda: time.monotonic() / tick_s,
                                       hold_votes=self._recovered)
        #: Invariant: the round whose write is in flight (begun, not finished), or None.
        rnd: RoundInFlight | None = None
        try:
            while True:
                now = time.monotonic()
                wait = 0.0 if more or rnd is not None else max(0.0, next_tick - now)
                records = self._chan.recv(wait)
                arrived = time.monotonic()
                self._inbox_depth = len(records)
                for rec in records:
                    self._handle(rec)
                if rnd is not None:
                    # What arrived while the write was in flight is stepped before the
                    # round ends (raft allows stepping between ready and advance).
                    self.store.step_arrivals()
                    more = self._publish(self.store.finish_round(rnd), arrived)
                    rnd = None
                now = time.monotonic()
                if now >= next_tick:
                    self.store.tick()
                    next_tick = max(next_tick + self._tick_s, now)
                rnd = self.store.begin_round()
                if rnd.durable is None or rnd.durable.done():
                    more = self._publish(self.store.finish_round(rnd), now)
                    rnd = None
        except (PeerClosed, PeerDead):
            pass
        finally:
            if rnd is not None:
                self._answer(self.store.finish_round(rnd).completions)
            self._answer(self.store.close())
            self._log.close()

    def _publish(self, out: RoundOutput, now: float) -> bool:
        """Send a finished round's records (and, when due, a status report) to the
        node in one ``send``; returns whether the Store has more work at once."""
        outgoing = self._outgoing(out)
        if now >= self._next_report:
            outgoing.append(self._report())
            self._next_report = now + self._report_interval
        if outgoing:
            self._chan.send(outgoing)
        return out.more

    # -- inputs ---------------------------------------------------------------------------

    def _handle(self, rec: bytes) -> None:
        try:
            record = self._codec.decode(rec)
        except DecodeError as e:  # our own node wrote it: a bug, but never fatal here
            log.error("worker %d: undecodable record from the node: %s", self.index, e)
            return
        if isinstance(record, RaftBatch):
            self.store.deliver(NodeBatch(messages=record.messages))
        elif isinstance(record, CoalescedHeartbeats):
            if record.response:
                self.store.deliver(NodeBatch(heartbeat_responses=record))
            else:
                self.store.deliver(NodeBatch(heartbeats=record))
        elif isinstance(record, ClientRequestBatch):
            for req in record.requests:
                self._request(req)
        else:
            log.error("worker %d: unexpected %s from the node", self.index,
                      type(record).__name__)

    def _request(self, req: ClientRequest) -> None:
        if req.req_id == CONTROL_REQ_ID:
            if req.range_id == CONTROL_NODE_LIVENESS:
                if req.command == b"\x01":
                    self.store.node_dead(req.generation)
                else:
                    self.store.node_alive(req.generation)
            return
        if req.range_id == META_RANGE_ID:  # (a meta command to a user range fails below)
            self._meta_request(req)
            return
        try:
            admin = decode_admin(req.command)
            if admin is not None:
                self._admin(req, *admin)
                return
            keys = command_keys(decode_command(req.command))
        except (KVCodecError, ValueError) as e:
            self._responses.append(ClientResponse(req.req_id, pack_status(Outcome.ERROR, 0),
                                                  str(e).encode()))
            return
        if is_write_command(req.command):
            rid = self.store.propose(req.range_id, req.command, keys=keys)
        else:
            rid = self.store.read(req.range_id, req.command, keys=keys)
        self._requests[rid] = req.req_id

    def _meta_request(self, req: ClientRequest) -> None:
        """The meta range takes meta commands (its state machine decodes and validates
        them) and the admin ops of any range but split and merge (meta is never split
        or merged). A meta command sent to a user range fails to decode as a KV
        command there, so it never reaches a user range's state machine."""
        command = req.command
        if is_meta_command(command):
            if is_write_command(command):
                rid = self.store.propose(req.range_id, command)
            else:
                rid = self.store.read(req.range_id, command)
            self._requests[rid] = req.req_id
            return
        admin = None
        with contextlib.suppress(ValueError):
            admin = decode_admin(command)
        if admin is not None and admin[0] not in (AdminOp.SPLIT, AdminOp.MERGE):
            self._admin(req, *admin)
            return
        self._responses.append(ClientResponse(
            req.req_id, pack_status(Outcome.ERROR, 0),
            b"the meta range is never split or merged and holds no KV data"))

    def _admin(self, req: ClientRequest, op: AdminOp, arg: int, key: bytes) -> None:
        """Split, merge and replica conf changes complete through the Store's rounds
        (``engine.replica_change`` answers the ones already in place at once); a
        leadership transfer is only started here (its effect shows in the next reports)."""
        store = self.store
        if op in REPLICA_OPS:
            got = run_replica_op(store, req.range_id, op, arg)
            if isinstance(got, int):
                self._requests[got] = req.req_id
            else:
                self._responses.append(ClientResponse(req.req_id, *got))
            return
        if op == AdminOp.TRANSFER_LEADER:
            rep = store.replica(req.range_id)
            if rep is None:
                status = pack_status(Outcome.MISMATCH, 0)
            elif store.transfer_leader(req.range_id, arg):
                status = pack_status(Outcome.OK, rep.leader)
            else:
                status = pack_status(Outcome.TRYAGAIN, rep.leader)
            self._responses.append(ClientResponse(req.req_id, status, b""))
            return
        if op == AdminOp.SPLIT:
            if not key:
                rep = store.replica(req.range_id)
                mid = rep.sm.split_key() if rep is not None else None
                if mid is None:
                    self._responses.append(ClientResponse(
                        req.req_id, pack_status(Outcome.ERROR, 0),
                        b"the range has no middle key (too few keys); give one"))
                    return
                key = mid
            rid = store.split(req.range_id, key, arg)
            self._split_keys[rid] = key
        else:
            rid = store.merge(req.range_id)
        self._requests[rid] = req.req_id

    # -- outputs --------------------------------------------------------------------------

    def _outgoing(self, out: RoundOutput) -> list[bytes]:
        records: list[bytes] = []
        for batch in out.outgoing.values():
            if batch.messages:
                records.append(encode_raft_batch(batch.messages))
            if batch.heartbeats is not None and len(batch.heartbeats):
                records.append(encode_heartbeats(batch.heartbeats))
            if batch.heartbeat_responses is not None and len(batch.heartbeat_responses):
                records.append(encode_heartbeats(batch.heartbeat_responses))
        self._answer(out.completions)
        if self._responses:
            records.append(encode_client_responses(self._responses))
            self._responses = []
        return records

    def _answer(self, completions: list[Completion]) -> None:
        for c in completions:
            node_req = self._requests.pop(c.request_id, None)
            if node_req is None:
                continue  # an admin-internal request, not a client's
            split_key = self._split_keys.pop(c.request_id, None)
            if c.outcome == Outcome.MISMATCH:
                payload = c.descriptor.encode() if c.descriptor is not None else b""
            elif c.outcome == Outcome.OK and split_key is not None:
                payload = split_key  # the admin caller learns where it was split
            else:
                payload = c.result
            self._responses.append(
                ClientResponse(node_req, pack_status(c.outcome, c.leader_hint), payload))

    def _report(self) -> bytes:
        """A status report: full every ``full_report_interval`` (and first), otherwise
        the replicas the Store marked changed (see ``worker_protocol``)."""
        store = self.store
        now = time.monotonic()
        full = now >= self._next_full_report
        if full:
            self._next_full_report = now + self._full_report_interval
            ids: Iterable[int] = store.range_ids()
            store.changed = set()
        else:
            ids, store.changed = store.changed, set()
        ranges = []
        removed = []
        sent = self._sent
        if full:
            sent.clear()
        for rid in ids:
            rep = store.replica(rid)
            if rep is None:  # only in a delta: a full report lists live replicas
                sent.pop(rid, None)
                removed.append(rid)
                continue
            sm = rep.sm
            r = RangeReport(
                rep.desc, rep.leader, rep.raw.raft.term, rep.raw.applied, rep.is_leader,
                rep.quiesced, sm.approximate_size(), len(sm) if isinstance(sm, Sized) else 0,
                rep.writes_received, rep.queries_received)
            before = sent.get(rid)
            if before is not None and dataclasses.replace(before, applied=r.applied) == r:
                continue  # only the applied index moved: not worth the node's time
            sent[rid] = r
            ranges.append(r)
        syncs, store.sync_latencies = store.sync_latencies, []
        st = store.stats
        usage = resource.getrusage(resource.RUSAGE_SELF)
        report = WorkerReport(
            st.rounds, st.fsyncs, st.log_writes, st.entries_applied,
            usage.ru_utime + usage.ru_stime, tuple(ranges), st.proposals, st.elections,
            st.entry_bytes_logged, self._inbox_depth, len(self._requests), full,
            tuple(removed), tuple(syncs))
        return encode_client_responses([ClientResponse(CONTROL_REQ_ID, 0, encode_report(report))])


def worker_main(
    index: int, config: NodeConfig, chan: WorkerChannel, bootstrap: list[RangeDescriptor],
) -> int:
    """Entry point in the forked child; returns its exit code (0: the node closed us)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    try:
        Worker(index, config, chan, bootstrap).run()
    except Exception:
        log.exception("worker %d (pid %d) failed", index, os.getpid())
        return 1
    finally:
        chan.close()
    return 0
