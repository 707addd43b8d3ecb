"""A real local cluster for the integration tests: node processes on 127.0.0.1.

Each node is ``python -m engine.cli node --config nI.toml`` (the same code
path as ``multiraft node``), with free ports picked at start. ``kill_node``
is a SIGKILL; ``start_node`` restarts a node with its same config and data.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from engine.config import NodeConfig, local_cluster_configs, render_toml
from engine.testing.ports import free_port_base


class LocalCluster:
    """``n`` node processes with ``workers`` workers each, under ``root``."""

    def __init__(self, root: Path, n: int = 3, workers: int = 2) -> None:
        self.root = root
        base = free_port_base(3 * n + 3)
        self.configs: list[NodeConfig] = local_cluster_configs(
            n, root, (base, base + n + 1, base + 2 * n + 2), workers=workers)
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def config_path(self, node: int) -> Path:
        return self.root / f"n{node}.toml"

    def start_node(self, node: int) -> None:
        cfg = self.configs[node - 1]
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.config_path(node)
        path.write_text(render_toml(cfg))
        log = open(self.root / f"n{node}.log", "ab")  # noqa: SIM115 - owned by the child
        self.procs[node] = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "node", "--config", str(path)],
            stdout=log, stderr=log, cwd=Path(__file__).resolve().parents[2])
        log.close()

    def start(self) -> None:
        for c in self.configs:
            self.start_node(c.node.id)
        for c in self.configs:
            self.wait_ready(c.node.id)

    def client(self, node: int, timeout: float = 15.0) -> redis.Redis:
        port = self.configs[node - 1].node.listen_client.port
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=timeout,
                           socket_connect_timeout=5)

    def wait_ready(self, node: int, timeout: float = 45.0) -> None:
        """Until the node answers PING and a write through it succeeds."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            proc = self.procs[node]
            if proc.poll() is not None:
                raise AssertionError(f"node {node} exited with {proc.returncode}: "
                                     f"{self.log_tail(node)}")
            try:
                c = self.client(node, timeout=5)
                c.set(b"__ready__", b"1")
                c.close()
                return
            except redis.RedisError as e:
                last = e
                time.sleep(0.2)
        raise AssertionError(f"node {node} not ready: {last!r}\n{self.log_tail(node)}")

    def worker_pids(self, node: int) -> list[int]:
        """The node's forked workers: its children running the node's own command line
        (other children, e.g. multiprocessing's resource tracker, run something else)."""
        pid = self.procs[node].pid
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        out: list[int] = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                try:
                    if Path(f"/proc/{child}/cmdline").read_bytes() == cmdline:
                        out.append(int(child))
                except FileNotFoundError:
                    continue
        return sorted(out)

    def kill_node(self, node: int) -> None:
        proc = self.procs[node]
        workers = self.worker_pids(node)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # Its workers notice the node's death by themselves; wait for that.
        deadline = time.monotonic() + 10
        for w in workers:
            while time.monotonic() < deadline and _alive(w):
                time.sleep(0.05)

    def stop(self) -> dict[int, int]:
        """SIGTERM every running node; their exit codes."""
        codes: dict[int, int] = {}
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for node, proc in self.procs.items():
            try:
                codes[node] = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[node] = proc.wait()
        return codes

    def log_tail(self, node: int, lines: int = 30) -> str:
        path = self.root / f"n{node}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie has released its sockets: not alive)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
