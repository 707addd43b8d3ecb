"""The deterministic Raft simulator: a seeded random driver over a ``Cluster``.

Theory of operation
-------------------
A run is a pure function of its seed: the seed draws a ``FaultProfile``
(rates and raft parameters) and then every choice. Each ``step()`` either
delivers one due message or advances virtual time by one tick (never while
the backlog of due messages exceeds a cap, which models a network's bounded
latency), then maybe performs one extra action: propose, membership change,
compaction (snapshot), crash (between steps or inside a Ready), partition
(symmetric, isolating the leader, or one-way links), campaign, leadership
transfer, or a linearizable read. The cluster checks every invariant as
the step's work happens (see ``cluster``); ``run()`` ends with the
liveness check after healing.

Any failure is re-raised as ``SimulationFailure`` carrying the seed, the
step, the last actions and a command that replays the run with a trace.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from engine.raft.testing.cluster import Cluster, SimStats
from engine.raft.testing.membership import random_change
from engine.raft.testing.profile import FaultProfile, SimOptions


class SimulationFailure(AssertionError):
    """A run broke an invariant or liveness; the message says how to replay it."""


class Simulator(Cluster):
    """One seeded run: random steps over a ``Cluster``."""

    def __init__(self, opts: SimOptions, profile: FaultProfile | None = None) -> None:
        """``profile`` overrides the one the seed would draw (scenario tests pass
        ``FaultProfile.quiet()`` and drive the cluster by hand)."""
        rng = random.Random(opts.seed)
        super().__init__(opts, profile or FaultProfile.draw(rng, opts), rng)
        self._proposal_seq = 0
        # Invariant: the clock does not advance while more messages than this are
        # due. It bounds the backlog (a network's bounded latency): without it a
        # chatty config (heartbeat every tick, 6 nodes) out-produces deliveries
        # and messages queue for hundreds of ticks.
        self._backlog_cap = 4 * (opts.voters + opts.spares)
        p = self.profile
        # The extra actions of a step: (per-step probability, action); at most
        # one fires per step.
        self._actions: tuple[tuple[float, Callable[[], None]], ...] = (
            (p.propose, self._random_proposal),
            (p.conf_change, self._random_conf_change),
            (p.compact, self._random_compaction),
            (p.crash, self._random_crash),
            (p.partition, self._random_partition),
            (p.read, self._random_read),
            (p.campaign, self._random_campaign),
            (p.transfer, self._random_transfer),
        )

    # -- running -------------------------------------------------------------------

    def run(self) -> SimStats:
        """Run ``opts.steps`` steps, then (if asked) heal and check liveness."""
        try:
            for _ in range(self.opts.steps):
                self.step()
            if self.opts.check_liveness:
                self.heal_and_check_liveness()
        except Exception as exc:
            raise self.failure(exc) from exc
        return self.stats

    def failure(self, exc: BaseException) -> SimulationFailure:
        o = self.opts
        trace = "\n  ".join(self.trace)
        return SimulationFailure(
            f"{type(exc).__name__}: {exc}\n"
            f"seed={o.seed} step={self.stats.steps} tick={self.now}\n"
            f"replay: python3 -m engine.raft.testing --seed {o.seed} --steps {o.steps} "
            f"--voters {o.voters} --spares {o.spares}{self._feature_flags()} --trace\n"
            f"last actions:\n  {trace}"
        )

    def _feature_flags(self) -> str:
        o = self.opts
        flags = [
            name for name, on in (
                ("no-membership", o.membership), ("no-snapshots", o.snapshots),
                ("no-crashes", o.crashes), ("no-partitions", o.partitions),
                ("no-lossy-network", o.lossy_network), ("no-reads", o.reads),
                ("no-liveness", o.check_liveness),
            ) if not on
        ]
        if o.lease_reads:
            flags.append("lease-reads")
        return "".join(f" --{f}" for f in flags)

    def step(self) -> None:
        """One message delivery or one tick, plus maybe one extra action."""
        rng = self.rng
        p = self.profile
        self.stats.steps += 1
        due = self.net.due_count()
        if due and (due > self._backlog_cap or rng.random() >= p.tick):
            self.deliver_one()
        else:
            self.tick()
        r = rng.random()
        for rate, action in self._actions:
            if r < rate:
                action()
                return
            r -= rate

    # -- random actions ------------------------------------------------------------

    def _random_proposal(self) -> None:
        rng = self.rng
        target = self.leader() if rng.random() < 0.8 else None
        if target is None:
            live = self.live()
            if not live:
                return
            target = rng.choice(live)
        datas = []
        for _ in range(rng.choice((1, 1, 1, 2, 5))):
            self._proposal_seq += 1
            # Mostly tiny, sometimes large enough to hit the byte budgets
            # (message size, inflight bytes, uncommitted size, Ready paging).
            pad = rng.choice((0, 0, 0, 0, 100, 1000))
            datas.append(b"p%d." % self._proposal_seq + b"x" * pad)
        self.propose(target.id, *datas)

    def _random_conf_change(self) -> None:
        leader = self.leader()
        if leader is None:
            return
        cc = random_change(self.rng, leader.conf_state, self.pool, min_voters=2)
        if cc is not None:
            self.propose_conf_change(leader.id, cc)

    def _random_compaction(self) -> None:
        live = self.live()
        if not live:
            return
        node = self.rng.choice(live)
        self.checker.check_snapshot_conf(node.id, node.applied_index, node.conf_state)
        if node.take_snapshot(keep=self.rng.choice((0, 0, 2, 10))):
            self._log(f"node {node.id} snapshots at {node.applied_index}, "
                      f"log from {node.chain.base + 1}")

    def _random_crash(self) -> None:
        live = self.live()
        if not live:
            return
        node = self.rng.choice(live)
        down = self.rng.randint(1, 3 * self.profile.raft.election_ticks)
        node.restart_at = self.now + down
        if self.rng.random() < self.profile.crash_in_ready:
            node.crash_in_ready = True  # crashes in its next Ready
        else:
            self._crash(node, "between steps")

    def _random_partition(self) -> None:
        if self.net.partitioned:
            self.net.heal()
            self._heal_at = 0
            self._log("heal partitions")
            return
        rng = self.rng
        ids = list(self.nodes)
        kind = rng.randrange(4)
        if kind == 0:
            lone = rng.choice(ids)
            self.net.partition({lone}, set(ids) - {lone})
            what = f"isolate {lone}"
        elif kind == 1:
            leader = self.leader()
            lone = leader.id if leader else rng.choice(ids)
            self.net.partition({lone}, set(ids) - {lone})
            what = f"isolate leader {lone}"
        elif kind == 2:
            side = set(rng.sample(ids, rng.randint(1, len(ids) - 1)))
            self.net.partition(side, set(ids) - side)
            what = f"split {sorted(side)} | {sorted(set(ids) - side)}"
        else:
            links = [(a, b) for a in ids for b in ids if a != b]
            cut = rng.sample(links, rng.randint(1, len(ids)))
            for a, b in cut:
                self.net.block(a, b)
            what = f"cut one-way {cut}"
        self.stats.partitions += 1
        e = self.profile.raft.election_ticks
        self._heal_at = self.now + rng.randint(e, 6 * e)
        self._log(what)

    def _random_read(self) -> None:
        live = self.live()
        if live:
            self.read(self.rng.choice(live).id)

    def _random_campaign(self) -> None:
        live = self.live()
        if not live:
            return
        node = self.rng.choice(live)
        raw = node.raw
        assert raw is not None
        self._log(f"node {node.id} campaigns")
        raw.campaign()
        self._process(node)

    def _random_transfer(self) -> None:
        leader = self.leader()
        if leader is None:
            return
        others = [v for v in leader.conf_state.voters if v != leader.id]
        if not others:
            return
        to = self.rng.choice(others)
        raw = leader.raw
        assert raw is not None
        self._log(f"leader {leader.id} transfers to {to}")
        raw.transfer_leader(to)
        self._process(leader)
