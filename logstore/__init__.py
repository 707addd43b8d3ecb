"""Pluggable raft-log stores behind one ``LogStore`` protocol.

Open one with ``open_log_store(backend, path, **options)``; backends are
``segmented`` (the default), ``sqlite`` and ``memory``, plus ``rocksdb`` when the
optional ``rocksdict`` wheel is installed. Everything not named
in ``__all__`` is private to the package.
"""

from logstore.errors import (
    Closed,
    Compacted,
    Corruption,
    InvalidArgument,
    LogStoreError,
    Unavailable,
)
from logstore.factory import DEFAULT_BACKEND, available_backends, open_log_store
from logstore.protocol import (
    HardState,
    LogEntry,
    LogStore,
    PurgeResult,
    SnapshotMeta,
    WriteBatch,
)

__all__ = [
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
