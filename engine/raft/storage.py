"""The read-only storage view the raft core reads its stable log through, and
an in-memory implementation.

The raft core never writes storage: it asks the caller (through ``Ready``) to
persist entries, hard state and snapshots, and reads them back through this
view. ``engine`` backs the view with a ``logstore`` via an adapter; tests and
the simulator use ``MemoryStorage``.

Layout of ``MemoryStorage``: ``_ents[0]`` is a dummy entry holding the index
and term of the last compacted entry (the snapshot's), so that
``term(first_index - 1)`` answers without a special case (as in etcd).
Invariant: ``_ents[i].index == _ents[0].index + i``.
"""

from __future__ import annotations

from typing import Protocol

from engine.raft.errors import Compacted, SnapshotOutOfDate, Unavailable
from engine.raft.types import (
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMetadata,
    entry_size,
)


class Storage(Protocol):
    """What the raft core reads. Every method may raise ``StorageError`` subclasses."""

    def initial_state(self) -> tuple[HardState, ConfState]:
        """Hard state and membership as persisted (used once, at construction)."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries in ``[lo, hi)``. At least one entry is returned if any is in
        range, even past ``max_bytes``. Raises ``Compacted`` if ``lo <=``
        the compaction point, ``Unavailable`` if ``hi > last_index() + 1``."""
        ...

    def term(self, index: int) -> int:
        """Term of the entry at ``index``; valid for ``first_index()-1 ..
        last_index()``. Raises ``Compacted`` / ``Unavailable`` outside."""
        ...

    def first_index(self) -> int:
        """Index of the first entry still available (compaction point + 1)."""
        ...

    def last_index(self) -> int:
        """Index of the last stored entry (the snapshot index if the log is empty)."""
        ...

    def snapshot(self) -> Snapshot:
        """The most recent snapshot. May raise ``SnapshotTemporarilyUnavailable``."""
        ...


class MemoryStorage:
    """A ``Storage`` held in memory, written by the caller after each ``Ready``."""

    def __init__(self, conf_state: ConfState | None = None) -> None:
        self._hard_state = HardState()
        self._snapshot = Snapshot(SnapshotMetadata(0, 0, conf_state or ConfState()))
        self._ents: list[Entry] = [Entry(0, 0)]

    # -- Storage view ---------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.metadata.conf_state

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        offset = self._ents[0].index
        if lo <= offset:
            raise Compacted(f"index {lo} compacted (first is {offset + 1})")
        if hi > self.last_index() + 1:
            raise Unavailable(f"index {hi - 1} beyond last {self.last_index()}")
        ents = self._ents[lo - offset : hi - offset]
        if max_bytes is None or not ents:
            return ents
        return limit_size(ents, max_bytes)

    def term(self, index: int) -> int:
        offset = self._ents[0].index
        if index < offset:
            raise Compacted(f"index {index} compacted (first is {offset + 1})")
        if index - offset >= len(self._ents):
            raise Unavailable(f"index {index} beyond last {self.last_index()}")
        return self._ents[index - offset].term

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- Writes (the caller's side) --------------------------------------------

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    def set_hard_state(self, hs: HardState) -> None:
        self._hard_state = hs

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace everything with ``snap`` (a follower installing a leader's snapshot)."""
        if snap.metadata.index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDate(
                f"snapshot {snap.metadata.index} <= current {self._snapshot.metadata.index}"
            )
        self._snapshot = snap
        self._ents = [Entry(snap.metadata.term, snap.metadata.index)]

    def create_snapshot(
        self, index: int, conf_state: ConfState | None, data: bytes
    ) -> Snapshot:
        """Record a snapshot of the state machine as of ``index`` (which must be applied)."""
        if index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDate(f"snapshot {index} <= current {self._snapshot.metadata.index}")
        if index > self.last_index():
            raise Unavailable(f"snapshot index {index} beyond last {self.last_index()}")
        cs = conf_state if conf_state is not None else self._snapshot.metadata.conf_state
        self._snapshot = Snapshot(SnapshotMetadata(index, self.term(index), cs), data)
        return self._snapshot

    def compact(self, index: int) -> None:
        """Drop entries up to and including ``index`` (which must be <= last index)."""
        offset = self._ents[0].index
        if index <= offset:
            raise Compacted(f"index {index} already compacted (first is {offset + 1})")
        if index > self.last_index():
            raise Unavailable(f"compact {index} beyond last {self.last_index()}")
        i = index - offset
        self._ents = [Entry(self._ents[i].term, self._ents[i].index), *self._ents[i + 1 :]]

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Append ``entries``, replacing any conflicting suffix. Entries already
        compacted are ignored."""
        if not entries:
            return
        first = self.first_index()
        last_new = entries[-1].index
        if last_new < first:
            return
        if entries[0].index < first:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self._ents[0].index
        if offset > len(self._ents):
            raise Unavailable(
                f"gap: appending at {entries[0].index}, last is {self.last_index()}"
            )
        del self._ents[offset:]
        self._ents.extend(entries)


def limit_size(ents: list[Entry], max_bytes: int) -> list[Entry]:
    """The longest prefix of ``ents`` within ``max_bytes`` (never empty if ``ents`` is not)."""
    total = 0
    for i, e in enumerate(ents):
        total += entry_size(e)
        if total > max_bytes and i > 0:
            return ents[:i]
    return ents
