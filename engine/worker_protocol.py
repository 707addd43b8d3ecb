"""What the node and its workers say to each other, on top of the transport codec.

Every record on a node<->worker ring is a record of ``transport.codec``; this
module fixes what the engine puts *inside* the generic envelopes, so that
nothing but ``struct`` ever parses a ring (no pickle).

Node -> worker
--------------
- ``RAFT_BATCH`` / ``HEARTBEATS`` / ``HEARTBEAT_RESPONSES``: raft traffic from
  peers, already split so that every range in it belongs to this worker.
- ``CLIENT_REQUESTS``: ``req_id`` (node-chosen, >= 1), ``range_id``,
  ``generation`` (unused: 0; the keys of the command are checked instead),
  ``command``: a ``kv_codec`` command (ops >= 16 are proposed, others read),
  or an *admin* command, told apart by its first byte ``ADMIN_MAGIC`` (a
  ``kv_codec`` command starts with its version, 1)::

      0xA0 | op u8 (1 transfer-leader, 2 split, 3 merge, 4..7 replicas) | arg u64 | key

  ``arg`` is the target node (transfer, replica ops) or the new range id
  (split); ``key`` the split key (empty: the range picks its middle key).
  The replica ops (4 add learner, 5 promote voter, 6 remove, 7 progress) are
  answered by ``engine.replica_change``.
  A *meta* command (``engine/meta_codec.py``) starts with ``meta_codec.MAGIC``
  (0xB0) and follows the kv_codec convention that its second byte, the op,
  is >= 16 for writes, so ``is_write_command`` covers it unchanged. The
  worker hands every request for the meta range (``META_RANGE_ID``) to
  its meta path, which refuses KV commands, splits and merges; a meta command
  sent to a user range fails there as an undecodable KV command.
  ``req_id`` 0 is a *control* row: ``range_id`` names the control
  (``CONTROL_NODE_LIVENESS``), ``generation`` carries its argument (a node
  id) and ``command`` one byte (1 dead, 0 alive).

Worker -> node
--------------
- ``RAFT_BATCH``: one record per destination node (every message in it has
  the same ``to``); ``HEARTBEATS``/``HEARTBEAT_RESPONSES`` are per node by
  construction. The node forwards these bytes to the peer unchanged and finds
  the destination with ``peek_destination``.
- ``CLIENT_RESPONSES``: ``status = outcome | leader_hint << 8`` (see
  ``pack_status``); ``payload`` is the ``kv_codec`` result (OK), the encoded
  current descriptor (MISMATCH, possibly empty), or a UTF-8 reason (ERROR).
  ``req_id`` 0 is the worker's *status report* (``encode_report``).

Status report layout (little-endian)::

    header  := rounds u64 | fsyncs u64 | log_writes u64 | applied u64 | cpu f64 |
               proposals u64 | elections u64 | bytes_logged u64 | inbox u32 |
               pending u32 |
               flags u8 (bit0 full) | n_ranges u32 | n_removed u32 | n_syncs u32
    range   := leader u64 | term u64 | applied u64 | size u64 | keys u64 |
               writes u64 | reads u64 | flags u8 (bit0 leader, bit1 quiesced) |
               desc_len u32 | descriptor
    removed := range_id u64              (n_removed of them)
    sync    := seconds f32               (n_syncs of them)

A report is *full* (every replica the worker holds: the node replaces its
view of that worker) or a *delta* (the replicas that changed since the
previous report, and the ids of those removed; a replica whose only change is
its applied index is left out of deltas). A worker sends a full report
first and then every half minute (self-healing), deltas in between — with
10,000 replicas per node, re-sending every one twice a second was most of an
idle node's CPU. ``sync`` carries the latencies of the synced log writes since
the previous report (bounded), for the fsync histogram.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from engine.kv_codec import (
    Cas,
    Command,
    Count,
    Delete,
    Exists,
    Get,
    IncrBy,
    MGet,
    MSet,
    Put,
    Scan,
)
from engine.proposal import Outcome
from engine.range_desc import RangeDescriptor
from transport.codec_header import ENVELOPE, RecordKind

#: ``req_id`` of control rows (node -> worker) and status reports (worker -> node).
CONTROL_REQ_ID: Final = 0
CONTROL_NODE_LIVENESS: Final = 1
#: Node -> node (a CLIENT_REQUESTS record of this one control row): the sender has
#: begun a graceful stop; do not hand it leaderships or forward it requests.
CONTROL_NODE_DRAINING: Final = 2
#: Node -> node: address-book gossip rows (``engine/address_book.py``).
CONTROL_NODE_ADDRESS: Final = 3

_U64: Final = struct.Struct("<Q")
_U32: Final = struct.Struct("<I")
_ADMIN: Final = struct.Struct("<BBQ")
#: First byte of an admin command on the ring (a kv_codec command starts with 1).
ADMIN_MAGIC: Final = 0xA0
_REPORT_HEADER: Final = struct.Struct("<QQQQdQQQIIBIII")
_REPORT_RANGE: Final = struct.Struct("<QQQQQQQBI")
#: Encoded descriptor -> decoded, for reports: a report repeats descriptors that
#: rarely change, and decoding one costs ~50x a dict lookup (a 10,000-range node spent
#: most of its start-up decoding the same descriptors). Cleared when full.
_DESC_CACHE: dict[bytes, RangeDescriptor] = {}
_DESC_CACHE_MAX: Final = 65536
#: The worker's side of the same: descriptor -> its encoding.
_ENCODED: dict[RangeDescriptor, bytes] = {}
#: Offset of ``to`` inside a raft message (after range_id u64, type u8, flags u8).
_MSG_TO_OFFSET: Final = 10


def pack_status(outcome: int, leader_hint: int) -> int:
    """The u32 status of a response: the outcome in the low byte, the hint above."""
    return int(outcome) | (leader_hint << 8)


def unpack_status(status: int) -> tuple[Outcome, int]:
    """``(outcome, leader_hint)``; an unknown outcome is an internal error (ValueError)."""
    return Outcome(status & 0xFF), status >> 8


def is_write_command(raw: bytes) -> bool:
    """Whether a command may change state: a ``kv_codec`` write (op >= 16) or any
    admin command (a lost answer to either is an unknown outcome, never TRYAGAIN)."""
    return len(raw) >= 2 and (raw[1] >= 16 or raw[0] == ADMIN_MAGIC)


class AdminOp(IntEnum):
    TRANSFER_LEADER = 1
    SPLIT = 2
    MERGE = 3
    ADD_LEARNER = 4
    PROMOTE_VOTER = 5
    REMOVE_REPLICA = 6
    REPLICA_PROGRESS = 7


def encode_admin(op: AdminOp, arg: int = 0, key: bytes = b"") -> bytes:
    return _ADMIN.pack(ADMIN_MAGIC, op, arg) + key


def decode_admin(raw: bytes) -> tuple[AdminOp, int, bytes] | None:
    """``(op, arg, key)`` of an admin command; None if ``raw`` is not one (ValueError
    if it is one but malformed)."""
    if not raw or raw[0] != ADMIN_MAGIC:
        return None
    if len(raw) < _ADMIN.size:
        raise ValueError("truncated admin command")
    _, op, arg = _ADMIN.unpack_from(raw)
    return AdminOp(op), arg, raw[_ADMIN.size:]


def command_keys(cmd: Command) -> tuple[bytes, ...]:
    """The keys ``cmd`` touches: the Store checks them against the range (MISMATCH)."""
    if isinstance(cmd, (Get, Put, Cas, IncrBy)):
        return (cmd.key,)
    if isinstance(cmd, (MGet, Exists, Delete)):
        return cmd.keys
    if isinstance(cmd, MSet):
        return tuple(k for k, _ in cmd.pairs)
    if isinstance(cmd, Scan):
        return (cmd.start,)
    assert isinstance(cmd, Count)
    return ()


def peek_destination(record: bytes | memoryview) -> int:
    """The destination node of a per-node raft record from a worker, without decoding it.

    RAFT_BATCH: the ``to`` of its first message (all share it). Heartbeats: the
    first entry of the ``to`` column (after ``range_ids`` and ``frm``). Raises
    ValueError on an empty or foreign record (a worker bug, never peer input).
    """
    kind, count = record[1], _U32.unpack_from(record, 2)[0]
    if count == 0:
        raise ValueError("empty raft record has no destination")
    if kind == RecordKind.RAFT_BATCH:
        offset = ENVELOPE.size + _MSG_TO_OFFSET
    elif kind in (RecordKind.HEARTBEATS, RecordKind.HEARTBEAT_RESPONSES):
        offset = ENVELOPE.size + 16 * count
    else:
        raise ValueError(f"record kind {kind} is not raft traffic")
    return int(_U64.unpack_from(record, offset)[0])


@dataclass(frozen=True, slots=True)
class RangeReport:
    """One replica as its worker sees it."""

    desc: RangeDescriptor
    leader: int
    term: int
    applied: int
    is_leader: bool
    quiesced: bool
    #: The state machine's ``approximate_size()`` and key count (0 if it keeps none).
    size_bytes: int = 0
    keys: int = 0
    #: Client writes/reads the replica accepted since it was created (monotonic).
    writes: int = 0
    reads: int = 0


@dataclass(frozen=True, slots=True)
class WorkerReport:
    """A worker's periodic status: cumulative counters and (some of) its replicas."""

    rounds: int
    fsyncs: int
    log_writes: int
    entries_applied: int
    cpu_seconds: float
    ranges: tuple[RangeReport, ...]
    proposals: int = 0
    elections: int = 0
    #: Payload bytes of the raft entries the worker appended to its log.
    bytes_logged: int = 0
    #: Records found on the inbound ring at the worker's last drain, and client
    #: requests waiting inside the worker (queue depths).
    inbox: int = 0
    pending: int = 0
    #: True: ``ranges`` is every replica the worker holds; False: only changes.
    full: bool = True
    removed: tuple[int, ...] = ()
    sync_seconds: tuple[float, ...] = ()


