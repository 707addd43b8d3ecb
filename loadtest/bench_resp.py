"""RESP front-end throughput and latency, against a real Redis in the same run.

Prints ONE JSON line. Two servers are started as separate processes, so the
asyncio (uvloop) load generator in this process never shares their loop:

- ``multiraft``: ``python -m engine.resp`` (``RespServer`` over the
  ``LocalBackend``: one in-process KV state machine, no raft), i.e. the cost
  of the RESP layer, command translation and the KV codec/state machine;
- the baseline: ``redis-server`` (persistence off) when installed, else a
  minimal asyncio server that answers the same frames with canned replies
  (``baseline.kind`` says which).

Scenarios, each for SET then GET of 100-byte values under 16-byte keys:
1 client and 64 clients without pipelining (``c1``, ``c64``), and 64 clients
with pipeline depth 16 (``c64p16``). Latency is per request round trip (for
a pipeline: the batch's round trip, which every command in it waited).
Figures per scenario: ``ops_s``, ``p50_ms``, ``p99_ms``, and the CPU seconds
the server and the load generator used (``server_cpu_s``, ``gen_cpu_s``; on
the shared 2-core box a generator near ``seconds`` of CPU means it, not the
server, was the bottleneck). ``ratio`` is multiraft ops/s over the baseline's
for each scenario: compare ratios, not absolutes, on a noisy machine.
``server_cpu_us_per_op`` (and ``cpu_per_op_ratio``, ours over the
baseline's) is the steadier figure when neighbours starve the servers of
CPU: it does not depend on how much of a core the scheduler granted.

Usage: ``python3 loadtest/bench_resp.py [--seconds S] [--profile]``
(``--profile`` runs the multiraft server under cProfile for the whole run and
prints its top functions to stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

ROOT = Path(__file__).resolve().parent.parent
VALUE = b"v" * 100
KEYS_PER_CLIENT = 100
SCENARIOS = (("c1", 1, 1), ("c64", 64, 1), ("c64p16", 64, 16))


def key(client: int, i: int) -> bytes:
    return b"key:%05d:%06d" % (client, i % KEYS_PER_CLIENT)  # 16 bytes


def set_frame(k: bytes) -> bytes:
    return b"*3\r\n$3\r\nSET\r\n$16\r\n%b\r\n$100\r\n%b\r\n" % (k, VALUE)


def get_frame(k: bytes) -> bytes:
    return b"*2\r\n$3\r\nGET\r\n$16\r\n%b\r\n" % k


SET_REPLY = b"+OK\r\n"
GET_REPLY = b"$100\r\n" + VALUE + b"\r\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# --- servers ------------------------------------------------------------------------------


def start_multiraft(profile_to: str | None) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    cmd = [sys.executable]
    if profile_to:
        cmd += ["-m", "cProfile", "-o", profile_to]
        cmd += [str(ROOT / "engine" / "resp" / "__main__.py")]
    else:
        cmd += ["-m", "engine.resp"]
    cmd += ["--port", str(port)]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL
    )
    return proc, port


def start_redis() -> tuple[subprocess.Popen[bytes], int] | None:
    exe = shutil.which("redis-server")
    if exe is None:
        return None
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
    )
    return proc, port


ECHO_SERVER = r'''
import asyncio, sys, uvloop
SET, GET = b"+OK\r\n", b"$100\r\n" + b"v" * 100 + b"\r\n"
class P(asyncio.Protocol):
    def connection_made(self, t): self.t, self.buf = t, b""
    def data_received(self, d):
        self.buf += d
        out = []
        while True:  # each request is one SET (3 args) or GET (2 args) frame
            if self.buf.startswith(b"*3\r\n"):
                n = self.buf.find(b"\r\n", self.buf.find(b"$100\r\n") + 6) + 2
                if n < 2 or n > len(self.buf): break
                out.append(SET)
            elif self.buf.startswith(b"*2\r\n"):
                n = self.buf.find(b"\r\n", self.buf.find(b"$16\r\n") + 5) + 2
                if n < 2: break
                out.append(GET)
            else: break
            self.buf = self.buf[n:]
        if out: self.t.write(b"".join(out))
async def main():
    await asyncio.get_running_loop().create_server(P, "127.0.0.1", int(sys.argv[1]))
    await asyncio.Event().wait()
uvloop.run(main())
'''


def start_echo() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    return subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(port)]), port


async def wait_listening(port: int) -> None:
    for _ in range(200):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        w.close()
        return
    raise RuntimeError(f"server on port {port} did not come up")


# --- load generator -----------------------------------------------------------------------


async def prefill(port: int, clients: int) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    for c in range(clients):
        w.write(b"".join(set_frame(key(c, i)) for i in range(KEYS_PER_CLIENT)))
        await r.readexactly(len(SET_REPLY) * KEYS_PER_CLIENT)
    w.close()


async def client(
    port: int, cid: int, op: str, depth: int, deadline: float, lat: list[float]
) -> int:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    make, reply = (set_frame, SET_REPLY) if op == "set" else (get_frame, GET_REPLY)
    frames = [make(key(cid, i)) for i in range(KEYS_PER_CLIENT)]
    expect = len(reply) * depth
    done = 0
    i = 0
    perf = time.perf_counter
    while perf() < deadline:
        batch = b"".join(frames[(i + j) % KEYS_PER_CLIENT] for j in range(depth))
        i += depth
        t0 = perf()
        w.write(batch)
        got = await r.readexactly(expect)
        lat.append(perf() - t0)
        done += depth
        if got[: len(reply)] != reply:
            raise RuntimeError(f"unexpected reply {got[:40]!r}")
    w.close()
    return done


def pct(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def scenario(
    port: int, pid: int, op: str, clients: int, depth: int, seconds: float
) -> dict[str, float]:
    lat: list[float] = []
    cpu0, gen0 = cpu_seconds(pid), own_cpu()
    t0 = time.perf_counter()
    deadline = t0 + seconds
    counts = await asyncio.gather(
        *[client(port, c, op, depth, deadline, lat) for c in range(clients)]
    )
    elapsed = time.perf_counter() - t0
    server_cpu = cpu_seconds(pid) - cpu0
    lat.sort()
    return {
        "ops_s": round(sum(counts) / elapsed),
        "p50_ms": round(pct(lat, 0.50) * 1e3, 3),
        "p99_ms": round(pct(lat, 0.99) * 1e3, 3),
        "server_cpu_s": round(server_cpu, 2),
        "server_cpu_us_per_op": round(server_cpu / max(1, sum(counts)) * 1e6, 1),
        "gen_cpu_s": round(own_cpu() - gen0, 2),
    }


async def run_all(port: int, pid: int, seconds: float) -> dict[str, dict[str, float]]:
    await wait_listening(port)
    await prefill(port, 64)
    out: dict[str, dict[str, float]] = {}
    for name, clients, depth in SCENARIOS:
        for op in ("set", "get"):
            out[f"{op}_{name}"] = await scenario(port, pid, op, clients, depth, seconds)
    return out


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop a server; ours gets SIGINT, which lets a cProfile'd run write its profile."""
    proc.send_signal(sig)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="per scenario and operation")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    results: dict[str, Any] = {"bench": "resp", "key_bytes": 16, "value_bytes": 100,
                               "seconds": args.seconds}
    with tempfile.TemporaryDirectory() as tmp:
        prof = str(Path(tmp) / "server.prof") if args.profile else None
        ours, port = start_multiraft(prof)
        try:
            results["multiraft"] = uvloop.run(run_all(port, ours.pid, args.seconds))
        finally:
            stop(ours, signal.SIGINT)
        if prof:
            pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(15)
    started = start_redis()
    kind = "redis-server" if started is not None else "asyncio-canned-replies"
    base, bport = started if started is not None else start_echo()
    try:
        results["baseline"] = {"kind": kind, **uvloop.run(run_all(bport, base.pid, args.seconds))}
    finally:
        stop(base)
    ours, base_res = results["multiraft"], results["baseline"]
    results["ratio"] = {k: round(v["ops_s"] / base_res[k]["ops_s"], 3) for k, v in ours.items()}
    results["cpu_per_op_ratio"] = {
        k: round(v["server_cpu_us_per_op"] / max(0.1, base_res[k]["server_cpu_us_per_op"]), 2)
        for k, v in ours.items()
    }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
