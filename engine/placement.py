"""Placement: the worker of a new replica; when ranges split, merge or move their leadership.

Theory of operation
-------------------
Node-level decisions, all made from the workers' status reports.

**A replica arriving** (``ReplicaPlacement``). When a range gets a replica on
this node (``POST /ranges/{id}/replicas`` elsewhere added us as a learner),
the first sign of it is raft traffic for a range no local worker holds. The
node routes it to a worker whose Store creates the replica from the
leader's snapshot (``Store._unknown_range``). Which worker, in order:

- the worker that last held the range, if one did (it keeps the range's
  tombstone, which is what stops a stale leader's snapshot from recreating
  a removed replica: another worker would not know it);
- the worker holding a local replica whose span overlaps the range's (as
  the node's directory describes it): that is a split's right-hand side
  whose leader is ahead of our replica of the parent. It must go to the
  parent's worker: that Store drops the early snapshot (it overlaps the
  parent) and creates the range itself when it applies the split, where any
  other worker would build a *second* replica of it from the snapshot;
- otherwise the least-loaded worker: fewest replicas in its reports, plus
  the ranges placed on it that it has not reported yet.

A range is placed only if the node's directory lists this node among its
replicas: traffic for a range the directory does not know yet (a split's
right-hand side before meta announced it) or does not place here (a stale
leader's snapshot for a replica removed from us, whose tombstone a restart
made us forget the worker of) is dropped, and raft retransmits. The admin
node publishes a learner's descriptor to meta as soon as it is added, so
the new replica's node learns it within a meta poll.

Rules
-----
- **Only with a complete view.** Nothing is placed while some worker has not
  reported since its last (re)start: until then the node does not know all
  its replicas, and a guess could put a second replica of a range held by
  that worker on another one. Such records are dropped (raft retransmits).
- **Sticky at once.** The choice goes into the node's owner map immediately,
  so the next records (the snapshot chunks that follow an APPEND) follow it;
  it is also *pinned* for ``pin_s`` seconds, because a status report written
  before the worker created the replica can arrive after the choice and
  drop it from the owner map. Routing never flips to another worker while a
  pin lasts. An expired pin whose worker never reported the range (no
  snapshot came: it was stray traffic) leaves the owner map.

**Splitting** (``SplitPlanner``, driven by ``PlacementLoop``). Every
``placement.interval_ms`` the loop looks at the ranges this node *leads*
(one node decides per range: its leader's) and splits, through
``NodeAdmin.split`` at the state machine's middle key, those larger than
``store.split_bytes`` or serving more than ``placement.split_qps`` client
reads+writes per second. The rate is the difference of the cumulative
counters in two consecutive looks; counters that went backwards (the
replica was recreated, a new leader) start a new baseline. A range the loop
split (or tried to) is left alone for ``split_cooldown_s``, and a range
first seen less than that ago (a split's fresh right-hand half) is not split
by load: its reports lag the split, and a uniformly hot range must halve
once per cool-down, not cascade into slivers within a few looks. Size
splits have no such wait beyond the cool-down (a huge range must shrink).
At most ``MAX_SPLITS_PER_PASS`` splits are started per look, the worst first.

**Merging** (same planner, off unless ``placement.merge_qps`` > 0). The
leader of a range merges its right-hand neighbour into it
(``NodeAdmin.merge``, which first moves the neighbour's leadership here)
when one local worker holds both (the Store merges within one store), they
have one replica set, are smaller than ``store.merge_bytes`` together, and
both are cold for ``split_cooldown_s`` (so a split is not undone by the
next look): a range led here serves fewer than ``merge_qps`` client
reads+writes per second (its counters are the leader's); one led elsewhere
has its replica here quiesced all that time (a follower's counters say
nothing about load; quiescence means no reads or writes at all). Off by
default because it reshapes the bootstrap layout of an idle cluster.

**Leader balance** (``LeaderBalancer``, off unless
``placement.balance_leaders``): a node leading more ranges than its peers
hands leaderships of its coldest ranges to the voters that lead the fewest
(see the class). Off by default: tests and benchmarks place leaders on
purpose, and the bootstrap already spreads them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from engine.admin.backend import AdminError
from engine.config import PlacementSection, StoreSection
from engine.meta_codec import META_RANGE_ID
from engine.range_desc import RangeDescriptor
from engine.worker_protocol import RangeReport, WorkerReport

__all__ = [
    "MAX_SPLITS_PER_PASS",
    "LeaderBalancer",
    "LeaderMove",
    "MergeDecision",
    "PlacementLoop",
    "ReplicaPlacement",
    "SplitDecision",
    "SplitPlanner",
    "SplitPolicy",
]

log = logging.getLogger("multiraft.placement")

#: Splits started per look of the loop: each costs a raft round trip and a new
#: group; a node with many hot ranges spreads them over a few looks.
MAX_SPLITS_PER_PASS: Final = 4


class ReplicaPlacement:
    """Where raft traffic for a range no local worker holds goes (module docstring)."""

    def __init__(
        self, node_id: int, owner: dict[int, int], workers: int,
        held: Callable[[int], Mapping[int, RangeReport]],
        describe: Callable[[int], RangeDescriptor | None], *, pin_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._node_id = node_id
        #: The node's owner map (range id -> worker), shared: choices are written into it.
        self._owner = owner
        #: ``held(i)``: the replicas worker ``i`` last reported (its size is its load).
        self._held = held
        #: The node directory's descriptor of a range (None: not known yet).
        self._describe = describe
        self._pin_s = pin_s
        self._clock = clock
        #: Invariant: ``_fresh[i]`` iff worker ``i`` reported since its last (re)start.
        self._fresh = [False] * workers
        #: Invariant: range id -> (worker, monotonic expiry) of each choice still pinned.
        self._pins: dict[int, tuple[int, float]] = {}
        #: Range id -> the worker that held it last (it keeps the range's tombstone).
        self._last_holder: dict[int, int] = {}

    @property
    def node_id(self) -> int:
        return self._node_id

    def started(self, index: int) -> None:
        """Worker ``index`` was (re)started: its replicas are unknown until it reports."""
        self._fresh[index] = False

    def reported(self, index: int) -> None:
        self._fresh[index] = True

    def gone(self, range_id: int, index: int) -> None:
        """Worker ``index`` no longer holds ``range_id`` (removed, merged away)."""
        self._last_holder[range_id] = index

    def place(self, range_id: int) -> int | None:
        """The worker for traffic of ``range_id``, which the owner map lacks; None: drop
        it for now (some worker has not reported since its restart)."""
        now = self._clock()
        pin = self._pins.get(range_id)
        if pin is not None and now < pin[1]:
            self._owner[range_id] = pin[0]
            return pin[0]
        if not all(self._fresh):
            return None
        worker = self._last_holder.get(range_id)
        if worker is None:
            desc = self._describe(range_id)
            if desc is None or self._node_id not in desc.replicas:
                return None
            worker = self._overlapping(desc)
        if worker is None:
            worker = self._least_loaded(now)
        self._pins[range_id] = (worker, now + self._pin_s)
        self._owner[range_id] = worker
        log.info("range %d: new replica placed on worker %d", range_id, worker)
        return worker

    def _overlapping(self, desc: RangeDescriptor) -> int | None:
        """The worker holding a replica whose span overlaps ``desc``'s (the meta
        range's span is nominal: it overlaps nothing)."""
        if desc.range_id == META_RANGE_ID:
            return None
        for i in range(len(self._fresh)):
            for r in self._held(i).values():
                d = r.desc
                if d.range_id != META_RANGE_ID and _overlap(d, desc):
                    return i
        return None

    def _least_loaded(self, now: float) -> int:
        load = [len(self._held(i)) for i in range(len(self._fresh))]
        for rid, (w, until) in self._pins.items():
            if until > now and rid not in self._held(w):
                load[w] += 1
        return min(range(len(load)), key=lambda i: (load[i], i))

    def expire(self) -> None:
        """Drop expired pins; a pinned range its worker never reported leaves the owner
        map (the traffic was stray: no snapshot created a replica)."""
        now = self._clock()
        for rid, (w, until) in list(self._pins.items()):
            if until <= now:
                del self._pins[rid]
                if rid not in self._held(w) and self._owner.get(rid) == w:
                    del self._owner[rid]

    def pinned(self) -> dict[int, int]:
        """Range id -> worker of the live pins (for tests and the status page)."""
        now = self._clock()
        return {rid: w for rid, (w, until) in self._pins.items() if until > now}


