"""The ``LogStore`` protocol: one store holds the raft logs of many ranges.

Theory of operation
-------------------
A worker hosts thousands of ranges; each loop it gathers every range's new
entries, hard states, snapshot records and compactions into one
``WriteBatch`` and writes it with one call: one record on disk, one fsync
(group commit). Backends differ in how they lay that out; they all honour
the same rules:

- **Atomic batches.** After a crash, every batch is either wholly visible
  or not at all.
- **Durable order.** Batches become durable in submission order; after a
  crash the store holds a prefix of the submitted batches that includes at
  least every batch whose durability was reported.
- **Read your writes.** A submitted batch is visible to readers as soon as
  ``submit``/``write`` returns, before it is durable: the raft layer only
  acts on durability through the reported completion.
- **Operations apply in batch order.** Within a batch, operations on one
  range apply in the order they were added.

Per-range semantics (the same as etcd's ``MemoryStorage``, kept in a store):

- ``append(range, entries)``: entries are contiguous and increasing;
  ``entries[0].index`` may be at or below the current last index, in which
  case the conflicting suffix from ``entries[0].index`` on is replaced.
  Entries at or below the compaction point are ignored. A gap (first index
  above last index + 1) is an ``InvalidArgument``.
- ``compact(range, index)``: drop entries ``<= index``; the term of
  ``index`` stays answerable (``term(first_index - 1)``). Compacting at or
  below the current point is a no-op; beyond the last index is an error.
- ``set_snapshot(range, meta)``: record that a snapshot at
  ``meta.index``/``meta.term`` is installed; if the log holds
  ``(meta.index, meta.term)`` the entries up to it are dropped and the rest
  kept, otherwise the whole log is dropped. Afterwards ``first_index ==
  meta.index + 1`` and ``term(meta.index) == meta.term``. ``meta.data`` is
  opaque to the store (the engine keeps the membership in it).
- ``remove_range(range)``: forget everything of the range.
- A range that was never written has ``first_index == 1``,
  ``last_index == 0``, ``term(0) == 0``, no hard state and no snapshot.

Entries, hard states and snapshot metadata are ``NamedTuple``s with the same
field order as the raft core's ``Entry``/``HardState`` (this package imports
nothing from ``engine``): the engine's adapter passes them through without
copying.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from enum import IntEnum
from typing import NamedTuple, Protocol


class LogEntry(NamedTuple):
    """Same layout as ``engine.raft.types.Entry``."""

    term: int
    index: int  # type: ignore[assignment]  # shadows tuple.index by design
    type: int = 0
    data: bytes = b""


class HardState(NamedTuple):
    """Same layout as ``engine.raft.types.HardState``."""

    term: int = 0
    vote: int = 0
    commit: int = 0


class SnapshotMeta(NamedTuple):
    """A snapshot's position; ``data`` is opaque (e.g. the encoded membership)."""

    index: int  # type: ignore[assignment]  # shadows tuple.index by design
    term: int
    data: bytes = b""


class OpKind(IntEnum):
    APPEND = 1
    HARD_STATE = 2
    SNAPSHOT = 3
    COMPACT = 4
    REMOVE_RANGE = 5


class WriteBatch:
    """An ordered list of per-range operations, written atomically.

    ``ops`` holds ``(kind, range_id, payload)`` triples; payload is a
    ``list[LogEntry]`` (APPEND), ``HardState``, ``SnapshotMeta``, an ``int``
    index (COMPACT) or ``None`` (REMOVE_RANGE). Building a batch does no
    validation beyond types: the store validates on write and rejects the
    whole batch with ``InvalidArgument`` before changing anything.
    """

    __slots__ = ("ops",)

    def __init__(self) -> None:
        self.ops: list[tuple[OpKind, int, object]] = []

    def append(self, range_id: int, entries: Sequence[LogEntry]) -> None:
        if entries:
            self.ops.append((OpKind.APPEND, range_id, list(entries)))

    def set_hard_state(self, range_id: int, hs: HardState) -> None:
        self.ops.append((OpKind.HARD_STATE, range_id, hs))

    def set_snapshot(self, range_id: int, meta: SnapshotMeta) -> None:
        self.ops.append((OpKind.SNAPSHOT, range_id, meta))

    def compact(self, range_id: int, index: int) -> None:
        self.ops.append((OpKind.COMPACT, range_id, index))

    def remove_range(self, range_id: int) -> None:
        self.ops.append((OpKind.REMOVE_RANGE, range_id, None))

    def __len__(self) -> int:
        return len(self.ops)

    def __bool__(self) -> bool:
        return bool(self.ops)


class PurgeResult(NamedTuple):
    """What a purge did and which ranges hold it back.

    ``lagging_ranges``: ranges whose oldest live entry pins a segment that
    would otherwise be deleted; the caller should snapshot and compact them.
    ``rewritten_ranges``: ranges whose live entries the store copied forward
    (past the configured threshold) so the old segment could go.
    """

    removed_files: int = 0
    removed_bytes: int = 0
    lagging_ranges: tuple[int, ...] = ()
    rewritten_ranges: tuple[int, ...] = ()


class LogStore(Protocol):
    """The contract every backend implements (segmented, sqlite, memory)."""

    def write(self, batch: WriteBatch, sync: bool = True) -> None:
        """Apply ``batch``; returns once it is durable (when ``sync``)."""
        ...

    def submit(self, batch: WriteBatch) -> Future[None]:
        """Apply ``batch`` now (visible to readers on return) and make it
        durable in the background; the future completes when it is durable
        (or fails with the IO error). Lets the caller keep working while the
        fsync runs."""
        ...

    def entries(
        self, range_id: int, lo: int, hi: int, max_bytes: int | None = None
    ) -> list[LogEntry]:
        """Entries in ``[lo, hi)``; at least one if any is in range even past
        ``max_bytes``. ``Compacted`` if ``lo < first_index``, ``Unavailable``
        if ``hi > last_index + 1``."""
        ...

    def term(self, range_id: int, index: int) -> int:
        """Term at ``index`` for ``first_index - 1 <= index <= last_index``."""
        ...

    def first_index(self, range_id: int) -> int: ...

    def last_index(self, range_id: int) -> int: ...

    def hard_state(self, range_id: int) -> HardState | None: ...

    def snapshot_meta(self, range_id: int) -> SnapshotMeta | None: ...

    def range_ids(self) -> Iterable[int]:
        """Every range with any state in the store (for recovery)."""
        ...

    def purge(self) -> PurgeResult:
        """Reclaim space held by compacted entries (a no-op where not applicable)."""
        ...

    def sync(self) -> None:
        """Wait until everything submitted so far is durable."""
        ...

    def close(self) -> None:
        """Flush, fsync and release files. The store is unusable afterwards."""
        ...
