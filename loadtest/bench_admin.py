"""Benchmark of the HTTP admin path: what our layer costs over bare aiohttp.

Not a test. Prints ONE JSON line. Server and load generator share one event
loop in one process (the CPU is shared and noisy, so absolute figures mean
little); the figure that matters is the ratio to the baseline measured in
the same run: a bare aiohttp app answering ``GET /ping`` with fixed bytes,
no middleware. ``/kv`` GET and PUT go through our middleware (error mapping,
per-endpoint metrics), validation and the LocalBackend's KV codec and state
machine; ``/metrics`` renders the registry at a realistic cardinality (8
workers, 20 commands x 4 outcomes). It also times ``parse_config`` of the
reference file and ``NodeMetrics.render``.

    python3 loadtest/bench_admin.py [--seconds 5] [--concurrency 16] [--profile]

Each phase runs in 5 interleaved rounds totalling ``--seconds``.
``--profile`` runs the /kv GET rounds under cProfile (which slows them: do
not quote the GET ratio of a profiled run) and prints the top functions to
stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import sys
import time
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import ClientSession, web

from engine.admin import LocalBackend, NodeMetrics, WorkerTotals, create_admin_app
from engine.config import parse_config

Request = Callable[[ClientSession, int], Awaitable[None]]


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert site._server is not None
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    return runner, f"http://127.0.0.1:{port}"


async def _drive(request: Request, seconds: float, concurrency: int) -> float:
    """Requests per second with ``concurrency`` clients for ``seconds``."""
    done = 0
    deadline = time.perf_counter() + seconds
    async with ClientSession() as session:
        async def client(cid: int) -> None:
            nonlocal done
            i = cid
            while time.perf_counter() < deadline:
                await request(session, i)
                done += 1
                i += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(concurrency)))
        return done / (time.perf_counter() - started)


def _populate(metrics: NodeMetrics) -> None:
    for w in range(8):
        metrics.observe_worker_totals(w, WorkerTotals(1, 1, 1, 1, 1, 0.1))
        metrics.observe_fsync(w, 0.001)
        metrics.observe_ranges(w, 1000, 900)
        metrics.observe_queue_depth(w, 1, 1)
    for c in range(20):
        for outcome in ("ok", "err", "tryagain", "timeout"):
            metrics.observe_request(f"CMD{c}", outcome, 0.001)


async def main(
    seconds: float, concurrency: int, profile: bool, rounds: int = 5
) -> dict[str, object]:
    async def ping(_: web.Request) -> web.Response:
        return web.Response(body=b"x" * 100, content_type="application/octet-stream")

    bare = web.Application()
    bare.router.add_get("/ping", ping)
    metrics = NodeMetrics(node_id=1)
    _populate(metrics)
    backend = LocalBackend(split_points=tuple(b"key:%012d" % (i * 1000) for i in range(1, 8)))
    runners = []
    r1, base = await _serve(bare)
    r2, admin = await _serve(create_admin_app(backend, metrics))
    runners += [r1, r2]
    keyspace, value = 10_000, b"v" * 100

    async def get_ping(s: ClientSession, _: int) -> None:
        async with s.get(f"{base}/ping") as r:
            await r.read()

    async def put_kv(s: ClientSession, i: int) -> None:
        async with s.put(f"{admin}/kv/key:{i % keyspace:012d}", data=value) as r:
            await r.read()

    async def get_kv(s: ClientSession, i: int) -> None:
        async with s.get(f"{admin}/kv/key:{i % keyspace:012d}") as r:
            await r.read()

    async def get_metrics(s: ClientSession, _: int) -> None:
        async with s.get(f"{admin}/metrics") as r:
            await r.read()

    out: dict[str, object] = {"bench": "admin", "seconds": seconds, "concurrency": concurrency}
    try:
        # Interleaved short rounds, so that the shared CPU's noise hits the
        # baseline and our paths alike and the ratios stay meaningful.
        rates: dict[str, list[float]] = {"ping": [], "put": [], "get": []}
        prof = cProfile.Profile() if profile else None
        for _ in range(rounds):
            rates["ping"].append(await _drive(get_ping, seconds / rounds, concurrency))
            rates["put"].append(await _drive(put_kv, seconds / rounds, concurrency))
            if prof:
                prof.enable()
            rates["get"].append(await _drive(get_kv, seconds / rounds, concurrency))
            if prof:
                prof.disable()
        if prof:
            text = io.StringIO()
            pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(12)
            print(text.getvalue(), file=sys.stderr)
        baseline, put, get = (sum(rates[k]) / rounds for k in ("ping", "put", "get"))
        mets = await _drive(get_metrics, seconds / 2, 4)
    finally:
        for r in runners:
            await r.cleanup()
    ref = (Path(__file__).resolve().parents[1] / "ops" / "config.reference.toml").read_text()
    raw = tomllib.loads(ref)
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        parse_config(raw)
    parse_us = (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    for _ in range(200):
        size = len(metrics.render())
    render_us = (time.perf_counter() - t0) / 200 * 1e6
    out.update({
        "baseline_ping_rps": round(baseline),
        "kv_put_rps": round(put), "kv_get_rps": round(get), "metrics_rps": round(mets),
        "kv_put_vs_baseline": round(put / baseline, 3),
        "kv_get_vs_baseline": round(get / baseline, 3),
        "parse_config_us": round(parse_us, 1),
        "metrics_render_us": round(render_us, 1), "metrics_bytes": size,
    })
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    print(json.dumps(asyncio.run(main(a.seconds, a.concurrency, a.profile))))
