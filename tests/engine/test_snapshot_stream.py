"""Chunked, rate-limited snapshot streams."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Iterator

import pytest

from engine.kv import KVStateMachine
from engine.kv_codec import Put, encode_command
from engine.proposal import Outcome
from engine.raft.types import ConfState, Message, MessageType, Snapshot, SnapshotMetadata
from engine.range_desc import RangeDescriptor
from engine.snapshot_stream import SnapshotReceiver, SnapshotSender, is_chunk
from engine.store_config import StoreConfig
from engine.testing.cluster import Cluster, even_ranges, key_for

META = SnapshotMetadata(50, 4, ConfState(voters=(1, 2, 3)))
TEMPLATE = Message(MessageType.SNAPSHOT, 2, 1, 4, snapshot=Snapshot(META, b""))


def test_budget_bounds_each_round_and_receiver_reassembles() -> None:
    tx, rx = SnapshotSender(), SnapshotReceiver()
    chunks = [bytes([i]) * 100 for i in range(10)]
    tx.start(7, TEMPLATE, iter(chunks))
    whole = None
    rounds = 0
    while tx:
        out, finished = tx.pump(250)
        rounds += 1
        assert sum(len(m.snapshot.data) for _, m in out if m.snapshot) <= 300
        for rid, m in out:
            assert is_chunk(m)
            got = rx.add(rid, m)
            if got is not None:
                whole = got
        if finished:
            assert finished == [(7, 2)]
    assert rounds == 4
    # The message carries chunk 0 (the descriptor prefix); the rest waits spooled.
    assert whole is not None and whole.snapshot == Snapshot(META, chunks[0])
    assert not is_chunk(whole) and len(rx) == 0
    assert rx.take(7, META.index, META.term + 1) is None, "another snapshot's spool"
    spool = rx.take(7, META.index, META.term)
    assert spool is not None
    assert b"".join(spool.chunks()) == b"".join(chunks[1:])
    assert b"".join(spool.chunks()) == b"".join(chunks[1:]), "re-readable"
    spool.close()
    assert rx.take(7, META.index, META.term) is None, "taken once"


@pytest.mark.timeout(60)
def test_receiver_memory_is_bounded_by_a_few_chunks_not_the_image() -> None:
    """A 24 MiB image in 64 KiB chunks: the receiver's peak allocation (chunks,
    spool, read-back) stays under 1 MiB, and the image read back is intact."""
    chunk, n = 64 << 10, 384
    want = hashlib.sha256()

    def image() -> Iterator[bytes]:
        yield b"prefix"
        for i in range(n):
            block = i.to_bytes(4, "little") * (chunk // 4)
            want.update(block)
            yield block

    tx, rx = SnapshotSender(), SnapshotReceiver()
    tx.start(7, TEMPLATE, image())
    tracemalloc.start()
    try:
        whole = None
        while tx:
            out, _ = tx.pump(4 * chunk)
            for rid, m in out:
                whole = rx.add(rid, m) or whole
            del out
        assert whole is not None and whole.snapshot is not None
        spool = rx.take(7, META.index, META.term)
        assert spool is not None and spool.size == chunk * n
        got = hashlib.sha256()
        for block in spool.chunks():
            got.update(block)
        spool.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got.digest() == want.digest()
    assert whole.snapshot.data == b"prefix"
    assert peak < 1 << 20, f"receiver peak {peak} bytes for a {chunk * n}-byte image"


def test_a_gap_discards_the_stream() -> None:
    tx, rx = SnapshotSender(), SnapshotReceiver()
    tx.start(7, TEMPLATE, iter([b"a", b"b", b"c"]))
    out, _ = tx.pump(1)
    assert rx.add(*out[0]) is None
    tx.pump(1)  # chunk 1 lost
    out, _ = tx.pump(1)
    assert rx.add(*out[0]) is None and len(rx) == 0


def test_abort_reports_the_ranges() -> None:
    tx = SnapshotSender()
    tx.start(7, TEMPLATE, iter([b"a"]))
    tx.start(8, TEMPLATE._replace(to=3), iter([b"a"]))
    assert tx.abort_to(2) == [7] and len(tx) == 1


@pytest.mark.timeout(30)
def test_lagging_follower_catches_up_through_a_rate_limited_stream() -> None:
    budget = 2048
    c = Cluster(3, seed=8, cfg=StoreConfig(seed=8, snapshot_entries=20,
                                           snapshot_bytes_per_round=budget),
                sm_factory=lambda d: KVStateMachine(d.start_key, d.end_key, chunk_bytes=512))
    c.bootstrap(even_ranges(1, (1, 2, 3)))
    c.elect_all()
    leader = c.leader_of(1)
    assert leader is not None
    lagger = next(n for n in (1, 2, 3) if n != leader)
    c.crash(lagger)
    for i in range(80):
        key = key_for(0, b"%03d" % i)
        req = c.stores[leader].propose(1, encode_command(Put(key, b"v" * 100)), keys=[key])
        got = c.wait_for(leader, req)
        assert got is not None and got.outcome == Outcome.OK
    c.restart(lagger)
    sent_before = c.stores[leader].stats.snapshot_bytes_out
    rounds = 0
    for _ in range(200):
        c.tick()
        for _ in range(3):
            c.round()
            rounds += 1
        if c.stores[lagger].stats.snapshots_installed:
            break
    sent = c.stores[leader].stats.snapshot_bytes_out - sent_before
    assert sent > 8000, "the image went as many chunks"
    assert rounds >= sent // (budget + 512), "no round exceeded the budget (plus a chunk)"
    c.run(5)
    lrep, frep = c.stores[leader].replica(1), c.stores[lagger].replica(1)
    assert lrep is not None and frep is not None
    assert isinstance(lrep.sm, KVStateMachine) and isinstance(frep.sm, KVStateMachine)
    assert list(frep.sm.items()) == list(lrep.sm.items())
    assert frep.desc == RangeDescriptor(range_id=1, start_key=b"", end_key=b"",
                                        voters=(1, 2, 3))


def test_receiver_forgets_partial_streams_from_a_dead_node() -> None:
    tx, rx = SnapshotSender(), SnapshotReceiver()
    tx.start(7, TEMPLATE, iter([b"a", b"b"]))
    out, _ = tx.pump(1)
    rx.add(*out[0])
    assert len(rx) == 1
    rx.abort_from(2)
    assert len(rx) == 1, "only streams from the dead node go"
    rx.abort_from(1)
    assert len(rx) == 0
