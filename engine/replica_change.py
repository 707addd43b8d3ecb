"""Replica changes on the range leader's worker: the ops behind ``POST /ranges/{id}/replicas``.

Theory of operation
-------------------
Adding node ``n`` to a range is three admin ops that the node
(``NodeAdmin.change_replicas``) sends one after the other to the range's
leader, wherever it is (``worker_protocol.AdminOp``):

1. ``ADD_LEARNER n`` proposes a conf change adding ``n`` as a learner. The
   leader's first APPEND to ``n`` is rejected by ``n``'s Store (it holds no
   replica: ``Store._unknown_range`` answers "as if from an empty log"), so
   the leader falls back to a snapshot, which creates the replica there. The
   node of ``n`` routes that traffic to a worker by ``engine.placement``.
2. ``REPLICA_PROGRESS`` is polled until ``n`` has caught up: the leader
   replicates to it (state REPLICATE) and its match index is near the
   commit index.
3. ``PROMOTE_VOTER n`` proposes the conf change making the learner a voter.

Removing ``n`` is ``REMOVE_REPLICA n``; when ``n`` leads the range, the node
first transfers leadership to another voter (the Store refuses a leader's
removal of itself).

Rules
-----
- **Idempotent.** Every op first compares the leader's *applied*
  membership with what it asks for, and answers OK at once when it is
  already in place: a retry after a lost answer or a timeout never changes
  anything twice. A change proposed but not applied yet makes raft drop a
  second one (one pending conf change at most): TRYAGAIN, retried by the
  node until it applies.
- **Learner first.** ``PROMOTE_VOTER`` of a node that is neither learner nor
  voter is refused (ERROR): a voter that joins empty would count towards
  quorums before it holds the data.
- **Never the last voter**, and only the leader answers (elsewhere
  TRYAGAIN with the leader hint; no replica here: MISMATCH).

Progress payload (little-endian), the OK answer to ``REPLICA_PROGRESS``::

    leader u64 | commit u64 | n u32 | n * (node u64 | match u64 | state u8) | descriptor

``state`` is ``ProgressState`` (PROBE 0, REPLICATE 1, SNAPSHOT 2); the rows
are the leader's progress table (voters and learners, itself included); the
descriptor is the leader's current one (its replica set is authoritative).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from engine.proposal import Outcome
from engine.raft.tracker.progress import ProgressState
from engine.raft.types import ConfChangeSingle, ConfChangeType
from engine.range_desc import RangeDescriptor
from engine.store import Store
from engine.worker_protocol import AdminOp, pack_status

__all__ = [
    "REPLICA_OPS",
    "ReplicaProgress",
    "decode_progress",
    "encode_progress",
    "needed_change",
    "run_replica_op",
]

#: The admin ops this module answers.
REPLICA_OPS: Final = frozenset(
    {AdminOp.ADD_LEARNER, AdminOp.PROMOTE_VOTER, AdminOp.REMOVE_REPLICA,
     AdminOp.REPLICA_PROGRESS})

_HEAD: Final = struct.Struct("<QQI")
_ROW: Final = struct.Struct("<QQB")


@dataclass(frozen=True, slots=True)
class ReplicaProgress:
    """What the leader knows of a range's replicas (the ``REPLICA_PROGRESS`` answer)."""

    leader: int
    commit: int
    #: Invariant: node -> (match index, ProgressState), one row per member.
    rows: dict[int, tuple[int, int]]
    desc: RangeDescriptor

    def caught_up(self, node: int, max_lag: int) -> bool:
        """Whether the leader replicates to ``node`` entry by entry and it is at most
        ``max_lag`` entries behind the commit index. Promotion does not need this for
        safety; it keeps a new voter from leaving the group short of a quorum of
        replicas that hold the data."""
        row = self.rows.get(node)
        if row is None:
            return False
        match, state = row
        return state == ProgressState.REPLICATE and match + max_lag >= self.commit

    def best_voter_except(self, node: int) -> int | None:
        """The voter other than ``node`` with the highest match index (where a
        leadership transfer completes soonest), or None when there is none."""
        others = [v for v in self.desc.voters if v != node]
        if not others:
            return None
        return max(others, key=lambda v: (self.rows.get(v, (0, 0))[0], -v))


def encode_progress(p: ReplicaProgress) -> bytes:
    parts = [_HEAD.pack(p.leader, p.commit, len(p.rows))]
    parts += [_ROW.pack(node, match, state) for node, (match, state) in sorted(p.rows.items())]
    parts.append(p.desc.encode())
    return b"".join(parts)


def decode_progress(data: bytes) -> ReplicaProgress:
    """The inverse of ``encode_progress``; ``ValueError``/``struct.error`` on garbage."""
    leader, commit, n = _HEAD.unpack_from(data)
    off = _HEAD.size
    rows: dict[int, tuple[int, int]] = {}
    for _ in range(n):
        node, match, state = _ROW.unpack_from(data, off)
        off += _ROW.size
        rows[node] = (match, state)
    return ReplicaProgress(leader, commit, rows, RangeDescriptor.decode(data[off:]))


def needed_change(
    desc: RangeDescriptor, op: AdminOp, node: int, leader: int,
) -> ConfChangeSingle | str | None:
    """The conf change ``op`` on ``node`` still needs against membership ``desc``:
    None when it is already in place, a refusal (str) when it must not be done."""
    if op == AdminOp.ADD_LEARNER:
        if node in desc.replicas:
            return None
        return ConfChangeSingle(ConfChangeType.ADD_LEARNER, node)
    if op == AdminOp.PROMOTE_VOTER:
        if node in desc.voters:
            return None
        if node not in desc.learners:
            return f"node {node} is not a learner of range {desc.range_id}: add it first"
        return ConfChangeSingle(ConfChangeType.ADD_VOTER, node)
    assert op == AdminOp.REMOVE_REPLICA, op
    if node not in desc.replicas:
        return None
    if desc.voters == (node,):
        return f"node {node} is the last voter of range {desc.range_id}"
    if node == leader:
        return f"node {node} leads range {desc.range_id}: transfer leadership first"
    return ConfChangeSingle(ConfChangeType.REMOVE_NODE, node)


def run_replica_op(
    store: Store, range_id: int, op: AdminOp, node: int,
) -> int | tuple[int, bytes]:
    """Start ``op`` on ``store``: a Store request id whose Completion answers it, or an
    immediate ``(status, payload)`` answer (see the module rules)."""
    rep = store.replica(range_id)
    if rep is None:
        return pack_status(Outcome.MISMATCH, 0), b""
    if not rep.is_leader:
        return pack_status(Outcome.TRYAGAIN, rep.leader), b""
    ok = pack_status(Outcome.OK, store.node_id)
    raft = rep.raw.raft
    if op == AdminOp.REPLICA_PROGRESS:
        rows = {nid: (pr.match, int(pr.state)) for nid, pr in raft.tracker.progress.items()}
        return ok, encode_progress(
            ReplicaProgress(store.node_id, raft.log.committed, rows, rep.desc))
    change = needed_change(rep.desc, op, node, store.node_id)
    if change is None:
        return ok, b""
    if isinstance(change, str):
        return pack_status(Outcome.ERROR, 0), change.encode()
    return store.change_replicas(range_id, [change])