def _overlap(a: RangeDescriptor, b: RangeDescriptor) -> bool:
    return (not a.end_key or b.start_key < a.end_key) and (not b.end_key or a.start_key < b.end_key)


@dataclass(frozen=True, slots=True)
class SplitPolicy:
    """Thresholds of the planner (``[placement]``, ``store.split_bytes``/``merge_bytes``)."""

    split_bytes: int
    #: Client reads+writes per second above which a range splits (0: never by load).
    split_qps: int
    cooldown_s: float
    enabled: bool = True
    #: Two neighbours smaller than this together, each serving fewer than
    #: ``merge_qps`` reads+writes per second, merge (``merge_qps`` 0: never).
    merge_bytes: int = 0
    merge_qps: int = 0


@dataclass(frozen=True, slots=True)
class SplitDecision:
    range_id: int
    #: "size" or "load".
    reason: str
    size_bytes: int
    qps: float


@dataclass(frozen=True, slots=True)
class MergeDecision:
    """Merge ``right_id`` into its left-hand neighbour ``left_id``."""

    left_id: int
    right_id: int
    size_bytes: int


class SplitPlanner:
    """Which ranges led here to split or merge now (pure over reports and the time)."""

    def __init__(self, policy: SplitPolicy) -> None:
        self.policy = policy
        #: Invariant: range id -> (time, writes + reads) of its last look, for the
        #: ranges in the last look only (memory follows the ranges led here).
        self._samples: dict[int, tuple[float, int]] = {}
        #: Range id -> its rate in the last look, where two looks gave one.
        self._qps: dict[int, float] = {}
        #: Range id -> when a look first saw it led here (young ranges do not merge).
        self._first_seen: dict[int, float] = {}
        #: Range id -> since when our follower replica of it has been quiesced in every
        #: look (a range led elsewhere: the only sign of its load we have).
        self._quiet_since: dict[int, float] = {}
        #: Range id -> monotonic time before which it is not split or merged again.
        self._cooldown: dict[int, float] = {}

    def plan(self, now: float, ranges: Iterable[RangeReport]) -> list[SplitDecision]:
        """Look at ``ranges`` (every replica this node holds) at time ``now``; the
        splits to start, the worst first, at most ``MAX_SPLITS_PER_PASS``."""
        p = self.policy
        samples: dict[int, tuple[float, int]] = {}
        qps_now: dict[int, float] = {}
        out: list[tuple[float, SplitDecision]] = []
        quiet: dict[int, float] = {}
        for r in ranges:
            rid = r.desc.range_id
            if not r.is_leader and r.quiesced:
                quiet[rid] = self._quiet_since.get(rid, now)
            if not r.is_leader or rid == META_RANGE_ID:  # meta never splits
                continue
            ops = r.writes + r.reads
            samples[rid] = (now, ops)
            self._first_seen.setdefault(rid, now)
            prev = self._samples.get(rid)
            qps = 0.0
            if prev is not None and now > prev[0] and ops >= prev[1]:
                qps = qps_now[rid] = (ops - prev[1]) / (now - prev[0])
            if not p.enabled or r.keys < 2 or self._cooldown.get(rid, 0.0) > now:
                continue
            if r.size_bytes > p.split_bytes:
                out.append((r.size_bytes / p.split_bytes,
                            SplitDecision(rid, "size", r.size_bytes, qps)))
            elif p.split_qps and qps > p.split_qps \
                    and self._first_seen[rid] + p.cooldown_s <= now:
                out.append((qps / p.split_qps, SplitDecision(rid, "load", r.size_bytes, qps)))
        self._samples, self._qps, self._quiet_since = samples, qps_now, quiet
        self._first_seen = {rid: t for rid, t in self._first_seen.items() if rid in samples}
        self._cooldown = {rid: t for rid, t in self._cooldown.items() if t > now}
        out.sort(key=lambda x: (-x[0], x[1].range_id))
        chosen = [d for _, d in out[:MAX_SPLITS_PER_PASS]]
        for d in chosen:
            self._cooldown[d.range_id] = now + p.cooldown_s
        return chosen

    def plan_merges(
        self, now: float, workers: Iterable[Iterable[RangeReport]],
    ) -> list[MergeDecision]:
        """After ``plan`` of the same look: neighbours to merge (the module docstring),
        at most ``MAX_SPLITS_PER_PASS``, smallest first."""
        p = self.policy
        if not p.enabled or not p.merge_qps:
            return []
        out: list[MergeDecision] = []
        for group in workers:
            by_start = {r.desc.start_key: r for r in group if r.desc.range_id != META_RANGE_ID}
            for left in by_start.values():
                right = by_start.get(left.desc.end_key) if left.desc.end_key else None
                if left.is_leader and right is not None and self._may_merge(now, left, right):
                    out.append(MergeDecision(left.desc.range_id, right.desc.range_id,
                                             left.size_bytes + right.size_bytes))
        out.sort(key=lambda d: (d.size_bytes, d.left_id))
        chosen: list[MergeDecision] = []
        busy: set[int] = set()
        for d in out:
            if len(chosen) < MAX_SPLITS_PER_PASS and not {d.left_id, d.right_id} & busy:
                chosen.append(d)
                busy |= {d.left_id, d.right_id}
                self._cooldown[d.left_id] = self._cooldown[d.right_id] = now + p.cooldown_s
        return chosen

    def _may_merge(self, now: float, left: RangeReport, right: RangeReport) -> bool:
        p = self.policy
        a, b = left.desc, right.desc
        if (a.voters, a.learners) != (b.voters, b.learners):
            return False
        if left.size_bytes + right.size_bytes >= p.merge_bytes:
            return False
        return self._cold(now, left) and self._cold(now, right)

    def rates(self) -> Mapping[int, float]:
        """Range id -> client reads+writes per second in the last look (led here)."""
        return self._qps

    def _cold(self, now: float, r: RangeReport) -> bool:
        """Led here: under ``merge_qps``, and seen for ``cooldown_s``. Led elsewhere:
        our replica stayed quiesced (no reads or writes at all) for ``cooldown_s``."""
        p = self.policy
        rid = r.desc.range_id
        if self._cooldown.get(rid, 0.0) > now:
            return False
        if not r.is_leader:
            return self._quiet_since.get(rid, now) + p.cooldown_s <= now
        qps = self._qps.get(rid)
        return qps is not None and qps < p.merge_qps \
            and self._first_seen.get(rid, now) + p.cooldown_s <= now


