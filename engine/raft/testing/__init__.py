"""A deterministic simulator for the raft core (tests and benchmarks only).

``Simulator`` (a seeded random driver over a ``Cluster``) runs N
``RawNode``s over ``MemoryStorage`` in virtual time on a seeded faulty
network (drop, duplicate, reorder, delay, symmetric and one-way
partitions), with crash-restart that loses whatever was not persisted
through a ``Ready``, periodic snapshots/compaction and random membership
changes, and checks Raft's safety invariants after every step
(``invariants``) and liveness after healing. A failure is a
``SimulationFailure`` whose message holds the seed and a replay command
(``python3 -m engine.raft.testing --seed N ...``).

This package is outside the sans-IO rule (it may use ``random``); nothing in
the raft core imports it.
"""

from engine.raft.testing.cluster import Cluster, LivenessFailure, SimStats
from engine.raft.testing.invariants import InvariantChecker, InvariantViolation
from engine.raft.testing.network import NetworkFaults, SimNetwork
from engine.raft.testing.node import SimNode
from engine.raft.testing.profile import FaultProfile, RaftParams, SimOptions
from engine.raft.testing.sim import SimulationFailure, Simulator

__all__ = [
    "Cluster",
    "FaultProfile",
    "InvariantChecker",
    "InvariantViolation",
    "LivenessFailure",
    "NetworkFaults",
    "RaftParams",
    "SimNetwork",
    "SimNode",
    "SimOptions",
    "SimStats",
    "SimulationFailure",
    "Simulator",
]
