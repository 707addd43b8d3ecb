"""The worker process: one ``Store`` over its own log directory, driven by its ring.

Theory of operation
-------------------
The node forks a worker with one end of a ``ChannelPair``; the worker owns
``data_dir/w<i>/`` (``log/`` for the log store, ``snapshots/`` for the
``DirSnapshotStore``) and runs one blocking loop:

1. ``recv`` every record the node published, waiting at most until the next
   tick is due (no wait at all while the Store says it has more work);
2. hand them to the Store: peer raft traffic -> ``deliver``, client rows ->
   ``propose``/``read`` (request id remembered), control rows -> liveness;
3. tick by the worker's own monotonic clock (a late loop drops ticks rather
   than bunching them: a burst of ticks after a stall would start elections);
4. ``process()`` one round (one log write batch, one fsync);
5. publish this round's outgoing raft records (one per destination node and
   kind) and one CLIENT_RESPONSES record, in one ``send``; every
   ``report_interval`` a status report rides along.

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
import logging
import os
import resource
import signal
import time
from pathlib import Path

from engine.config import NodeConfig
from engine.kv import KVStateMachine
from engine.kv_codec import KVCodecError, decode_command
from engine.outbox import NodeBatch
from engine.proposal import Completion, Outcome
from engine.raft.types import ConfState, Entry, Message, Snapshot, SnapshotMetadata
from engine.range_desc import RangeDescriptor
from engine.snapshot_store import DirSnapshotStore
from engine.statemachine import StateMachine
from engine.store import RoundOutput, Store
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


def kv_factory(desc: RangeDescriptor) -> StateMachine:
    return KVStateMachine(desc.start_key, desc.end_key)


def worker_dir(config: NodeConfig, index: int) -> Path:
    return Path(config.node.data_dir) / f"w{index}"


class Worker:
    """The loop of one worker process (see the module docstring)."""

    def __init__(
        self, index: int, config: NodeConfig, chan: WorkerChannel,
        bootstrap: list[RangeDescriptor], *, report_interval: float = 0.5,
    ) -> None:
        self.index = index
        self._chan = chan
        base = worker_dir(config, index)
        self._log = open_log_store(config.logstore.backend, str(base / "log"),
                                   **config.logstore.options())
        self.store = Store(config.node.id, self._log, DirSnapshotStore(base / "snapshots"),
                           kv_factory, cfg=config.store_config(seed=config.node.id * 1009 + index))
        if bootstrap:
            self.store.bootstrap(bootstrap)
        self._codec = WireCodec(ENGINE_TYPES)
        self._tick_s = config.raft.tick_ms / 1000.0
        self._report_interval = report_interval
        #: Invariant: Store request id -> node request id, for every request not yet answered.
        self._requests: dict[int, int] = {}
        self._responses: list[ClientResponse] = []
        #: Invariant: Store request id -> split key, for split requests not yet answered.
        self._split_keys: dict[int, bytes] = {}

    def run(self) -> None:
        """Loop until the node closes the channel or dies; then answer what is pending."""
        next_tick = time.monotonic() + self._tick_s
        next_report = 0.0
        more = False
        try:
            while True:
                now = time.monotonic()
                records = self._chan.recv(0 if more else max(0.0, next_tick - now))
                for rec in records:
                    self._handle(rec)
                now = time.monotonic()
                if now >= next_tick:
                    self.store.tick()
                    next_tick = max(next_tick + self._tick_s, now)
                out = self.store.process()
                more = out.more
                outgoing = self._outgoing(out)
                if now >= next_report:
                    outgoing.append(self._report())
                    next_report = now + self._report_interval
                if outgoing:
                    self._chan.send(outgoing)
        except (PeerClosed, PeerDead):
            pass
        finally:
            self._answer(self.store.close())
            self._log.close()

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

    def _admin(self, req: ClientRequest, op: AdminOp, arg: int, key: bytes) -> None:
        """Split and merge complete through the Store's rounds; a leadership transfer
        is only started here (its effect shows in the next reports)."""
        store = self.store
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
        ranges = []
        for rid in self.store.range_ids():
            rep = self.store.replica(rid)
            if rep is None:
                continue
            ranges.append(RangeReport(rep.desc, rep.leader, rep.raw.raft.term, rep.raw.applied,
                                      rep.is_leader, rep.quiesced))
        st = self.store.stats
        usage = resource.getrusage(resource.RUSAGE_SELF)
        report = WorkerReport(st.rounds, st.fsyncs, st.log_writes, st.entries_applied,
                              usage.ru_utime + usage.ru_stime, tuple(ranges))
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
