"""One simulated node: a ``RawNode`` over a ``MemoryStorage`` that holds
exactly what was made durable, plus the applied state machine.

Theory of operation
-------------------
The ``MemoryStorage`` *is* the node's disk. The simulator writes it only
when it persists a ``Ready`` (snapshot, entries, hard state), so a crash
(``crash()``) loses exactly what a real process loses: the ``RawNode`` with
its unstable entries and volatile state, the state machine, and any
``Ready`` taken but not yet persisted. ``start()`` (re)builds the node the
way a real one boots: the state machine from the storage's snapshot, a new
``RawNode`` over the storage with ``applied`` = the snapshot index, and the
committed entries after it are re-applied as the ``RawNode`` hands them out
again.

The state machine is the log fingerprint fold of ``chain``: its state is
``(index, term, fingerprint)`` of the last applied entry, and that triple
is the snapshot data, so installing a snapshot can be checked against the
committed log.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from engine.raft import Config, RawNode, Ready, SnapshotTemporarilyUnavailable
from engine.raft.storage import MemoryStorage
from engine.raft.testing.chain import (
    GENESIS,
    LogChain,
    decode_state,
    encode_state,
    fold,
)
from engine.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata

#: The fingerprint of the virtual bootstrap entry (index 1, term 1).
BOOTSTRAP_FP = fold(GENESIS, Entry(1, 1))
#: What every initial voter starts from (with its membership filled in).
BOOTSTRAP_SNAPSHOT = Snapshot(SnapshotMetadata(1, 1), encode_state(1, 1, BOOTSTRAP_FP))

#: Builds the raft config of node ``id`` for one incarnation with ``applied``.
ConfigFactory = Callable[[int, int, int], Config]


class SimStorage(MemoryStorage):
    """``MemoryStorage`` whose ``snapshot()`` is sometimes "still being built".

    The ``Storage`` protocol lets ``snapshot()`` raise
    ``SnapshotTemporarilyUnavailable`` (a state machine streaming a large
    image); the leader must then retry later rather than stall or fail. The
    draw uses the simulator's generator, so a run stays a pure function of
    its seed.
    """

    def __init__(self, rng: random.Random, unavailable: float) -> None:
        super().__init__()
        self._rng = rng
        #: Probability that one ``snapshot()`` call finds the snapshot not ready.
        self.unavailable = unavailable

    def snapshot(self) -> Snapshot:
        if self.unavailable and self._rng.random() < self.unavailable:
            raise SnapshotTemporarilyUnavailable("snapshot is being built")
        return super().snapshot()

    def durable_snapshot(self) -> Snapshot:
        """The stored snapshot, never refused (what a restarting node reads)."""
        return super().snapshot()


class SimNode:
    """A node of the simulated cluster."""

    __slots__ = (
        "applied_fp",
        "applied_index",
        "applied_term",
        "chain",
        "conf_state",
        "crash_in_ready",
        "id",
        "incarnation",
        "last_commit",
        "pending",
        "pending_leader",
        "raw",
        "restart_at",
        "storage",
    )

    def __init__(self, node_id: int, conf_state: ConfState, storage: SimStorage) -> None:
        """``storage`` is empty; an initial voter (``conf_state`` has voters)
        bootstraps it."""
        self.id = node_id
        # Invariant: holds exactly what was persisted through Readies.
        self.storage = storage
        # Invariant: mirrors storage's log as fingerprints, base = compaction point.
        self.chain = LogChain()
        if conf_state.voters:
            # Bootstrap like etcd's test harness: the initial membership is a
            # snapshot at (1, 1), so that a node added later (empty log) can
            # only catch up through a snapshot, which carries the membership.
            self.storage.apply_snapshot(BOOTSTRAP_SNAPSHOT._replace(
                metadata=BOOTSTRAP_SNAPSHOT.metadata._replace(conf_state=conf_state)))
            self.storage.set_hard_state(HardState(term=1, commit=1))
            self.chain.reset(1, 1, BOOTSTRAP_FP)
        # Invariant: None exactly while the node is down.
        self.raw: RawNode | None = None
        # Invariant: incremented by every restart; tags messages this node sends.
        self.incarnation = 0
        # Applied state machine. Invariant: applied_index <= durable commit.
        self.applied_index = 0
        self.applied_term = 0
        self.applied_fp = GENESIS
        # Invariant: the membership as of applied_index (what a snapshot records).
        self.conf_state = conf_state
        # Invariant: the RawNode's in-memory commit index after the last step.
        self.last_commit = 0
        # Virtual time at which a crashed node comes back (0: not scheduled).
        self.restart_at = 0
        # Crash after sending the next Ready's messages, before persisting it.
        self.crash_in_ready = False
        # A Ready taken (its early messages sent) but not yet persisted and
        # advanced: the RawNode may be stepped meanwhile. Invariant: None
        # whenever the node is down.
        self.pending: Ready | None = None
        # Whether the node was leader when ``pending`` was taken.
        self.pending_leader = False

    @property
    def alive(self) -> bool:
        return self.raw is not None

    def start(self, make_config: ConfigFactory) -> None:
        """(Re)start from durable state, as a process booting from its disk."""
        assert self.raw is None, f"node {self.id} already running"
        snap = self.storage.durable_snapshot()
        meta = snap.metadata
        if meta.index:
            self.applied_index, self.applied_term, self.applied_fp = decode_state(snap.data)
        else:
            self.applied_index, self.applied_term, self.applied_fp = 0, 0, GENESIS
        self.conf_state = meta.conf_state
        self.incarnation += 1
        self.raw = RawNode(make_config(self.id, self.incarnation, meta.index), self.storage)
        self.last_commit = self.raw.committed
        self.crash_in_ready = False
        self.pending = None

    def crash(self) -> None:
        """Lose everything volatile; the storage (disk) stays."""
        self.raw = None
        self.crash_in_ready = False
        self.pending = None

    def take_snapshot(self, keep: int) -> bool:
        """Snapshot the state machine at the applied index and compact the log up
        to ``keep`` entries before it. Returns False when there is nothing new."""
        if self.applied_index <= self.storage.durable_snapshot().metadata.index:
            return False
        data = encode_state(self.applied_index, self.applied_term, self.applied_fp)
        self.storage.create_snapshot(self.applied_index, self.conf_state, data)
        compact_to = max(self.applied_index - keep, self.chain.base)
        if compact_to > self.chain.base:
            self.storage.compact(compact_to)
            self.chain.compact(compact_to)
        return True

    def install_snapshot(self, snap: Snapshot) -> None:
        """Persist a snapshot from the leader and restore the state machine from it."""
        meta = snap.metadata
        self.storage.apply_snapshot(snap)
        index, term, fp = decode_state(snap.data)
        self.chain.reset(index, term, fp)
        self.applied_index, self.applied_term, self.applied_fp = index, term, fp
        self.conf_state = meta.conf_state
