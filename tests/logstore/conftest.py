"""Shared fixtures for the log-store suites: one store per registered backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from logstore import HardState, LogEntry, LogStore, SnapshotMeta, open_log_store
from logstore.factory import DURABLE_BACKENDS, available_backends

BACKENDS = available_backends()
DURABLE = [b for b in BACKENDS if b in DURABLE_BACKENDS]

RangeState = tuple[int, int, int, list[LogEntry], HardState | None, SnapshotMeta | None]


class StoreHandle:
    """Opens, reopens and finally closes a store of one backend in one directory."""

    def __init__(self, backend: str, path: Path) -> None:
        self.backend = backend
        self.path = path
        self.store: LogStore = open_log_store(backend, path)

    @property
    def durable(self) -> bool:
        return self.backend in DURABLE_BACKENDS

    def reopen(self) -> LogStore:
        assert self.durable, "only durable backends can be reopened"
        self.store.close()
        self.store = open_log_store(self.backend, self.path)
        return self.store

    def close(self) -> None:
        self.store.close()


@pytest.fixture(params=BACKENDS)
def store_handle(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreHandle]:
    h = StoreHandle(request.param, tmp_path / "store")
    yield h
    h.close()


@pytest.fixture(params=DURABLE)
def durable_store_handle(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreHandle]:
    h = StoreHandle(request.param, tmp_path / "store")
    yield h
    h.close()


def range_state(store: LogStore, range_id: int) -> RangeState:
    """Everything observable about one range, for comparisons."""
    first, last = store.first_index(range_id), store.last_index(range_id)
    return (
        first,
        last,
        store.term(range_id, first - 1),
        [LogEntry(*e) for e in store.entries(range_id, first, last + 1)],
        store.hard_state(range_id),
        store.snapshot_meta(range_id),
    )


def dump(store: LogStore) -> dict[int, RangeState]:
    """Everything observable about a store."""
    return {rid: range_state(store, rid) for rid in sorted(store.range_ids())}


def ents(lo: int, hi: int, term: int = 1, size: int = 8, tag: bytes = b"") -> list[LogEntry]:
    """Entries ``lo..hi`` (inclusive) whose data names their index, term and tag."""
    out = []
    for i in range(lo, hi + 1):
        head = b"%s:%d:%d:" % (tag, i, term)
        out.append(LogEntry(term, i, 0, head + b"x" * max(0, size - len(head))))
    return out

