"""The node's routing directory: key -> range descriptor -> leader, plus bootstrap.

Theory of operation
-------------------
The directory starts from the deterministic bootstrap layout
(``initial_descriptors``: every initial node computes the same list from its
config, so no coordination is needed) and is corrected by what the node
learns afterwards:

- its own workers' status reports (descriptors of the replicas they hold,
  and who leads them);
- ``MISMATCH`` answers, which carry the range's current descriptor;
- not-leader hints from TRYAGAIN answers.

A descriptor replaces the known ones it overlaps only if its generation is
higher (a split or merge bumps it), so stale news never undoes fresh news.

Limitation (stated, not hidden): the contract's *meta range* holding the
directory is not built yet. A node learns about ranges it holds no replica
of only from MISMATCH answers, which is enough while every range lives on
the initial nodes.
"""

from __future__ import annotations

from sortedcontainers import SortedDict

from engine.config import NodeConfig
from engine.range_desc import RangeDescriptor


def initial_descriptors(config: NodeConfig) -> list[RangeDescriptor]:
    """The bootstrap layout: ``initial_ranges`` ranges, ids 1..n, split evenly on the
    first two key bytes, voters the first ``replication`` nodes of ``initial_nodes``."""
    n = config.cluster.initial_ranges
    voters = tuple(p.node_id for p in config.cluster.initial_nodes[:config.cluster.replication])
    bounds = [b""] + [(i * 65536 // n).to_bytes(2, "big") for i in range(1, n)] + [b""]
    return [RangeDescriptor(range_id=i + 1, start_key=bounds[i], end_key=bounds[i + 1],
                            voters=voters) for i in range(n)]


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
        return self._by_id.get(range_id)

    def update(self, desc: RangeDescriptor) -> bool:
        """Learn ``desc``; returns whether the directory changed. It replaces the
        descriptors it overlaps only if its generation is higher than all of theirs."""
        if self._by_id.get(desc.range_id) == desc:
            return False
        clash = self.overlapping(desc.start_key, desc.end_key)
        if any(d.generation >= desc.generation for d in clash):
            return False
        for d in clash:
            del self._by_start[d.start_key]
            if self._by_id.get(d.range_id) is d:
                del self._by_id[d.range_id]
        old = self._by_id.pop(desc.range_id, None)
        if old is not None and self._by_start.get(old.start_key) is old:
            del self._by_start[old.start_key]  # same id, moved without overlap (never by
            # split/merge, whose halves overlap the old interval) — keep ids unique anyway
        self._by_start[desc.start_key] = desc
        self._by_id[desc.range_id] = desc
        return True

    def leader(self, range_id: int) -> int | None:
        return self._leaders.get(range_id)

    def set_leader(self, range_id: int, node: int | None) -> None:
        if node:
            self._leaders[range_id] = node
        else:
            self._leaders.pop(range_id, None)

