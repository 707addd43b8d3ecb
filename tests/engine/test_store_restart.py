"""Crash-restart of stores from their log store and snapshots; snapshots and compaction."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from engine.kv import KVStateMachine
from engine.kv_codec import Get, Put, decode_result, encode_command
from engine.proposal import Outcome
from engine.range_desc import RangeDescriptor
from engine.snapshot_store import MemorySnapshotStore
from engine.store import Store
from engine.store_config import StoreConfig
from engine.testing.cluster import Cluster, even_ranges, key_for
from logstore.factory import open_log_store

NODES = (1, 2, 3)


def items(c: Cluster, node: int, rid: int) -> list[tuple[bytes, bytes]]:
    rep = c.stores[node].replica(rid)
    assert rep is not None
    assert isinstance(rep.sm, KVStateMachine)
    return list(rep.sm.items())


def read(c: Cluster, rid: int, key: bytes) -> bytes | None:
    for _ in range(20):
        leader = c.leader_of(rid)
        if leader is None:
            c.run(5)
            continue
        req = c.stores[leader].read(rid, encode_command(Get(key)), keys=[key])
        got = c.wait_for(leader, req)
        if got is not None and got.outcome == Outcome.OK:
            return getattr(decode_result(got.result), "value", None)
        c.run(3)
    raise AssertionError(f"read of {key!r} never succeeded (seed {c.seed})")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["memory", "segmented"])
def test_crash_restart_mid_traffic_loses_no_acknowledged_write(
    backend: str, tmp_path: Path
) -> None:
    seed = 11
    rng = random.Random(seed)
    ranges = 12
    c = Cluster(3, seed=seed, backend=backend, path=str(tmp_path),
                cfg=StoreConfig(seed=seed, snapshot_entries=15))
    c.bootstrap(even_ranges(ranges, NODES))
    c.elect_all()
    acked: dict[bytes, tuple[int, bytes]] = {}
    pending: dict[tuple[int, int], tuple[int, bytes, bytes]] = {}
    seq = 0
    victim = 1
    for step in range(120):
        if step == 40:
            c.crash(victim)
            for n in c.stores:
                c.stores[n].node_dead(victim)
            pending = {k: v for k, v in pending.items() if k[0] != victim}
        if step == 80:
            c.restart(victim)
            for n in c.stores:
                c.stores[n].node_alive(victim)
        for _ in range(3):
            i = rng.randrange(ranges)
            leader = c.leader_of(i + 1)
            if leader is None:
                continue
            seq += 1
            key = key_for(i, b"w%d" % seq)
            value = b"v%d" % seq
            req = c.stores[leader].propose(i + 1, encode_command(Put(key, value)), keys=[key])
            pending[(leader, req)] = (i + 1, key, value)
        c.tick()
        for _ in range(3):
            c.round()
        for (node, req), (rid, key, value) in list(pending.items()):
            got = c.results.get(node, {}).pop(req, None)
            if got is not None:
                del pending[(node, req)]
                if got.outcome == Outcome.OK:
                    acked[key] = (rid, value)
    c.run(30)
    assert len(acked) > 200, f"too few writes acknowledged: {len(acked)}"
    for key, (rid, value) in acked.items():
        assert read(c, rid, key) == value, f"acknowledged {key!r} lost (seed {seed})"
    c.run(20)
    for rid in range(1, ranges + 1):
        assert items(c, 1, rid) == items(c, 2, rid) == items(c, 3, rid), f"r{rid} diverged"
    restarted = c.stores[victim].stats
    assert restarted.snapshots_installed + restarted.entries_applied > 0


@pytest.mark.timeout(30)
def test_lagging_follower_behind_compaction_gets_a_snapshot() -> None:
    c = Cluster(3, seed=5, cfg=StoreConfig(seed=5, snapshot_entries=10))
    c.bootstrap(even_ranges(1, NODES))
    c.elect_all()
    leader = c.leader_of(1)
    assert leader is not None
    lagger = next(n for n in NODES if n != leader)
    c.crash(lagger)
    for i in range(60):
        key = key_for(0, b"%03d" % i)
        req = c.stores[leader].propose(1, encode_command(Put(key, b"x")), keys=[key])
        got = c.wait_for(leader, req)
        assert got is not None and got.outcome == Outcome.OK
    assert c.logs[leader].first_index(1) > 40, "the leader compacted its log"
    assert c.stores[leader].stats.snapshots_taken >= 5
    c.restart(lagger)
    c.run(30)
    assert c.stores[lagger].stats.snapshots_installed == 1
    assert items(c, lagger, 1) == items(c, leader, 1)
    assert len(items(c, lagger, 1)) == 60
    # And it restarts from the installed image.
    c.crash(lagger)
    c.restart(lagger)
    assert len(items(c, lagger, 1)) >= 60 - 10
    c.run(10)
    assert items(c, lagger, 1) == items(c, leader, 1)


def test_whole_cluster_restart_recovers_every_range(tmp_path: Path) -> None:
    c = Cluster(3, seed=9, backend="segmented", path=str(tmp_path),
                cfg=StoreConfig(seed=9, snapshot_entries=7))
    c.bootstrap(even_ranges(5, NODES))
    c.elect_all()
    for i in range(40):
        r = i % 5
        leader = c.leader_of(r + 1)
        assert leader is not None
        key = key_for(r, b"%d" % i)
        req = c.stores[leader].propose(r + 1, encode_command(Put(key, b"%d" % i)), keys=[key])
        got = c.wait_for(leader, req)
        assert got is not None and got.outcome == Outcome.OK
    for n in NODES:
        c.crash(n)
    for n in NODES:
        c.restart(n)
    c.elect_all()
    for i in range(40):
        assert read(c, i % 5 + 1, key_for(i % 5, b"%d" % i)) == b"%d" % i


def test_purge_compacts_an_idle_range_that_pins_old_segments(tmp_path: Path) -> None:
    log = open_log_store("segmented", tmp_path, segment_bytes=4096, rewrite_lag_segments=1000)
    snaps = MemorySnapshotStore()
    s = Store(1, log, snaps, kv, cfg=StoreConfig(snapshot_entries=20))
    s.bootstrap([RangeDescriptor(range_id=1, start_key=b"", end_key=b"m", voters=(1,)),
                 RangeDescriptor(range_id=2, start_key=b"m", end_key=b"", voters=(1,))])
    for _ in range(5):
        s.process()

    def write(rid: int, key: bytes) -> None:
        req = s.propose(rid, encode_command(Put(key, b"v" * 200)), keys=[key])
        for _ in range(5):
            if any(c.request_id == req for c in s.process().completions):
                return
        raise AssertionError("write did not complete")

    write(1, b"a")  # the idle range: one entry in the first segment
    for i in range(100):
        write(2, b"n%03d" % i)
    first = s.purge_logs()
    assert 1 in first.lagging_ranges, "the idle range pins the oldest segment"
    second = s.purge_logs()
    assert second.removed_files > 0 and 1 not in second.lagging_ranges
    log.close()
    reopened = open_log_store("segmented", tmp_path)
    again = Store(1, reopened, snaps, kv)
    assert again.range_ids() == [1, 2]
    again.process()  # replays the committed entries after the newest image
    rep = again.replica(2)
    assert rep is not None and isinstance(rep.sm, KVStateMachine) and len(rep.sm) == 100
    reopened.close()


def kv(d: RangeDescriptor) -> KVStateMachine:
    return KVStateMachine(d.start_key, d.end_key)