def encode_report(report: WorkerReport) -> bytes:
    parts = [_REPORT_HEADER.pack(
        report.rounds, report.fsyncs, report.log_writes, report.entries_applied,
        report.cpu_seconds, report.proposals, report.elections, report.bytes_logged,
        report.inbox, report.pending,
        int(report.full), len(report.ranges), len(report.removed), len(report.sync_seconds))]
    for r in report.ranges:
        desc = _ENCODED.get(r.desc)
        if desc is None:
            if len(_ENCODED) >= _DESC_CACHE_MAX:
                _ENCODED.clear()
            desc = _ENCODED[r.desc] = r.desc.encode()
        flags = int(r.is_leader) | int(r.quiesced) << 1
        parts.append(_REPORT_RANGE.pack(r.leader, r.term, r.applied, r.size_bytes, r.keys,
                                        r.writes, r.reads, flags, len(desc)))
        parts.append(desc)
    parts.append(struct.pack(f"<{len(report.removed)}Q", *report.removed))
    parts.append(struct.pack(f"<{len(report.sync_seconds)}f", *report.sync_seconds))
    return b"".join(parts)


def decode_report(data: bytes) -> WorkerReport:
    """Decode a report; ``ValueError`` (or ``struct.error``) on a malformed one.

    Reports come only from our own forked workers, so a failure is a bug, but
    the node still refuses it rather than act on garbage."""
    (rounds, fsyncs, writes, applied, cpu, proposals, elections, logged, inbox, pending, flags,
     n, n_removed, n_syncs) = _REPORT_HEADER.unpack_from(data)
    off = _REPORT_HEADER.size
    ranges = []
    for _ in range(n):
        (leader, term, r_applied, size, keys, r_writes, r_reads, r_flags,
         dlen) = _REPORT_RANGE.unpack_from(data, off)
        off += _REPORT_RANGE.size
        if off + dlen > len(data):
            raise ValueError("truncated worker report")
        raw = data[off:off + dlen]
        desc = _DESC_CACHE.get(raw)
        if desc is None:
            desc = RangeDescriptor.decode(raw)
            if len(_DESC_CACHE) >= _DESC_CACHE_MAX:
                _DESC_CACHE.clear()
            _DESC_CACHE[raw] = desc
        off += dlen
        ranges.append(RangeReport(desc, leader, term, r_applied, bool(r_flags & 1),
                                  bool(r_flags & 2), size, keys, r_writes, r_reads))
    removed = struct.unpack_from(f"<{n_removed}Q", data, off)
    off += 8 * n_removed
    syncs = struct.unpack_from(f"<{n_syncs}f", data, off)
    off += 4 * n_syncs
    if off != len(data):
        raise ValueError("trailing bytes in worker report")
    return WorkerReport(rounds, fsyncs, writes, applied, cpu, tuple(ranges), proposals,
                        elections, logged, inbox, pending, bool(flags & 1), tuple(removed),
                        tuple(syncs))
