"""``RawNode``: the public, sans-IO face of one raft node, and the ``Ready`` it emits.

Theory of operation
-------------------
The caller owns all IO. It feeds the node inputs (``tick``, ``step``,
``propose``...), then asks ``has_ready()``; if true it takes ``ready()``,
acts on it in the documented order, and calls ``advance(rd)``::

    rd = node.ready()
    send(rd.messages)                      # may go before the disk write
    storage.apply_snapshot(rd.snapshot)    # if any, FIRST
    storage.append(rd.entries)
    storage.set_hard_state(rd.hard_state)  # if any; fsync if rd.must_sync
    send(rd.persisted_messages)            # only after the write is durable
    apply(rd.committed_entries)            # calling apply_conf_change for CONF_CHANGE
    serve(rd.read_states)                  # once applied >= read_state.index
    node.advance(rd)

Rules
-----
- Call ``advance(rd)`` only after everything in ``rd`` is persisted and
  applied, and before the next ``ready()``. Between the two, inputs may be
  stepped; their output waits for the next ``Ready``.
- ``has_ready()`` is O(1): a Store calls it for thousands of groups per loop.
- Nothing is ever persisted by the node itself: a crash loses exactly what
  the caller had not made durable, which raft tolerates by design.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.raft.config import Config
from engine.raft.core import Raft
from engine.raft.errors import ProposalDropped
from engine.raft.storage import Storage
from engine.raft.tracker import ProgressState
from engine.raft.types import (
    ConfChange,
    ConfState,
    Entry,
    HardState,
    Message,
    ReadState,
    Snapshot,
    SoftState,
    StateRole,
)


@dataclass(slots=True)
class Ready:
    """Everything the caller must do for the node, with its ORDERING RULES.

    - ``soft_state``: volatile leader/role, None if UNCHANGED. Need not be persisted.
    - ``hard_state``: term/vote/commit, None if UNCHANGED. MUST be durable BEFORE
      ``persisted_messages`` are sent.
    - ``snapshot``: INSTALL INTO STORAGE FIRST, before ``entries`` and before
      applying ``committed_entries``.
    - ``entries``: APPEND TO STABLE STORAGE, replacing any conflicting suffix,
      BEFORE ``persisted_messages`` are sent.
    - ``messages``: MAY BE SENT BEFORE ``entries``/``hard_state`` ARE DURABLE (a
      leader's APPEND/HEARTBEAT/SNAPSHOT/TIMEOUT_NOW, pre-votes, forwarded
      requests; thesis 10.2.1 lets a leader write its log in parallel with
      replicating it).
    - ``persisted_messages``: MUST BE SENT ONLY AFTER ``snapshot``, ``entries`` AND
      ``hard_state`` OF THIS READY ARE DURABLE (append and heartbeat responses,
      votes and vote requests).
    - ``committed_entries``: APPLY IN ORDER, after ``entries`` are persisted (paged:
      at most ``max_committed_size_per_ready`` bytes; empty in a Ready with a snapshot).
    - ``read_states``: serve each read once the state machine applied its index.
    - ``must_sync``: the write must be fsynced (entries, snapshot, or a term/vote
      change); a commit-index-only change may be written lazily.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    persisted_messages: list[Message] = field(default_factory=list)
    committed_entries: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    must_sync: bool = False


@dataclass(frozen=True, slots=True)
class Status:
    """A snapshot of the node's state for monitoring and tests.

    ``progress`` maps node id to (match, next, state); it is filled on the
    leader only (other roles do not track replication).
    """

    id: int
    hard_state: HardState
    soft_state: SoftState
    applied: int
    progress: dict[int, tuple[int, int, ProgressState]]
    lead_transferee: int
    conf_state: ConfState


