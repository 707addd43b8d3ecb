"""Heartbeat coalescing: row building, fan-out, and the per-tick message count it buys."""

from __future__ import annotations

import pytest

from engine.heartbeat import QUIESCE, HeartbeatRows, fan_out, is_coalescible
from engine.raft.types import Message, MessageType
from engine.store_config import StoreConfig
from engine.testing.cluster import Cluster, even_ranges

HB = MessageType.HEARTBEAT
RESP = MessageType.HEARTBEAT_RESP


def test_only_context_free_heartbeats_coalesce() -> None:
    assert is_coalescible(Message(HB, 2, 1, 7, commit=3))
    assert is_coalescible(Message(RESP, 1, 2, 7))
    assert not is_coalescible(Message(HB, 2, 1, 7, context=b"read-1"))
    assert not is_coalescible(Message(MessageType.APPEND, 2, 1, 7))


@pytest.mark.parametrize("response", [False, True])
def test_fan_out_rebuilds_exactly_the_core_messages(response: bool) -> None:
    mtype = RESP if response else HB
    msgs = [(10 + i, Message(mtype, 2, 1, 5 + i, commit=0 if response else 100 + i))
            for i in range(5)]
    rows = HeartbeatRows()
    for i, (rid, m) in enumerate(msgs):
        rows.add(rid, m, QUIESCE if i == 3 else 0)
    record = rows.build(response=response)
    assert len(record) == 5
    back = list(fan_out(record))
    assert [(rid, m) for rid, m, _ in back] == msgs
    assert [f for _, _, f in back] == [0, 0, 0, QUIESCE, 0]


def per_tick_messages(coalesce: bool, ranges: int) -> float:
    cfg = StoreConfig(seed=2, quiesce=False, coalesce_heartbeats=coalesce)
    c = Cluster(3, seed=2, cfg=cfg)
    c.bootstrap(even_ranges(ranges, (1, 2, 3)))
    c.elect_all()
    c.run(3)
    before = c.messages_delivered
    ticks = 5
    c.run(ticks)
    return (c.messages_delivered - before) / ticks


@pytest.mark.timeout(30)
def test_coalescing_makes_heartbeat_traffic_independent_of_range_count() -> None:
    ranges = 150
    # Every node leads some ranges: per tick each of 3 nodes sends one heartbeat
    # record to each of 2 peers, and gets one response record back from each.
    assert per_tick_messages(True, ranges) == 3 * 2 * 2
    assert per_tick_messages(True, 30) == 3 * 2 * 2
    # Without coalescing: one heartbeat and one response per range per follower.
    assert per_tick_messages(False, ranges) == ranges * 2 * 2