@dataclass(frozen=True, slots=True)
class LeaderMove:
    """Hand the leadership of ``range_id`` (led here) to voter ``target``."""

    range_id: int
    target: int


class LeaderBalancer:
    """Which leaderships this node hands away (pure over reports and the time).

    Each node counts, over the ranges it holds a replica of, how many each voter
    leads (its own view: a report says who leads every replica it has). A node
    leading more than the mean plus ``max(1, mean / 10)`` hands the excess to
    the voters of those ranges that lead the fewest, coldest ranges first (a
    transfer stalls a range's writes for a round trip), at most
    ``MAX_SPLITS_PER_PASS`` per look and a range once per ``cooldown_s``. Every
    node runs the same rule, so leaderships flow from the busiest nodes until
    none is above the slack; the slack and the cool-down keep them from
    ping-ponging."""

    def __init__(self, node_id: int, cooldown_s: float) -> None:
        self._node_id = node_id
        self._cooldown_s = cooldown_s
        #: Range id -> monotonic time before which its leadership is not moved again.
        self._cooldown: dict[int, float] = {}

    def plan(
        self, now: float, ranges: Iterable[RangeReport], qps: Mapping[int, float],
    ) -> list[LeaderMove]:
        me = self._node_id
        counts: dict[int, int] = {}
        led: list[RangeReport] = []
        for r in ranges:
            for v in r.desc.voters:
                counts.setdefault(v, 0)
            leader = me if r.is_leader else r.leader
            if leader in counts:
                counts[leader] += 1
            if r.is_leader and r.desc.range_id != META_RANGE_ID and len(r.desc.voters) > 1:
                led.append(r)
        self._cooldown = {rid: t for rid, t in self._cooldown.items() if t > now}
        if not counts:
            return []
        mean = sum(counts.values()) / len(counts)
        limit = mean + max(1.0, mean / 10)
        moves: list[LeaderMove] = []
        led.sort(key=lambda r: (qps.get(r.desc.range_id, 0.0), r.desc.range_id))
        for r in led:
            if counts[me] <= limit or len(moves) >= MAX_SPLITS_PER_PASS:
                break
            rid = r.desc.range_id
            if self._cooldown.get(rid, 0.0) > now:
                continue
            target = min((v for v in r.desc.voters if v != me), key=lambda v: (counts[v], v))
            if counts[target] + 1 >= counts[me]:
                continue  # moving it would not even things out
            moves.append(LeaderMove(rid, target))
            counts[me] -= 1
            counts[target] += 1
            self._cooldown[rid] = now + self._cooldown_s
        return moves