class RawNode:
    """One raft node, driven by its caller. See the module docstring for the loop."""

    __slots__ = ("_prev_hs", "_prev_lead", "_prev_role", "raft")

    def __init__(self, config: Config, storage: Storage) -> None:
        self.raft = Raft(config, storage)
        #: The hard state the caller last persisted (from the last advanced Ready).
        self._prev_hs = self.raft.hard_state()
        #: The soft state last handed out.
        self._prev_lead = self.raft.lead
        self._prev_role = self.raft.role

    # -- inputs --------------------------------------------------------------------

    def tick(self) -> None:
        """Advance the logical clock by one tick (elections, heartbeats, check-quorum)."""
        self.raft.tick()

    def step(self, msg: Message) -> None:
        """Process a message from a peer. Stale, unknown-peer and misaddressed messages
        are ignored (raft tolerates lost messages; a bad one must not break the node)."""
        if msg.to == self.raft.id:
            self.raft.step(msg)

    def propose(self, data: bytes) -> None:
        """Propose one command. Raises ``ProposalDropped`` if it cannot be appended
        or forwarded (no leader, transfer in progress, size limit...)."""
        self.raft.propose((data,))

    def propose_batch(self, datas: Sequence[bytes]) -> None:
        """Propose many commands as consecutive entries in one call (the fast path).
        All or none are appended; raises ``ProposalDropped``."""
        if datas:
            self.raft.propose(datas)

    def propose_conf_change(self, cc: ConfChange) -> None:
        """Propose a membership change; at most one may be pending. Raises
        ``ProposalDropped``."""
        self.raft.propose_conf_change(cc)

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Adopt ``cc``: call it when its CONF_CHANGE entry is applied. Returns the new
        configuration (to store with the next snapshot).

        Changes are deltas against the configuration before them, so a node joining a
        group must start from the group's genesis ``ConfState`` in its storage (it is
        not a member of it, so it never campaigns) or receive a snapshot; started with
        an empty configuration and replayed the log from index 1 it would raise
        ``ConfChangeError`` here."""
        return self.raft.apply_conf_change(cc)

    def read_index(self, ctx: bytes) -> None:
        """Ask for a linearizable read point; ``ctx`` (unique per request) comes back in
        a ``ReadState``. Raises ``ProposalDropped`` when there is no known leader."""
        self.raft.read_index(ctx)

    def transfer_leader(self, to: int) -> None:
        """Hand leadership to voter ``to`` (thesis 3.10); ignored if not possible."""
        self.raft.transfer_leader(to)

    def campaign(self) -> None:
        """Start an election now (through pre-vote if configured)."""
        self.raft.hup()

    def lead_by_agreement(self) -> None:
        """Lead the current term without an election (see ``Raft.lead_by_agreement``
        for the one situation where that is safe)."""
        self.raft.lead_by_agreement()

    def report_unreachable(self, node: int) -> None:
        """The transport failed to deliver to ``node``: stop streaming to it optimistically."""
        self.raft.report_unreachable(node)

    def report_snapshot(self, node: int, ok: bool) -> None:
        """The snapshot sent to ``node`` was delivered (``ok``) or failed."""
        self.raft.report_snapshot(node, ok)

    # -- output ------------------------------------------------------------------------

    def has_ready(self) -> bool:
        """Whether ``ready()`` would return something to do. O(1)."""
        r = self.raft
        if r.msgs or r.msgs_after_append or r.read_states:
            return True
        u = r.log.unstable
        if u.entries or u.snapshot is not None:
            return True
        if r.lead != self._prev_lead or r.role != self._prev_role:
            return True
        hs = self._prev_hs
        if r.term != hs.term or r.vote != hs.vote or r.log.committed != hs.commit:
            return True
        return r.log.has_next_committed_entries()

    def ready(self) -> Ready:
        """Collect what the caller must do now (see ``Ready`` for the order)."""
        r = self.raft
        log = r.log
        soft_state = None
        if r.lead != self._prev_lead or r.role != self._prev_role:
            soft_state = SoftState(r.lead, r.role)
            self._prev_lead = r.lead
            self._prev_role = r.role
        hs = self._prev_hs
        hard_state = None
        must_sync = False
        if r.term != hs.term or r.vote != hs.vote or log.committed != hs.commit:
            hard_state = HardState(r.term, r.vote, log.committed)
            must_sync = r.term != hs.term or r.vote != hs.vote
        u = log.unstable
        snapshot = u.snapshot
        entries = list(u.entries) if u.entries else []
        if snapshot is not None or entries:
            must_sync = True
        # A Ready that installs a snapshot carries no committed entries: those after it
        # come in the next Ready. Conversely no snapshot is taken while committed
        # entries are being applied (``Raft._restore``), so a conf change always
        # applies to the configuration it follows.
        committed = (log.next_committed_entries()
                     if snapshot is None and log.has_next_committed_entries() else [])
        if committed:
            log.applying = committed[-1].index
        msgs, r.msgs = r.msgs, None
        after, r.msgs_after_append = r.msgs_after_append, None
        reads, r.read_states = r.read_states, None
        return Ready(
            soft_state,
            hard_state,
            snapshot,
            entries,
            msgs if msgs is not None else [],
            after if after is not None else [],
            committed,
            reads if reads is not None else [],
            must_sync,
        )

    def advance(self, rd: Ready) -> None:
        """Acknowledge that ``rd`` was fully persisted and applied."""
        r = self.raft
        if rd.hard_state is not None:
            self._prev_hs = rd.hard_state
        if rd.snapshot is not None:
            idx = rd.snapshot.metadata.index
            r.log.stable_snap_to(idx)
            r.log.applied_to(idx)
        if rd.entries:
            last = rd.entries[-1]
            r.on_persisted(last.index, last.term)
        if rd.committed_entries:
            r.reduce_uncommitted_size(rd.committed_entries)
            r.on_applied(rd.committed_entries[-1].index)

    # -- observers -----------------------------------------------------------------------

    def status(self) -> Status:
        r = self.raft
        progress: dict[int, tuple[int, int, ProgressState]] = {}
        if r.role == StateRole.LEADER:
            progress = {n: (p.match, p.next, p.state) for n, p in r.tracker.progress.items()}
        return Status(
            id=r.id,
            hard_state=r.hard_state(),
            soft_state=r.soft_state(),
            applied=r.log.applied,
            progress=progress,
            lead_transferee=r.lead_transferee,
            conf_state=r.tracker.conf,
        )

    @property
    def id(self) -> int:
        return self.raft.id

    @property
    def leader_id(self) -> int:
        return self.raft.lead

    @property
    def term(self) -> int:
        return self.raft.term

    @property
    def role(self) -> StateRole:
        return self.raft.role

    @property
    def committed(self) -> int:
        return self.raft.log.committed

    @property
    def applied(self) -> int:
        return self.raft.log.applied

    @property
    def last_index(self) -> int:
        return self.raft.log.last_index()


__all__ = ["ProposalDropped", "RawNode", "Ready", "Status"]
