"""multiraft's engine: many raft groups per process over a range-sharded key space.

The public surface for library users: a ``Store`` hosting many range replicas
over one ``LogStore``, the ``StateMachine`` protocol to plug in your own data
(``KVStateMachine`` is the default), range descriptors and their errors, and
the snapshot stores. The raft core is ``engine.raft``. Everything not named
here is private.
"""

from engine.kv import KVStateMachine
from engine.proposal import Completion, Outcome
from engine.range_desc import (
    InvalidDescriptor,
    MergeRefused,
    RangeDescriptor,
    RangeError,
    RangeKeyMismatch,
    SplitRefused,
)
from engine.snapshot_store import (
    DirSnapshotStore,
    MemorySnapshotStore,
    SnapshotCorrupt,
    SnapshotStore,
)
from engine.statemachine import StateMachine
from engine.store import RoundOutput, Store, StoreStats
from engine.store_config import StoreConfig

__all__ = [
    "Completion",
    "DirSnapshotStore",
    "InvalidDescriptor",
    "KVStateMachine",
    "MemorySnapshotStore",
    "MergeRefused",
    "Outcome",
    "RangeDescriptor",
    "RangeError",
    "RangeKeyMismatch",
    "RoundOutput",
    "SnapshotCorrupt",
    "SnapshotStore",
    "SplitRefused",
    "StateMachine",
    "Store",
    "StoreConfig",
    "StoreStats",
]
