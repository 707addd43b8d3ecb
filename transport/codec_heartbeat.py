"""The node-level coalesced heartbeat: one record carrying many ranges' heartbeats.

Why
---
With tens of thousands of raft groups per node, one heartbeat message per
group per tick is the classic multi-raft cost (CockroachDB, TiKV). Instead a
node sends each peer node at most one heartbeat record per tick, holding the
heartbeats of every range the two nodes share as packed parallel columns.
Encoding or decoding 10,000 ranges is a few array copies, not 10,000
message encodings.

Byte layout (little-endian; follows the 6-byte envelope of ``codec_header``,
kind HEARTBEATS or HEARTBEAT_RESPONSES, ``count = n`` ranges)
-----------------------------------------------------------------------------
::

    range_ids u64[n] | frm u64[n] | to u64[n] | terms u64[n] | commits u64[n] | flags u8[n]

Row ``i`` of the columns is one range's heartbeat: ``frm``/``to`` are the
replica ids inside range ``range_ids[i]``. ``flags`` are defined by the
engine (for example "quiesce after this one"). A response uses the same
columns: the follower's view, with ``frm``/``to`` swapped.

Heartbeats that must carry a read-index ``context`` are not coalesced: they
travel as ordinary raft messages in a RAFT_BATCH record.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from transport.codec_columns import U8, U64, pack_column, read_column, require
from transport.codec_header import RecordKind, pack_envelope

#: Bytes one range adds to a coalesced heartbeat (five u64 columns and one u8).
ROW_SIZE: Final = 5 * 8 + 1


@dataclass(frozen=True, slots=True)
class CoalescedHeartbeats:
    """The heartbeats (or, with ``response``, the responses) of many ranges to one node.

    Invariant: all six columns have the same length; ``flags`` has typecode
    ``B`` and the others ``Q``. Treat the arrays as immutable once built.
    """

    range_ids: array[int]
    frm: array[int]
    to: array[int]
    terms: array[int]
    commits: array[int]
    flags: array[int]
    response: bool = False

    def __post_init__(self) -> None:
        n = len(self.range_ids)
        columns = (self.frm, self.to, self.terms, self.commits, self.flags)
        if any(len(c) != n for c in columns):
            raise ValueError("coalesced heartbeat columns differ in length")
        if self.flags.typecode != U8 or any(
            c.typecode != U64 for c in (self.range_ids, self.frm, self.to, self.terms, self.commits)
        ):
            raise ValueError("coalesced heartbeat columns must be array('Q') and flags array('B')")

    @classmethod
    def build(
        cls,
        *,
        range_ids: Iterable[int],
        frm: Iterable[int],
        to: Iterable[int],
        terms: Iterable[int],
        commits: Iterable[int],
        flags: Iterable[int] | None = None,
        response: bool = False,
    ) -> CoalescedHeartbeats:
        """Build from any iterables of ints (``flags`` default to all zero)."""
        ids = array(U64, range_ids)
        return cls(
            ids, array(U64, frm), array(U64, to), array(U64, terms), array(U64, commits),
            array(U8, bytes(len(ids)) if flags is None else flags), response,
        )

    def __len__(self) -> int:
        return len(self.range_ids)


def encode_heartbeats(hb: CoalescedHeartbeats) -> bytes:
    """One HEARTBEATS (or HEARTBEAT_RESPONSES) record."""
    kind = RecordKind.HEARTBEAT_RESPONSES if hb.response else RecordKind.HEARTBEATS
    return b"".join((
        pack_envelope(kind, len(hb.range_ids)),
        pack_column(U64, hb.range_ids),
        pack_column(U64, hb.frm),
        pack_column(U64, hb.to),
        pack_column(U64, hb.terms),
        pack_column(U64, hb.commits),
        pack_column(U8, hb.flags),
    ))


def decode_heartbeat_columns(
    mv: memoryview, off: int, n: int, response: bool
) -> tuple[CoalescedHeartbeats, int]:
    """Decode the six columns of ``n`` rows at ``off``; return the value and the end."""
    require(mv, off, n * ROW_SIZE, "coalesced heartbeat")
    range_ids, off = read_column(mv, off, U64, n, "heartbeat range ids")
    frm, off = read_column(mv, off, U64, n, "heartbeat from ids")
    to, off = read_column(mv, off, U64, n, "heartbeat to ids")
    terms, off = read_column(mv, off, U64, n, "heartbeat terms")
    commits, off = read_column(mv, off, U64, n, "heartbeat commits")
    flags, off = read_column(mv, off, U8, n, "heartbeat flags")
    return CoalescedHeartbeats(range_ids, frm, to, terms, commits, flags, response), off
