"""The node's routing directory: key -> range descriptor -> leader, plus bootstrap.

Theory of operation
-------------------
The directory starts from the deterministic bootstrap layout
(``bootstrap_descriptors``: every initial node computes the same list from
its config, so no coordination is needed) and is corrected by what the node
learns afterwards:

- the meta range, the cluster's source of truth for descriptors
  (``engine/meta_sync.py`` loads it at start and polls its version);
- its own workers' status reports (descriptors of the replicas they hold,
  and who leads them);
- ``MISMATCH`` answers, which carry the range's current descriptor;
- not-leader hints from TRYAGAIN answers.

A descriptor replaces the known ones it overlaps only if its generation is
higher (a split or merge bumps it), so stale news never undoes fresh news,
and news can arrive in any order and more than once. The meta range's state
machine applies the very same rule (``replace``), which is what makes
pushing a descriptor to meta idempotent and commutative.

The meta range's own descriptor is kept aside, by its well-known id
(``engine/meta_codec.py``): its key span is nominal, so it is never in the
key index (``lookup``, ``overlapping``, ``all`` and ``len`` see user ranges
only) but ``get(META_RANGE_ID)`` and the leader cache work as for any range.
"""

from __future__ import annotations

from sortedcontainers import SortedDict

from engine.config import NodeConfig
from engine.meta_codec import META_RANGE_ID
from engine.range_desc import RangeDescriptor


def initial_descriptors(config: NodeConfig) -> list[RangeDescriptor]:
    """The bootstrap layout: ``initial_ranges`` ranges, ids 1..n, split evenly on the
    first two key bytes, voters the first ``replication`` nodes of ``initial_nodes``."""
    n = config.cluster.initial_ranges
    voters = tuple(p.node_id for p in config.cluster.initial_nodes[:config.cluster.replication])
    bounds = [b""] + [(i * 65536 // n).to_bytes(2, "big") for i in range(1, n)] + [b""]
    return [RangeDescriptor(range_id=i + 1, start_key=bounds[i], end_key=bounds[i + 1],
                            voters=voters) for i in range(n)]


def meta_descriptor(config: NodeConfig) -> RangeDescriptor:
    """The meta range at bootstrap: the well-known id, a nominal span (the whole key
    space it indexes), on the same first ``replication`` initial nodes as the user
    ranges, so every initial node derives the same replica set."""
    voters = tuple(p.node_id for p in config.cluster.initial_nodes[:config.cluster.replication])
    return RangeDescriptor(range_id=META_RANGE_ID, start_key=b"", end_key=b"", voters=voters)


def bootstrap_descriptors(config: NodeConfig) -> list[RangeDescriptor]:
    """Everything a fresh cluster starts with: the meta range, then the user ranges of
    ``initial_descriptors`` (whose layout does not depend on the meta range)."""
    return [meta_descriptor(config), *initial_descriptors(config)]


class RangeDirectory:
    """Descriptors in key order, and the last known leader of each range.

    Every operation is O(log n) plus the size of its answer: a node routes for
    thousands of ranges and re-learns every one of them from each status report,
    so ``update`` of an already known descriptor must cost one dict lookup."""

    def __init__(self, descs: list[RangeDescriptor]) -> None:
        #: Invariant: start key -> descriptor, non-overlapping intervals.
        self._by_start: SortedDict = SortedDict()
        #: Invariant: range id -> the descriptor in ``_by_start`` with that id.
        self._by_id: dict[int, RangeDescriptor] = {}
        #: The meta range's descriptor (never in ``_by_start``: its span is nominal).
        self._meta: RangeDescriptor | None = None
        #: range id -> leader node id (absent: unknown).
        self._leaders: dict[int, int] = {}
        for d in descs:
            self.update(d)

    def lookup(self, key: bytes) -> RangeDescriptor | None:
        """The range holding ``key`` (None: a gap, until a descriptor fills it)."""
        i = self._by_start.bisect_right(key) - 1
        if i < 0:
            return None
        d: RangeDescriptor = self._by_start.peekitem(i)[1]
        return d if d.contains(key) else None

    def overlapping(self, start: bytes, end: bytes) -> list[RangeDescriptor]:
        """Ranges meeting ``[start, end)`` (``end`` empty: no bound), in key order."""
        first = max(self._by_start.bisect_right(start) - 1, 0)
        out: list[RangeDescriptor] = []
        for k in self._by_start.islice(first):
            if end and k >= end:
                break
            d: RangeDescriptor = self._by_start[k]
            if not d.end_key or d.end_key > start:
                out.append(d)
        return out

    def all(self) -> list[RangeDescriptor]:
        return list(self._by_start.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, range_id: int) -> RangeDescriptor | None:
        if range_id == META_RANGE_ID:
            return self._meta
        return self._by_id.get(range_id)

    def update(self, desc: RangeDescriptor) -> bool:
        """Learn ``desc``; returns whether the directory changed. It replaces the
        descriptors it overlaps only if its generation is higher than all of theirs."""
        if desc.range_id == META_RANGE_ID:
            return self._update_meta(desc)
        return self.replace(desc) is not None

    def replace(self, desc: RangeDescriptor) -> list[RangeDescriptor] | None:
        """``update`` for a user range, saying what it did: None if ``desc`` was
        refused or already known, else the descriptors it displaced (the meta state
        machine drops their change records)."""
        if self._by_id.get(desc.range_id) == desc:
            return None
        clash = self.overlapping(desc.start_key, desc.end_key)
        if any(d.generation >= desc.generation for d in clash):
            return None
        for d in clash:
            del self._by_start[d.start_key]
            if self._by_id.get(d.range_id) is d:
                del self._by_id[d.range_id]
        old = self._by_id.pop(desc.range_id, None)
        if old is not None and self._by_start.get(old.start_key) is old:
            del self._by_start[old.start_key]  # same id, moved without overlap (never by
            # split/merge, whose halves overlap the old interval) — keep ids unique anyway
            clash.append(old)
        self._by_start[desc.start_key] = desc
        self._by_id[desc.range_id] = desc
        return clash

    def _update_meta(self, desc: RangeDescriptor) -> bool:
        """Meta is never split or merged, and a replica change keeps the generation,
        so among equal generations the latest news wins (it only steers where
        requests go first; a wrong guess costs a MISMATCH or a leader hint)."""
        if desc == self._meta or (self._meta is not None
                                  and desc.generation < self._meta.generation):
            return False
        self._meta = desc
        return True

    def leader(self, range_id: int) -> int | None:
        return self._leaders.get(range_id)

    def set_leader(self, range_id: int, node: int | None) -> None:
        if node:
            self._leaders[range_id] = node
        else:
            self._leaders.pop(range_id, None)

