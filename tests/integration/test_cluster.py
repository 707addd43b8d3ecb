"""A real 3-node cluster (2 workers per node) on 127.0.0.1, driven with redis-py.

One cluster serves the whole module (starting one costs seconds); the tests
run in file order and leave it healthy for the next: plain reads and writes
on every node, then a worker SIGKILL under traffic, then a node SIGKILL and
restart under traffic. The durability check is always the same: every write
a client saw acknowledged is read back, with its value, through every node.
The module ends with a graceful SIGTERM of all nodes, which must exit 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from engine.snapshot_store import DirSnapshotStore
from tests.integration.cluster_harness import LocalCluster

pytestmark = pytest.mark.timeout(150)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("cluster"), n=3, workers=2)
    c.start()
    yield c
    codes = c.stop()
    assert all(code == 0 for code in codes.values()), (codes, c.log_tail(1))


class Writer(threading.Thread):
    """Writes unique keys through one node until stopped; remembers what was acked."""

    def __init__(self, cluster: LocalCluster, node: int, tag: str) -> None:
        super().__init__(daemon=True)
        self._cluster = cluster
        self._node = node
        self._tag = tag
        self.acked: dict[bytes, bytes] = {}
        self.errors = 0
        self._halt = threading.Event()

    def run(self) -> None:
        client = self._cluster.client(self._node, timeout=5)
        i = 0
        while not self._halt.is_set():
            key, value = f"{self._tag}-{i:06d}".encode(), f"v{i}".encode()
            i += 1
            try:
                if client.set(key, value):
                    self.acked[key] = value
            except redis.RedisError:
                self.errors += 1
                time.sleep(0.05)
                client = self._cluster.client(self._node, timeout=5)

    def stop(self) -> None:
        self._halt.set()
        self.join(30)


def assert_all_readable(cluster: LocalCluster, acked: dict[bytes, bytes],
                        nodes: tuple[int, ...] = (1, 2, 3)) -> None:
    keys = sorted(acked)
    for node in nodes:
        client = cluster.client(node)
        for start in range(0, len(keys), 200):
            chunk = keys[start:start + 200]
            got = _retry(lambda c=client, k=chunk: c.mget(k))
            missing = [k for k, v in zip(chunk, got, strict=True) if v != acked[k]]
            assert not missing, f"node {node} lost acknowledged writes: {missing[:5]}"


def _retry(fn, attempts: int = 40):  # type: ignore[no-untyped-def]
    """Reads during recovery may get -TRYAGAIN (safe to retry, by contract)."""
    for i in range(attempts):
        try:
            return fn()
        except redis.RedisError:
            if i == attempts - 1:
                raise
            time.sleep(0.25)
    raise AssertionError("unreachable")


def test_reads_and_writes_on_every_node(cluster: LocalCluster) -> None:
    clients = {n: cluster.client(n) for n in (1, 2, 3)}
    for n, c in clients.items():
        assert c.ping()
        assert c.set(f"basic-{n}".encode(), f"from-{n}".encode())
    for c in clients.values():
        for n in (1, 2, 3):
            assert c.get(f"basic-{n}".encode()) == f"from-{n}".encode()
    c1, c2 = clients[1], clients[2]
    # Keys spread over several ranges (the bootstrap splits on the first key bytes).
    pairs = {bytes([b]) + b"/k": b"val%d" % b for b in range(0, 256, 17)}
    assert c1.mset(pairs)
    assert c2.mget(list(pairs)) == list(pairs.values())
    assert c2.incr(b"counter") == 1
    assert c1.incrby(b"counter", 5) == 6
    assert c1.execute_command("CAS", b"basic-1", b"from-1", b"swapped") == 1
    assert c2.execute_command("CAS", b"basic-1", b"from-1", b"again") == 0
    assert c2.get(b"basic-1") == b"swapped"
    flat = c2.execute_command("RANGE", b"\x00", b"")
    got = dict(zip(flat[::2], flat[1::2], strict=True))
    assert all(got[k] == v for k, v in pairs.items())
    assert list(got) == sorted(got)
    assert c1.delete(b"basic-2", b"basic-3", b"nope") == 2
    assert c2.exists(b"basic-2", b"basic-1") == 1
    assert c1.dbsize() == c2.dbsize() >= len(pairs)
    with pytest.raises(redis.ResponseError):
        c1.execute_command("NOSUCHCOMMAND")


def _admin(cluster: LocalCluster, node: int, method: str, path: str,
           body: dict[str, object] | None = None) -> dict[str, Any]:
    addr = cluster.configs[node - 1].node.listen_admin
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://{addr.host}:{addr.port}{path}", data=data,
                                 method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        out: dict[str, Any] = json.loads(resp.read())
        return out


def _ranges(cluster: LocalCluster, node: int) -> list[dict[str, Any]]:
    return list(_admin(cluster, node, "GET", "/ranges")["ranges"])


def test_admin_split_merge_and_transfer_under_traffic(cluster: LocalCluster) -> None:
    assert _admin(cluster, 2, "GET", "/health")
    # "sp-..." keys all live in the bootstrap range [0x6000, 0x8000): range 4.
    writers = [Writer(cluster, n, f"sp{n}") for n in (1, 2)]
    for w in writers:
        w.start()
    time.sleep(1.0)
    split = _admin(cluster, 3, "POST", "/ranges/4/split", {"key": "sp2"})
    left, right = split["left"], split["right"]
    assert left["range_id"] == 4 and left["end"] == "sp2" and right["start"] == "sp2"
    # The new id comes from the meta range's allocator (ids 1..8 are the bootstrap's),
    # and the meta directory carries the split to every node's /ranges.
    assert 8 < right["range_id"] < 100
    deadline = time.monotonic() + 20
    while not all(any(r["range_id"] == right["range_id"] and r["start"] == "sp2"
                      for r in _ranges(cluster, n)) for n in (1, 2, 3)):
        assert time.monotonic() < deadline, "a node's /ranges does not show the split"
        time.sleep(0.2)
    merged = _admin(cluster, 1, "POST", "/ranges/4/merge", {})["range"]
    assert merged["range_id"] == 4 and merged["end_hex"] == "8000"
    # Move range 1's leadership to another voter.
    info = next(r for r in _ranges(cluster, 1) if r["range_id"] == 1)
    target = next(n for n in info["voters"] if n != info["leader"])
    moved = _admin(cluster, 1, "POST", "/ranges/1/transfer-leader", {"target": target})
    assert moved["range"]["leader"] == target
    time.sleep(0.5)
    for w in writers:
        w.stop()
    acked = {k: v for w in writers for k, v in w.acked.items()}
    assert len(acked) > 20
    assert_all_readable(cluster, acked)


def test_worker_sigkill_under_traffic(cluster: LocalCluster) -> None:
    writers = [Writer(cluster, n, f"wk{n}") for n in (1, 2, 3)]
    for w in writers:
        w.start()
    time.sleep(1.5)
    victim = cluster.worker_pids(1)[0]
    os.kill(victim, signal.SIGKILL)
    time.sleep(2.5)
    for w in writers:
        w.stop()
    assert cluster.procs[1].poll() is None, "the node must survive its worker's death"
    assert victim not in cluster.worker_pids(1)
    assert len(cluster.worker_pids(1)) == 2, "the dead worker is restarted"
    acked = {k: v for w in writers for k, v in w.acked.items()}
    assert len(acked) > 20
    assert_all_readable(cluster, acked)
    # The restarted worker serves again: writes through node 1 succeed.
    assert _retry(lambda: cluster.client(1).set(b"after-worker-kill", b"ok"))


def test_node_sigkill_and_restart_under_traffic(cluster: LocalCluster) -> None:
    writers = [Writer(cluster, n, f"nk{n}") for n in (1, 2)]
    for w in writers:
        w.start()
    time.sleep(1.5)
    cluster.kill_node(3)
    time.sleep(4.0)  # past the liveness timeout: ranges led by node 3 elect anew
    cluster.start_node(3)
    cluster.wait_ready(3)
    time.sleep(1.0)
    for w in writers:
        w.stop()
    acked = {k: v for w in writers for k, v in w.acked.items()}
    assert len(acked) > 20
    assert_all_readable(cluster, acked)


def test_admin_serves_a_ranges_durable_image(cluster: LocalCluster, tmp_path: Path) -> None:
    """``GET /ranges/{id}/snapshot`` streams the replica's image file as stored: it
    loads (header and CRC checked) into a snapshot store and names the range."""
    rid = next(r["range_id"] for r in _ranges(cluster, 2) if r["start_hex"] == "")
    addr = cluster.configs[1].node.listen_admin
    url = f"http://{addr.host}:{addr.port}/ranges/{rid}/snapshot"
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert resp.headers["Content-Type"] == "application/octet-stream"
        (tmp_path / f"r{rid}.snap").write_bytes(resp.read())
    got = DirSnapshotStore(tmp_path).load(rid)
    assert got is not None and got[0].descriptor.range_id == rid
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://{addr.host}:{addr.port}/ranges/999999/snapshot",
                               timeout=30)
    assert e.value.code == 404


def test_sigterm_hands_leaderships_off_then_exits_0(cluster: LocalCluster) -> None:
    """A graceful stop moves every leadership it holds to a live voter first, so no
    range waits out an election timeout (or node liveness, if quiesced) for it."""
    led = [r for r in _ranges(cluster, 1) if r["leader"] not in (None, 3)][:3]
    for r in led:
        _admin(cluster, 1, "POST", f"/ranges/{r['range_id']}/transfer-leader", {"target": 3})
    writer = Writer(cluster, 1, "gs")
    writer.start()
    time.sleep(1.0)
    proc = cluster.procs[3]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    log = (cluster.root / "n3.log").read_text(errors="replace")
    assert "handing off" in log, cluster.log_tail(3)
    assert "stopping while leading" not in log, cluster.log_tail(3)
    time.sleep(0.5)
    writer.stop()
    cluster.start_node(3)
    cluster.wait_ready(3)
    assert len(writer.acked) > 10
    assert_all_readable(cluster, writer.acked)


def test_a_paused_node_resumes_without_losing_acknowledged_writes(cluster: LocalCluster) -> None:
    """SIGSTOP a whole node (process and workers) past the liveness timeout, then
    SIGCONT: the others carry on, the paused node's own stall is not held against
    its peers when it wakes, and every acknowledged write reads back everywhere."""
    writers = [Writer(cluster, n, f"pz{n}") for n in (1, 3)]
    for w in writers:
        w.start()
    time.sleep(1.0)
    pids = [cluster.procs[2].pid, *cluster.worker_pids(2)]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(3.0)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    time.sleep(1.5)
    for w in writers:
        w.stop()
    acked = {k: v for w in writers for k, v in w.acked.items()}
    assert len(acked) > 20
    assert_all_readable(cluster, acked)
    assert cluster.procs[2].poll() is None


def test_garbage_on_ports_and_oversized_values_never_hurt_the_node(
    cluster: LocalCluster,
) -> None:
    cfg = cluster.configs[0].node
    for addr in (cfg.listen_peer, cfg.listen_client):
        with socket.create_connection((addr.host, addr.port), timeout=5) as s:
            s.sendall(b"\xde\xad\xbe\xef" * 64 + b"\r\n*-1\r\n$99999999999\r\n")
            with contextlib.suppress(OSError):
                s.recv(1024)
    client = cluster.client(1)
    with pytest.raises(redis.ResponseError):
        client.set(b"big", b"x" * (cluster.configs[0].limits.max_value_bytes + 1))
    assert client.set(b"after-garbage", b"ok")
    assert cluster.client(2).get(b"after-garbage") == b"ok"


def test_bad_config_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    data = tmp_path / "data"
    cfg.write_text(f'[node]\nid = 1\ndata_dir = "{data}"\nworkerz = 2\n')
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "node", "--config", str(cfg)],
                          capture_output=True, timeout=30, check=False)
    assert proc.returncode == 2
    assert b"workerz" in proc.stderr
    assert not data.exists()
