"""Outgoing messages grouped per destination node."""

from __future__ import annotations

from engine.heartbeat import QUIESCE, fan_out
from engine.outbox import NodeBatch, Outbox
from engine.raft import types as rt
from engine.raft.types import Message, MessageType
from transport.codec import (
    RaftBatch,
    RaftTypes,
    WireCodec,
    encode_heartbeats,
    encode_raft_batch,
)

APPEND = MessageType.APPEND
HB = MessageType.HEARTBEAT


def test_messages_group_by_node_and_keep_order_with_range_tags() -> None:
    box = Outbox(coalesce=True)
    box.add(1, Message(APPEND, 2, 1, 3))
    box.add(2, Message(APPEND, 3, 1, 3))
    box.add(3, Message(APPEND, 2, 1, 4))
    out = box.drain()
    assert [(r, m.term) for r, m in out[2].messages] == [(1, 3), (3, 4)]
    assert [r for r, _ in out[3].messages] == [2]
    assert not box and box.drain() == {}


def test_heartbeats_coalesce_into_one_record_per_node() -> None:
    box = Outbox(coalesce=True)
    for rid in range(100):
        box.add(rid, Message(HB, 2, 1, 5, commit=rid))
    box.add(7, Message(HB, 2, 1, 5, context=b"ctx"))
    out = box.drain()
    batch = out[2]
    assert batch.heartbeats is not None and len(batch.heartbeats) == 100
    assert batch.message_count() == 2, "one record plus the read-index heartbeat"


def test_uncoalesced_mode_sends_each_heartbeat_but_flagged_rows_still_coalesce() -> None:
    box = Outbox(coalesce=False)
    box.add(1, Message(HB, 2, 1, 5))
    box.add(2, Message(HB, 2, 1, 5), QUIESCE)
    b = box.drain()[2]
    assert len(b.messages) == 1 and b.heartbeats is not None
    assert [(r, f) for r, _, f in fan_out(b.heartbeats)] == [(2, QUIESCE)]
    assert NodeBatch().message_count() == 0


def test_a_round_batch_crosses_the_wire_codec_unchanged() -> None:
    codec = WireCodec(RaftTypes(rt.Message, rt.Entry, rt.Snapshot, rt.SnapshotMetadata,
                                rt.ConfState))
    box = Outbox(coalesce=True)
    box.add(4, Message(APPEND, 2, 1, 3, 3, 10, (rt.Entry(3, 11, 0, b"x"),), 10))
    for rid in range(50):
        box.add(rid, Message(HB, 2, 1, 5, commit=rid), QUIESCE if rid == 7 else 0)
    batch = box.drain()[2]
    raft = codec.decode(encode_raft_batch(batch.messages))
    assert isinstance(raft, RaftBatch) and raft.messages == batch.messages
    assert batch.heartbeats is not None
    assert codec.decode(encode_heartbeats(batch.heartbeats)) == batch.heartbeats
