"""The simulated cluster: N ``SimNode``s on a ``SimNetwork`` in virtual time,
with the Ready handling, crash-restart and liveness check that every run
(random or hand-driven) shares.

Theory of operation
-------------------
After any input to a node, the cluster handles the node's ``Ready``s the way
a careful caller does, in this order:

1. ``messages`` go to the network at once (Raft allows a leader to send
   before its own append is durable);
2. here the node may crash ("crash in Ready"): nothing below happens, so
   the Ready's entries, hard state and snapshot are lost, but its early
   messages are already in flight;
3. persist: the snapshot first, then the entries, then the hard state;
4. ``persisted_messages`` go to the network;
5. apply ``committed_entries`` (membership changes via
   ``apply_conf_change``), collect ``read_states``, then ``advance``.

A Ready may also be persisted asynchronously (the profile's
``async_ready``): steps 1-2 happen at once, the node keeps receiving inputs
(``RawNode`` allows that between ``ready()`` and ``advance()``), and steps
3-5 happen at the next tick; no other Ready is taken meanwhile.

Every persist/apply/role change feeds ``InvariantChecker``, whose checks are
incremental, so checking "after every step" costs O(work of that step).

Virtual time advances only through ``tick()``: every live node ticks once
(or misses the tick, with the profile's clock skew). Messages move only
through ``deliver_one()``; a message lost to a partition or a dead node is
reported back to its sender as a transport would (``report_unreachable``,
``report_snapshot``).

``heal_and_check_liveness()`` heals partitions, makes the network reliable
and in order, restarts crashed nodes, and then requires a leader within
``LEADER_BOUND`` election timeouts and a fresh proposal applied by every
member within ``COMMIT_BOUND`` more (leaving a joint configuration on the
way if needed).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from engine.raft import Config, ProposalDropped, ReadOnlyOption
from engine.raft.confchange_codec import decode_conf_change
from engine.raft.testing.chain import decode_state
from engine.raft.testing.invariants import InvariantChecker
from engine.raft.testing.membership import describe_change, describe_conf, is_joint, members
from engine.raft.testing.network import Envelope, NetworkFaults, SimNetwork
from engine.raft.testing.node import BOOTSTRAP_FP, SimNode, SimStorage
from engine.raft.testing.profile import FaultProfile, SimOptions
from engine.raft.types import (
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    StateRole,
)

#: After healing, a leader must exist within this many election timeouts.
#: Raft's liveness is probabilistic (randomized timeouts), so the bound is
#: loose on purpose: without pre-vote, a cluster where only one node can win
#: (the others' logs are stale, and each of their failed campaigns resets
#: everyone's timer) elects with probability ~1/3 per round; seed 2529 needed
#: 17 timeouts. 30 makes a false alarm ~(2/3)**25, while a real deadlock
#: (SIM_FINDINGS F1) still fails every time.
LEADER_BOUND = 30
#: ...and a fresh proposal must be applied everywhere within this many more.
COMMIT_BOUND = 30
#: Deliveries allowed between two ticks while draining (a livelock guard).
DRAIN_LIMIT = 20_000
_TRACE_LEN = 40
_LEADER = StateRole.LEADER


class LivenessFailure(AssertionError):
    """After healing, the cluster did not elect a leader or commit in bounded time."""


@dataclass(slots=True)
class SimStats:
    """What a run exercised (tests assert the features were actually hit)."""

    steps: int = 0
    ticks: int = 0
    delivered: int = 0
    leaders: int = 0
    committed: int = 0
    proposals: int = 0
    conf_changes_applied: int = 0
    joint_entered: int = 0
    snapshots_sent: int = 0
    snapshots_installed: int = 0
    crashes: int = 0
    crashes_in_ready: int = 0
    partitions: int = 0
    reads_answered: int = 0
    async_readies: int = 0
    liveness_ticks: int = 0


class Cluster:
    """N simulated nodes, their network and the invariant checker."""

    def __init__(self, opts: SimOptions, profile: FaultProfile, rng: random.Random) -> None:
        """``rng`` drives the clock skew and seeds the network's generator."""
        self.opts = opts
        self.rng = rng
        self.profile = profile
        self.net = SimNetwork(random.Random(rng.getrandbits(64)), profile.network)
        self.checker = InvariantChecker(
            bootstrap=(1, 1, BOOTSTRAP_FP),
            bootstrap_conf=ConfState(voters=tuple(range(1, opts.voters + 1))),
        )
        self.stats = SimStats()
        self.now = 0
        self.trace: deque[str] = deque(maxlen=_TRACE_LEN)
        self.verbose = False
        self._read_seq = 0
        # Virtual time at which the current partition heals (0: none scheduled).
        self._heal_at = 0
        # Invariant: data -> index of the first applied normal entry holding it
        # (proposal data is unique per run, so this says whether and where a
        # proposal committed).
        self.applied_data: dict[bytes, int] = {}
        voters = tuple(range(1, opts.voters + 1))
        self.pool = list(range(1, opts.voters + opts.spares + 1))
        # Invariant: every pool id has a node; spares start with an empty config.
        self.nodes: dict[int, SimNode] = {}
        for nid in self.pool:
            cs = ConfState(voters=voters) if nid in voters else ConfState()
            node = SimNode(nid, cs, SimStorage(rng, profile.snapshot_unavailable))
            node.start(self._config)
            self.nodes[nid] = node

    def _log(self, what: str) -> None:
        line = f"[{self.stats.steps}@{self.now}] {what}"
        self.trace.append(line)
        if self.verbose:
            print(line)

    # -- time and messages ---------------------------------------------------------

    def tick(self) -> None:
        """Advance virtual time by one tick: every live node ticks once, except
        that with the profile's ``tick_skew`` a node misses it (clocks drift;
        Raft's safety must not depend on them)."""
        self.now += 1
        self.stats.ticks += 1
        self.net.advance(self.now)
        skew = self.profile.tick_skew
        rng = self.rng
        for node in self.nodes.values():
            raw = node.raw
            if raw is not None:
                if node.pending is not None:
                    self._complete(node)  # asynchronous persistence finishes
                if skew and rng.random() < skew:
                    self._process(node)
                    continue  # this node's clock runs slow: it misses the tick
                raw.tick()
                self._process(node)
            elif node.restart_at and node.restart_at <= self.now:
                self.restart(node.id)
        if self._heal_at and self._heal_at <= self.now:
            self._heal_at = 0
            self.net.heal()
            self._log("heal partitions")

    def deliver_one(self) -> None:
        popped = self.net.pop()
        if popped is None:
            return
        env, lost = popped
        m = env.msg
        target = self.nodes.get(m.to)
        if lost or target is None or target.raw is None:
            self._transport_failure(env)
            return
        self.stats.delivered += 1
        target.raw.step(m)  # never raises: bad or stale messages are ignored
        self._process(target)
        if m.type == MessageType.SNAPSHOT:
            self._report_snapshot(env, ok=True)

    def _transport_failure(self, env: Envelope) -> None:
        """Tell the sender what a real transport would: the peer is unreachable,
        and a snapshot it was streaming failed."""
        m = env.msg
        if m.type == MessageType.SNAPSHOT:
            self._report_snapshot(env, ok=False)
        elif m.type in (MessageType.APPEND, MessageType.HEARTBEAT):
            sender = self.nodes.get(m.frm)
            if sender is not None and sender.raw is not None and (
                sender.incarnation == env.incarnation
            ):
                sender.raw.report_unreachable(m.to)
                self._process(sender)

    def _report_snapshot(self, env: Envelope, ok: bool) -> None:
        m = env.msg
        sender = self.nodes.get(m.frm)
        if sender is None or sender.raw is None or sender.incarnation != env.incarnation:
            return
        sender.raw.report_snapshot(m.to, ok)
        self._process(sender)

    def _send(self, node: SimNode, msgs: list[Message] | tuple[Message, ...]) -> None:
        net = self.net
        for m in msgs:
            assert m.to != node.id, f"node {node.id} sends {MessageType(m.type).name} to itself"
            if m.type == MessageType.SNAPSHOT:
                self.stats.snapshots_sent += 1
            if not net.send(m, node.incarnation) and m.type == MessageType.SNAPSHOT:
                # The transport says at once; the RawNode is between ready() and
                # advance(), where inputs are allowed (their output waits).
                raw = node.raw
                assert raw is not None
                raw.report_snapshot(m.to, False)

    # -- Ready handling ------------------------------------------------------------

    def _process(self, node: SimNode) -> None:
        """Handle ``node``'s Readies (see the module header for the order), then
        check the role and commit invariants. A Ready may be left pending
        (asynchronous persistence): it completes at the next tick, and no
        other Ready is taken before."""
        raw = node.raw
        assert raw is not None
        async_ready = self.profile.async_ready
        while node.pending is None and raw.has_ready():
            rd = raw.ready()
            if rd.messages:
                self._send(node, rd.messages)
            if node.crash_in_ready:
                self._crash(node, "inside a Ready, after sending its messages")
                self.stats.crashes_in_ready += 1
                return
            node.pending = rd
            node.pending_leader = raw.role == _LEADER
            if async_ready and self.rng.random() < async_ready:
                self.stats.async_readies += 1
                break
            self._complete(node)
        checker = self.checker
        if raw.role == _LEADER:
            term = raw.term
            first = checker.leaders.get(term) != node.id
            if first:
                self.stats.leaders += 1
                self._log(f"node {node.id} leads term {term}")
            if first or checker.unchecked:
                # Completeness needs the whole log durable (the chain mirrors
                # durable state), so it waits for a pending Ready.
                checker.on_leader(node.id, term, node.chain if node.pending is None else None)
        commit = raw.committed
        if commit != node.last_commit:
            checker.on_committed(node.id, node.last_commit, commit)
            node.last_commit = commit

    def _complete(self, node: SimNode) -> None:
        """Persist ``node``'s pending Ready, send what had to wait for it, apply,
        and advance."""
        raw = node.raw
        rd = node.pending
        assert raw is not None and rd is not None
        checker = self.checker
        stats = self.stats
        snap = rd.snapshot
        if snap is not None and not snap.is_empty:
            meta = snap.metadata
            checker.on_snapshot(node.id, meta.index, meta.term, decode_state(snap.data),
                                is_leader=node.pending_leader, applied=node.applied_index)
            checker.check_snapshot_conf(node.id, meta.index, meta.conf_state)
            node.install_snapshot(snap)
            stats.snapshots_installed += 1
        if rd.entries:
            checker.on_append(node.id, node.chain, rd.entries, node.pending_leader)
            node.storage.append(rd.entries)
        hs = rd.hard_state
        if hs is not None:
            storage = node.storage
            checker.on_hard_state(node.id, storage.hard_state, hs, node.chain)
            stats.committed = max(stats.committed, hs.commit)
            storage.set_hard_state(hs)
        if rd.persisted_messages:
            self._send(node, rd.persisted_messages)
        if rd.committed_entries:
            self._apply(node, rd.committed_entries)
        for rs in rd.read_states:
            checker.on_read_state(node.id, rs.index, rs.request_ctx)
            stats.reads_answered += 1
        node.pending = None
        raw.advance(rd)

    def _apply(self, node: SimNode, entries: list[Entry] | tuple[Entry, ...]) -> None:
        raw = node.raw
        assert raw is not None
        checker = self.checker
        applied_data = self.applied_data
        commit = node.storage.hard_state.commit
        fp = node.applied_fp
        for e in entries:
            fp = hash((fp, e.term, e.type, e.data))  # chain.fold, inlined (hot path)
            checker.on_apply(node.id, e, fp, node.applied_index, commit)
            node.applied_index = e.index
            node.applied_term = e.term
            node.applied_fp = fp
            if e.type == EntryType.CONF_CHANGE and e.data:
                cc = decode_conf_change(e.data)
                node.conf_state = raw.apply_conf_change(cc)
                checker.on_conf_change(node.id, e.index, node.conf_state)
                self.stats.conf_changes_applied += 1
                if is_joint(node.conf_state):
                    self.stats.joint_entered += 1
                self._log(f"node {node.id} applies {describe_change(cc)} at {e.index} -> "
                          f"{describe_conf(node.conf_state)}")
            elif e.data:
                applied_data.setdefault(e.data, e.index)

    # -- crashes -------------------------------------------------------------------

    def crash(self, nid: int, down_ticks: int = 0) -> None:
        """Crash ``nid`` now; it restarts after ``down_ticks`` (0: only by ``restart``)."""
        node = self.nodes[nid]
        self._crash(node, "between steps")
        node.restart_at = self.now + down_ticks if down_ticks else 0

    def _crash(self, node: SimNode, how: str) -> None:
        node.crash()
        self.stats.crashes += 1
        self._log(f"crash node {node.id} {how}")

    def restart(self, nid: int) -> None:
        node = self.nodes[nid]
        node.restart_at = 0
        node.start(self._config)
        self._log(f"restart node {nid} (incarnation {node.incarnation})")
        self._process(node)

    def _config(self, nid: int, incarnation: int, applied: int) -> Config:
        r = self.profile.raft
        return Config(
            id=nid,
            election_ticks=r.election_ticks,
            heartbeat_ticks=r.heartbeat_ticks,
            rng_seed=(self.opts.seed * 1_000_003 + nid * 1009 + incarnation) & 0xFFFFFFFF,
            max_size_per_msg=r.max_size_per_msg,
            max_inflight_msgs=r.max_inflight_msgs,
            max_inflight_bytes=r.max_inflight_bytes,
            disable_proposal_forwarding=r.disable_proposal_forwarding,
            max_uncommitted_size=r.max_uncommitted_size,
            max_committed_size_per_ready=r.max_committed_size_per_ready,
            pre_vote=r.pre_vote,
            check_quorum=r.check_quorum,
            read_only_option=(
                ReadOnlyOption.LEASE_BASED if r.lease_reads else ReadOnlyOption.SAFE
            ),
            applied=applied,
        )

    # -- inputs --------------------------------------------------------------------

    def live(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.raw is not None]

    def leader(self) -> SimNode | None:
        """The live leader with the highest term, if any."""
        best: SimNode | None = None
        for n in self.nodes.values():
            raw = n.raw
            if raw is not None and raw.role == StateRole.LEADER and (
                best is None or raw.term > best.raw.term  # type: ignore[union-attr]
            ):
                best = n
        return best

    def propose(self, nid: int, *datas: bytes) -> bool:
        """Propose ``datas`` at ``nid``; False if the core dropped them."""
        node = self.nodes[nid]
        raw = node.raw
        assert raw is not None, f"node {nid} is down"
        self.stats.proposals += 1
        try:
            if len(datas) == 1:
                raw.propose(datas[0])
            else:
                raw.propose_batch(list(datas))
        except ProposalDropped:
            return False
        finally:
            self._process(node)
        return True

    def propose_conf_change(self, nid: int, cc: ConfChange) -> bool:
        """Propose ``cc`` at ``nid``; False if the core dropped it."""
        node = self.nodes[nid]
        raw = node.raw
        assert raw is not None, f"node {nid} is down"
        try:
            raw.propose_conf_change(cc)
            self._log(f"node {nid} proposes {describe_change(cc)}")
        except ProposalDropped as exc:
            self._log(f"node {nid} drops {describe_change(cc)}: {exc.reason}")
            return False
        finally:
            self._process(node)
        return True

    def read(self, nid: int) -> bytes:
        """Ask ``nid`` for a linearizable read point; returns the request's context.
        The checker requires any ReadState for it to be at or above what was
        committed anywhere now. Dropped (no leader known) reads just never answer."""
        node = self.nodes[nid]
        raw = node.raw
        assert raw is not None, f"node {nid} is down"
        self._read_seq += 1
        ctx = b"r%d" % self._read_seq
        self.checker.on_read_request(ctx)
        try:
            raw.read_index(ctx)
        except ProposalDropped:
            pass
        finally:
            self._process(node)
        return ctx

    def process(self, nid: int) -> None:
        """Handle ``nid``'s Readies (scenario tests that call the RawNode directly)."""
        self._process(self.nodes[nid])

    def leader_committed_in_term(self, node: SimNode) -> bool:
        """Whether ``node`` durably committed an entry of its current term (a
        new leader's commit index is only known to be current after that)."""
        raw = node.raw
        commit = node.storage.hard_state.commit
        return (
            raw is not None and node.chain.base <= commit <= node.chain.last
            and node.chain.term(commit) == raw.term
        )

    # -- liveness ------------------------------------------------------------------

    def drain(self) -> None:
        """Deliver every due message (and what they cause), without ticking."""
        for _ in range(DRAIN_LIMIT):
            if not self.net.has_due():
                return
            self.deliver_one()
        raise LivenessFailure(f"more than {DRAIN_LIMIT} deliveries without a tick (livelock)")

    def run_ticks(self, ticks: int) -> None:
        """Scenario helper: ``ticks`` rounds of drain-then-tick."""
        for _ in range(ticks):
            self.drain()
            self.tick()
        self.drain()

    def heal_and_check_liveness(self) -> None:
        """Heal everything and require a leader, then a commit everywhere, in bounded time.

        The fresh proposal (a marker) is appended after whatever the leader
        already holds, so its commit also commits every proposal still
        pending in that leader's log; every member (voters and learners of
        the leader's configuration, which must not be joint any more) must
        apply it. Proposals lost with a deposed leader's uncommitted tail are
        legitimately lost and not required."""
        self.net.heal()
        self._heal_at = 0
        # A healed network behaves like TCP between each pair: nothing lost,
        # nothing reordered (raft needs some in-order delivery to make progress:
        # under full reordering every out-of-order APPEND rejection resets the
        # leader's optimistic window).
        self.net.faults = NetworkFaults()
        self.profile.tick_skew = 0.0
        self.profile.async_ready = 0.0
        for node in self.nodes.values():
            node.crash_in_ready = False
            if node.raw is None:
                self.restart(node.id)
            elif node.pending is not None:
                self._complete(node)
                self._process(node)
        self._log("heal all; liveness check")
        e = self.profile.raft.election_ticks
        start = self.now
        while self.leader() is None:
            if self.now - start >= LEADER_BOUND * e:
                raise LivenessFailure(f"no leader {LEADER_BOUND * e} ticks after healing")
            self.drain()
            self.tick()
        deadline = self.now + COMMIT_BOUND * e
        marker = b"live%d" % self.opts.seed
        proposed_at: tuple[int, int] | None = None
        while True:
            self.drain()
            leader = self.leader()
            if leader is not None:
                assert leader.raw is not None
                cs = leader.conf_state
                key = (leader.id, leader.raw.term)
                if is_joint(cs) and not cs.auto_leave:
                    self.propose_conf_change(leader.id, ConfChange())
                elif proposed_at != key and self.propose(leader.id, marker):
                    proposed_at = key
                if not is_joint(cs) and self._marker_everywhere(cs, marker):
                    break
            if self.now >= deadline:
                raise LivenessFailure(
                    f"proposal not applied by all members {COMMIT_BOUND * e} ticks after a "
                    f"leader was elected; leader={leader and leader.id} "
                    f"conf={leader and describe_conf(leader.conf_state)}"
                )
            self.tick()
        self.stats.liveness_ticks = self.now - start

    def _marker_everywhere(self, cs: ConfState, marker: bytes) -> bool:
        at = self.applied_data.get(marker)
        if at is None:
            return False
        return all(self.nodes[nid].applied_index >= at for nid in members(cs))
