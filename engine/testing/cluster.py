"""``Cluster``: several Stores on a seeded in-memory network with virtual time.

Theory of operation
-------------------
Each node is one ``Store`` over its own log store and snapshot store (memory
or durable backends). Time is virtual: ``tick()`` advances every live store's
clock by one tick; ``settle()`` runs rounds (every live store ``process``es,
its outgoing batches go onto the network) until nothing moves. The network
delivers a batch after a seeded random delay of 0..``max_delay`` rounds
(so batches can reorder), drops it with probability ``drop_rate``, and never
delivers across a partition or to a crashed node. ``crash(n)`` throws node
``n``'s Store away (keeping its durable state: with the memory backends
"durable" means "written"; with a durable log backend the log store is
closed and reopened and snapshots live in a ``DirSnapshotStore``),
``restart(n)`` rebuilds it from that state.

Everything is driven by one ``random.Random(seed)``: a run is reproducible
from its seed, which failing tests print.

Client completions are collected per node in ``results`` (request id ->
``Completion``); ``clock()`` is a float suitable for the linearizability
recorder (it grows with every round).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from engine.kv import KVStateMachine
from engine.outbox import NodeBatch
from engine.proposal import Completion
from engine.range_desc import RangeDescriptor
from engine.snapshot_store import DirSnapshotStore, MemorySnapshotStore, SnapshotStore
from engine.statemachine import StateMachine
from engine.store import Store
from engine.store_config import StoreConfig
from logstore.factory import open_log_store
from logstore.protocol import LogStore


def kv_factory(desc: RangeDescriptor) -> StateMachine:
    return KVStateMachine(desc.start_key, desc.end_key)


def even_ranges(n: int, nodes: tuple[int, ...], width: int = 8) -> list[RangeDescriptor]:
    """``n`` ranges over the key space, split at ``b"k%0{width}d" % i`` boundaries:
    range ``i + 1`` holds keys from ``k<i>`` (the first one from the empty key)."""
    out = []
    for i in range(n):
        start = b"" if i == 0 else b"k%0*d" % (width, i)
        end = b"" if i == n - 1 else b"k%0*d" % (width, i + 1)
        out.append(RangeDescriptor(range_id=i + 1, start_key=start, end_key=end,
                                   voters=nodes))
    return out


def key_for(range_index: int, suffix: bytes, width: int = 8) -> bytes:
    """A key inside range ``range_index + 1`` of ``even_ranges``."""
    return b"k%0*d/" % (width, range_index) + suffix


@dataclass(slots=True)
class _InFlight:
    due: int
    seq: int
    to: int
    batch: NodeBatch


class Cluster:
    """``nodes`` Stores joined by a faulty in-memory network (see the module docstring)."""

    def __init__(
        self, nodes: int = 3, *, seed: int = 0, cfg: StoreConfig | None = None,
        backend: str = "memory", path: str | None = None,
        sm_factory: Callable[[RangeDescriptor], StateMachine] = kv_factory,
        max_delay: int = 0, drop_rate: float = 0.0, dir_snapshots: bool | None = None,
        overlap: bool = False,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.cfg = cfg or StoreConfig(seed=seed)
        self.node_ids = tuple(range(1, nodes + 1))
        self.backend = backend
        self._path = path
        #: Durable state-machine images in a DirSnapshotStore (default: with a durable
        #: log backend); off, they stay in memory (benchmarks of the write path).
        self._dir_snapshots = backend != "memory" if dir_snapshots is None else dir_snapshots
        self._sm_factory = sm_factory
        self.max_delay = max_delay
        self.drop_rate = drop_rate
        #: Drive stores with split rounds (``begin_round``/``step_arrivals``/
        #: ``finish_round``): deliveries are stepped while the writes are in flight.
        self.overlap = overlap
        self.logs: dict[int, LogStore] = {}
        self.snapshots: dict[int, SnapshotStore] = {}
        self.stores: dict[int, Store] = {}
        for n in self.node_ids:
            self.logs[n] = self._open_log(n)
            self.snapshots[n] = self._open_snapshots(n)
            self.stores[n] = self._new_store(n)
        #: Pairs of nodes that cannot talk (both directions).
        self.cut: set[frozenset[int]] = set()
        self._net: list[_InFlight] = []
        self._seq = 0
        self.round_no = 0
        self.messages_delivered = 0
        self.results: dict[int, dict[int, Completion]] = {n: {} for n in self.node_ids}

    def _open_log(self, n: int) -> LogStore:
        if self.backend == "memory":
            return open_log_store("memory")
        assert self._path is not None, "durable backends need a path"
        return open_log_store(self.backend, f"{self._path}/n{n}")

    def _open_snapshots(self, n: int) -> SnapshotStore:
        if not self._dir_snapshots:
            return MemorySnapshotStore()
        return DirSnapshotStore(f"{self._path}/n{n}/snapshots")

    def _new_store(self, n: int) -> Store:
        return Store(n, self.logs[n], self.snapshots[n], self._sm_factory, cfg=self.cfg)

    # -- setup and faults ---------------------------------------------------------------

    def bootstrap(self, descs: Iterable[RangeDescriptor]) -> None:
        descs = list(descs)
        for s in self.stores.values():
            s.bootstrap(descs)

    def crash(self, n: int) -> None:
        """Lose node ``n``'s Store (pending requests are forgotten, not answered)."""
        del self.stores[n]
        if self.backend != "memory":
            self.logs[n].close()

    def restart(self, n: int) -> None:
        assert n not in self.stores
        if self.backend != "memory":
            self.logs[n] = self._open_log(n)
        if self._dir_snapshots:
            self.snapshots[n] = self._open_snapshots(n)
        self.stores[n] = self._new_store(n)

    def partition(self, a: int, b: int) -> None:
        self.cut.add(frozenset((a, b)))

    def heal(self) -> None:
        self.cut.clear()

    def clock(self) -> float:
        return float(self.round_no)

    # -- driving -------------------------------------------------------------------------

    def tick(self, n: int = 1) -> None:
        for s in self.stores.values():
            s.tick(n)

    def round(self) -> bool:
        """One round on every live store, then deliver what is due. Returns whether
        anything happened (a batch sent or delivered, or a store has more work)."""
        self.round_no += 1
        busy = False
        stores = list(self.stores.items())
        if self.overlap:
            # Split rounds: what is due arrives and is stepped while every store's
            # write is in flight (between ready() and advance()).
            in_flight = [(n, s, s.begin_round()) for n, s in stores]
            busy |= self._deliver_due()
            for _, s, _ in in_flight:
                s.step_arrivals()
            outs = [(n, s.finish_round(rnd)) for n, s, rnd in in_flight]
        else:
            outs = [(n, s.process()) for n, s in stores]
        for n, out in outs:
            busy |= out.more
            for c in out.completions:
                self.results[n][c.request_id] = c
            for to, batch in out.outgoing.items():
                busy = True
                self._send(n, to, batch)
        if not self.overlap:
            busy |= self._deliver_due()
        return busy or bool(self._net)

    def _send(self, frm: int, to: int, batch: NodeBatch) -> None:
        if frozenset((frm, to)) in self.cut or to not in self.stores:
            return
        if self.drop_rate and self.rng.random() < self.drop_rate:
            return
        delay = self.rng.randint(0, self.max_delay) if self.max_delay else 0
        self._seq += 1
        self._net.append(_InFlight(self.round_no + delay, self._seq, to, batch))

    def _deliver_due(self) -> bool:
        due = [f for f in self._net if f.due <= self.round_no]
        if not due:
            return False
        self._net = [f for f in self._net if f.due > self.round_no]
        for f in sorted(due, key=lambda f: (f.due, f.seq)):
            s = self.stores.get(f.to)
            if s is not None:
                s.deliver(f.batch)
                self.messages_delivered += f.batch.message_count()
        return True

    def settle(self, max_rounds: int = 1000) -> int:
        """Run rounds until nothing moves (or ``max_rounds``); returns rounds run."""
        for i in range(max_rounds):
            if not self.round():
                return i + 1
        return max_rounds

    def run(self, ticks: int, rounds_per_tick: int = 3) -> None:
        """``ticks`` ticks, each followed by up to ``rounds_per_tick`` rounds."""
        for _ in range(ticks):
            self.tick()
            for _ in range(rounds_per_tick):
                if not self.round():
                    break

    # -- clients ---------------------------------------------------------------------------

    def leader_of(self, range_id: int) -> int | None:
        """The node whose replica of ``range_id`` is leader at the highest term."""
        best: tuple[int, int] | None = None
        for n, s in self.stores.items():
            rep = s.replica(range_id)
            if rep is not None and rep.is_leader and (best is None or rep.raw.term > best[0]):
                best = (rep.raw.term, n)
        return None if best is None else best[1]

    def wait_for(self, node: int, request_id: int, max_ticks: int = 200) -> Completion | None:
        """Drive the cluster until ``node`` answered ``request_id`` (None: it did not)."""
        for _ in range(max_ticks):
            for _ in range(5):
                got = self.results[node].pop(request_id, None)
                if got is not None:
                    return got
                if not self.round():
                    break
            got = self.results[node].pop(request_id, None)
            if got is not None:
                return got
            if node not in self.stores:
                return None
            self.tick()
        return None

    def elect_all(self, max_ticks: int = 100) -> None:
        """Tick until every range has a leader."""
        ranges = {rid for s in self.stores.values() for rid in s.range_ids()}
        for _ in range(max_ticks):
            self.settle()
            if all(self.leader_of(r) is not None for r in ranges):
                return
            self.tick()
        missing = [r for r in ranges if self.leader_of(r) is None]
        raise AssertionError(f"no leader for ranges {missing[:10]} (seed {self.seed})")
