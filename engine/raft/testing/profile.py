"""What a simulated run exercises: options chosen by the test, and the fault
profile a seed draws from them.

Theory of operation
-------------------
``SimOptions`` say which features a run may use (membership changes,
snapshots, crashes, partitions, a lossy network). ``FaultProfile.draw``
turns them and the seed into concrete rates and raft parameters, so
different seeds explore calm and hostile networks, small and large
message budgets, pre-vote and check-quorum on and off. Rates are per step
(one step = one message delivered or one clock tick, plus at most one
extra action).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from engine.raft.testing.network import NetworkFaults


@dataclass(slots=True)
class SimOptions:
    """What a run may exercise; the seed decides how hard."""

    seed: int
    steps: int = 2000
    voters: int = 3
    #: Node ids beyond the initial voters that membership changes may add.
    spares: int = 2
    membership: bool = True
    snapshots: bool = True
    crashes: bool = True
    partitions: bool = True
    lossy_network: bool = True
    reads: bool = True
    #: Serve reads from the leader lease (``ReadOnlyOption.LEASE_BASED``). Forces
    #: check-quorum on and turns crashes and clock skew off: a lease assumes
    #: bounded drift and followers that remember their leader.
    lease_reads: bool = False
    #: Heal everything and check liveness at the end of the run.
    check_liveness: bool = True


@dataclass(slots=True)
class RaftParams:
    """The ``Config`` fields a seed varies (per node id and incarnation the
    simulator adds the id, rng seed and applied index)."""

    election_ticks: int = 10
    heartbeat_ticks: int = 1
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    max_inflight_bytes: int = 0
    max_committed_size_per_ready: int = 1 << 24
    max_uncommitted_size: int = 0
    pre_vote: bool = True
    check_quorum: bool = True
    lease_reads: bool = False
    disable_proposal_forwarding: bool = False


@dataclass(slots=True)
class FaultProfile:
    """Per-step probabilities of the simulator's actions for one seed."""

    network: NetworkFaults
    raft: RaftParams
    #: Probability that a step with deliverable messages ticks the clock instead.
    tick: float
    propose: float
    conf_change: float
    compact: float
    crash: float
    #: Of crashes, the share that happens inside a Ready (after sending).
    crash_in_ready: float
    partition: float
    #: Probability that a live node misses a tick (clock drift between nodes).
    tick_skew: float
    #: Probability that ``Storage.snapshot()`` says "temporarily unavailable".
    snapshot_unavailable: float
    #: Probability that a Ready is persisted asynchronously: its messages go out,
    #: the node keeps being stepped, and it is persisted and advanced at the
    #: next tick (``RawNode`` allows inputs between ``ready()`` and ``advance()``).
    async_ready: float
    campaign: float
    transfer: float
    read: float

    @staticmethod
    def quiet(raft: RaftParams | None = None) -> FaultProfile:
        """A perfect network and no random actions: for scenario tests that
        drive the simulator by hand (invariants are still checked)."""
        return FaultProfile(
            network=NetworkFaults(), raft=raft or RaftParams(), tick=1.0, propose=0.0,
            conf_change=0.0, compact=0.0, crash=0.0, crash_in_ready=0.0, partition=0.0,
            tick_skew=0.0, snapshot_unavailable=0.0, async_ready=0.0, campaign=0.0,
            transfer=0.0, read=0.0,
        )

    @staticmethod
    def draw(rng: random.Random, opts: SimOptions) -> FaultProfile:
        lossy = opts.lossy_network
        network = NetworkFaults(
            drop=rng.choice((0.0, 0.01, 0.05, 0.15)) if lossy else 0.0,
            duplicate=rng.choice((0.0, 0.02, 0.1)) if lossy else 0.0,
            reorder=rng.random() < 0.5 if lossy else False,
            max_delay=rng.choice((0, 0, 1, 3)) if lossy else 0,
        )
        raft = RaftParams(
            heartbeat_ticks=rng.choice((1, 2, 3)),
            max_size_per_msg=rng.choice((1 << 20, 64)),
            max_inflight_msgs=rng.choice((256, 4, 1)),
            max_inflight_bytes=rng.choice((0, 0, 300)),
            max_committed_size_per_ready=rng.choice((1 << 24, 64)),
            max_uncommitted_size=rng.choice((0, 0, 4096)),
            pre_vote=rng.random() < 0.8,
            check_quorum=rng.random() < 0.8 or opts.lease_reads,
            lease_reads=opts.lease_reads,
            disable_proposal_forwarding=rng.random() < 0.2,
        )
        lease = opts.lease_reads
        return FaultProfile(
            network=network,
            raft=raft,
            tick=rng.choice((0.1, 0.2, 0.3)),
            propose=rng.choice((0.01, 0.03, 0.06)),
            conf_change=rng.choice((0.002, 0.01)) if opts.membership else 0.0,
            compact=rng.choice((0.005, 0.02)) if opts.snapshots else 0.0,
            crash=rng.choice((0.0, 0.001, 0.003)) if opts.crashes and not lease else 0.0,
            crash_in_ready=0.5,
            partition=rng.choice((0.0, 0.002, 0.005)) if opts.partitions else 0.0,
            tick_skew=0.0 if lease else rng.choice((0.0, 0.0, 0.1, 0.3)),
            snapshot_unavailable=rng.choice((0.0, 0.0, 0.3)) if opts.snapshots else 0.0,
            async_ready=rng.choice((0.0, 0.0, 0.3, 0.8)),
            campaign=0.001,
            transfer=0.001,
            read=(0.05 if lease else 0.01) if opts.reads else 0.0,
        )
