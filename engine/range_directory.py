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

from bisect import bisect_right

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
    """Descriptors in key order, and the last known leader of each range."""

    def __init__(self, descs: list[RangeDescriptor]) -> None:
        #: Invariant: sorted by start key, non-overlapping; ``_starts[i]`` is
        #: ``_descs[i].start_key``.
        self._descs: list[RangeDescriptor] = sorted(descs, key=lambda d: d.start_key)
        self._starts = [d.start_key for d in self._descs]
        #: range id -> leader node id (absent: unknown).
        self._leaders: dict[int, int] = {}

    def lookup(self, key: bytes) -> RangeDescriptor | None:
        """The range holding ``key`` (None: a gap, until a descriptor fills it)."""
        i = bisect_right(self._starts, key) - 1
        if i < 0:
            return None
        d = self._descs[i]
        return d if d.contains(key) else None

    def overlapping(self, start: bytes, end: bytes) -> list[RangeDescriptor]:
        """Ranges meeting ``[start, end)`` (``end`` empty: no bound), in key order."""
        return [d for d in self._descs
                if (not end or d.start_key < end) and (not d.end_key or d.end_key > start)]

    def all(self) -> list[RangeDescriptor]:
        return list(self._descs)

    def get(self, range_id: int) -> RangeDescriptor | None:
        for d in self._descs:
            if d.range_id == range_id:
                return d
        return None

    def update(self, desc: RangeDescriptor) -> bool:
        """Learn ``desc``; returns whether the directory changed."""
        clash = [d for d in self._descs if _overlaps(d, desc)]
        if desc in clash or any(d.generation >= desc.generation for d in clash):
            return False
        keep = [d for d in self._descs if not _overlaps(d, desc)]
        keep.append(desc)
        keep.sort(key=lambda d: d.start_key)
        self._descs = keep
        self._starts = [d.start_key for d in keep]
        return True

    def leader(self, range_id: int) -> int | None:
        return self._leaders.get(range_id)

    def set_leader(self, range_id: int, node: int | None) -> None:
        if node:
            self._leaders[range_id] = node
        else:
            self._leaders.pop(range_id, None)


def _overlaps(a: RangeDescriptor, b: RangeDescriptor) -> bool:
    return ((not a.end_key or b.start_key < a.end_key)
            and (not b.end_key or a.start_key < b.end_key))
