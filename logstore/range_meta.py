"""Per-range metadata held in memory by the database-backed stores (sqlite,
rocksdb), and the protocol's metadata reads over it, defined once.

Both stores keep every range's bounds, hard state and snapshot record in a
dict under one lock, so that metadata reads (``term`` at the compaction
point, first/last index, hard state) never touch the database, and keep the
entries themselves in the database. Only how a ``RangeMeta`` is persisted
differs (a table row vs a packed value); that stays in each backend, which
subclasses ``RangeMeta`` for it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import ClassVar

from logstore.errors import Closed, LogStoreError
from logstore.protocol import HardState, SnapshotMeta
from logstore.rules import check_term_index


class RangeMeta:
    """A range's metadata as of the last submitted batch."""

    __slots__ = ("first", "hard_state", "last", "prev_term", "snapshot")

    def __init__(self, first: int = 1, last: int = 0, prev_term: int = 0) -> None:
        # Invariant: first - 1 <= last; prev_term == term(first - 1).
        self.first = first
        self.last = last
        self.prev_term = prev_term
        self.hard_state: HardState | None = None
        self.snapshot: SnapshotMeta | None = None


#: What a range never written looks like (read-only: never stored).
NO_RANGE = RangeMeta()


class MetaReads:
    """The ``LogStore`` metadata reads, answered from ``_meta`` under ``_lock``.

    A backend provides ``_meta``, ``_lock``, ``_closed``, ``_failure``,
    ``BACKEND`` (its name, for messages) and ``base_term`` (the term of an
    entry still in the log, read from its database).
    """

    BACKEND: ClassVar[str]
    _lock: threading.Lock
    _meta: Mapping[int, RangeMeta]
    _closed: bool
    _failure: BaseException | None

    def base_term(self, range_id: int, index: int) -> int:
        raise NotImplementedError

    def _check_usable(self) -> None:
        if self._closed:
            raise Closed(f"{self.BACKEND} log store is closed")
        if self._failure is not None:
            raise LogStoreError(f"{self.BACKEND} log store failed: {self._failure}")

    def term(self, range_id: int, index: int) -> int:
        with self._lock:
            self._check_usable()
            m = self._meta.get(range_id, NO_RANGE)
            check_term_index(range_id, index, m.first, m.last)
            if index == m.first - 1:
                return m.prev_term
            return self.base_term(range_id, index)

    def first_index(self, range_id: int) -> int:
        with self._lock:
            self._check_usable()
            return self._meta.get(range_id, NO_RANGE).first

    def last_index(self, range_id: int) -> int:
        with self._lock:
            self._check_usable()
            return self._meta.get(range_id, NO_RANGE).last

    def hard_state(self, range_id: int) -> HardState | None:
        with self._lock:
            self._check_usable()
            return self._meta.get(range_id, NO_RANGE).hard_state

    def snapshot_meta(self, range_id: int) -> SnapshotMeta | None:
        with self._lock:
            self._check_usable()
            return self._meta.get(range_id, NO_RANGE).snapshot

    def range_ids(self) -> Iterable[int]:
        with self._lock:
            self._check_usable()
            return list(self._meta)
