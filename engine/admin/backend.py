"""``AdminBackend``: what the HTTP admin API needs from a node, and its answers.

The admin server (``engine/admin/server.py``) is a thin HTTP shell; the
node (or ``LocalBackend`` for a single in-process state machine) implements
this Protocol. Keeping the seam here means the server, the CLI and their
tests are real and complete before the node process exists, and the node
later plugs in without touching HTTP code.

Rules
-----
- Every method is a coroutine: a node answers by asking its workers over
  the shared-memory queues, which takes a round trip.
- Failures are the ``AdminError`` subclasses below, each mapped to one HTTP
  status by the server: ``BadRequest`` 400, ``UnknownRange`` 404,
  ``Conflict`` 409 (valid request the cluster refuses in its current shape),
  ``TryAgain`` 503 + ``Retry-After`` (nothing happened; safe to retry),
  ``Timeout`` 504 (outcome unknown). Anything else is a bug: 500, logged.
- Answers are frozen dataclasses with a ``to_json`` that makes keys safe
  for JSON (``start``/``end`` as text with ``\\xNN`` escapes for display,
  ``start_hex``/``end_hex`` for an exact round trip).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = [
    "AdminBackend",
    "AdminError",
    "BadRequest",
    "Conflict",
    "NodeStatus",
    "RangeInfo",
    "Timeout",
    "TryAgain",
    "UnknownRange",
    "key_text",
]


class AdminError(Exception):
    """Root of the errors an ``AdminBackend`` raises on purpose."""


class BadRequest(AdminError):
    """The request itself is wrong (a split key outside the range, a bad node id)."""


class UnknownRange(AdminError):
    """No range with this id is known to the node."""

    def __init__(self, range_id: int) -> None:
        super().__init__(f"unknown range r{range_id}")
        self.range_id = range_id


class Conflict(AdminError):
    """A well-formed request the cluster refuses in its current state
    (merge with different replica sets, last range has no right neighbour,
    a backend that cannot move replicas)."""


class TryAgain(AdminError):
    """Not now (no leader yet, range moving); nothing was changed."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Timeout(AdminError):
    """No answer in time; the operation may or may not have happened."""


def key_text(key: bytes) -> str:
    """A display form of a key: UTF-8 where it is, ``\\xNN`` where it is not."""
    return key.decode("utf-8", "backslashreplace")


@dataclass(frozen=True, slots=True, kw_only=True)
class RangeInfo:
    """One range as this node sees it."""

    range_id: int
    start_key: bytes
    end_key: bytes  # b"" = +inf
    generation: int
    voters: tuple[int, ...]
    learners: tuple[int, ...] = ()
    #: The leader's node id as far as this node knows; None: no leader known.
    leader: int | None = None
    #: Raft term and applied index; None for a backend without raft.
    term: int | None = None
    applied_index: int | None = None
    quiesced: bool = False
    keys: int = 0
    size_bytes: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "range_id": self.range_id,
            "start": key_text(self.start_key),
            "end": key_text(self.end_key),
            "start_hex": self.start_key.hex(),
            "end_hex": self.end_key.hex(),
            "generation": self.generation,
            "voters": list(self.voters),
            "learners": list(self.learners),
            "leader": self.leader,
            "term": self.term,
            "applied_index": self.applied_index,
            "quiesced": self.quiesced,
            "keys": self.keys,
            "size_bytes": self.size_bytes,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeStatus:
    """A node's summary for ``GET /status``."""

    node_id: int
    version: str
    uptime_s: float
    workers: int
    ranges: int
    leaders: int
    quiesced: int
    keys: int
    size_bytes: int

    def to_json(self) -> dict[str, object]:
        return {
            "node_id": self.node_id,
            "version": self.version,
            "uptime_s": round(self.uptime_s, 3),
            "workers": self.workers,
            "ranges": self.ranges,
            "leaders": self.leaders,
            "quiesced": self.quiesced,
            "keys": self.keys,
            "size_bytes": self.size_bytes,
        }


class AdminBackend(Protocol):
    """What a node offers the admin API (see the module docstring for errors)."""

    async def status(self) -> NodeStatus: ...

    async def ranges(self) -> list[RangeInfo]:
        """Every range this node knows, in key order."""
        ...

    async def split(self, range_id: int, key: bytes | None) -> tuple[RangeInfo, RangeInfo]:
        """Split at ``key`` (None: the range picks its middle key); the two halves."""
        ...

    async def merge(self, range_id: int) -> RangeInfo:
        """Merge ``range_id`` with its right-hand neighbour; the merged range."""
        ...

    async def transfer_leader(self, range_id: int, target: int) -> RangeInfo:
        """Move the range's leadership to node ``target``."""
        ...

    async def change_replicas(
        self, range_id: int, *, add: int | None = None, remove: int | None = None
    ) -> RangeInfo:
        """Add node ``add`` (learner, catch up, promote) or remove node ``remove``."""
        ...

    async def snapshot_file(self, range_id: int) -> Path:
        """The newest durable image file of this node's replica of ``range_id`` (the
        ``engine.snapshot_store`` file format), for an operator's backup or offline
        inspection. ``UnknownRange`` if this node holds none; ``Conflict`` if the
        backend keeps no files."""
        ...

    async def kv_get(self, key: bytes) -> bytes | None: ...

    async def kv_put(self, key: bytes, value: bytes) -> None: ...

    async def kv_delete(self, key: bytes) -> bool:
        """Whether the key existed."""
        ...
