"""engine.worker_protocol: statuses, report round trips, destination peeking."""

from __future__ import annotations

import struct

import pytest

from engine.kv_codec import Cas, Count, Delete, Get, MSet, Put, Scan, encode_command
from engine.proposal import Outcome
from engine.raft.types import Message, MessageType
from engine.range_desc import RangeDescriptor
from engine.worker_protocol import (
    RangeReport,
    WorkerReport,
    command_keys,
    decode_report,
    encode_report,
    is_write_command,
    pack_status,
    peek_destination,
    unpack_status,
)
from transport import CoalescedHeartbeats, encode_raft_batch
from transport.codec import encode_heartbeats


def test_status_round_trip() -> None:
    for outcome in Outcome:
        for hint in (0, 1, 7, (1 << 24) - 1):
            assert unpack_status(pack_status(outcome, hint)) == (outcome, hint)


def test_command_kinds_and_keys() -> None:
    assert is_write_command(encode_command(Put(b"k", b"v")))
    assert not is_write_command(encode_command(Get(b"k")))
    assert command_keys(Cas(b"k", b"a", b"b")) == (b"k",)
    assert command_keys(Delete((b"a", b"b"))) == (b"a", b"b")
    assert command_keys(MSet(((b"a", b"1"), (b"b", b"2")))) == (b"a", b"b")
    assert command_keys(Scan(b"s", b"", None)) == (b"s",)
    assert command_keys(Count()) == ()


def test_report_round_trip() -> None:
    d1 = RangeDescriptor(range_id=1, start_key=b"", end_key=b"m", voters=(1, 2, 3))
    d2 = RangeDescriptor(range_id=9, start_key=b"m", end_key=b"", voters=(2,), generation=4)
    report = WorkerReport(10, 3, 5, 40, 1.25, (
        RangeReport(d1, 2, 7, 30, False, True), RangeReport(d2, 2, 1, 5, True, False)))
    assert decode_report(encode_report(report)) == report
    raw = encode_report(report)
    with pytest.raises(ValueError):
        decode_report(raw + b"x")
    with pytest.raises((ValueError, Exception)):
        decode_report(raw[:-3])


def test_delta_report_round_trip_carries_removals_loads_and_sync_latencies() -> None:
    d = RangeDescriptor(range_id=3, start_key=b"a", end_key=b"b", voters=(1, 2), generation=2)
    report = WorkerReport(
        rounds=1, fsyncs=2, log_writes=3, entries_applied=4, cpu_seconds=0.5,
        ranges=(RangeReport(d, 1, 2, 3, True, False, size_bytes=1 << 40, keys=7, writes=9,
                            reads=11),),
        proposals=12, elections=1, bytes_logged=1 << 33, inbox=5, pending=6, full=False,
        removed=(4, 1 << 63),
        sync_seconds=(0.5, 0.25))
    raw = encode_report(report)
    assert decode_report(raw) == report
    for cut in range(len(raw)):  # every truncation is refused, never misread
        with pytest.raises((ValueError, struct.error)):
            decode_report(raw[:cut])


def test_peek_destination() -> None:
    msgs = [(5, Message(MessageType.APPEND, 3, 1, 2)), (6, Message(MessageType.APPEND, 3, 1, 2))]
    assert peek_destination(encode_raft_batch(msgs)) == 3
    hb = CoalescedHeartbeats.build(range_ids=[1, 2], frm=[1, 1], to=[4, 4], terms=[1, 1],
                                   commits=[0, 0])
    assert peek_destination(encode_heartbeats(hb)) == 4
    with pytest.raises(ValueError):
        peek_destination(encode_raft_batch([]))
