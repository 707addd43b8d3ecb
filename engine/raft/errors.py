"""The raft core's errors: one root, specific subclasses that say what broke.

Broken invariants are assertions, not errors: these are the outcomes a
caller must handle (a dropped proposal, a compacted or not-yet-available
log position).
"""

from __future__ import annotations


class RaftError(Exception):
    """Root of every error the raft core raises."""


class ProposalDropped(RaftError):
    """A proposal was not appended; ``reason`` says why (no leader, transfer in
    progress, uncommitted-size limit, pending conf change, not a member).
    Nothing was appended: the caller may retry."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StorageError(RaftError):
    """Root of the errors a ``Storage`` raises."""


class Compacted(StorageError):
    """The requested index is at or below the storage's compaction point."""


class Unavailable(StorageError):
    """The requested index is above the storage's last index."""


class SnapshotTemporarilyUnavailable(StorageError):
    """The snapshot is being built; the leader retries later."""


class SnapshotOutOfDate(StorageError):
    """A snapshot older than the current one was offered to storage."""
