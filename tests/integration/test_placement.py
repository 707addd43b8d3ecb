"""Replica changes and load-based splitting on a real 3-node cluster (2 workers each).

Replication is 2 on 3 nodes, so node 3 starts with no replica at all: adding
it to a range makes its node route traffic for a range it does not know to
a worker (``engine.placement``), whose Store builds the replica from the
leader's snapshot. The range is then moved entirely onto node 3 (its two
original voters removed, the leader first), so reading every key back proves
node 3 holds all of it. The placement loop runs with a tiny ``split_qps``:
a burst of writes to one range splits it, and the keys end up in two ranges;
once the burst is over, the cold halves are merged back (``merge_qps``).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis

from tests.integration.cluster_harness import LocalCluster

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("placement"), n=3, workers=2)
    c.configs = [replace(cfg, cluster=replace(cfg.cluster, replication=2, initial_ranges=2),
                         placement=replace(cfg.placement, split_qps=300, interval_ms=300,
                                           split_cooldown_s=2, merge_qps=50))
                 for cfg in c.configs]
    c.start()
    yield c
    codes = c.stop()
    assert all(code == 0 for code in codes.values()), (codes, c.log_tail(1))


def admin(cluster: LocalCluster, node: int, method: str, path: str,
          body: dict[str, object] | None = None) -> tuple[int, dict[str, Any]]:
    addr = cluster.configs[node - 1].node.listen_admin
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://{addr.host}:{addr.port}{path}", data=data,
                                 method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def replicas(cluster: LocalCluster, via: int, range_id: int, **change: int) -> dict[str, Any]:
    status, body = admin(cluster, via, "POST", f"/ranges/{range_id}/replicas", dict(change))
    assert status == 200, (status, body, cluster.log_tail(via))
    out: dict[str, Any] = body["range"]
    return out


def read_all(cluster: LocalCluster, acked: dict[bytes, bytes]) -> None:
    keys = sorted(acked)
    for node in (1, 2, 3):
        client = cluster.client(node)
        for attempt in range(40):
            try:
                got = client.mget(keys)
                break
            except redis.RedisError:
                if attempt == 39:
                    raise
                time.sleep(0.25)
        missing = [k for k, v in zip(keys, got, strict=True) if v != acked[k]]
        assert not missing, f"node {node} does not return {missing[:5]}"


def test_move_a_range_onto_a_node_that_had_no_replica(cluster: LocalCluster) -> None:
    acked = {b"rep-%03d" % i: b"v%d" % i for i in range(60)}  # all in range 1
    assert cluster.client(1).mset(acked)
    # Asked on node 1: node 3 learns it is a learner of range 1 through the meta range.
    added = replicas(cluster, 1, 1, add=3)
    assert added["voters"] == [1, 2, 3] and added["learners"] == []
    assert replicas(cluster, 3, 1, add=3)["voters"] == [1, 2, 3], "a retry is a no-op"
    more = {b"rep-x%03d" % i: b"w%d" % i for i in range(20)}
    assert cluster.client(3).mset(more)
    acked |= more

    leader = added["leader"]
    assert leader in (1, 2)
    other = 3 - leader
    after = replicas(cluster, 2, 1, remove=leader)  # leadership is moved away first
    assert after["voters"] == sorted((other, 3))
    after = replicas(cluster, 1, 1, remove=other)
    assert after["voters"] == [3], "only node 3 holds range 1 now"
    read_all(cluster, acked)

    status, body = admin(cluster, 1, "POST", "/ranges/1/replicas", {"remove": 3})
    assert status == 409 and "last voter" in body["error"]
    status, body = admin(cluster, 1, "POST", "/ranges/1/replicas", {"add": 9})
    assert status == 400, body

    back = replicas(cluster, 2, 1, add=leader)  # re-added over its old tombstone
    assert back["voters"] == sorted((leader, 3))
    read_all(cluster, acked)


HOT: dict[bytes, bytes] = {}


def ranges_holding(cluster: LocalCluster, keys: dict[bytes, bytes]) -> set[int]:
    _, body = admin(cluster, 1, "GET", "/ranges")
    out = set()
    for r in body["ranges"]:
        start, end = bytes.fromhex(r["start_hex"]), bytes.fromhex(r["end_hex"])
        if any(start <= k and (not end or k < end) for k in keys):
            out.add(r["range_id"])
    return out


def test_a_hot_range_is_split_by_load(cluster: LocalCluster) -> None:
    client = cluster.client(1)
    acked = HOT
    deadline = time.monotonic() + 40
    i = 0

    while True:  # keys in range 2 ([0x8000, end)), far above 300 ops/s
        pipe = client.pipeline(transaction=False)
        for _ in range(100):
            key, value = b"\xf0hot-%05d" % i, b"h%d" % i
            pipe.set(key, value)
            acked[key] = value
            i += 1
        assert all(pipe.execute())
        if len(ranges_holding(cluster, acked)) >= 2:
            break
        assert time.monotonic() < deadline, "range 2 was never split by load"
    read_all(cluster, acked)


def test_cold_halves_are_merged_back(cluster: LocalCluster) -> None:
    assert HOT, "runs after the load split"
    deadline = time.monotonic() + 40
    while len(ranges_holding(cluster, HOT)) > 1:
        assert time.monotonic() < deadline, "the cold halves were never merged"
        time.sleep(0.3)
    read_all(cluster, HOT)
