"""``Replica``: one range's raft group, state machine and pending client work on one store.

Theory of operation
-------------------
The Store owns IO and the round; a replica owns what is per range:

- **Proposals** queue in ``new_proposals`` during a round and are handed to
  raft in one ``propose_batch`` (``flush_proposals``). Each is recorded at
  the log index it was appended at; applying that index resolves it (see
  ``engine/proposal.py`` for the outcomes). Only a leader accepts proposals:
  forwarding would leave the proposer unable to tell "dropped" from "lost".
- **Reads** queue in ``new_reads``; all reads of a round share one
  ReadIndex request (``flush_reads``). When raft confirms the read index
  they wait for apply to reach it, then run against the state machine.
- **Apply** runs committed entries through the state machine in batches
  (one ``StateMachine.apply`` call per run of user commands), applying
  configuration changes to raft as they pass. Split, merge and freeze
  entries (``engine/split_merge.py``) end a run, change the descriptor and
  state machine, call back into the Store (``ApplyHooks``) and save a
  durable image at their index, so a restart never replays them.
- **Snapshots**: the raft snapshot a leader sends is the metadata plus a lazy
  image stream (``raft_snapshot``; the Store streams it in chunks); a
  follower installing one restores its state machine and saves the image
  durably *before* the log records it (``install_snapshot``).
  ``maybe_compact`` takes a durable image every ``snapshot_entries`` applied
  entries and only then compacts the log up to it.

Raft snapshot data layout:
``desc_len:u32 | RangeDescriptor.encode() | flags:u8 | [left_id:u64 | left_generation:u64] | image``
(flags bit 0: frozen; bit 1: the merge intent follows. The descriptor and the
intent travel with the data: membership, key span and a pending merge may
have changed since the follower last heard). A received snapshot's image is
normally not in the data at all but spooled by the Store's receiver
(``engine/snapshot_stream.py``) and handed to ``install_snapshot`` as a
re-readable chunk source, so installing never holds a second copy of it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import replace
from itertools import chain
from typing import Final, Protocol

from engine.proposal import (
    Completion,
    EntryKind,
    Outcome,
    PendingProposal,
    PendingRead,
    unwrap,
    wrap,
)
from engine.raft.confchange_codec import decode_conf_change
from engine.raft.config import Config
from engine.raft.errors import ProposalDropped
from engine.raft.rawnode import RawNode
from engine.raft.types import (
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    ReadState,
    Snapshot,
    SnapshotMetadata,
    StateRole,
)
from engine.raft_log import RaftLogView
from engine.range_desc import RangeDescriptor
from engine.read_lease import ReadLease
from engine.snapshot_store import SnapshotRecord, SnapshotStore
from engine.split_merge import (
    MergeIntent,
    decode_freeze,
    decode_merge,
    decode_split,
    merge_refusal,
    split_refusal,
)
from engine.statemachine import StateMachine
from engine.store_config import StoreConfig
from logstore.protocol import LogStore, WriteBatch


class ApplyHooks(Protocol):
    """What applying an entry may ask of the Store (which owns the set of replicas)."""

    def split_applied(
        self, lhs: Replica, right: RangeDescriptor, right_sm: StateMachine
    ) -> None:
        """Create the right-hand replica (unless it exists: a replay after a crash)."""
        ...

    def merge_applied(self, lhs: Replica, right: RangeDescriptor) -> None:
        """Destroy the local replica of the absorbed right-hand range, if any."""
        ...

    def freeze_applied(self, rep: Replica, index: int) -> None:
        """``rep`` applied a merge FREEZE at ``index`` (the initiator proposes MERGE)."""
        ...

    def new_state_machine(self, desc: RangeDescriptor) -> StateMachine: ...


_U32: Final = struct.Struct("<I")
_INTENT: Final = struct.Struct("<QQ")
#: A ReadIndex context: (node id, the store's read sequence). The leader keys
#: pending reads by context, so a follower's must never equal another replica's.
_READ_CTX: Final = struct.Struct("<QQ")
_CONF_CHANGE = EntryType.CONF_CHANGE


def snapshot_prefix(
    desc: RangeDescriptor, frozen: bool, intent: MergeIntent | None = None
) -> bytes:
    raw = desc.encode()
    flags = int(frozen) | (2 if intent is not None else 0)
    tail = _INTENT.pack(*intent) if intent is not None else b""
    return _U32.pack(len(raw)) + raw + bytes((flags,)) + tail


def encode_snapshot_data(
    desc: RangeDescriptor, frozen: bool, image: bytes, intent: MergeIntent | None = None
) -> bytes:
    return snapshot_prefix(desc, frozen, intent) + image


def decode_snapshot_head(
    data: bytes,
) -> tuple[RangeDescriptor, bool, MergeIntent | None, int]:
    """The descriptor, frozen flag and merge intent of snapshot data, and the offset
    at which its inline image starts."""
    (n,) = _U32.unpack_from(data)
    end = _U32.size + n
    desc = RangeDescriptor.decode(data[_U32.size:end])
    flags = data[end]
    end += 1
    intent = None
    if flags & 2:
        intent = MergeIntent(*_INTENT.unpack_from(data, end))
        end += _INTENT.size
    return desc, bool(flags & 1), intent, end


def decode_snapshot_data(data: bytes) -> tuple[RangeDescriptor, bool, bytes]:
    desc, frozen, _, end = decode_snapshot_head(data)
    return desc, frozen, data[end:]


#: A re-readable image: each call returns a fresh iterator over the same chunks.
ImageSource = Callable[[], Iterator[bytes]]


def replica_seed(seed: int, node_id: int, range_id: int) -> int:
    """A per-replica RNG seed: deterministic, different across replicas and ranges."""
    return (seed * 1_000_003 + node_id * 7_919 + range_id * 104_729) & 0xFFFFFFFF


class Replica:
    """One range on one store. Every field below is driven by the Store's round."""

    __slots__ = (
        "answer_quiesce",
        "conf_state",
        "desc",
        "frozen",
        "lease",
        "merge_intent",
        "new_conf_changes",
        "new_proposals",
        "new_reads",
        "node_id",
        "outgoing_images",
        "proposals",
        "queries_received",
        "quiesced",
        "range_id",
        "raw",
        "reads_by_ctx",
        "reads_ready",
        "removed",
        "sm",
        "snap_index",
        "snapshots",
        "writes_received",
    )

    def __init__(
        self, *, node_id: int, desc: RangeDescriptor, sm: StateMachine, log: LogStore,
        snapshots: SnapshotStore, applied: int, conf_state: ConfState, cfg: StoreConfig,
        frozen: bool = False, merge_intent: MergeIntent | None = None,
    ) -> None:
        self.node_id = node_id
        self.snapshots = snapshots
        self.range_id = desc.range_id
        #: Invariant: client writes / reads this replica accepted since it was created
        #: here (monotonic; the placement loop turns them into rates for load splits).
        self.writes_received = 0
        self.queries_received = 0
        #: Invariant: the descriptor as of the applied index.
        self.desc = desc
        self.sm = sm
        #: Invariant: the membership as of the applied index.
        self.conf_state = conf_state
        #: Invariant: index of the newest durable state-machine image; the log is
        #: never compacted past it.
        self.snap_index = applied
        #: Invariant: True from an applied merge FREEZE until an UNFREEZE: no user
        #: command applies and no proposal is accepted.
        self.frozen = frozen
        #: Invariant: None unless frozen; the FREEZE's intent (engine/merge_resolver.py).
        self.merge_intent = merge_intent
        #: A conf change removed this node: the Store destroys the replica.
        self.removed = False
        #: Invariant: quiesced replicas are not in the Store's ticking set.
        self.quiesced = False
        #: Set while stepping a quiesce heartbeat: its response is flagged QUIESCE.
        self.answer_quiesce = False
        #: Image streams made by ``raft_snapshot``, one per SNAPSHOT message raft will
        #: emit, in order (the Store pops them as it sees the messages).
        self.outgoing_images: list[Iterator[bytes]] = []
        #: ``(request_id, entry data)`` queued this round.
        self.new_proposals: list[tuple[int, bytes]] = []
        #: ``(request_id, proposal_id, change)`` queued this round.
        self.new_conf_changes: list[tuple[int, int, ConfChange]] = []
        #: Invariant: keyed by log index; ``value.index == key``.
        self.proposals: dict[int, PendingProposal] = {}
        self.new_reads: list[PendingRead] = []
        self.reads_by_ctx: dict[bytes, list[PendingRead]] = {}
        #: Invariant: every read here has ``index > 0`` (its read point is known).
        self.reads_ready: list[PendingRead] = []
        #: The leader's read lease (used only when the Store serves lease reads).
        self.lease = ReadLease()
        view = RaftLogView(log, desc.range_id, self.raft_snapshot, conf_state)
        self.raw = RawNode(
            Config(
                id=node_id, election_ticks=cfg.election_ticks,
                heartbeat_ticks=cfg.heartbeat_ticks,
                rng_seed=replica_seed(cfg.seed, node_id, desc.range_id),
                pre_vote=cfg.pre_vote, check_quorum=cfg.check_quorum,
                max_size_per_msg=cfg.max_size_per_msg, applied=applied,
            ),
            view,
        )

    # -- state -----------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.raw.raft.role == StateRole.LEADER

    @property
    def leader(self) -> int:
        return self.raw.raft.lead

    def busy(self) -> bool:
        """Client work in flight (holds quiescence back)."""
        return bool(self.proposals or self.new_proposals or self.new_reads
                    or self.reads_by_ctx or self.reads_ready or self.new_conf_changes)

    # -- proposals ------------------------------------------------------------------------

    def queue_proposal(
        self, request_id: int, kind: EntryKind, proposal_id: int, payload: bytes
    ) -> None:
        self.new_proposals.append((request_id, wrap(kind, self.node_id, proposal_id, payload)))

    def queue_conf_change(self, request_id: int, proposal_id: int, cc: ConfChange) -> None:
        """Queue a membership change; its ``context`` is our envelope (for completion)."""
        ctx = wrap(EntryKind.CONF_CHANGE, self.node_id, proposal_id, b"")
        self.new_conf_changes.append((request_id, proposal_id, cc._replace(context=ctx)))

    def flush_proposals(self, deadline: int, done: list[Completion]) -> None:
        """Hand this round's proposals to raft in one batch; refuse them all if not
        leader (and user commands while frozen for a merge)."""
        batch, self.new_proposals = self.new_proposals, []
        if self.new_conf_changes:
            self._flush_conf_changes(deadline, done)
        if not batch:
            return
        if self.frozen:
            refused = [b for b in batch if b[1][0] == EntryKind.USER]
            self._refuse(refused, done)
            batch = [b for b in batch if b[1][0] != EntryKind.USER]
            if not batch:
                return
        raw = self.raw
        if not self.is_leader:
            self._refuse(batch, done)
            return
        try:
            raw.propose_batch([data for _, data in batch])
        except ProposalDropped:
            self._refuse(batch, done)
            return
        term = raw.term
        index = raw.last_index - len(batch)
        for request_id, data in batch:
            index += 1
            self._record(PendingProposal(request_id, unwrap(data)[2], index, term, deadline),
                         done)

    def _record(self, p: PendingProposal, done: list[Completion]) -> None:
        old = self.proposals.get(p.index)
        if old is not None:
            # Our own log now holds a new entry at this index, so the old one was
            # truncated; a committed entry is never truncated: it did not apply.
            done.append(Completion(old.request_id, Outcome.TRYAGAIN, leader_hint=self.leader))
        self.proposals[p.index] = p

    def _flush_conf_changes(self, deadline: int, done: list[Completion]) -> None:
        changes, self.new_conf_changes = self.new_conf_changes, []
        for request_id, pid, cc in changes:
            if not self.is_leader:
                done.append(Completion(request_id, Outcome.TRYAGAIN, leader_hint=self.leader))
                continue
            try:
                self.raw.propose_conf_change(cc)
            except ProposalDropped as e:
                done.append(Completion(request_id, Outcome.TRYAGAIN, e.reason.encode(),
                                       leader_hint=self.leader))
                continue
            self._record(PendingProposal(request_id, pid, self.raw.last_index, self.raw.term,
                                         deadline), done)

    def _refuse(self, batch: list[tuple[int, bytes]], done: list[Completion]) -> None:
        hint = self.leader
        for request_id, _ in batch:
            done.append(Completion(request_id, Outcome.TRYAGAIN, leader_hint=hint))

    # -- reads ------------------------------------------------------------------------------

    def flush_reads(
        self, seq: int, done: list[Completion], lease_now: float | None = None,
        lease_ticks: float = 0.0,
    ) -> None:
        """Give every read queued this round its read point: the commit index at once
        while the read lease is valid (``lease_now`` is the lease clock's reading, None
        when the Store serves no lease reads; see ``engine/read_lease.py``), else one
        ReadIndex round for all of them. A round also renews the lease, and while the
        lease holds, one round starts whenever less than half of it is left."""
        reads, self.new_reads = self.new_reads, []
        if not reads:
            return
        raft = self.raw.raft
        if lease_now is not None and self.lease.valid(raft, lease_now):
            index = raft.log.committed
            for rd in reads:
                rd.index = index
            self.reads_ready.extend(reads)
            if self.lease.needs_renewal(lease_now, lease_ticks):
                self._start_read_round(seq, [], done, lease_now)
            return
        self._start_read_round(seq, reads, done, lease_now)

    def _start_read_round(
        self, seq: int, reads: list[PendingRead], done: list[Completion], now: float | None,
    ) -> None:
        ctx = _READ_CTX.pack(self.node_id, seq)
        try:
            self.raw.read_index(ctx)
        except ProposalDropped:
            for rd in reads:
                done.append(Completion(rd.request_id, Outcome.TRYAGAIN, leader_hint=self.leader))
            return
        if reads:
            self.reads_by_ctx[ctx] = reads
        if now is not None:
            self.lease.round_started(ctx, self.raw.raft, now)

    def answer_read_index(
        self, msg: Message, now: float, seq: int, lease_ticks: float,
    ) -> Message | None:
        """A follower's READ_INDEX at this leader: answered at once at the commit
        index while the lease holds (no heartbeat round), else None and raft runs
        the round; either way a lease round is started when the lease needs one, so
        ranges read only on followers keep a lease too."""
        raft = self.raw.raft
        valid = self.lease.valid(raft, now)
        if self.lease.needs_renewal(now, lease_ticks):
            self._start_read_round(seq, [], [], now)
        if not valid:
            return None
        return Message(MessageType.READ_INDEX_RESP, msg.frm, raft.id, raft.term,
                       index=raft.log.committed, context=msg.context)

    def handle_read_states(self, states: list[ReadState], lease_ticks: float = 0.0) -> None:
        for rs in states:
            if lease_ticks:
                self.lease.round_confirmed(rs.request_ctx, self.raw.raft, lease_ticks)
            reads = self.reads_by_ctx.pop(rs.request_ctx, None)
            if reads is None:
                continue
            for rd in reads:
                rd.index = rs.index
            self.reads_ready.extend(reads)

    def serve_reads(self, done: list[Completion]) -> None:
        if not self.reads_ready:
            return
        applied = self.raw.applied
        waiting: list[PendingRead] = []
        desc = self.desc
        for rd in self.reads_ready:
            if rd.index > applied:
                waiting.append(rd)
            elif all(desc.contains(k) for k in rd.keys):
                done.append(Completion(rd.request_id, Outcome.OK, self.sm.read(rd.query)))
            else:  # a split or merge moved a key away after the read was accepted
                done.append(Completion(rd.request_id, Outcome.MISMATCH, descriptor=desc))
        self.reads_ready = waiting

    # -- apply ------------------------------------------------------------------------------

    def apply(self, entries: list[Entry], done: list[Completion], hooks: ApplyHooks) -> None:
        """Apply committed ``entries`` in order and resolve the proposals they decide.

        Runs of user commands go to the state machine in one call; every other
        entry (conf change, split, merge, freeze) ends the run and is applied on
        its own, because it changes what the commands after it may touch."""
        cmds: list[bytes] = []
        owners: list[tuple[int, int, int, int]] = []  # (index, term, node, proposal id)
        for e in entries:
            if e.type == _CONF_CHANGE:
                self._flush_commands(cmds, owners, done)
                cmds, owners = [], []
                self._apply_conf_change(e, done)
                continue
            if not e.data:
                self._resolve(e.index, done)
                continue
            kind, node, pid, payload = unwrap(e.data)
            if kind == EntryKind.USER:
                if self.frozen:
                    # Committed after the freeze: never applied (the merge carries the
                    # image as of the freeze), so the client may retry elsewhere.
                    self._resolve(e.index, done)
                    continue
                cmds.append(payload)
                owners.append((e.index, e.term, node, pid))
                continue
            self._flush_commands(cmds, owners, done)
            cmds, owners = [], []
            ours = self._take_own(e, node, pid, done)
            refusal = self._apply_admin(e, kind, payload, hooks)
            if ours is not None:
                if refusal is None:
                    done.append(Completion(ours.request_id, Outcome.OK))
                else:
                    done.append(Completion(ours.request_id, Outcome.ERROR, refusal.encode()))
        self._flush_commands(cmds, owners, done)

    def _apply_admin(
        self, e: Entry, kind: int, payload: bytes, hooks: ApplyHooks
    ) -> str | None:
        """Apply a split/merge/freeze entry; returns why it was refused (None: applied)."""
        if self.frozen and kind in (EntryKind.SPLIT, EntryKind.MERGE, EntryKind.FREEZE):
            # A frozen range's image is final: the merge in flight carries it.
            return "range is frozen for a merge"
        if kind == EntryKind.SPLIT:
            split = decode_split(payload)
            refusal = split_refusal(self.desc, split)
            if refusal is not None:
                return refusal
            left, right = self.desc.split(split.key, split.new_range_id)
            right_sm = self.sm.split(split.key)
            self.desc = left
            hooks.split_applied(self, right, right_sm)
        elif kind == EntryKind.MERGE:
            merge = decode_merge(payload)
            refusal = merge_refusal(self.desc, merge)
            if refusal is not None:
                if merge.left_generation == self.desc.generation:
                    # Kill the intent: no later MERGE of it may apply (split_merge.py).
                    self.desc = replace(self.desc, generation=self.desc.generation + 1)
                    self.save_image(e.index, e.term)
                return refusal
            right_sm = hooks.new_state_machine(merge.right)
            right_sm.restore((merge.image,))
            self.sm.absorb(right_sm)
            self.desc = self.desc.merge(merge.right)
        elif kind in (EntryKind.FREEZE, EntryKind.UNFREEZE):
            cmd = decode_freeze(payload)
            if cmd.generation != self.desc.generation:
                return "range changed since the merge was planned"
            if kind == EntryKind.UNFREEZE and (not self.frozen or cmd.intent != self.merge_intent):
                return "not frozen for that merge"
            self.frozen = kind == EntryKind.FREEZE
            self.merge_intent = cmd.intent if self.frozen else None
        else:
            raise AssertionError(f"unknown entry kind {kind} at r{self.range_id}/{e.index}")
        # The range's shape or data changed outside the command stream: make the image
        # durable at this index, so a restart never replays the change (see store.py).
        self.save_image(e.index, e.term)
        if kind == EntryKind.MERGE:
            hooks.merge_applied(self, decode_merge(payload).right)
        elif kind == EntryKind.FREEZE:
            hooks.freeze_applied(self, e.index)
        return None

    def _take_own(
        self, e: Entry, node: int, pid: int, done: list[Completion]
    ) -> PendingProposal | None:
        """The proposal at ``e.index`` if ``e`` is it; a different proposal waiting at
        that index did not apply (TRYAGAIN)."""
        p = self.proposals.pop(e.index, None)
        if p is None:
            return None
        if e.term == p.term and node == self.node_id and pid == p.proposal_id:
            return p
        done.append(Completion(p.request_id, Outcome.TRYAGAIN, leader_hint=self.leader))
        return None

    def _flush_commands(
        self, cmds: list[bytes], owners: list[tuple[int, int, int, int]], done: list[Completion]
    ) -> None:
        """Apply a run of user commands; resolve proposals at their indexes. An entry is
        ours iff it has our proposal's term (Log Matching: index and term identify an
        entry) and our (node, proposal id), so an entry from a previous incarnation of
        this node can never complete a new proposal."""
        if not cmds:
            return
        results = self.sm.apply(cmds)
        assert len(results) == len(cmds), "state machine returned the wrong number of results"
        if not self.proposals:
            return
        me = self.node_id
        for (index, term, node, pid), res in zip(owners, results, strict=True):
            p = self.proposals.pop(index, None)
            if p is None:
                continue
            if term == p.term and node == me and pid == p.proposal_id:
                done.append(Completion(p.request_id, Outcome.OK, res))
            else:
                done.append(Completion(p.request_id, Outcome.TRYAGAIN, leader_hint=self.leader))

    def _resolve(self, index: int, done: list[Completion]) -> None:
        """An entry applied at ``index`` without running a command: a proposal waiting
        there did not apply (another entry is there, or it was refused): TRYAGAIN."""
        p = self.proposals.pop(index, None)
        if p is not None:
            done.append(Completion(p.request_id, Outcome.TRYAGAIN, leader_hint=self.leader))

    def _apply_conf_change(self, e: Entry, done: list[Completion]) -> None:
        cc = decode_conf_change(e.data)
        self.conf_state = self.raw.apply_conf_change(cc)
        cs = self.conf_state
        # A replica change bumps the generation like a split or merge: descriptors are
        # ordered by generation alone (the directory, the meta range, tombstones), so
        # the new replica set must outrank the old one everywhere it is cached.
        self.desc = RangeDescriptor(
            range_id=self.range_id, start_key=self.desc.start_key, end_key=self.desc.end_key,
            generation=self.desc.generation + 1, voters=cs.voters or self.desc.voters,
            learners=cs.learners,
        )
        members = (*cs.voters, *cs.learners, *cs.voters_outgoing, *cs.learners_next)
        if self.node_id not in members:
            self.removed = True
        ours = None
        if cc.context:
            _, node, pid, _ = unwrap(cc.context)
            ours = self._take_own(e, node, pid, done)
        if ours is not None:
            done.append(Completion(ours.request_id, Outcome.OK))
        else:
            self._resolve(e.index, done)

    # -- deadlines ------------------------------------------------------------------------

    def expire(self, now: int, done: list[Completion]) -> None:
        """Answer requests whose deadline passed: proposals UNKNOWN, reads TRYAGAIN."""
        for index in [i for i, p in self.proposals.items() if p.deadline <= now]:
            p = self.proposals.pop(index)
            done.append(Completion(p.request_id, Outcome.UNKNOWN, leader_hint=self.leader))
        for ctx in [c for c, rs in self.reads_by_ctx.items() if rs[0].deadline <= now]:
            for rd in self.reads_by_ctx.pop(ctx):
                done.append(Completion(rd.request_id, Outcome.TRYAGAIN, leader_hint=self.leader))
        if any(rd.deadline <= now for rd in self.reads_ready):
            keep = []
            for rd in self.reads_ready:
                if rd.deadline <= now:
                    done.append(Completion(rd.request_id, Outcome.TRYAGAIN))
                else:
                    keep.append(rd)
            self.reads_ready = keep

    def fail_all(self, done: list[Completion]) -> None:
        """The replica goes away: proposals UNKNOWN, reads TRYAGAIN."""
        for p in self.proposals.values():
            done.append(Completion(p.request_id, Outcome.UNKNOWN))
        for rid, _ in self.new_proposals:
            done.append(Completion(rid, Outcome.TRYAGAIN))
        for rid, _, _ in self.new_conf_changes:
            done.append(Completion(rid, Outcome.TRYAGAIN))
        self.new_conf_changes = []
        reads = [*self.new_reads, *self.reads_ready]
        for rs in self.reads_by_ctx.values():
            reads.extend(rs)
        for rd in reads:
            done.append(Completion(rd.request_id, Outcome.TRYAGAIN))
        self.proposals, self.new_proposals, self.new_reads = {}, [], []
        self.reads_by_ctx, self.reads_ready = {}, []

    # -- snapshots ------------------------------------------------------------------------

    def raft_snapshot(self) -> Snapshot:
        """The raft core asks for a snapshot to send: the state machine as of applied.

        Raft gets the metadata and an empty placeholder; the image's lazy chunks
        (descriptor prefix first) wait in ``outgoing_images`` for the Store, which
        streams them when it sees the SNAPSHOT message (``engine/snapshot_stream``)."""
        applied = self.raw.applied
        meta = SnapshotMetadata(applied, self.raw.raft.log.term(applied), self.conf_state)
        prefix = snapshot_prefix(self.desc, self.frozen, self.merge_intent)
        self.outgoing_images.append(chain((prefix,), self.sm.snapshot()))
        return Snapshot(meta, b"")

    def install_snapshot(
        self, snap: Snapshot, done: list[Completion], image: ImageSource | None = None
    ) -> None:
        """Adopt a leader's snapshot: restore, then save the image durably (the log
        store records the snapshot in the round's batch, after this returns). The
        image comes from ``image`` (a spooled stream, read twice, never joined) or,
        without it, from the snapshot data itself."""
        desc, frozen, intent, start = decode_snapshot_head(snap.data)
        if image is None:
            inline = snap.data[start:]
            image = lambda: iter((inline,))  # noqa: E731
        meta = snap.metadata
        self.sm.restore(image())
        self.desc = desc
        self.frozen = frozen
        self.merge_intent = intent if frozen else None
        self.conf_state = meta.conf_state
        self.snapshots.save(
            SnapshotRecord(self.range_id, meta.index, meta.term, desc, meta.conf_state,
                           self.frozen, self.merge_intent), image()
        )
        self.snap_index = meta.index
        for index in [i for i in self.proposals if i <= meta.index]:
            p = self.proposals.pop(index)
            done.append(Completion(p.request_id, Outcome.UNKNOWN, leader_hint=self.leader))

    def save_image(self, index: int, term: int) -> None:
        """Durably save the state machine as of ``index`` (which it has applied)."""
        self.snapshots.save(
            SnapshotRecord(self.range_id, index, term, self.desc, self.conf_state, self.frozen,
                           self.merge_intent),
            self.sm.snapshot(),
        )
        self.snap_index = index

    def maybe_compact(self, every: int, batch: WriteBatch) -> bool:
        """Every ``every`` applied entries: save a durable image, then compact the log
        up to it (in ``batch``). Returns whether it did."""
        applied = self.raw.applied
        if every <= 0 or applied - self.snap_index < every:
            return False
        self.save_image(applied, self.raw.raft.log.term(applied))
        batch.compact(self.range_id, applied)
        return True
