"""Mirror value types of the raft core, so ``transport`` can decode without ``engine``.

Why mirrors
-----------
``transport`` must not import ``engine`` (ARCHITECTURE.md), yet the codec
builds raft values when it decodes. The codec is therefore parametrised by
the constructors it calls (``RaftTypes``); the composition root passes the
real ``engine.raft.types`` classes. These mirrors are the default, used by
``transport``'s own tests, fuzzing and benchmarks.

Rule: the field names and order here equal ``engine.raft.types`` exactly —
the decoder calls the constructors positionally. A test under
``tests/transport/`` compares the layouts and fails when either side drifts.
"""

from __future__ import annotations

from typing import NamedTuple


class Entry(NamedTuple):
    """Mirror of ``engine.raft.types.Entry``."""

    term: int
    index: int  # type: ignore[assignment]  # shadows tuple.index, as in the original
    type: int = 0
    data: bytes = b""


class ConfState(NamedTuple):
    """Mirror of ``engine.raft.types.ConfState``."""

    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()
    voters_outgoing: tuple[int, ...] = ()
    learners_next: tuple[int, ...] = ()
    auto_leave: bool = False


class SnapshotMetadata(NamedTuple):
    """Mirror of ``engine.raft.types.SnapshotMetadata``."""

    index: int = 0  # type: ignore[assignment]  # shadows tuple.index, as in the original
    term: int = 0
    conf_state: ConfState = ConfState()


class Snapshot(NamedTuple):
    """Mirror of ``engine.raft.types.Snapshot``."""

    metadata: SnapshotMetadata = SnapshotMetadata()
    data: bytes = b""


class Message(NamedTuple):
    """Mirror of ``engine.raft.types.Message``."""

    type: int
    to: int
    frm: int
    term: int
    log_term: int = 0
    index: int = 0  # type: ignore[assignment]  # shadows tuple.index, as in the original
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""
    snapshot: Snapshot | None = None
