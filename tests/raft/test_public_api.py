"""Pin the public surface of ``engine.raft`` (trio-style): a change to it must be
deliberate, because the Store, the simulator and the transport build against it."""

from __future__ import annotations

import engine.raft

EXPECTED = {
    "CAMPAIGN_TRANSFER", "EMPTY_HARD_STATE", "EMPTY_SNAPSHOT", "NONE", "Compacted",
    "ConfChange", "ConfChangeDecodeError", "ConfChangeError", "ConfChangeSingle",
    "ConfChangeTransition", "ConfChangeType", "ConfState", "Config", "Entry", "EntryType",
    "HardState", "InvalidConfig", "MemoryStorage", "Message", "MessageType",
    "ProgressState", "ProposalDropped", "RaftError", "RawNode", "ReadOnlyOption",
    "ReadState", "Ready", "Snapshot", "SnapshotMetadata", "SnapshotOutOfDate",
    "SnapshotTemporarilyUnavailable", "SoftState", "StateRole", "Status", "Storage",
    "StorageError", "Unavailable", "decode_conf_change", "encode_conf_change",
    "entry_size",
}


def test_public_names_are_pinned() -> None:
    assert set(engine.raft.__all__) == EXPECTED
    for name in EXPECTED:
        assert hasattr(engine.raft, name), name


def test_rawnode_api_names() -> None:
    """The methods other packages call (see the raft-core brief)."""
    for name in ("tick", "step", "propose", "propose_batch", "propose_conf_change",
                 "apply_conf_change", "read_index", "transfer_leader", "campaign",
                 "report_unreachable", "report_snapshot", "has_ready", "ready", "advance",
                 "status", "leader_id", "term", "role", "committed", "applied"):
        assert hasattr(engine.raft.RawNode, name), name