class PlacementLoop:
    """The node's placement task: pin housekeeping, size/load splits, cold merges,
    leader balance."""

    def __init__(
        self, planner: SplitPlanner, placement: ReplicaPlacement,
        reports: Callable[[], list[WorkerReport]],
        split: Callable[[int], Awaitable[object]],
        merge: Callable[[int], Awaitable[object]], *, interval_s: float,
        balancer: LeaderBalancer | None = None,
        transfer: Callable[[int, int], Awaitable[object]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._planner = planner
        self._placement = placement
        self._reports = reports
        self._split = split
        self._merge = merge
        self._interval_s = interval_s
        #: Invariant: both set (leader balancing on) or both None.
        self._balancer = balancer if transfer is not None else None
        self._transfer = transfer
        self._clock = clock
        self.splits_done = 0
        self.merges_done = 0
        self.transfers_done = 0

    @classmethod
    def from_config(
        cls, cfg: PlacementSection, store: StoreSection, placement: ReplicaPlacement,
        reports: Callable[[], list[WorkerReport]], *,
        split: Callable[[int], Awaitable[object]], merge: Callable[[int], Awaitable[object]],
        transfer: Callable[[int, int], Awaitable[object]],
    ) -> PlacementLoop:
        policy = SplitPolicy(store.split_bytes, cfg.split_qps, float(cfg.split_cooldown_s),
                             cfg.split_by_load, store.merge_bytes, cfg.merge_qps)
        balancer = (LeaderBalancer(placement.node_id, float(cfg.split_cooldown_s))
                    if cfg.balance_leaders else None)
        return cls(SplitPlanner(policy), placement, reports, split, merge,
                   interval_s=cfg.interval_ms / 1000, balancer=balancer, transfer=transfer)

    async def run(self) -> None:
        """Look every interval until cancelled; a failing look never ends the loop."""
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.run_once()
            except Exception:  # a bug in a look must not stop placement for good
                log.exception("placement loop: look failed")

    async def run_once(self) -> list[SplitDecision | MergeDecision | LeaderMove]:
        """One look: expire pins, plan, then the splits, merges and leadership moves,
        one by one (a range touched by one of them is left out of the later ones)."""
        self._placement.expire()
        reports = self._reports()
        now = self._clock()
        splits = self._planner.plan(now, [r for rep in reports for r in rep.ranges])
        split_ids = {d.range_id for d in splits}
        merges = [d for d in self._planner.plan_merges(now, [rep.ranges for rep in reports])
                  if not {d.left_id, d.right_id} & split_ids]
        for d in splits:
            log.info("placement: splitting range %d by %s (%d bytes, %.0f ops/s)",
                     d.range_id, d.reason, d.size_bytes, d.qps)
            try:
                await self._split(d.range_id)
                self.splits_done += 1
            except AdminError as e:
                log.info("placement: split of range %d not done: %s", d.range_id, e)
        for m in merges:
            log.info("placement: merging cold ranges %d and %d (%d bytes)",
                     m.left_id, m.right_id, m.size_bytes)
            try:
                await self._merge(m.left_id)
                self.merges_done += 1
            except AdminError as e:
                log.info("placement: merge of range %d not done: %s", m.left_id, e)
        moves: list[LeaderMove] = []
        transfer = self._transfer
        if self._balancer is not None and transfer is not None:
            touched = split_ids | {i for m in merges for i in (m.left_id, m.right_id)}
            ranges = [r for rep in reports for r in rep.ranges
                      if r.desc.range_id not in touched]
            moves = self._balancer.plan(now, ranges, self._planner.rates())
            for mv in moves:
                log.info("placement: moving the leadership of range %d to node %d",
                         mv.range_id, mv.target)
                try:
                    await transfer(mv.range_id, mv.target)
                    self.transfers_done += 1
                except AdminError as e:
                    log.info("placement: leadership of range %d not moved: %s",
                             mv.range_id, e)
        return [*splits, *merges, *moves]
