"""``Raft``: the raft state machine of one node, stepped by messages and ticks.

Theory of operation
-------------------
The node is in one of four roles (follower, pre-candidate, candidate,
leader). ``step`` first applies the rules common to every role — the term
comparison of paper §5.1 ("if RPC request or response contains term T >
currentTerm: set currentTerm = T, convert to follower"), the leader-lease
check of thesis 6.2/4.2.3, and vote requests (§5.2, §5.4.1) — and then
dispatches to the role's table of handlers (``_LEADER``, ``_CANDIDATE``,
``_FOLLOWER``: message type -> ``_handle_*`` method). Becoming a role swaps
the table and the tick function (``_tick_election`` / ``_tick_heartbeat``).

Output is collected, not performed: outgoing messages go to ``msgs`` (may be
sent at once) or ``msgs_after_append`` (only after this node's pending log
and hard state are durable); ``RawNode`` packs them into a ``Ready``.

Persistence rules (thesis 10.2.1)
---------------------------------
- A follower answers APPEND/HEARTBEAT and grants votes only AFTER its log and
  hard state are durable: those messages go to ``msgs_after_append``.
- A leader may send APPEND before its own write is durable, but counts
  itself towards a commit quorum only for what is durable (``on_persisted``
  moves its own ``match``). So a commit never relies on the leader's
  unflushed disk.
- A candidate's VOTE requests go out after its new term and self-vote are
  durable; PRE_VOTE changes no state and goes out at once.

Rules
-----
- Invariant: ``role == LEADER`` implies ``lead == id``.
- Invariant: ``vote`` is the node voted for in ``term`` (NONE if none).
- Invariant: ``pending_conf_index`` is the index of the last conf change the
  leader appended (0 if none pending); at most one is uncommitted/unapplied.
- Stale, unknown-peer and out-of-role messages are ignored, never raised.
- Local proposals that cannot be appended raise ``ProposalDropped(reason)``.
- Membership takes effect when a change is *applied* (``apply_conf_change``,
  as in etcd), at most one change is pending, and a leader that is no longer
  a voter hands leadership over before stepping down (thesis 4.2.2).

Why one module of ~950 lines (STYLE asks for ~600): every role reads and
writes the same fields under the invariants above; split into per-role files
the invariants would have to be re-stated and kept in step in each. The pure
parts already live elsewhere: ``log``, ``tracker``, ``quorum``,
``confchange``, ``read_only``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import repeat

from engine.raft import rng
from engine.raft.confchange import ConfChangeError, apply_change, check_conf
from engine.raft.confchange_codec import decode_conf_change, encode_conf_change
from engine.raft.config import Config, ReadOnlyOption
from engine.raft.errors import (
    Compacted,
    ProposalDropped,
    SnapshotTemporarilyUnavailable,
)
from engine.raft.log import RaftLog, entries_size
from engine.raft.quorum import VoteResult, joint_vote_result
from engine.raft.read_only import ReadOnly
from engine.raft.storage import Storage
from engine.raft.tracker import ProgressState, ProgressTracker
from engine.raft.types import (
    CAMPAIGN_TRANSFER,
    NONE,
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Snapshot,
    SoftState,
    StateRole,
)

_MT = MessageType
APPEND = _MT.APPEND
APPEND_RESP = _MT.APPEND_RESP
HEARTBEAT = _MT.HEARTBEAT
NORMAL = EntryType.NORMAL
CONF_CHANGE = EntryType.CONF_CHANGE

#: Forwarded requests: they carry term 0 and are valid in any term.
_TERMLESS = frozenset({_MT.PROPOSE, _MT.READ_INDEX, _MT.TRANSFER_LEADER})

#: Message types that depend on this node's pending writes being durable.
_AFTER_PERSIST = frozenset({_MT.APPEND_RESP, _MT.VOTE, _MT.VOTE_RESP, _MT.HEARTBEAT_RESP})

_StepFn = Callable[["Raft", Message], None]
_TickFn = Callable[["Raft"], None]


class Raft:
    """The raft state machine of one node. Driven through ``RawNode``."""

    __slots__ = (
        "_step_table",
        "_tick_fn",
        "cfg",
        "election_elapsed",
        "heartbeat_elapsed",
        "id",
        "is_learner",
        "lead",
        "lead_transferee",
        "lease_revoked",
        "log",
        "msgs",
        "msgs_after_append",
        "pending_conf_index",
        "pending_read_index",
        "randomized_election_timeout",
        "read_only",
        "read_states",
        "rng_state",
        "role",
        "term",
        "ticks",
        "tracker",
        "uncommitted_size",
        "vote",
    )

    def __init__(self, cfg: Config, storage: Storage) -> None:
        self.cfg = cfg
        self.id = cfg.id
        hs, cs = storage.initial_state()
        self.log = RaftLog(storage, cfg.max_committed_size_per_ready)
        self.tracker = ProgressTracker(cfg.max_inflight_msgs, cfg.max_inflight_bytes)
        #: Invariant: never decreases.
        self.term = 0
        #: Invariant: the node voted for in ``term`` (NONE if none).
        self.vote = NONE
        #: The leader of ``term`` as far as this node knows (NONE if unknown).
        self.lead = NONE
        self.role = StateRole.FOLLOWER
        self.is_learner = False
        #: Outgoing messages that may be sent at once (lazily created).
        self.msgs: list[Message] | None = None
        #: Outgoing messages to send only after the pending writes are durable.
        self.msgs_after_append: list[Message] | None = None
        self.read_states: list[ReadState] | None = None
        #: Ticks since the last election timeout reset (follower/candidate) or
        #: since the last check-quorum round (leader).
        self.election_elapsed = 0
        #: Leader only: ticks since the last heartbeat broadcast.
        self.heartbeat_elapsed = 0
        #: Invariant: in ``[election_ticks, 2 * election_ticks)``.
        self.randomized_election_timeout = cfg.election_ticks
        self.rng_state = rng.seed_state(cfg.rng_seed, cfg.id)
        #: Leader only: the node leadership is being transferred to (NONE if none).
        self.lead_transferee = NONE
        #: Leader only: a TIMEOUT_NOW was sent this term, so a forced election (which
        #: ignores leases) may already have a successor: no more lease reads.
        self.lease_revoked = False
        #: Ticks since construction: the clock heartbeat stamps and leases are read on.
        #: Invariant: never decreases.
        self.ticks = 0
        #: Invariant: index of the last conf change appended by this leader (0 if none).
        self.pending_conf_index = 0
        #: Leader only: bytes of entries appended and not yet applied (``entry_size``).
        self.uncommitted_size = 0
        #: Leader only, SAFE reads: requests awaiting a heartbeat quorum (lazily created).
        self.read_only: ReadOnly | None = None
        #: Leader only: read requests waiting for the first commit of this term.
        self.pending_read_index: list[Message] | None = None
        self._step_table: dict[int, _StepFn] = _FOLLOWER
        self._tick_fn: _TickFn = Raft._tick_election

        self.tracker.set_conf(check_conf(cs), self.log.last_index())
        if hs != HardState():
            self._load_state(hs)
        if cfg.applied > 0:
            self.log.applied_to(cfg.applied)
        self._become_follower(self.term, NONE)

    def _load_state(self, hs: HardState) -> None:
        log = self.log
        if hs.commit < log.committed or hs.commit > log.last_index():
            raise AssertionError(
                f"hard state commit {hs.commit} outside [{log.committed}, {log.last_index()}]"
            )
        log.committed = hs.commit
        self.term = hs.term
        self.vote = hs.vote

    # -- observers -------------------------------------------------------------------

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def soft_state(self) -> SoftState:
        return SoftState(self.lead, self.role)

    def _promotable(self) -> bool:
        """Whether this node may campaign: a voter, not installing a snapshot.

        One exception (a *caretaker*): a non-voter (removed or demoted by an applied
        change) that holds entries it does not know to be committed, with check-quorum
        on.
        Membership takes effect when applied, so after a removed or demoted leader
        steps down or crashes, the voters can disagree on the configuration and each
        need a vote that a longer log refuses (etcd-io/etcd#12359; SIM_FINDINGS F1).
        The non-voter may then win with a majority of its applied configuration (votes
        are counted exactly as for a member; its own is not), replicate its log so the
        voters learn the committed change, and hand leadership over at once
        (``_hand_over_leadership``). The voters' leader lease under check-quorum
        (thesis 4.2.3) keeps it from disrupting a group that has a leader: voters
        ignore its (pre-)votes while they hear from one. Pre-vote alone would not (a
        voter grants a pre-vote to an up-to-date log even while it has a leader), and a
        removed node, never hearing from the leader, would campaign after every
        election timeout. A learner with nothing uncommitted never campaigns.
        """
        if self.log.unstable.snapshot is not None:
            return False
        pr = self.tracker.progress.get(self.id)
        if pr is None or pr.is_learner:
            return (self.cfg.check_quorum and bool(self.tracker.conf.voters)
                    and self.log.last_index() > self.log.committed)
        return True

    def _committed_entry_in_current_term(self) -> bool:
        return self.log.term_or_zero(self.log.committed) == self.term

    # -- output ------------------------------------------------------------------------

    def _send(self, m: Message) -> None:
        if m.type in _AFTER_PERSIST:
            if self.msgs_after_append is None:
                self.msgs_after_append = [m]
            else:
                self.msgs_after_append.append(m)
        elif self.msgs is None:
            self.msgs = [m]
        else:
            self.msgs.append(m)

    def _add_read_state(self, rs: ReadState) -> None:
        if self.read_states is None:
            self.read_states = [rs]
        else:
            self.read_states.append(rs)

    # -- role transitions --------------------------------------------------------------

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_election_timeout()
        self.lead_transferee = NONE
        self.lease_revoked = False
        self.tracker.reset_votes()
        nxt = self.log.last_index() + 1
        for node, pr in self.tracker.progress.items():
            pr.reset(nxt, self.log.persisted_index() if node == self.id else 0)
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.read_only = None
        self.pending_read_index = None

    def _reset_randomized_election_timeout(self) -> None:
        s = rng.next_state(self.rng_state)
        self.rng_state = s
        et = self.cfg.election_ticks
        self.randomized_election_timeout = et + rng.draw_below(s, et)

    def _become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.lead = lead
        self.role = StateRole.FOLLOWER
        self._step_table = _FOLLOWER
        self._tick_fn = Raft._tick_election

    def _become_pre_candidate(self) -> None:
        """Pre-candidate: asks for votes without touching term or vote (thesis 9.6)."""
        assert self.role != StateRole.LEADER, "leader cannot become pre-candidate"
        self.tracker.reset_votes()
        self.lead = NONE
        self.role = StateRole.PRE_CANDIDATE
        self._step_table = _CANDIDATE
        self._tick_fn = Raft._tick_election

    def _become_candidate(self) -> None:
        assert self.role != StateRole.LEADER, "leader cannot become candidate"
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = StateRole.CANDIDATE
        self._step_table = _CANDIDATE
        self._tick_fn = Raft._tick_election

    def _become_leader(self) -> None:
        assert self.role != StateRole.FOLLOWER, "follower cannot become leader"
        self._reset(self.term)
        self.lead = self.id
        self.role = StateRole.LEADER
        self._step_table = _LEADER
        self._tick_fn = Raft._tick_heartbeat
        pr = self.tracker.progress.get(self.id)
        if pr is not None:
            pr.become_replicate()
            pr.recent_active = True
        # Conservatively assume the log may hold an unapplied conf change.
        self.pending_conf_index = self.log.last_index()
        # An empty entry of the new term: committing it commits everything before
        # it (§5.4.2) and lets reads proceed (thesis 6.4).
        self._append_entries([Entry(self.term, self.log.last_index() + 1)], force=True)
        if pr is None or pr.is_learner:
            # A caretaker (see ``_promotable``) only leads to hand over.
            self._hand_over_leadership()

    # -- ticks -------------------------------------------------------------------------

    def tick(self) -> None:
        self.ticks += 1
        self._tick_fn(self)

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.election_elapsed >= self.randomized_election_timeout and self._promotable():
            self.election_elapsed = 0
            self.hup()

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_ticks:
            self.election_elapsed = 0
            # Check-quorum (thesis 6.2): a leader that has not heard from a quorum for
            # an election timeout steps down, so a partitioned leader stops serving.
            if self.cfg.check_quorum and not self.tracker.quorum_active(self.id):
                self._become_follower(self.term, NONE)
                return
            # A transfer that did not finish within an election timeout is aborted.
            self.lead_transferee = NONE
            if not self.tracker.is_voter(self.id):
                self._hand_over_leadership()
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            ctx = b""
            if self.read_only is not None:
                ctx = self.read_only.last_pending_ctx() or b""
            self._bcast_heartbeat(ctx)

    # -- elections ---------------------------------------------------------------------

    def hup(self, transfer: bool = False) -> None:
        """Start an election (pre-vote first if configured), if this node may."""
        if self.role == StateRole.LEADER or not self._promotable():
            return
        if self._has_unapplied_conf_changes():
            # Campaigning before applying a committed conf change could count the
            # wrong configuration's votes.
            return
        if transfer or not self.cfg.pre_vote:
            self._campaign(pre=False, transfer=transfer)
        else:
            self._campaign(pre=True)

    def _has_unapplied_conf_changes(self) -> bool:
        log = self.log
        lo = log.applied + 1
        while lo <= log.committed:
            try:
                ents = log.slice(lo, log.committed + 1, log.max_applying_size)
            except Compacted:
                return False
            if any(e.type == CONF_CHANGE for e in ents):
                return True
            lo = ents[-1].index + 1
        return False

    def lead_by_agreement(self) -> None:
        """Lead the current term without an election.

        Legal only when every voter has durably voted for this node in the current
        term before the group exchanged any message: a deterministic bootstrap writes
        exactly that vote into every voter's initial hard state. One vote per term
        (§5.2) then leaves no other node able to win this term, so this node holds the
        election's outcome already; a cluster of thousands of fresh groups skips
        thousands of elections. Raises ValueError if this node has not got its own
        vote or is not an idle follower voter."""
        if self.vote != self.id or self.role != StateRole.FOLLOWER or self.lead != NONE:
            raise ValueError("lead_by_agreement needs a fresh follower that voted for itself")
        if self.id not in self.tracker.voter_ids():
            raise ValueError("lead_by_agreement needs a voter")
        self.role = StateRole.CANDIDATE
        self._become_leader()
        self._bcast_append()

    def _campaign(self, pre: bool, transfer: bool = False) -> None:
        if pre:
            self._become_pre_candidate()
            vote_type = _MT.PRE_VOTE
            term = self.term + 1
        else:
            self._become_candidate()
            vote_type = _MT.VOTE
            term = self.term
        self.tracker.record_vote(self.id, True)
        if self.tracker.tally_votes()[2] == VoteResult.WON:
            # A single-voter group wins on its own vote.
            if pre:
                self._campaign(pre=False)
            else:
                self._become_leader()
            return
        last_index = self.log.last_index()
        last_term = self.log.last_term()
        ctx = CAMPAIGN_TRANSFER if transfer else b""
        for node in self.tracker.voter_ids():
            if node != self.id:
                self._send(Message(vote_type, node, self.id, term, last_term, last_index,
                                   context=ctx))

    # -- stepping: the rules common to every role -----------------------------------

    def step(self, m: Message) -> None:
        """Process one message from a peer (or a forwarded request with term 0)."""
        if m.term == 0:
            if m.type not in _TERMLESS:
                return  # malformed: every other message carries its sender's term
        elif m.term > self.term:
            if m.type in (_MT.VOTE, _MT.PRE_VOTE):
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (
                    self.cfg.check_quorum
                    and self.lead != NONE
                    and self.election_elapsed < self.cfg.election_ticks
                )
                if not force and in_lease:
                    # Thesis 4.2.3: a node that heard from a leader within the minimum
                    # election timeout ignores vote requests (disruptive servers).
                    return
            if m.type == _MT.PRE_VOTE or (m.type == _MT.PRE_VOTE_RESP and not m.reject):
                # A pre-vote never changes terms; a granted pre-vote response carries
                # the term we would campaign in.
                pass
            elif m.type in (APPEND, HEARTBEAT, _MT.SNAPSHOT):
                self._become_follower(m.term, m.frm)
            else:
                self._become_follower(m.term, NONE)
        elif m.term < self.term:
            if m.type in (APPEND, HEARTBEAT):
                # §5.1: a stale request is rejected and the reply carries our term, so a
                # stale leader steps down. etcd answers only with check-quorum/pre-vote
                # on, relying otherwise on our campaign to spread the term; a learner
                # never campaigns and would stay stranded (SIM_FINDINGS F2).
                self._send(Message(APPEND_RESP, m.frm, self.id, self.term))
            elif m.type == _MT.PRE_VOTE:
                self._send(Message(_MT.PRE_VOTE_RESP, m.frm, self.id, self.term, reject=True))
            return
        if m.type in (_MT.VOTE, _MT.PRE_VOTE):
            self._handle_vote_request(m)
            return
        fn = self._step_table.get(m.type)
        if fn is not None:
            fn(self, m)

    def _handle_vote_request(self, m: Message) -> None:
        """Grant a vote if we have not voted for another in this term and the candidate's
        log is at least as up to date as ours (§5.2, §5.4.1)."""
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.lead == NONE)
            or (m.type == _MT.PRE_VOTE and m.term > self.term)
        )
        resp = _MT.PRE_VOTE_RESP if m.type == _MT.PRE_VOTE else _MT.VOTE_RESP
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            self._send(Message(resp, m.frm, self.id, m.term))
            if m.type == _MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self._send(Message(resp, m.frm, self.id, self.term, reject=True))

    # -- candidate -----------------------------------------------------------------------

    def _handle_vote_response(self, m: Message) -> None:
        pre = self.role == StateRole.PRE_CANDIDATE
        if m.type != (_MT.PRE_VOTE_RESP if pre else _MT.VOTE_RESP):
            return
        self.tracker.record_vote(m.frm, not m.reject)
        result = self.tracker.tally_votes()[2]
        if result == VoteResult.WON:
            if pre:
                self._campaign(pre=False)
            else:
                self._become_leader()
                self._bcast_append()
        elif result == VoteResult.LOST:
            self._become_follower(self.term, NONE)

    def _handle_leader_message_as_candidate(self, m: Message) -> None:
        """A leader of our term exists (§5.2): return to follower and process it."""
        self._become_follower(m.term, m.frm)
        self._step_follower_from_leader(m)

    # -- follower ------------------------------------------------------------------------

    def _step_follower_from_leader(self, m: Message) -> None:
        self.election_elapsed = 0
        self.lead = m.frm
        if m.type == APPEND:
            self._handle_append(m)
        elif m.type == HEARTBEAT:
            self._handle_heartbeat(m)
        else:
            self._handle_snapshot(m)

    def _handle_append(self, m: Message) -> None:
        """§5.3: accept if our log has the entry preceding ``entries`` with the same term;
        otherwise reject with a hint for fast backtracking."""
        log = self.log
        if m.index < log.committed:
            self._send(Message(APPEND_RESP, m.frm, self.id, self.term, index=log.committed))
            return
        last = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last is not None:
            self._send(Message(APPEND_RESP, m.frm, self.id, self.term, index=last))
            return
        hint_index, hint_term = log.find_conflict_by_term(min(m.index, log.last_index()),
                                                          m.log_term)
        self._send(Message(APPEND_RESP, m.frm, self.id, self.term, log_term=hint_term,
                           index=m.index, reject=True, reject_hint=hint_index))

    def _handle_heartbeat(self, m: Message) -> None:
        log = self.log
        log.commit_to(min(m.commit, log.last_index()))
        # ``index`` echoes the leader's send stamp (its lease clock, see ``_lease_valid``).
        self._send(Message(_MT.HEARTBEAT_RESP, m.frm, self.id, self.term, index=m.index,
                           context=m.context))

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        log = self.log
        if snap is not None and log.applying > log.applied \
                and snap.metadata.index > log.committed:
            # The caller is applying committed entries of an earlier Ready; their conf
            # changes must apply to the configuration they follow, not to this
            # snapshot's newer one (SIM_FINDINGS F4b). Refuse it explicitly, as a
            # rejection at the snapshot's index, so the leader treats it as a failed
            # snapshot and sends it again once we answer a heartbeat.
            self._send(Message(APPEND_RESP, m.frm, self.id, self.term,
                               index=snap.metadata.index, reject=True,
                               reject_hint=log.committed))
            return
        if snap is not None and self._restore(snap):
            index = log.last_index()
        else:
            index = log.committed
        self._send(Message(APPEND_RESP, m.frm, self.id, self.term, index=index))

    def _restore(self, snap: Snapshot) -> bool:
        """Install ``snap`` if it moves us forward (§7). Returns whether it was taken."""
        md = snap.metadata
        log = self.log
        if md.index <= log.committed:
            return False
        # The snapshot's configuration may not contain us: a leader only sends
        # snapshots to members of its latest configuration, so our (re-)addition
        # follows the snapshot in the log. Refusing it would strand a fresh or
        # re-added node forever.
        cs = md.conf_state
        if log.match_term(md.index, md.term):
            # We already have the entries: just fast-forward the commit index.
            log.commit_to(md.index)
            return False
        log.restore(snap)
        self.tracker.set_conf(check_conf(cs), log.last_index())
        pr = self.tracker.progress.get(self.id)
        self.is_learner = pr is not None and pr.is_learner
        return True

    def _forward_to_leader(self, m: Message) -> None:
        if self.lead == NONE:
            return
        if m.type == _MT.PROPOSE and self.cfg.disable_proposal_forwarding:
            return
        self._send(m._replace(to=self.lead))

    def _handle_timeout_now(self, m: Message) -> None:
        """Thesis 3.10: the leader asks us to start an election at once (no pre-vote)."""
        self.hup(transfer=True)

    def _handle_read_index_response(self, m: Message) -> None:
        self._add_read_state(ReadState(m.index, m.context))

    # -- leader: replication -------------------------------------------------------------

    def _bcast_append(self) -> None:
        me = self.id
        for node in self.tracker.progress:
            if node != me:
                self._maybe_send_append(node, True)

    def _maybe_send_append(self, to: int, send_if_empty: bool) -> bool:
        """Send ``to`` the entries it lacks (or a snapshot if they are compacted), unless
        its progress is paused. Returns whether a message was sent."""
        pr = self.tracker.progress[to]
        if pr.is_paused():
            return False
        log = self.log
        prev = pr.next - 1
        try:
            prev_term = log.term(prev)
            ents = log.entries_from(pr.next, self.cfg.max_size_per_msg)
        except Compacted:
            return self._maybe_send_snapshot(to)
        if not ents:
            if not send_if_empty:
                return False
        elif pr.state is ProgressState.REPLICATE:
            pr.sent_entries(ents[-1].index,
                            entries_size(ents) if self.cfg.max_inflight_bytes else 0)
        else:
            pr.probe_sent = True
        self._send(Message(APPEND, to, self.id, self.term, prev_term, prev, tuple(ents),
                           log.committed))
        return True

    def _maybe_send_snapshot(self, to: int) -> bool:
        pr = self.tracker.progress[to]
        if not pr.recent_active:
            # Do not ship a snapshot to a peer that may be down; wait until it answers.
            return False
        try:
            snap = self.log.snapshot()
        except SnapshotTemporarilyUnavailable:
            return False
        assert not snap.is_empty, "log compacted but storage has no snapshot"
        pr.become_snapshot(snap.metadata.index)
        self._send(Message(_MT.SNAPSHOT, to, self.id, self.term, snapshot=snap))
        return True

    def _bcast_heartbeat(self, ctx: bytes) -> None:
        me = self.id
        committed = self.log.committed
        for node, pr in self.tracker.progress.items():
            if node != me:
                # Never tell a follower to commit past what it is known to hold.
                # ``index`` stamps the send tick (+1); the response echoes it (lease).
                self._send(Message(HEARTBEAT, node, me, self.term, index=self.ticks + 1,
                                   commit=min(pr.match, committed), context=ctx))

    def _maybe_commit(self) -> bool:
        """Advance the commit index to what a quorum holds, if that entry is of the
        current term (§5.4.2). Returns whether it moved."""
        if not self.log.maybe_commit(self.tracker.committed(), self.term):
            return False
        if self.pending_read_index is not None:
            pending, self.pending_read_index = self.pending_read_index, None
            for m in pending:
                self._handle_read_index_request(m)
        return True

    def _handle_append_response(self, m: Message) -> None:
        pr = self.tracker.progress.get(m.frm)
        if pr is None or m.index > self.log.last_index():
            return  # unknown peer, or acknowledging entries we never sent: bogus
        pr.recent_active = True
        if m.reject:
            if pr.state is ProgressState.SNAPSHOT and m.index == pr.pending_snapshot:
                # The follower refused the snapshot (busy applying; see
                # ``_handle_snapshot``): as if the caller reported it failed.
                self._handle_snapshot_status(m.frm, False)
                return
            hint = m.reject_hint
            # If the follower's entry at the hint has our term there, then by the Log
            # Matching Property (§5.3) it holds our log up to the hint: count it. Under
            # reordering this keeps re-sends from restarting far behind.
            if (hint > pr.match and m.log_term > 0
                    and self.log.term_or_zero(hint) == m.log_term
                    and pr.maybe_update(hint) and self._maybe_commit()):
                self._bcast_append()
            next_probe = hint
            if m.log_term > 0:
                next_probe = self.log.find_conflict_by_term(m.reject_hint, m.log_term)[0]
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._maybe_send_append(m.frm, True)
            return
        old_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        st = pr.state
        if st is ProgressState.REPLICATE:
            pr.free_inflights_le(m.index)
        elif st is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.match >= pr.pending_snapshot:
            # The snapshot (or something newer) arrived: resume normal replication.
            pr.become_probe()
            pr.become_replicate()
        if self._maybe_commit():
            self._bcast_append()
        elif old_paused:
            self._maybe_send_append(m.frm, True)
        while self._maybe_send_append(m.frm, False):
            pass
        if m.frm == self.lead_transferee and pr.match == self.log.last_index():
            self._send_timeout_now(m.frm)

    def _handle_heartbeat_response(self, m: Message) -> None:
        pr = self.tracker.progress.get(m.frm)
        if pr is None:
            return
        pr.recent_active = True
        pr.probe_sent = False
        if pr.lease_stamp < m.index <= self.ticks + 1:
            pr.lease_stamp = m.index
        if pr.state is ProgressState.REPLICATE and pr.inflights_full():
            pr.free_first_inflight()
        if pr.match < self.log.last_index():
            self._maybe_send_append(m.frm, True)
        ro = self.read_only
        if ro is None or not m.context:
            return
        acks = ro.recv_ack(m.frm, m.context)
        if acks is None:
            return
        conf = self.tracker.conf
        if joint_vote_result(conf.voters, conf.voters_outgoing, acks) != VoteResult.WON:
            return
        for rs in ro.advance(m.context):
            self._respond_read(rs.frm, rs.index, rs.ctx)
        if not ro.queue:
            self.read_only = None

    def _handle_unreachable(self, node: int) -> None:
        pr = self.tracker.progress.get(node)
        if pr is not None and pr.state is ProgressState.REPLICATE:
            # Optimistic sends were probably lost: find the match point again.
            pr.become_probe()

    def _handle_snapshot_status(self, node: int, ok: bool) -> None:
        pr = self.tracker.progress.get(node)
        if pr is None or pr.state is not ProgressState.SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
        pr.become_probe()
        # Wait for a heartbeat response before probing: the follower may still be
        # applying the snapshot.
        pr.probe_sent = True

    # -- leader: proposals -------------------------------------------------------------

    def _append_entries(self, ents: list[Entry], force: bool = False) -> None:
        """Append ``ents`` (already numbered and termed) to the leader's log, within the
        uncommitted-size bound unless ``force``; raises ``ProposalDropped``."""
        limit = self.cfg.max_uncommitted_size
        if limit:
            size = entries_size(ents)
            if not force and self.uncommitted_size > 0 and self.uncommitted_size + size > limit:
                raise ProposalDropped(
                    f"uncommitted log size limit reached ({self.uncommitted_size} + {size}"
                    f" > {limit} bytes)"
                )
            self.uncommitted_size += size
        self.log.append(ents)

    def reduce_uncommitted_size(self, ents: list[Entry]) -> None:
        """Applied entries no longer count against ``max_uncommitted_size``."""
        if self.role == StateRole.LEADER and self.cfg.max_uncommitted_size and ents:
            self.uncommitted_size = max(0, self.uncommitted_size - entries_size(ents))

    def _check_leader_can_propose(self) -> None:
        pr = self.tracker.progress.get(self.id)
        if pr is None or pr.is_learner:
            raise ProposalDropped("this leader was removed from the voters; handing over")
        if self.lead_transferee != NONE:
            raise ProposalDropped(f"leadership transfer to {self.lead_transferee} in progress")

    def propose(self, datas: Sequence[bytes]) -> None:
        """Append ``datas`` as normal entries (leader) or forward them to the leader."""
        if self.role == StateRole.LEADER:
            self._check_leader_can_propose()
            start = self.log.last_index() + 1
            self._append_entries(_make_entries(self.term, start, NORMAL, datas))
            self._bcast_append()
            return
        self._forward_proposal([Entry(0, 0, NORMAL, d) for d in datas])

    def _forward_proposal(self, ents: list[Entry]) -> None:
        if self.role != StateRole.FOLLOWER or self.lead == NONE:
            raise ProposalDropped("no leader")
        if self.cfg.disable_proposal_forwarding:
            raise ProposalDropped("not the leader and proposal forwarding is disabled")
        self._send(Message(_MT.PROPOSE, self.lead, self.id, 0, entries=tuple(ents)))

    def propose_conf_change(self, cc: ConfChange) -> None:
        data = encode_conf_change(cc)
        if self.role != StateRole.LEADER:
            self._forward_proposal([Entry(0, 0, CONF_CHANGE, data)])
            return
        self._propose_conf_change_as_leader(cc, data)

    def _propose_conf_change_as_leader(self, cc: ConfChange, data: bytes) -> None:
        """Thesis 4.1: at most one conf change may be pending (appended, unapplied)."""
        self._check_leader_can_propose()
        if self.pending_conf_index > self.log.applied:
            raise ProposalDropped(
                f"conf change at {self.pending_conf_index} not yet applied "
                f"(applied {self.log.applied})"
            )
        if self.tracker.is_joint() and not cc.leaves_joint:
            raise ProposalDropped("must leave the joint configuration first")
        try:
            apply_change(self.tracker.conf, cc)
        except ConfChangeError as e:
            raise ProposalDropped(f"invalid conf change: {e}") from None
        index = self.log.last_index() + 1
        self._append_entries([Entry(self.term, index, CONF_CHANGE, data)])
        self.pending_conf_index = index
        self._bcast_append()

    def _handle_forwarded_proposal(self, m: Message) -> None:
        """A follower's forwarded proposal: append it, or drop it silently (the
        follower's caller learns nothing either way, as with a lost message)."""
        if not m.entries:
            return
        try:
            if m.entries[0].type == CONF_CHANGE:
                for e in m.entries:
                    self._propose_conf_change_as_leader(decode_conf_change(e.data), e.data)
            else:
                self._check_leader_can_propose()
                start = self.log.last_index() + 1
                self._append_entries(
                    _make_entries(self.term, start, NORMAL, [e.data for e in m.entries])
                )
                self._bcast_append()
        except ProposalDropped:
            pass

    # -- reads ---------------------------------------------------------------------------

    def read_index(self, ctx: bytes) -> None:
        """Request a linearizable read point; the answer arrives as a ``ReadState``."""
        if self.role == StateRole.LEADER:
            self._handle_read_index_request(Message(_MT.READ_INDEX, self.id, self.id, 0,
                                                    context=ctx))
            return
        if self.role != StateRole.FOLLOWER or self.lead == NONE:
            raise ProposalDropped("no leader")
        self._send(Message(_MT.READ_INDEX, self.lead, self.id, 0, context=ctx))

    def _handle_read_index_request(self, m: Message) -> None:
        """Thesis 6.4: the read index is the commit index, once the leader committed an
        entry of its term, confirmed by a heartbeat quorum (SAFE) or by the lease."""
        if self.tracker.is_sole_voter(self.id):
            self._respond_read(m.frm, self.log.committed, m.context)
            return
        if not self._committed_entry_in_current_term():
            if self.pending_read_index is None:
                self.pending_read_index = [m]
            else:
                self.pending_read_index.append(m)
            return
        if self.cfg.read_only_option is ReadOnlyOption.LEASE_BASED and self._lease_valid():
            self._respond_read(m.frm, self.log.committed, m.context)
            return
        # SAFE, or a lease we cannot vouch for: confirm with a heartbeat quorum.
        ro = self.read_only
        if ro is None:
            ro = self.read_only = ReadOnly()
        ro.add_request(self.log.committed, m.context, m.frm)
        ro.recv_ack(self.id, m.context)
        self._bcast_heartbeat(m.context)

    def _lease_valid(self) -> bool:
        """Thesis 6.4.1: no other leader can exist while a quorum acknowledged heartbeats
        we sent less than an election timeout ago, because each of those voters refuses
        votes for an election timeout after *receiving* one. We only know the *send*
        tick (the echoed stamp), which is earlier, so the lease is measured from it,
        minus two ticks for the discreteness of both clocks. Assumes the nodes' tick
        rates do not drift apart by more than that margin within one timeout, and that
        a crashed voter does not restart within one election timeout (it forgets the
        leader it heard from; etcd shares this caveat): a caller using lease reads
        should hold a restarted replica's ticks and votes back for that long."""
        if self.lease_revoked or self.lead_transferee != NONE:
            return False
        # Stamps are ``send tick + 1`` so that 0 means "none".
        cutoff = max(1, self.ticks + 1 - self.cfg.election_ticks + 2)
        me = self.id
        acks = {node: True for node, pr in self.tracker.progress.items()
                if node == me or pr.lease_stamp >= cutoff}
        conf = self.tracker.conf
        return joint_vote_result(conf.voters, conf.voters_outgoing, acks) == VoteResult.WON

    def _respond_read(self, frm: int, index: int, ctx: bytes) -> None:
        if frm in (NONE, self.id):
            self._add_read_state(ReadState(index, ctx))
        else:
            self._send(Message(_MT.READ_INDEX_RESP, frm, self.id, self.term, index=index,
                               context=ctx))

    # -- leadership transfer -------------------------------------------------------------

    def transfer_leader(self, transferee: int) -> None:
        if self.role == StateRole.LEADER:
            self._handle_transfer_leader(transferee)
        elif self.lead != NONE:
            # By convention the forwarded request names the transferee in ``frm``.
            self._send(Message(_MT.TRANSFER_LEADER, self.lead, transferee, 0))

    def _handle_transfer_leader_message(self, m: Message) -> None:
        self._handle_transfer_leader(m.frm)

    def _handle_transfer_leader(self, transferee: int) -> None:
        """Thesis 3.10: bring the transferee's log up to date, then TIMEOUT_NOW it;
        proposals are refused meanwhile; aborted after an election timeout."""
        pr = self.tracker.progress.get(transferee)
        if pr is None or pr.is_learner:
            return
        if self.lead_transferee != NONE:
            if self.lead_transferee == transferee:
                return
            self.lead_transferee = NONE
        if transferee == self.id:
            return
        self.election_elapsed = 0
        self.lead_transferee = transferee
        if pr.match == self.log.last_index():
            self._send_timeout_now(transferee)
        else:
            self._maybe_send_append(transferee, True)

    def _send_timeout_now(self, to: int) -> None:
        # The forced election ignores the voters' leases: ours is void from now on.
        self.lease_revoked = True
        self._send(Message(_MT.TIMEOUT_NOW, to, self.id, self.term))

    # -- local reports -------------------------------------------------------------------

    def report_unreachable(self, node: int) -> None:
        if self.role == StateRole.LEADER:
            self._handle_unreachable(node)

    def report_snapshot(self, node: int, ok: bool) -> None:
        if self.role == StateRole.LEADER:
            self._handle_snapshot_status(node, ok)

    # -- persistence and application feedback -----------------------------------------

    def on_persisted(self, index: int, term: int) -> None:
        """Entries up to ``index`` (of ``term``) are durable: a leader may now count
        itself for them (thesis 10.2.1)."""
        self.log.stable_to(index, term)
        if self.role != StateRole.LEADER:
            return
        pr = self.tracker.progress.get(self.id)
        if pr is not None and pr.maybe_update(self.log.persisted_index()) \
                and self._maybe_commit():
            self._bcast_append()

    def on_applied(self, index: int) -> None:
        """The caller applied up to ``index``; a leader in an auto-leave joint
        configuration proposes leaving it once the entering change is applied."""
        self.log.applied_to(index)
        t = self.tracker
        if (self.role == StateRole.LEADER and t.conf.auto_leave and t.is_joint()
                and index >= self.pending_conf_index and self.id in t.progress):
            leave = Entry(self.term, self.log.last_index() + 1, CONF_CHANGE,
                          encode_conf_change(ConfChange()))
            self._append_entries([leave], force=True)
            self.pending_conf_index = leave.index
            self._bcast_append()

    def _hand_over_leadership(self) -> None:
        """A leader removed (or demoted) by a committed change gives up leadership
        (thesis 4.2.2) by transferring it to the most up-to-date voter of the new
        configuration. Until that voter takes over (and its higher term makes us a
        follower) we keep replicating and heartbeating but refuse proposals: stepping
        down at once could strand a follower still in the joint configuration, which
        does not yet know C_new committed and whose election needs our vote."""
        best = NONE
        best_match = -1
        for node, pr in self.tracker.progress.items():
            if node != self.id and not pr.is_learner and self.tracker.is_voter(node) \
                    and pr.match > best_match:
                best, best_match = node, pr.match
        if best == NONE:
            self._become_follower(self.term, NONE)
            return
        self._handle_transfer_leader(best)

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Switch to the configuration after ``cc`` (called when its entry is applied)."""
        # No snapshot can be pending here: ``_restore`` refuses one while a Ready's
        # committed entries are being applied (SIM_FINDINGS F4b).
        assert self.log.unstable.snapshot is None, "conf change applied under a snapshot"
        conf = apply_change(self.tracker.conf, cc)
        self.tracker.set_conf(conf, self.log.last_index())
        pr = self.tracker.progress.get(self.id)
        self.is_learner = pr is not None and pr.is_learner
        if self.role != StateRole.LEADER:
            return conf
        if pr is None or pr.is_learner:
            self._hand_over_leadership()
            return conf
        if self._maybe_commit():
            # The smaller quorum may commit more at once.
            self._bcast_append()
        else:
            for node in self.tracker.progress:
                if node != self.id:
                    self._maybe_send_append(node, False)
        if self.lead_transferee != NONE and not self.tracker.is_voter(self.lead_transferee):
            self.lead_transferee = NONE
        return conf


def _make_entries(term: int, start: int, etype: int, datas: Sequence[bytes]) -> list[Entry]:
    """Entries ``start, start+1, ...`` of ``term`` holding ``datas``.

    Hot path (every proposal batch): ``tuple.__new__`` mapped over zipped columns
    builds the NamedTuples without a Python frame per entry, about twice as fast
    as a comprehension calling ``Entry(...)``.
    """
    return list(map(_tuple_new, repeat(Entry),
                    zip(repeat(term), range(start, start + len(datas)), repeat(etype), datas)))


_tuple_new = tuple.__new__


def _ignore(r: Raft, m: Message) -> None:
    """Messages a role does not act on (stale responses, misdirected requests)."""


#: Role tables: message type -> handler. VOTE/PRE_VOTE are handled in ``step``.
_LEADER: dict[int, _StepFn] = {
    _MT.APPEND_RESP: Raft._handle_append_response,
    _MT.HEARTBEAT_RESP: Raft._handle_heartbeat_response,
    _MT.PROPOSE: Raft._handle_forwarded_proposal,
    _MT.READ_INDEX: Raft._handle_read_index_request,
    _MT.TRANSFER_LEADER: Raft._handle_transfer_leader_message,
}

_CANDIDATE: dict[int, _StepFn] = {
    _MT.APPEND: Raft._handle_leader_message_as_candidate,
    _MT.HEARTBEAT: Raft._handle_leader_message_as_candidate,
    _MT.SNAPSHOT: Raft._handle_leader_message_as_candidate,
    _MT.VOTE_RESP: Raft._handle_vote_response,
    _MT.PRE_VOTE_RESP: Raft._handle_vote_response,
    _MT.TIMEOUT_NOW: _ignore,
}

_FOLLOWER: dict[int, _StepFn] = {
    _MT.APPEND: Raft._step_follower_from_leader,
    _MT.HEARTBEAT: Raft._step_follower_from_leader,
    _MT.SNAPSHOT: Raft._step_follower_from_leader,
    _MT.PROPOSE: Raft._forward_to_leader,
    _MT.READ_INDEX: Raft._forward_to_leader,
    _MT.TRANSFER_LEADER: Raft._forward_to_leader,
    _MT.TIMEOUT_NOW: Raft._handle_timeout_now,
    _MT.READ_INDEX_RESP: Raft._handle_read_index_response,
}
