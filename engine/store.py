"""``Store``: many range replicas in one worker, driven by calls, one log write per round.

Theory of operation
-------------------
A Store has no threads, sockets or clock of its own. The caller feeds it
(``deliver`` batches from other nodes, ``tick``, ``propose``, ``read``,
``node_dead``/``node_alive``) and calls ``process()``, which runs one round:

1. **step** every message that arrived (coalesced heartbeats are fanned
   out per range first);
2. **tick** the replicas that are not quiesced (a leader that may quiesce
   sends its quiesce heartbeats instead of ticking);
3. hand this round's proposals and reads to raft (one ``propose_batch`` and
   one ReadIndex per range);
4. collect the ``Ready`` of every replica that had any work (the scheduler
   is the ``_dirty`` set: idle replicas are never looked at);
5. **one** ``WriteBatch`` with every range's snapshot records, entries and
   hard states: ``submit`` (one fsync) when any Ready needs a sync, a lazy
   ``write(sync=False)`` otherwise;
6. the Ready's ``messages`` may go before durability: with ``early_send``
   they are handed out while the fsync runs; ``persisted_messages`` only
   after it completed. A caller that splits the round (``begin_round`` /
   ``step_arrivals`` / ``finish_round``) also steps newly arrived messages
   while the fsync runs;
7. apply committed entries, answer reads whose index is applied, resolve
   proposals, ``advance`` every Ready; take durable snapshots and compact
   logs past the configured threshold.

The round returns one ``NodeBatch`` per destination node (raft messages
tagged with range ids, heartbeats coalesced per node pair) and the completed
client requests. A client is answered OK only after its entry committed and
applied on this (the proposing) replica.

Restart: the Store is rebuilt over the same log store and snapshot store;
each range is recovered from its newest durable state-machine image plus
the log after it (``engine/replica_state.py``).

Usage (what the node's worker loop does; ``engine/testing/cluster.py`` does the
same over an in-memory network)::

    store = Store(node_id, open_log_store("segmented", path), DirSnapshotStore(snap_dir),
                  lambda desc: KVStateMachine(desc.start_key, desc.end_key))
    store.bootstrap(initial_descriptors)          # first start only; idempotent
    req = store.propose(range_id, command, keys=[key])
    store.tick()                                  # every tick_ms
    store.deliver(batch_from_peer)                # as batches arrive
    out = store.process()                         # one round
    send(out.outgoing)                            # {node id: NodeBatch}
    answer(out.completions)                       # Completion(request_id, outcome, ...)

Admin operations (``split``, ``merge``, ``change_replicas``, ``transfer_leader``)
go through the same rounds; ``node_dead``/``node_alive`` feed node liveness.

Safety nets around replica lifecycles
-------------------------------------
- **Merge resolution** (``engine/merge_resolver.py``): every frozen replica
  is looked at every ``merge_resolve_ticks``; a merge whose coordinator
  crashed is re-driven by the left-hand leader, and a frozen range is
  unfrozen only once this store proves no MERGE of its intent can apply.
- **Tombstones** (``engine/snapshot_store.py``): every replica destroyed
  here (removed by a conf change, merged away, superseded) leaves a durable
  tombstone first; snapshots the tombstone covers are dropped, so a stale
  leader cannot recreate it, and nothing at all is answered for a range
  merged away here (its zombie leaders step down by check-quorum).
- **Bounded snapshot receiving** (``engine/snapshot_stream.py``): incoming
  chunks go to a spool file, and installing restores from it and saves it
  by streaming it twice: never a joined copy of the image.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import cast

from engine.heartbeat import QUIESCE, fan_out
from engine.merge_coordinator import MergeCoordinator
from engine.merge_resolver import MergeResolver
from engine.meta_codec import META_RANGE_ID
from engine.outbox import NodeBatch, Outbox
from engine.proposal import Completion, EntryKind, Outcome, PendingRead
from engine.quiesce import follower_may_quiesce, leader_may_quiesce
from engine.raft.rawnode import Ready
from engine.raft.types import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeType,
    ConfState,
    HardState,
    Message,
    MessageType,
    StateRole,
)
from engine.raft_log import encode_conf_state
from engine.range_desc import RangeDescriptor
from engine.read_lease import lease_duration
from engine.replica import Replica, decode_snapshot_data
from engine.replica_state import (
    INITIAL_INDEX,
    SMFactory,
    recover,
    superseded,
    write_initial_states,
)
from engine.snapshot_store import MERGED, SnapshotStore, Tombstone
from engine.snapshot_stream import SnapshotReceiver, SnapshotSender, is_chunk
from engine.split_merge import (
    MergeCommand,
    SplitCommand,
    encode_split,
    merge_refusal,
    split_refusal,
)
from engine.statemachine import StateMachine
from engine.store_config import StoreConfig
from logstore.protocol import HardState as LogHardState
from logstore.protocol import LogEntry, LogStore, PurgeResult, SnapshotMeta, WriteBatch

_HEARTBEAT = MessageType.HEARTBEAT
#: Bound on ``Store.sync_latencies`` between two drains.
_MAX_SYNC_SAMPLES = 4096
_HEARTBEAT_RESP = MessageType.HEARTBEAT_RESP
_SNAPSHOT = MessageType.SNAPSHOT
_APPEND = MessageType.APPEND
_APPEND_RESP = MessageType.APPEND_RESP
_READ_INDEX = MessageType.READ_INDEX
_VOTE_REQUESTS = frozenset((MessageType.VOTE, MessageType.PRE_VOTE))


def _compacted(items: set[int], high: int) -> tuple[set[int], int]:
    """``items`` rebuilt if it shrank to under a quarter of its high-water mark, and
    the new mark. A CPython set never shrinks its table and iterating it costs its
    capacity: 100,000 ranges that ticked once and then quiesced would otherwise cost
    a scan of a 100,000-slot table on every tick of an idle store."""
    n = len(items)
    if n * 4 < high:
        return set(items), n
    return items, max(high, n)


@dataclass(slots=True)
class StoreStats:
    """Counters for tests, benchmarks and metrics (monotonic)."""

    rounds: int = 0
    ticks: int = 0
    log_writes: int = 0
    fsyncs: int = 0
    messages_out: int = 0
    heartbeat_rows_out: int = 0
    dropped_unknown_range: int = 0
    entries_applied: int = 0
    snapshots_taken: int = 0
    snapshots_installed: int = 0
    snapshot_bytes_out: int = 0
    dropped_tombstoned: int = 0
    proposals: int = 0
    elections: int = 0
    #: Payload bytes of the entries appended to the log (framing not counted).
    entry_bytes_logged: int = 0


@dataclass(slots=True)
class RoundInFlight:
    """A round between ``begin_round`` and ``finish_round``."""

    readies: list[tuple[Replica, Ready]]
    done: list[Completion]
    #: Completes when the round's write is durable (None: nothing needed a sync).
    durable: Future[None] | None
    #: ``perf_counter()`` when the write was submitted (for the sync latency).
    submitted: float = 0.0


@dataclass(slots=True)
class RoundOutput:
    outgoing: dict[int, NodeBatch] = field(default_factory=dict)
    completions: list[Completion] = field(default_factory=list)
    #: Some replica still has a Ready (call ``process`` again without waiting).
    more: bool = False


class Store:
    """The replicas of one store (worker). See the module docstring for the round."""

    def __init__(
        self, node_id: int, log: LogStore, snapshots: SnapshotStore, sm_factory: SMFactory,
        *, cfg: StoreConfig | None = None,
        early_send: Callable[[dict[int, NodeBatch]], None] | None = None,
    ) -> None:
        self.node_id = node_id
        self.cfg = cfg or StoreConfig()
        self._log = log
        self._snapshots = snapshots
        self._sm_factory = sm_factory
        self._early_send = early_send
        self.stats = StoreStats()
        #: Seconds from submitting a round's synced write to its durability, since the
        #: owner last took them (bounded: a caller that never drains loses samples, not
        #: memory; ``stats.fsyncs`` stays exact).
        self.sync_latencies: list[float] = []
        #: Invariant: ids of replicas whose reportable state (role, leader, term,
        #: descriptor, quiescence, load counters) may have changed, or that were added
        #: or removed, since the owner last took this set — so a status report costs
        #: the replicas that moved, not all of them.
        self.changed: set[int] = set()
        self._replicas: dict[int, Replica] = {}
        #: Invariant: exactly the replicas that are not quiesced.
        self._ticking: set[int] = set()
        #: Largest size of ``_ticking`` since it was last rebuilt (see ``_compacted``).
        self._ticking_high = 0
        #: Replicas touched since their last Ready (the scheduler's work list).
        self._dirty: set[int] = set()
        #: Replicas with client requests queued or in flight (deadline checks).
        self._busy: set[int] = set()
        self._busy_high = 0
        #: Replicas with proposals/reads queued this round.
        self._requests: set[int] = set()
        self._inbox: list[NodeBatch] = []
        self._done: list[Completion] = []
        self._outbox = Outbox(self.cfg.coalesce_heartbeats)
        self._sender = SnapshotSender()
        self._receiver = SnapshotReceiver()
        self._dead: set[int] = set()
        self._pending_ticks = 0
        #: Invariant: the Store's clock, in ticks processed.
        self._now = 0
        self._next_request = 1
        self._next_proposal = 1
        self._read_seq = 0
        #: The read-lease clock in ticks (None: reads always take a ReadIndex round);
        #: see ``use_lease_reads`` and ``engine/read_lease.py``.
        self._lease_clock: Callable[[], float] | None = None
        self._lease_ticks = 0.0
        #: Invariant: vote requests are dropped while ``_now`` is below this.
        self._votes_held_until = 0
        self._merges = MergeCoordinator()
        self._resolver = MergeResolver(self.cfg.merge_resolve_ticks)
        #: Invariant: mirrors ``snapshots.tombstones()`` (range id -> removal).
        self._tombs = snapshots.tombstones()
        #: Invariant: True between ``begin_round`` and ``finish_round``.
        self._in_flight = False
        for rid in snapshots.range_ids():
            rep = recover(node_id, rid, log=log, snapshots=snapshots, sm_factory=sm_factory,
                          cfg=self.cfg)
            self._add(rep)
            tomb = self._tombs.get(rid)
            if tomb is not None and tomb.covers(rep.desc.generation, rep.snap_index):
                self._destroy(rep, [], tomb)  # the crash hit between tombstone and removal
        for leftover in superseded(self._replicas.values()):
            # Not MERGED: a stale replica of a range that lives on (split) also loses.
            self._destroy(leftover, [], Tombstone(leftover.desc.generation,
                                                  leftover.raw.applied))

    # -- replicas ---------------------------------------------------------------------

    def _add(self, rep: Replica) -> None:
        self._replicas[rep.range_id] = rep
        self.changed.add(rep.range_id)
        self._ticking.add(rep.range_id)
        self._dirty.add(rep.range_id)
        self._resolver.note(rep, self._now)

    def bootstrap(self, descs: Iterable[RangeDescriptor], campaign: bool = True) -> int:
        """Create the initial replicas this node holds of ``descs`` (every store of the
        cluster is given the same list). Returns how many.

        With ``campaign``, voter ``range_id mod n_voters`` of each range leads it from
        the start, spreading leaders evenly, *without an election*: every voter's
        initial hard state records its vote for that voter in the initial term (all
        stores compute the same choice from the same list), so the election's outcome
        is fixed before any message (``Raft.lead_by_agreement``). Thousands of fresh
        ranges then start with one round of appends instead of an election storm. If
        the chosen node is down, the others elect a leader in the next term as usual.
        Like every raft vote, the pre-agreed one relies on durable state: a node whose
        data directory is wiped must rejoin as a new replica (removed, then added),
        never by bootstrapping again under its old id."""
        wb = WriteBatch()
        fresh: list[tuple[RangeDescriptor, ConfState, StateMachine, int]] = []
        for desc in descs:
            if self.node_id not in desc.replicas or desc.range_id in self._replicas:
                continue
            conf = ConfState(voters=desc.voters, learners=desc.learners)
            voters = desc.voters
            vote = voters[desc.range_id % len(voters)] if campaign and voters else 0
            fresh.append((desc, conf, self._sm_factory(desc), vote))
        write_initial_states(fresh, self._snapshots, wb)
        if wb:
            self._log.write(wb, sync=True)
            self.stats.fsyncs += 1
        for desc, conf, sm, vote in fresh:
            rep = Replica(
                node_id=self.node_id, desc=desc, sm=sm, log=self._log,
                snapshots=self._snapshots, applied=INITIAL_INDEX, conf_state=conf, cfg=self.cfg,
            )
            self._add(rep)
            if vote == self.node_id:
                rep.raw.lead_by_agreement()
        return len(fresh)

    # -- inputs -----------------------------------------------------------------------------

    def deliver(self, batch: NodeBatch) -> None:
        """Queue a batch from another node; it is stepped by the next ``process``."""
        self._inbox.append(batch)

    def tick(self, n: int = 1) -> None:
        """Advance the Store's clock by ``n`` ticks (applied by the next ``process``)."""
        self._pending_ticks += n

    def propose(
        self, range_id: int, command: bytes, *, keys: Iterable[bytes] = (),
        generation: int | None = None,
    ) -> int:
        """Propose ``command`` to ``range_id``; returns the request id its
        ``Completion`` will carry. ``keys``/``generation`` are checked against the
        current descriptor (MISMATCH) before anything is proposed."""
        return self._request(range_id, keys, generation, command, write=True)

    def read(
        self, range_id: int, query: bytes, *, keys: Iterable[bytes] = (),
        generation: int | None = None,
    ) -> int:
        """A linearizable read (ReadIndex, batched per range per round)."""
        return self._request(range_id, keys, generation, query, write=False)

    def use_lease_reads(
        self, clock: Callable[[], float] | None = None, *, hold_votes: bool = False,
    ) -> None:
        """Serve linearizable reads from the leader's lease when it is valid, ReadIndex
        otherwise (``engine/read_lease.py``). ``clock`` reads the time in ticks and must
        never run slower than real time (a worker: its monotonic clock divided by the
        tick length); None is the Store's tick counter, right only where ticks are
        never dropped (simulations). ``hold_votes``: this Store's replicas were
        recovered from disk, so they forgot the leader they heard from; they drop
        vote requests for one election timeout, as the lease argument requires.
        Needs ``check_quorum``."""
        if not self.cfg.check_quorum:
            raise ValueError("lease reads need check_quorum")
        self._lease_clock = clock or (lambda: float(self._now))
        self._lease_ticks = lease_duration(self.cfg.election_ticks)
        if hold_votes:
            self._votes_held_until = self._now + self.cfg.election_ticks

    def _request(
        self, range_id: int, keys: Iterable[bytes], generation: int | None, payload: bytes,
        write: bool,
    ) -> int:
        request_id = self.new_request_id()
        rep = self._replicas.get(range_id)
        if rep is None:
            self._done.append(Completion(request_id, Outcome.MISMATCH))
            return request_id
        desc = rep.desc
        keys = tuple(keys)
        if (generation is not None and generation != desc.generation) or not all(
            desc.contains(k) for k in keys
        ):
            self._done.append(Completion(request_id, Outcome.MISMATCH, descriptor=desc))
            return request_id
        if write:
            rep.queue_proposal(request_id, EntryKind.USER, self._next_proposal, payload)
            self._next_proposal += 1
            rep.writes_received += 1
            self.stats.proposals += 1
        else:
            rep.queries_received += 1
            deadline = self._now + self.cfg.read_timeout_ticks
            rep.new_reads.append(PendingRead(request_id, payload, deadline, keys))
        self.changed.add(range_id)
        self._wake(rep)
        self._requests.add(range_id)
        self._busy.add(range_id)
        return request_id

    # -- admin commands ------------------------------------------------------------------

    def split(self, range_id: int, key: bytes, new_range_id: int) -> int:
        """Split ``range_id`` at ``key``; the right-hand side gets ``new_range_id`` (the
        caller allocates ids cluster-wide). Completes OK once applied here, ERROR if
        refused (key not inside, the range changed meanwhile)."""
        request_id = self.new_request_id()
        rep = self._leader_replica(range_id, request_id)
        if rep is None:
            return request_id
        cmd = SplitCommand(new_range_id, rep.desc.generation, key)
        refusal = split_refusal(rep.desc, cmd)
        if refusal is None and new_range_id in self._replicas:
            refusal = f"range id {new_range_id} is in use"
        if refusal is not None:
            self._done.append(Completion(request_id, Outcome.ERROR, refusal.encode()))
            return request_id
        self.queue_command(rep, request_id, EntryKind.SPLIT, encode_split(cmd))
        return request_id

    def merge(self, left_id: int) -> int:
        """Merge the right-hand neighbour of ``left_id`` into it. This store must lead
        both ranges (transfer leadership first: TRYAGAIN with the hint otherwise);
        ERROR when the replica sets differ or there is no neighbour here."""
        request_id = self.new_request_id()
        lhs = self._leader_replica(left_id, request_id)
        if lhs is None:
            return request_id
        rhs = next((r for r in self._replicas.values()
                    if lhs.desc.end_key and r.desc.start_key == lhs.desc.end_key), None)
        if rhs is None:
            self._done.append(Completion(request_id, Outcome.ERROR,
                                         b"no right-hand neighbour on this store"))
            return request_id
        refusal = merge_refusal(lhs.desc, MergeCommand(lhs.desc.generation, rhs.desc, b""))
        if refusal is None and lhs.frozen:
            refusal = "the left-hand range is itself frozen for a merge"
        if refusal is not None:
            self._done.append(Completion(request_id, Outcome.ERROR, refusal.encode()))
            return request_id
        if not rhs.is_leader or rhs.frozen or self._merges.in_progress(rhs.range_id):
            self._done.append(Completion(request_id, Outcome.TRYAGAIN, leader_hint=rhs.leader))
            return request_id
        self._merges.begin(self, request_id, lhs, rhs)
        return request_id

    def change_replicas(self, range_id: int, changes: Iterable[ConfChangeSingle]) -> int:
        """Propose a membership change (add learner, add/promote voter, remove); several
        changes at once go through a joint configuration. The leader cannot remove
        itself: transfer leadership first (ERROR)."""
        request_id = self.new_request_id()
        rep = self._leader_replica(range_id, request_id)
        if rep is None:
            return request_id
        changes = tuple(changes)
        if any(c.type == ConfChangeType.REMOVE_NODE and c.node_id == self.node_id
               for c in changes):
            self._done.append(Completion(request_id, Outcome.ERROR,
                                         b"the leader cannot remove itself: transfer first"))
            return request_id
        if rep.frozen:
            # The frozen image carries the replica set the merge was planned with.
            self._done.append(Completion(request_id, Outcome.TRYAGAIN,
                                         b"range is frozen for a merge"))
            return request_id
        rep.queue_conf_change(request_id, self._next_proposal, ConfChange(changes))
        self._next_proposal += 1
        self._wake(rep)
        self._requests.add(range_id)
        self._busy.add(range_id)
        return request_id

    def transfer_leader(self, range_id: int, to: int) -> bool:
        """Ask the local leader of ``range_id`` to hand over to ``to``; False if this
        store is not its leader. Completion is observable as a leader change."""
        rep = self._replicas.get(range_id)
        if rep is None or not rep.is_leader:
            return False
        self._wake(rep)
        rep.raw.transfer_leader(to)
        self._dirty.add(range_id)
        return True

    def new_request_id(self) -> int:
        rid = self._next_request
        self._next_request += 1
        return rid

    def _leader_replica(self, range_id: int, request_id: int) -> Replica | None:
        rep = self._replicas.get(range_id)
        if rep is None:
            self._done.append(Completion(request_id, Outcome.MISMATCH))
            return None
        if not rep.is_leader:
            self._done.append(Completion(request_id, Outcome.TRYAGAIN, leader_hint=rep.leader))
            return None
        return rep

    def queue_command(
        self, rep: Replica, request_id: int, kind: EntryKind, payload: bytes
    ) -> None:
        """Queue an internal (admin) entry on ``rep`` for this round's proposals."""
        rep.queue_proposal(request_id, kind, self._next_proposal, payload)
        self._next_proposal += 1
        self._wake(rep)
        self._requests.add(rep.range_id)
        self._busy.add(rep.range_id)

    # -- apply hooks (engine.replica.ApplyHooks) ---------------------------------------------

    def split_applied(self, lhs: Replica, right: RangeDescriptor, right_sm: StateMachine) -> None:
        """Create the right-hand replica at (INITIAL_INDEX, INITIAL_TERM) with the same
        membership: every replica of the range does the same at the same log position,
        so the new group starts consistent. Durable before the left-hand image is."""
        if right.range_id in self._replicas:
            return  # a replay after a crash: the right-hand side already exists
        conf = lhs.conf_state
        wb = WriteBatch()
        write_initial_states([(right, conf, right_sm, 0)], self._snapshots, wb)
        self._log.write(wb, sync=True)
        self.stats.fsyncs += 1
        rep = Replica(
            node_id=self.node_id, desc=right, sm=right_sm, log=self._log,
            snapshots=self._snapshots, applied=INITIAL_INDEX, conf_state=conf, cfg=self.cfg,
        )
        self._add(rep)
        if lhs.is_leader:
            rep.raw.campaign()

    def merge_applied(self, lhs: Replica, right: RangeDescriptor) -> None:
        rhs = self._replicas.get(right.range_id)
        if rhs is not None:
            self._destroy(rhs, self._done, Tombstone(rhs.desc.generation, MERGED))
        elif right.range_id not in self._tombs:
            self._save_tombstone(right.range_id, Tombstone(right.generation, MERGED))

    def freeze_applied(self, rep: Replica, index: int) -> None:
        self._resolver.note(rep, self._now)
        self._merges.freeze_applied(self, rep)

    def merge_stalled(self, right_id: int) -> None:
        self._resolver.stalled(right_id, self._now)

    def merge_in_progress(self, right_id: int) -> bool:
        return self._merges.in_progress(right_id)

    def destroy_merged(self, rep: Replica, done: list[Completion]) -> None:
        self._destroy(rep, done, Tombstone(rep.desc.generation, MERGED))

    def pull_leadership(self, rep: Replica) -> None:
        self._wake(rep)
        rep.raw.transfer_leader(self.node_id)  # a follower forwards it to the leader
        self._dirty.add(rep.range_id)

    def _save_tombstone(self, range_id: int, tomb: Tombstone) -> None:
        if self._tombs.get(range_id) != tomb:
            self._snapshots.save_tombstone(range_id, tomb)
            self._tombs[range_id] = tomb

    def tombstone(self, range_id: int) -> Tombstone | None:
        """This store's tombstone for ``range_id`` (None: never removed here)."""
        return self._tombs.get(range_id)

    def new_state_machine(self, desc: RangeDescriptor) -> StateMachine:
        return self._sm_factory(desc)

    def node_dead(self, node: int) -> None:
        """Liveness says ``node`` is down: wake quiesced followers led from it (they tick
        and elect), and stop letting its replicas hold quiescence back."""
        self._dead.add(node)
        self._receiver.abort_from(node)
        for rid in self._sender.abort_to(node):
            rep = self._replicas.get(rid)
            if rep is not None:
                rep.raw.report_snapshot(node, False)
                self._dirty.add(rid)
        for rep in self._replicas.values():
            if rep.quiesced and rep.leader == node:
                self._wake(rep)

    def node_alive(self, node: int) -> None:
        """``node`` is back: wake quiesced leaders of ranges it holds so they catch it up."""
        self._dead.discard(node)
        for rep in self._replicas.values():
            if rep.quiesced and rep.is_leader and node in rep.desc.replicas:
                self._wake(rep)

    def purge_logs(self) -> PurgeResult:
        """Reclaim log space. Ranges the log store reports as pinning old segments
        (an idle range's few entries hold a whole segment) take a durable image and
        compact now, so that the next purge can drop those segments."""
        res = self._log.purge()
        wb = WriteBatch()
        for rid in res.lagging_ranges:
            rep = self._replicas.get(rid)
            if rep is not None and rep.maybe_compact(1, wb):
                self.stats.snapshots_taken += 1
        if wb:
            self._log.write(wb, sync=False)
        return res

    # -- observers -----------------------------------------------------------------------------

    def replica(self, range_id: int) -> Replica | None:
        return self._replicas.get(range_id)

    def range_ids(self) -> list[int]:
        return sorted(self._replicas)

    @property
    def now(self) -> int:
        return self._now

    def ticking_count(self) -> int:
        return len(self._ticking)

    def has_work(self) -> bool:
        return bool(self._inbox or self._dirty or self._done or self._pending_ticks)

    # -- the round ---------------------------------------------------------------------------

    def process(self) -> RoundOutput:
        """Run one round (see the module docstring) and return what it produced."""
        return self.finish_round(self.begin_round())

    def begin_round(self) -> RoundInFlight:
        """The first half of a round: step, tick, collect Readies, submit the one write
        and hand out (``early_send``) what may go before it is durable. While the
        write is in flight the caller may ``deliver`` and ``step_arrivals``; then
        ``finish_round``. At most one round is in flight."""
        assert not self._in_flight, "finish_round the previous round first"
        self._in_flight = True
        self.stats.rounds += 1
        done = self._done
        self._done = []
        self._step_inbox()
        self._run_ticks(done)
        self._flush_requests(done)
        readies = self._collect_readies(done)
        wb = WriteBatch()
        must_sync = False
        for rep, rd in readies:
            if self._replicas.get(rep.range_id) is rep:  # not destroyed by an earlier one
                must_sync |= self._persist_ready(rep, rd, wb, done)
        durable = None
        submitted = 0.0
        if wb:
            self.stats.log_writes += 1
            if must_sync:
                self.stats.fsyncs += 1
                submitted = time.perf_counter()
                durable = self._log.submit(wb)
            else:
                self._log.write(wb, sync=False)
        if self._early_send is not None and self._outbox:
            self._early_send(self._count(self._outbox.drain()))
        return RoundInFlight(readies, done, durable, submitted)

    def step_arrivals(self) -> None:
        """Step what was delivered since ``begin_round``, overlapping its fsync. Raft
        allows stepping between ``ready()`` and ``advance()``: what it produces waits
        for the next round's Ready."""
        self._step_inbox()

    def finish_round(self, rnd: RoundInFlight) -> RoundOutput:
        """The second half: wait for durability, then send ``persisted_messages``,
        apply, answer clients, advance."""
        assert self._in_flight, "no round in flight"
        if rnd.durable is not None:
            rnd.durable.result()  # persisted_messages and apply wait for durability
            if len(self.sync_latencies) < _MAX_SYNC_SAMPLES:
                self.sync_latencies.append(time.perf_counter() - rnd.submitted)
        self._in_flight = False
        done = rnd.done
        compact = WriteBatch()
        for rep, rd in rnd.readies:
            self._after_persist(rep, rd, done, compact)
        if compact:
            self._log.write(compact, sync=False)
        more = self._pump_snapshots()
        done = self._resolver.public(self._merges.settle(self, done))
        more |= bool(self._requests)
        return RoundOutput(self._count(self._outbox.drain()), done, bool(self._dirty) or more)

    def _pump_snapshots(self) -> bool:
        """Send this round's share of snapshot chunks; returns whether any stream is
        left (the caller should run another round soon)."""
        if not self._sender:
            return False
        chunks, finished = self._sender.pump(self.cfg.snapshot_bytes_per_round)
        for rid, m in chunks:
            self._outbox.add(rid, m)
            self.stats.snapshot_bytes_out += len(m.snapshot.data) if m.snapshot else 0
        for rid, to in finished:
            rep = self._replicas.get(rid)
            if rep is not None:
                rep.raw.report_snapshot(to, True)
                self._dirty.add(rid)
        return bool(self._sender)

    def _count(self, out: dict[int, NodeBatch]) -> dict[int, NodeBatch]:
        st = self.stats
        for b in out.values():
            st.messages_out += b.message_count()
            if b.heartbeats is not None:
                st.heartbeat_rows_out += len(b.heartbeats)
            if b.heartbeat_responses is not None:
                st.heartbeat_rows_out += len(b.heartbeat_responses)
        return out

    def _step_inbox(self) -> None:
        inbox, self._inbox = self._inbox, []
        for batch in inbox:
            for rid, msg in batch.messages:
                self._step(rid, msg, 0)
            for record in (batch.heartbeats, batch.heartbeat_responses):
                if record is not None:
                    for rid, msg, flags in fan_out(record):
                        self._step(rid, msg, flags)

    def _step(self, range_id: int, msg: Message, flags: int) -> None:
        if self._now < self._votes_held_until and msg.type in _VOTE_REQUESTS:
            return  # lease reads: a recovered voter stays silent for a timeout (lost)
        if is_chunk(msg):
            whole = self._receiver.add(range_id, msg)
            if whole is None:
                return
            msg = whole
        rep = self._replicas.get(range_id)
        if rep is None:
            rep = self._unknown_range(range_id, msg)
            if rep is None:
                return
        self._dirty.add(range_id)
        if not flags & QUIESCE:
            self._wake(rep)
            if msg.type == _READ_INDEX and self._lease_clock is not None and rep.is_leader:
                self._read_seq += 1
                answer = rep.answer_read_index(msg, self._lease_clock(), self._read_seq,
                                               self._lease_ticks)
                if answer is not None:
                    self._outbox.add(range_id, answer)
                    return
            rep.raw.step(msg)
            return
        if msg.type == _HEARTBEAT:
            rep.answer_quiesce = True
            rep.raw.step(msg)
            if follower_may_quiesce(rep.raw, msg.frm, msg.term, msg.commit):
                self._quiesce(rep)
            else:
                self._wake(rep)
        else:
            # The answer to our quiesce heartbeat: it must not wake us, unless it shows
            # the follower needs something (then raft has messages for it).
            rep.raw.step(msg)
            if rep.quiesced and rep.raw.has_ready():
                self._wake(rep)

    def _unknown_range(self, range_id: int, msg: Message) -> Replica | None:
        """A message for a range we have no replica of.

        - An APPEND gets a rejection "as if from an empty log", so the leader falls
          back to sending a snapshot (how a new replica or a split's right-hand side
          that missed the split gets its data); a plain HEARTBEAT gets a response, so
          an idle leader notices the lag and sends that APPEND.
        - A complete SNAPSHOT that names us and overlaps none of our ranges creates
          an uninitialized replica (no voters: it cannot campaign) that steps it. If
          it overlaps a range of ours, it is dropped: that is a split's right-hand
          side arriving before the split applied here, and the split will create it
          (never a second group for the same keys).
        - A snapshot that our tombstone for the range covers (it predates our removal)
          is dropped, and so is everything for a range merged away here.
        - Anything else is dropped.
        """
        self.stats.dropped_unknown_range += 1
        tomb = self._tombs.get(range_id)
        if tomb is not None and tomb.gone_for_good:
            # Merged away here: the id never lives again, so a replica elsewhere that
            # still runs it gets no answers (and, with check-quorum, steps down).
            self.stats.dropped_tombstoned += 1
            return None
        if msg.type == _APPEND:
            self._outbox.add(range_id, Message(_APPEND_RESP, msg.frm, self.node_id, msg.term,
                                               index=msg.index, reject=True))
            return None
        if msg.type == _HEARTBEAT and not msg.context:
            # Answer so the leader sees we lag and sends an APPEND (answered above).
            # Never with a read-index context: we must not count towards a read quorum.
            self._outbox.add(range_id, Message(_HEARTBEAT_RESP, msg.frm, self.node_id, msg.term))
            return None
        if msg.type != _SNAPSHOT or msg.snapshot is None or not msg.snapshot.data:
            return None
        desc, _, _ = decode_snapshot_data(msg.snapshot.data)
        if tomb is not None and tomb.covers(desc.generation, msg.snapshot.metadata.index):
            self.stats.dropped_tombstoned += 1
            return None  # from a leader that has not heard we were removed
        if self.node_id not in desc.replicas or self._overlapping(desc):
            return None
        rep = Replica(
            node_id=self.node_id, desc=desc, sm=self._sm_factory(desc), log=self._log,
            snapshots=self._snapshots, applied=0, conf_state=ConfState(), cfg=self.cfg,
        )
        self._add(rep)
        return rep

    def _overlapping(self, desc: RangeDescriptor) -> list[Replica]:
        """Our replicas (of other ranges) whose key span overlaps ``desc``'s. The meta
        range's span is nominal (``engine/meta_codec.py``): it overlaps nothing."""
        if desc.range_id == META_RANGE_ID:
            return []
        out = []
        for rep in self._replicas.values():
            d = rep.desc
            if rep.range_id not in (desc.range_id, META_RANGE_ID) \
                    and (not desc.end_key or d.start_key < desc.end_key) \
                    and (not d.end_key or desc.start_key < d.end_key):
                out.append(rep)
        return out

    def _destroy(self, rep: Replica, done: list[Completion], tomb: Tombstone) -> None:
        """Remove a replica and its durable state: tombstone first (a crash before the
        image is gone leaves a replica the tombstone covers: destroyed at recovery),
        then the image (a range with no image is not recovered, so a crash before the
        log records are gone leaves only unreachable log data)."""
        rid = rep.range_id
        self._save_tombstone(rid, tomb)
        rep.fail_all(done)
        del self._replicas[rid]
        self.changed.add(rid)
        self._ticking.discard(rid)
        self._dirty.discard(rid)
        self._busy.discard(rid)
        self._requests.discard(rid)
        self._resolver.forget(rid)
        self._receiver.discard(rid)
        self._snapshots.remove(rid)
        wb = WriteBatch()
        wb.remove_range(rid)
        self._log.write(wb, sync=False)

    def _wake(self, rep: Replica) -> None:
        if rep.quiesced:
            rep.quiesced = False
            self._ticking.add(rep.range_id)
            self.changed.add(rep.range_id)

    def _quiesce(self, rep: Replica) -> None:
        if not rep.quiesced:
            rep.quiesced = True
            self._ticking.discard(rep.range_id)
            self.changed.add(rep.range_id)

    def _run_ticks(self, done: list[Completion]) -> None:
        n, self._pending_ticks = self._pending_ticks, 0
        for _ in range(n):
            self._now += 1
            self.stats.ticks += 1
            quiesce = self.cfg.quiesce
            self._ticking, self._ticking_high = _compacted(self._ticking, self._ticking_high)
            self._busy, self._busy_high = _compacted(self._busy, self._busy_high)
            for rid in list(self._ticking):
                rep = self._replicas[rid]
                if quiesce and rep.is_leader and leader_may_quiesce(
                    rep.raw, rep.busy(), self._dead
                ):
                    self._send_quiesce(rep)
                    continue
                rep.raw.tick()
                self._dirty.add(rid)
            self._expire(done)
            if self._resolver:
                self._resolver.tick(self, self._now, done)

    def _send_quiesce(self, rep: Replica) -> None:
        r = rep.raw.raft
        last = r.log.last_index()
        me = self.node_id
        for nid in r.tracker.progress:
            if nid != me and nid not in self._dead:
                self._outbox.add(rep.range_id, Message(_HEARTBEAT, nid, me, r.term, commit=last),
                                 QUIESCE)
        self._quiesce(rep)

    def _expire(self, done: list[Completion]) -> None:
        now = self._now
        for rid in list(self._busy):
            rep = self._replicas.get(rid)
            if rep is None or not rep.busy():
                self._busy.discard(rid)
                continue
            rep.expire(now, done)

    def _flush_requests(self, done: list[Completion]) -> None:
        if not self._requests:
            return
        deadline = self._now + self.cfg.proposal_timeout_ticks
        for rid in self._requests:
            rep = self._replicas.get(rid)
            if rep is None:
                continue
            rep.flush_proposals(deadline, done)
            self._read_seq += 1
            if self._lease_clock is None:
                rep.flush_reads(self._read_seq, done)
            else:
                rep.flush_reads(self._read_seq, done, self._lease_clock(), self._lease_ticks)
                rep.serve_reads(done)  # lease reads already applied: no Ready needed
            self._dirty.add(rid)
        self._requests = set()

    def _collect_readies(self, done: list[Completion]) -> list[tuple[Replica, Ready]]:
        out: list[tuple[Replica, Ready]] = []
        dirty, self._dirty = self._dirty, set()
        for rid in dirty:
            rep = self._replicas.get(rid)
            if rep is not None and rep.raw.has_ready():
                rd = rep.raw.ready()
                if rd.soft_state is not None and rd.soft_state.role == StateRole.CANDIDATE:
                    self.stats.elections += 1
                out.append((rep, rd))
                self.changed.add(rid)
        return out

    def _persist_ready(
        self, rep: Replica, rd: Ready, wb: WriteBatch, done: list[Completion]
    ) -> bool:
        """Add ``rd``'s durable state to ``wb`` and queue its early messages; returns
        whether the batch must be fsynced for it."""
        rid = rep.range_id
        if rd.snapshot is not None:
            meta = rd.snapshot.metadata
            spool = self._receiver.take(rid, meta.index, meta.term)
            try:
                rep.install_snapshot(rd.snapshot, done, spool.chunks if spool else None)
            finally:
                if spool is not None:
                    spool.close()
            self._resolver.note(rep, self._now)
            for other in self._overlapping(rep.desc):
                self._destroy(other, done, Tombstone(other.desc.generation, other.raw.applied))
            meta = rd.snapshot.metadata
            wb.set_snapshot(rid, SnapshotMeta(meta.index, meta.term,
                                              encode_conf_state(meta.conf_state)))
            self.stats.snapshots_installed += 1
        if rd.entries:
            wb.append(rid, cast("list[LogEntry]", rd.entries))
            self.stats.entry_bytes_logged += sum(len(e.data) for e in rd.entries)
        if rd.hard_state is not None:
            hs: HardState = rd.hard_state
            wb.set_hard_state(rid, LogHardState(hs.term, hs.vote, hs.commit))
        for m in rd.messages:
            if m.type == _SNAPSHOT:
                self._sender.start(rid, m, rep.outgoing_images.pop(0))
            else:
                self._outbox.add(rid, m)
        return rd.must_sync

    def _after_persist(
        self, rep: Replica, rd: Ready, done: list[Completion], compact: WriteBatch
    ) -> None:
        rid = rep.range_id
        if self._replicas.get(rid) is not rep:
            return  # destroyed earlier in this round (merged away)
        flag = QUIESCE if rep.answer_quiesce else 0
        rep.answer_quiesce = False
        for m in rd.persisted_messages:
            self._outbox.add(rid, m, flag if m.type == _HEARTBEAT_RESP else 0)
        if rd.committed_entries:
            rep.apply(rd.committed_entries, done, self)
            self.stats.entries_applied += len(rd.committed_entries)
        if rd.read_states:
            rep.handle_read_states(rd.read_states,
                                   self._lease_ticks if self._lease_clock is not None else 0.0)
        rep.raw.advance(rd)
        rep.serve_reads(done)
        if rep.removed:
            self._destroy(rep, done, Tombstone(rep.desc.generation, rep.raw.applied))
            return
        if rd.committed_entries and rep.maybe_compact(self.cfg.snapshot_entries, compact):
            self.stats.snapshots_taken += 1
        if rep.raw.has_ready():
            self._dirty.add(rid)

    def close(self) -> list[Completion]:
        """Stop: every request still pending is answered (UNKNOWN/TRYAGAIN)."""
        done, self._done = self._done, []
        for rep in self._replicas.values():
            rep.fail_all(done)
        self._receiver.close()
        return self._resolver.public(done)


__all__ = ["RoundInFlight", "RoundOutput", "Store", "StoreStats"]
