"""The factory and the package's public surface."""

from __future__ import annotations

from pathlib import Path

import pytest

import logstore
from logstore import InvalidArgument, LogEntry, WriteBatch, open_log_store
from logstore.factory import DURABLE_BACKENDS, available_backends
from logstore.memory import MemoryLogStore

pytestmark = pytest.mark.timeout(30)


def test_public_names_are_pinned() -> None:
    assert sorted(logstore.__all__) == sorted(
        [
            "DEFAULT_BACKEND",
            "Closed",
            "Compacted",
            "Corruption",
            "HardState",
            "InvalidArgument",
            "LogEntry",
            "LogStore",
            "LogStoreError",
            "PurgeResult",
            "SnapshotMeta",
            "Unavailable",
            "WriteBatch",
            "available_backends",
            "open_log_store",
        ]
    )
    for name in logstore.__all__:
        assert getattr(logstore, name) is not None


def test_core_backends_are_registered() -> None:
    names = available_backends()
    assert {"sqlite", "memory"} <= set(names)
    assert logstore.DEFAULT_BACKEND == "segmented"


def test_segmented_is_registered_once_present() -> None:
    """Once ``logstore/segmented`` exists it must be a backend, never skipped."""
    present = (Path(logstore.__file__).parent / "segmented" / "__init__.py").exists()
    assert ("segmented" in available_backends()) == present


def test_unknown_backend_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="unknown log store backend 'lmdb'"):
        open_log_store("lmdb", "/nonexistent")


@pytest.mark.parametrize("backend", available_backends())
def test_unknown_option_is_invalid_argument(backend: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="no_such_option"):
        open_log_store(backend, tmp_path / "s", no_such_option=1)


@pytest.mark.parametrize("backend", sorted(DURABLE_BACKENDS & set(available_backends())))
def test_durable_backend_needs_a_path(backend: str) -> None:
    with pytest.raises(InvalidArgument, match="needs a directory"):
        open_log_store(backend)


def test_memory_needs_no_path_and_returns_the_objects_it_was_given() -> None:
    store = open_log_store("memory")
    assert isinstance(store, MemoryLogStore)
    entry = LogEntry(1, 1, 0, b"payload")
    b = WriteBatch()
    b.append(1, [entry])
    fut = store.submit(b)
    assert fut.done()  # nothing to make durable
    assert store.entries(1, 1, 2)[0] is entry  # no copy on the engine's hot path
    store.close()


def test_sqlite_options_are_validated(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="positive int"):
        open_log_store("sqlite", tmp_path / "s", cache_kib=-1)
    store = open_log_store("sqlite", tmp_path / "s", cache_kib=1024, max_group=4)
    store.close()
