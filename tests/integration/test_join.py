"""A node joins a running cluster (``cluster.join = true``) and takes a replica.

The initial nodes have never heard of node 4: it knows them from its config and
introduces itself through the address-book gossip (``engine/address_book.py``);
only then can they answer the requests it forwards and send it raft traffic. A
range then gets a replica on node 4 through the admin API (learner, catch up by
snapshot, promote), and node 4 serves every key of it back.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.config import parse_config
from tests.integration.cluster_harness import LocalCluster

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("join"), n=3, workers=1)
    c.start()
    yield c
    codes = c.stop()
    assert all(code == 0 for code in codes.values()), (codes, c.log_tail(4))


def admin(c: LocalCluster, node: int, method: str, path: str,
          body: dict[str, object] | None = None) -> dict[str, Any]:
    a = c.configs[node - 1].node.listen_admin
    req = urllib.request.Request(f"http://{a.host}:{a.port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        out: dict[str, Any] = json.loads(resp.read())
        return out


def test_a_joining_node_serves_clients_and_takes_a_replica(cluster: LocalCluster) -> None:
    first = cluster.configs[0]
    # The harness leaves one port free after each block (client, peer, admin).
    c, p, a = (first.node.listen_client.port + 3, first.node.listen_peer.port + 3,
               first.node.listen_admin.port + 3)
    cfg4 = parse_config({
        "node": {"id": 4, "data_dir": str(Path(first.node.data_dir).parent / "n4"),
                 "listen_client": f"127.0.0.1:{c}", "listen_peer": f"127.0.0.1:{p}",
                 "listen_admin": f"127.0.0.1:{a}", "workers": 1},
        "cluster": {"initial_nodes": [f"{x.node.id}@{x.node.listen_peer}"
                                      for x in cluster.configs], "join": True},
    })
    cluster.configs.append(cfg4)
    cluster.start_node(4)
    cluster.wait_ready(4)  # a write through node 4: the others answer it, so they know it
    keys = {b"\x10join-%03d" % i: b"v%d" % i for i in range(50)}
    assert cluster.client(1).mset(keys)
    rid = next(r["range_id"] for r in admin(cluster, 1, "GET", "/ranges")["ranges"]
               if bytes.fromhex(r["start_hex"]) <= b"\x10"
               and (not r["end_hex"] or bytes.fromhex(r["end_hex"]) > b"\x10join-999"))
    moved = admin(cluster, 1, "POST", f"/ranges/{rid}/replicas", {"add": 4})
    assert 4 in moved["range"]["voters"]
    deadline = time.monotonic() + 20  # node 4's worker reports its new replica
    while admin(cluster, 4, "GET", "/status")["ranges"] < 1:
        assert time.monotonic() < deadline, "node 4 reports no replica"
        time.sleep(0.2)
    got = cluster.client(4).mget(list(keys))
    assert got == list(keys.values())
