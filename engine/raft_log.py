"""Adapter: one range's raft log in a shared ``LogStore``, seen through the raft
core's read-only ``Storage`` view.

Why an adapter and not a shared type: ``engine.raft`` imports only the
standard library and ``logstore`` imports nothing of ``engine``; the two
meet here, at the engine. The log store's ``LogEntry``/``HardState`` have
the same field order as the raft core's ``Entry``/``HardState``, so entries
pass through without a copy; only errors are translated.

Membership is kept in the snapshot record's opaque ``data`` (see
``encode_conf_state``), so that a restart knows the configuration as of the
last snapshot; configuration changes after it are replayed from the log by
the replica on restart, like any other committed entry.

The snapshot *data* (the state-machine image) is not in the log store: the
replica produces it from its state machine when raft asks (``snapshot_fn``),
which is how a leader can send a follower an image newer than the log's
compaction point.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import cast

from engine.raft.errors import Compacted, Unavailable
from engine.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata
from logstore import errors as ls_errors
from logstore.protocol import LogStore

# Membership in a snapshot record, version 1:
#   u8 version | u8 auto_leave | 4 x (u16 count, count x u64 node id)
#   in the order voters, learners, voters_outgoing, learners_next.
_CONF_VERSION = 1
_HEADER = struct.Struct("<BB")
_COUNT = struct.Struct("<H")


def encode_conf_state(cs: ConfState) -> bytes:
    parts = [_HEADER.pack(_CONF_VERSION, int(cs.auto_leave))]
    for ids in (cs.voters, cs.learners, cs.voters_outgoing, cs.learners_next):
        parts.append(_COUNT.pack(len(ids)))
        parts.append(struct.pack(f"<{len(ids)}Q", *ids))
    return b"".join(parts)


def decode_conf_state(data: bytes) -> ConfState:
    """Decode ``encode_conf_state`` output; ``ValueError`` on anything else."""
    if not data:
        return ConfState()
    if len(data) < _HEADER.size:
        raise ValueError("conf state record too short")
    version, auto_leave = _HEADER.unpack_from(data, 0)
    if version != _CONF_VERSION:
        raise ValueError(f"unknown conf state version {version}")
    pos = _HEADER.size
    groups: list[tuple[int, ...]] = []
    for _ in range(4):
        if pos + _COUNT.size > len(data):
            raise ValueError("conf state record truncated")
        (n,) = _COUNT.unpack_from(data, pos)
        pos += _COUNT.size
        if pos + 8 * n > len(data):
            raise ValueError("conf state record truncated")
        groups.append(struct.unpack_from(f"<{n}Q", data, pos))
        pos += 8 * n
    if pos != len(data):
        raise ValueError("trailing bytes in conf state record")
    return ConfState(groups[0], groups[1], groups[2], groups[3], bool(auto_leave))


class RaftLogView:
    """The raft ``Storage`` view of range ``range_id`` in ``log``.

    ``snapshot_fn`` builds a snapshot of the replica's current applied state
    when a leader needs one for a lagging follower. ``conf_state``, when
    given, overrides the membership of the log's snapshot record at start:
    a replica restarting from a durable state-machine image newer than the
    log's compaction point starts with the image's membership, because the
    raft core does not hand out (so never re-applies) entries at or below
    the ``applied`` index it is started with.
    """

    __slots__ = ("_conf_state", "_log", "_range_id", "_snapshot_fn")

    def __init__(
        self, log: LogStore, range_id: int, snapshot_fn: Callable[[], Snapshot] | None = None,
        conf_state: ConfState | None = None,
    ) -> None:
        self._log = log
        self._range_id = range_id
        self._snapshot_fn = snapshot_fn
        self._conf_state = conf_state

    def initial_state(self) -> tuple[HardState, ConfState]:
        hs = self._log.hard_state(self._range_id)
        if self._conf_state is not None:
            conf = self._conf_state
        else:
            meta = self._log.snapshot_meta(self._range_id)
            conf = decode_conf_state(meta.data) if meta is not None else ConfState()
        return (HardState(*hs) if hs is not None else HardState()), conf

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        try:
            ents = self._log.entries(self._range_id, lo, hi, max_bytes)
        except ls_errors.Compacted as e:
            raise Compacted(str(e)) from e
        except ls_errors.Unavailable as e:
            raise Unavailable(str(e)) from e
        # Same field layout (term, index, type, data): no copy needed.
        return cast(list[Entry], ents)

    def term(self, index: int) -> int:
        try:
            return self._log.term(self._range_id, index)
        except ls_errors.Compacted as e:
            raise Compacted(str(e)) from e
        except ls_errors.Unavailable as e:
            raise Unavailable(str(e)) from e

    def first_index(self) -> int:
        return self._log.first_index(self._range_id)

    def last_index(self) -> int:
        return self._log.last_index(self._range_id)

    def snapshot(self) -> Snapshot:
        if self._snapshot_fn is not None:
            return self._snapshot_fn()
        meta = self._log.snapshot_meta(self._range_id)
        if meta is None:
            return Snapshot()
        return Snapshot(SnapshotMetadata(meta.index, meta.term, decode_conf_state(meta.data)))
