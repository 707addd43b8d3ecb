"""What a Store round sends: one ``NodeBatch`` per destination node.

A round's outgoing raft messages, from all of its replicas, are grouped by
the node they go to, so the node (next layer) writes one frame per peer per
round. Each message is tagged with its range id (a raft ``Message`` carries
no group id); heartbeats and their responses without a read-index context
are packed into per-node columns (``engine/heartbeat.py``) unless coalescing
is switched off (the benchmark's baseline).

``NodeBatch.message_count`` counts what goes on the wire as messages: each
raft message is one, a whole coalesced heartbeat record is one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.heartbeat import HeartbeatRows, is_coalescible
from engine.raft.types import Message, MessageType
from transport.codec_heartbeat import CoalescedHeartbeats


@dataclass(slots=True)
class NodeBatch:
    """Everything one store sends one node in one round."""

    #: ``(range_id, message)`` in the order the replicas emitted them.
    messages: list[tuple[int, Message]] = field(default_factory=list)
    heartbeats: CoalescedHeartbeats | None = None
    heartbeat_responses: CoalescedHeartbeats | None = None

    def message_count(self) -> int:
        return (len(self.messages) + (self.heartbeats is not None)
                + (self.heartbeat_responses is not None))


class Outbox:
    """Collects a round's messages by destination; ``drain`` hands out the batches."""

    __slots__ = ("_coalesce", "_hb", "_msgs", "_resp")

    def __init__(self, coalesce: bool) -> None:
        self._coalesce = coalesce
        # Invariant: every key has a non-empty value.
        self._msgs: dict[int, list[tuple[int, Message]]] = {}
        self._hb: dict[int, HeartbeatRows] = {}
        self._resp: dict[int, HeartbeatRows] = {}

    def add(self, range_id: int, msg: Message, flags: int = 0) -> None:
        """Queue ``msg`` of range ``range_id`` for node ``msg.to``. ``flags`` (heartbeat
        row flags) force coalescing: a flagged heartbeat has no other encoding."""
        if (self._coalesce or flags) and is_coalescible(msg):
            table = self._hb if msg.type == MessageType.HEARTBEAT else self._resp
            rows = table.get(msg.to)
            if rows is None:
                rows = table[msg.to] = HeartbeatRows()
            rows.add(range_id, msg, flags)
            return
        lst = self._msgs.get(msg.to)
        if lst is None:
            self._msgs[msg.to] = [(range_id, msg)]
        else:
            lst.append((range_id, msg))

    def __bool__(self) -> bool:
        return bool(self._msgs or self._hb or self._resp)

    def drain(self) -> dict[int, NodeBatch]:
        out: dict[int, NodeBatch] = {}
        for node, msgs in self._msgs.items():
            out[node] = NodeBatch(messages=msgs)
        for node, rows in self._hb.items():
            out.setdefault(node, NodeBatch()).heartbeats = rows.build(response=False)
        for node, rows in self._resp.items():
            out.setdefault(node, NodeBatch()).heartbeat_responses = rows.build(response=True)
        self._msgs, self._hb, self._resp = {}, {}, {}
        return out
