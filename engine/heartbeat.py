"""Coalesced heartbeats: the per-range HEARTBEAT/HEARTBEAT_RESP of one round to one
node become one ``CoalescedHeartbeats`` record, fanned out again on receipt.

Why
---
A leader heartbeats every follower of every range it leads each heartbeat
tick; with thousands of ranges per node pair that is thousands of messages
per tick carrying nothing but ``(range, from, to, term, commit)``. The raft
core still emits them per range (it knows nothing of other groups); the
Store intercepts them on the way out and packs them into columns
(``transport.codec_heartbeat``), one record per node pair and direction.

Rules
-----
- Only heartbeats without a ``context`` are coalesced: a heartbeat that
  carries read-index request ids is part of a ReadIndex round and travels
  as an ordinary raft message (its response echoes the context).
- Fan-out rebuilds exactly the messages the core emitted: for a heartbeat
  ``Message(HEARTBEAT, to, frm, term, commit=commit)``, for a response
  ``Message(HEARTBEAT_RESP, to, frm, term)``.
- ``flags`` carry engine meaning per row: ``QUIESCE`` on a heartbeat tells
  the follower to stop ticking (``engine/quiesce.py``); on a response it
  says "answering a quiesce heartbeat", which must not wake the leader.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from engine.raft.types import Message, MessageType
from transport.codec_heartbeat import CoalescedHeartbeats

#: Row flag: the leader quiesces the range with this heartbeat (or: answering one).
QUIESCE: Final = 1

_HEARTBEAT = MessageType.HEARTBEAT
_HEARTBEAT_RESP = MessageType.HEARTBEAT_RESP
_COALESCIBLE = frozenset({_HEARTBEAT, _HEARTBEAT_RESP})


def is_coalescible(msg: Message) -> bool:
    """Whether ``msg`` may travel inside a coalesced heartbeat record."""
    return msg.type in _COALESCIBLE and not msg.context


class HeartbeatRows:
    """The columns of one coalesced record while a round is building it.

    Invariant: all six lists have the same length.
    """

    __slots__ = ("commits", "flags", "frm", "range_ids", "terms", "to")

    def __init__(self) -> None:
        self.range_ids: list[int] = []
        self.frm: list[int] = []
        self.to: list[int] = []
        self.terms: list[int] = []
        self.commits: list[int] = []
        self.flags: list[int] = []

    def add(self, range_id: int, msg: Message, flags: int) -> None:
        self.range_ids.append(range_id)
        self.frm.append(msg.frm)
        self.to.append(msg.to)
        self.terms.append(msg.term)
        self.commits.append(msg.commit)
        self.flags.append(flags)

    def __len__(self) -> int:
        return len(self.range_ids)

    def build(self, response: bool) -> CoalescedHeartbeats:
        return CoalescedHeartbeats.build(
            range_ids=self.range_ids, frm=self.frm, to=self.to, terms=self.terms,
            commits=self.commits, flags=self.flags, response=response,
        )


def fan_out(record: CoalescedHeartbeats) -> Iterator[tuple[int, Message, int]]:
    """The ``(range_id, message, flags)`` rows of a received record, as raft messages."""
    mtype = _HEARTBEAT_RESP if record.response else _HEARTBEAT
    for rid, frm, to, term, commit, flags in zip(
        record.range_ids, record.frm, record.to, record.terms, record.commits, record.flags,
        strict=True,
    ):
        yield rid, Message(mtype, to, frm, term, commit=commit), flags
