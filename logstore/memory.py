"""``MemoryLogStore``: the log-store protocol held in process memory.

It has the exact semantics of the durable backends minus durability, and it
is what the engine's tests and the simulator run on, so it is built to be
cheap: one Python list per range and no copying of entries (the objects the
caller appends are the objects it reads back).

Layout: ``_RangeLog.ents[0]`` is a dummy entry carrying the index and term of
the compaction point, so ``term(first_index - 1)`` needs no special case
(the etcd ``MemoryStorage`` trick).

``submit`` applies the batch at once and returns an already-completed future:
with nothing to make durable, "durable" is "applied". ``close`` makes every
later call raise ``Closed``, as a durable store would.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future

from logstore.errors import Closed, InvalidArgument
from logstore.protocol import HardState, LogEntry, PurgeResult, SnapshotMeta, WriteBatch
from logstore.rules import (
    Append,
    Compact,
    Remove,
    SetHardState,
    Snapshot,
    check_slice,
    check_term_index,
    limit_size,
    plan_batch,
)


class _RangeLog:
    """One range's log, hard state and snapshot record."""

    __slots__ = ("ents", "hard_state", "snapshot")

    def __init__(self) -> None:
        # Invariant: ents[i].index == ents[0].index + i; ents[0] is the dummy
        # (compaction point, its term).
        self.ents: list[LogEntry] = [LogEntry(0, 0)]
        self.hard_state: HardState | None = None
        self.snapshot: SnapshotMeta | None = None

    def drop_through(self, index: int, term: int, keep: bool) -> None:
        """Make ``(index, term)`` the compaction point, keeping later entries if ``keep``."""
        if keep:
            del self.ents[: index - self.ents[0].index]
            self.ents[0] = LogEntry(term, index)
        else:
            self.ents = [LogEntry(term, index)]


_EMPTY = _RangeLog()


class MemoryLogStore:
    """A ``LogStore`` in memory. ``path`` is accepted for a uniform factory and ignored."""

    def __init__(self, path: object = None, **options: object) -> None:
        if options:
            raise InvalidArgument(
                f"memory log store takes no options, got {', '.join(sorted(options))}"
            )
        # Invariant: every range here has some state (never the initial empty one
        # without a hard state or snapshot); absent ranges read as _EMPTY.
        self._ranges: dict[int, _RangeLog] = {}
        self._closed = False

    # -- writes -----------------------------------------------------------------

    def write(self, batch: WriteBatch, sync: bool = True) -> None:
        self._check_open()
        for op in plan_batch(batch, self):
            self._apply(op)

    def submit(self, batch: WriteBatch) -> Future[None]:
        self.write(batch)
        fut: Future[None] = Future()
        fut.set_result(None)
        return fut

    def _apply(self, op: Append | SetHardState | Snapshot | Compact | Remove) -> None:
        if isinstance(op, Remove):
            self._ranges.pop(op.range_id, None)
            return
        r = self._ranges.get(op.range_id)
        if r is None:
            r = self._ranges[op.range_id] = _RangeLog()
        if isinstance(op, Append):
            ents = r.ents
            del ents[op.entries[0].index - ents[0].index :]
            ents.extend(op.entries)
        elif isinstance(op, SetHardState):
            r.hard_state = op.hard_state
        elif isinstance(op, Snapshot):
            r.snapshot = op.meta
            r.drop_through(op.meta.index, op.meta.term, op.keep)
        else:
            r.drop_through(op.index, op.term, keep=True)

    # -- planner view (logstore.rules.BaseView) ---------------------------------

    def bounds(self, range_id: int) -> tuple[int, int, int]:
        ents = self._ranges.get(range_id, _EMPTY).ents
        return ents[0].index + 1, ents[0].index + len(ents) - 1, ents[0].term

    def base_term(self, range_id: int, index: int) -> int:
        ents = self._ranges[range_id].ents
        return ents[index - ents[0].index].term

    # -- reads ------------------------------------------------------------------

    def entries(
        self, range_id: int, lo: int, hi: int, max_bytes: int | None = None
    ) -> list[LogEntry]:
        self._check_open()
        ents = self._ranges.get(range_id, _EMPTY).ents
        offset = ents[0].index
        check_slice(range_id, lo, hi, offset + 1, offset + len(ents) - 1)
        return limit_size(ents[lo - offset : hi - offset], max_bytes)

    def term(self, range_id: int, index: int) -> int:
        self._check_open()
        ents = self._ranges.get(range_id, _EMPTY).ents
        offset = ents[0].index
        check_term_index(range_id, index, offset + 1, offset + len(ents) - 1)
        return ents[index - offset].term

    def first_index(self, range_id: int) -> int:
        self._check_open()
        return self._ranges.get(range_id, _EMPTY).ents[0].index + 1

    def last_index(self, range_id: int) -> int:
        self._check_open()
        ents = self._ranges.get(range_id, _EMPTY).ents
        return ents[0].index + len(ents) - 1

    def hard_state(self, range_id: int) -> HardState | None:
        self._check_open()
        return self._ranges.get(range_id, _EMPTY).hard_state

    def snapshot_meta(self, range_id: int) -> SnapshotMeta | None:
        self._check_open()
        return self._ranges.get(range_id, _EMPTY).snapshot

    def range_ids(self) -> Iterable[int]:
        self._check_open()
        return list(self._ranges)

    # -- lifecycle --------------------------------------------------------------

    def purge(self) -> PurgeResult:
        """Nothing to reclaim: compaction already released the entries."""
        self._check_open()
        return PurgeResult()

    def sync(self) -> None:
        self._check_open()

    def close(self) -> None:
        self._closed = True
        self._ranges = {}

    def _check_open(self) -> None:
        if self._closed:
            raise Closed("memory log store is closed")
