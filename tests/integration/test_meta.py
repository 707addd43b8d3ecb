"""The meta range on a real 3-node cluster: the directory reaches a node with no replica.

Replication is 2 on 3 nodes, so node 3 holds no replica at all (not even of
meta): its workers report nothing and, as long as no client request goes
through it, no MISMATCH answer can teach it anything. Whatever it learns
about a split or merge done elsewhere comes from the meta range, polled by
its ``MetaSync``. Split ids come from meta's allocator: unique and small.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from engine.meta_codec import META_RANGE_ID
from tests.integration.cluster_harness import LocalCluster

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("meta"), n=3, workers=1)
    c.configs = [replace(cfg, cluster=replace(cfg.cluster, replication=2, initial_ranges=2))
                 for cfg in c.configs]
    for cfg in c.configs:
        c.start_node(cfg.node.id)
    for node in (1, 2):  # node 3 is not touched by any client: see the module docstring
        c.wait_ready(node)
    yield c
    codes = c.stop()
    assert all(code == 0 for code in codes.values()), (codes, c.log_tail(3))


def admin(cluster: LocalCluster, node: int, method: str, path: str,
          body: dict[str, object] | None = None) -> dict[str, Any]:
    addr = cluster.configs[node - 1].node.listen_admin
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://{addr.host}:{addr.port}{path}", data=data,
                                 method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            out: dict[str, Any] = json.loads(resp.read())
            return out
    except urllib.error.HTTPError as e:
        raise AssertionError(f"{method} {path} on node {node}: {e.code} {e.read()!r}") from e


def spans(cluster: LocalCluster, node: int) -> list[tuple[int, str, str, int]]:
    return [(r["range_id"], r["start_hex"], r["end_hex"], r["generation"])
            for r in admin(cluster, node, "GET", "/ranges")["ranges"]]


def eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_splits_and_merges_reach_a_node_without_replicas_through_meta(
    cluster: LocalCluster,
) -> None:
    c1 = cluster.client(1)
    for i in range(20):
        assert c1.set(b"m%02d" % i, b"v%d" % i)  # range 1: [b"", 0x8000) holds "m.."
    before = spans(cluster, 3)
    assert [r[0] for r in before] == [1, 2]  # the bootstrap layout; meta is not listed
    split = admin(cluster, 1, "POST", "/ranges/1/split", {"key": "m10"})
    right_id = split["right"]["range_id"]
    assert right_id == 3  # meta's allocator: the first id after the bootstrap's 1..2
    want = spans(cluster, 1)
    assert [r[0] for r in want] == [1, right_id, 2]
    eventually(lambda: spans(cluster, 3) == want)
    # A split asked of node 3 (it holds no replica of the range, nor of meta).
    second = admin(cluster, 3, "POST", "/ranges/2/split", {"key_hex": "90"})["right"]
    assert second["range_id"] == 4  # unique and small
    eventually(lambda: spans(cluster, 2) == spans(cluster, 3) == spans(cluster, 1))
    merged = admin(cluster, 2, "POST", "/ranges/1/merge", {})["range"]
    assert merged["end_hex"] == "8000"
    eventually(lambda: [r[0] for r in spans(cluster, 3)] == [1, 2, 4])
    assert spans(cluster, 3) == spans(cluster, 1)
    # The meta range is never split or merged, and never listed.
    for op in ("split", "merge"):
        with pytest.raises(AssertionError, match=": 409 "):
            admin(cluster, 1, "POST", f"/ranges/{META_RANGE_ID}/{op}", {})
    assert all(r[0] != META_RANGE_ID for n in (1, 2, 3) for r in spans(cluster, n))
    # Node 3 routes by what meta told it: every key reads back through it.
    c3 = cluster.client(3)
    assert c3.mget([b"m%02d" % i for i in range(20)]) == [b"v%d" % i for i in range(20)]
