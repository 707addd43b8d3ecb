"""A complete sans-IO Raft (one group), in the spirit of etcd's ``RawNode``.

Build a ``RawNode`` from a ``Config`` and a read-only ``Storage`` view, feed it
ticks, messages and proposals, and act on the ``Ready`` values it emits (see
``rawnode`` for the loop and ``Ready`` for the ordering rules). Nothing in this
package does IO, reads a clock, or uses global randomness.
"""

from engine.raft.confchange import ConfChangeError
from engine.raft.confchange_codec import (
    ConfChangeDecodeError,
    decode_conf_change,
    encode_conf_change,
)
from engine.raft.config import Config, InvalidConfig, ReadOnlyOption
from engine.raft.errors import (
    Compacted,
    ProposalDropped,
    RaftError,
    SnapshotOutOfDate,
    SnapshotTemporarilyUnavailable,
    StorageError,
    Unavailable,
)
from engine.raft.rawnode import RawNode, Ready, Status
from engine.raft.storage import MemoryStorage, Storage
from engine.raft.tracker import ProgressState
from engine.raft.types import (
    CAMPAIGN_TRANSFER,
    EMPTY_HARD_STATE,
    EMPTY_SNAPSHOT,
    NONE,
    ConfChange,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Snapshot,
    SnapshotMetadata,
    SoftState,
    StateRole,
    entry_size,
)

__all__ = [
    "CAMPAIGN_TRANSFER",
    "EMPTY_HARD_STATE",
    "EMPTY_SNAPSHOT",
    "NONE",
    "Compacted",
    "ConfChange",
    "ConfChangeDecodeError",
    "ConfChangeError",
    "ConfChangeSingle",
    "ConfChangeTransition",
    "ConfChangeType",
    "ConfState",
    "Config",
    "Entry",
    "EntryType",
    "HardState",
    "InvalidConfig",
    "MemoryStorage",
    "Message",
    "MessageType",
    "ProgressState",
    "ProposalDropped",
    "RaftError",
    "RawNode",
    "ReadOnlyOption",
    "ReadState",
    "Ready",
    "Snapshot",
    "SnapshotMetadata",
    "SnapshotOutOfDate",
    "SnapshotTemporarilyUnavailable",
    "SoftState",
    "StateRole",
    "Status",
    "Storage",
    "StorageError",
    "Unavailable",
    "decode_conf_change",
    "encode_conf_change",
    "entry_size",
]
