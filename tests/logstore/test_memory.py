"""``MemoryLogStore`` specifics (its protocol behaviour is in test_conformance)."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from logstore import HardState, InvalidArgument, LogEntry, WriteBatch
from logstore.memory import MemoryLogStore

pytestmark = pytest.mark.timeout(30)


def test_takes_no_options() -> None:
    with pytest.raises(InvalidArgument, match="takes no options"):
        MemoryLogStore(None, sync=True)


def test_accepts_the_engines_own_tuple_types() -> None:
    """The engine passes its own NamedTuples (same field order), not ours."""
    class Entry(NamedTuple):
        term: int
        index: int  # type: ignore[assignment]
        type: int = 0
        data: bytes = b""

    class EngineHardState(NamedTuple):
        term: int = 0
        vote: int = 0
        commit: int = 0

    store = MemoryLogStore()
    b = WriteBatch()
    b.append(4, [Entry(1, 1, 0, b"a"), Entry(1, 2, 0, b"b")])  # type: ignore[list-item]
    b.set_hard_state(4, EngineHardState(1, 2, 1))  # type: ignore[arg-type]
    store.write(b)
    assert store.entries(4, 1, 3) == [LogEntry(1, 1, 0, b"a"), LogEntry(1, 2, 0, b"b")]
    assert store.hard_state(4) == HardState(1, 2, 1)


def test_compaction_releases_entries() -> None:
    store = MemoryLogStore()
    b = WriteBatch()
    b.append(1, [LogEntry(1, i, 0, b"x" * 10) for i in range(1, 1001)])
    b.compact(1, 990)
    store.write(b)
    assert len(store._ranges[1].ents) == 11  # the dummy + 10 live entries
