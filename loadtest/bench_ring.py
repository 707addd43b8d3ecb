"""Shared-memory channel vs multiprocessing.Queue / Pipe / faster-fifo, between two processes.

Prints ONE JSON line. For every transport, a forked producer streams records
to the parent for ``--seconds`` (then a sentinel), and the parent counts what
it received:

- ``rps_64`` / ``rps_1k``: records/s of 64-byte and 1 KiB records;
  ``rps_64_mixed``: records/s of records of 32..96 bytes (no two batches'
  frames are guaranteed to share a layout);
- ``mbps_64k``: MB/s of 64 KiB records;
- ``lat_us_p50`` / ``lat_us_p99``: one record at a time, 5 ms apart, so the
  consumer is asleep when it arrives; send-to-receive time from the shared
  ``CLOCK_MONOTONIC``. For shm this is worker -> node (the node asleep in
  uvloop); ``worker_lat_us_*`` is node -> worker (the worker asleep in its
  blocking ``recv``, like the baselines' blocking ``get``/``recv_bytes``);
- shm only: ``cpu_ns_per_rec_*`` (CPU time per record of each side) and
  ``rps_*_cpu_bound`` / ``mbps_64k_cpu_bound``: the rate if each side had a
  core to itself (1 / the slower side's CPU per record), since on a shared
  machine the wall-clock rate measures the neighbours as much as the code;
- ``ratios``: shm channel over each baseline, measured in this same run (the
  machine is shared and noisy: compare the ratios, not the absolutes).

Transports: ``shm`` is the real ``transport.channel`` (producer = the worker's
blocking ``send`` of batches, consumer = the node's ``await recv()`` on uvloop);
``mp_queue`` puts/gets one record at a time (its normal use) and
``mp_queue_batched`` puts a list of records per call (pickled once);
``mp_pipe`` does one ``send_bytes``/``recv_bytes`` per record; ``faster_fifo``
uses ``put_many``/``get_many`` (its fast path).

Usage: ``python3 loadtest/bench_ring.py [--seconds S] [--profile]``
(``--profile`` prints the cProfile top functions of both shm sides for 64-byte
records to stderr).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import multiprocessing as mp
import pstats
import random
import statistics
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transport.channel import ChannelPair

try:
    import faster_fifo
except ImportError:  # optional baseline
    faster_fifo = None

CTX = mp.get_context("fork")
BATCH = {64: 1000, 1024: 256, 65536: 16}
MIXED = -64  # "size" of the 64-byte case with lengths spread over 32..96 bytes
LATENCY_SAMPLES = 150
LATENCY_GAP = 0.005

# -- producers (run in the forked child) ------------------------------------------


def _batches(size: int) -> list[bytes]:
    if size == MIXED:
        rnd = random.Random(64)
        return [bytes([i % 251]) * rnd.randint(32, 96) for i in range(BATCH[64])]
    return [bytes([i % 251]) * size for i in range(BATCH[size])]


def _shm_producer(pair: ChannelPair, size: int, seconds: float, profile: str) -> None:
    ch = pair.worker_end()
    batch = _batches(size)
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    cpu = time.process_time()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ch.send(batch)
    ch.send([struct.pack("<d", time.process_time() - cpu)])  # the sentinel: 8 bytes
    if prof:
        prof.disable()
        _print_profile(prof, "shm producer")
    ch.close()


def _shm_latency_producer(pair: ChannelPair) -> None:
    ch = pair.worker_end()
    for _ in range(LATENCY_SAMPLES):
        time.sleep(LATENCY_GAP)
        ch.send([struct.pack("<Q", time.monotonic_ns())])
    ch.send([b""])
    ch.close()


def _shm_latency_worker_consumer(pair: ChannelPair) -> None:
    """Worker side asleep in a blocking recv; reports its samples back as one record."""
    ch = pair.worker_end()
    samples: list[int] = []
    while len(samples) < LATENCY_SAMPLES:
        for rec in ch.recv(timeout=1.0):
            samples.append(time.monotonic_ns() - struct.unpack("<Q", rec)[0])
    ch.send([struct.pack(f"<{len(samples)}Q", *samples)])
    ch.close()


def _queue_producer(q: Any, size: int, seconds: float, batched: bool) -> None:
    batch = _batches(size)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if batched:
            q.put(batch)
        else:
            for rec in batch:
                q.put(rec)
    q.put(None)


def _fifo_producer(q: Any, size: int, seconds: float) -> None:
    batch = _batches(size)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        q.put_many(batch, timeout=60)
    q.put(None, timeout=60)


def _pipe_producer(conn: Any, size: int, seconds: float) -> None:
    batch = _batches(size)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for rec in batch:
            conn.send_bytes(rec)
    conn.send_bytes(b"")


def _stamp_producer(put: Callable[[bytes | None], None]) -> None:
    for _ in range(LATENCY_SAMPLES):
        time.sleep(LATENCY_GAP)
        put(struct.pack("<Q", time.monotonic_ns()))
    put(None)


# -- consumers (the parent) -----------------------------------------------------


def _throughput(count: int, size: int, elapsed: float) -> dict[str, float]:
    return {"rps": count / elapsed, "mbps": count * abs(size) / elapsed / 1e6}


def _bench_shm(size: int, seconds: float, profile: bool) -> dict[str, float]:
    pair = ChannelPair()
    proc = CTX.Process(target=_shm_producer, args=(pair, size, seconds, "p" if profile else ""))
    proc.start()
    node = pair.node_end(proc.pid or 0)

    async def consume() -> tuple[int, float, float]:
        count = 0
        first = await node.recv()
        start = time.perf_counter()
        count += len(first)
        while True:
            records = await node.recv()
            if len(records[-1]) == 8:  # no data record is 8 bytes long
                (producer_cpu,) = struct.unpack("<d", records[-1])
                return count + len(records) - 1, time.perf_counter() - start, producer_cpu
            count += len(records)

    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    cpu = time.process_time()
    count, elapsed, producer_cpu = uvloop.run(consume())
    consumer_cpu = time.process_time() - cpu
    if prof:
        prof.disable()
        _print_profile(prof, "shm consumer")
    node.close()
    proc.join()
    figures = _throughput(count, size, elapsed)
    figures["cpu_ns_per_rec_producer"] = producer_cpu / count * 1e9
    figures["cpu_ns_per_rec_consumer"] = consumer_cpu / count * 1e9
    return figures


def _bench_queue(size: int, seconds: float, batched: bool) -> dict[str, float]:
    q: Any = CTX.Queue(maxsize=64 if batched else 65536)
    proc = CTX.Process(target=_queue_producer, args=(q, size, seconds, batched))
    proc.start()
    item = q.get()
    start = time.perf_counter()
    count = len(item) if batched else 1
    while (item := q.get()) is not None:
        count += len(item) if batched else 1
    elapsed = time.perf_counter() - start
    proc.join()
    return _throughput(count, size, elapsed)


def _bench_fifo(size: int, seconds: float) -> dict[str, float]:
    q = faster_fifo.Queue(max_size_bytes=8 << 20)
    proc = CTX.Process(target=_fifo_producer, args=(q, size, seconds))
    proc.start()
    count = len(q.get_many(timeout=60))
    start = time.perf_counter()
    done = False
    while not done:
        items = q.get_many(timeout=60)
        if items[-1] is None:
            done = True
            items.pop()
        count += len(items)
    elapsed = time.perf_counter() - start
    proc.join()
    return _throughput(count, size, elapsed)


def _bench_pipe(size: int, seconds: float) -> dict[str, float]:
    recv_end, send_end = CTX.Pipe(duplex=False)
    proc = CTX.Process(target=_pipe_producer, args=(send_end, size, seconds))
    proc.start()
    send_end.close()
    recv_end.recv_bytes()
    start = time.perf_counter()
    count = 1
    while recv_end.recv_bytes():
        count += 1
    elapsed = time.perf_counter() - start
    proc.join()
    return _throughput(count, size, elapsed)


def _latency_stats(samples_ns: list[int]) -> dict[str, float]:
    samples = sorted(s / 1000 for s in samples_ns)
    return {
        "lat_us_p50": statistics.median(samples),
        "lat_us_p99": samples[int(len(samples) * 0.99) - 1],
    }


def _latency_shm() -> dict[str, float]:
    pair = ChannelPair(1 << 20)
    proc = CTX.Process(target=_shm_latency_producer, args=(pair,))
    proc.start()
    node = pair.node_end(proc.pid or 0)

    async def consume() -> list[int]:
        out: list[int] = []
        while True:
            for rec in await node.recv():
                if not len(rec):
                    return out
                out.append(time.monotonic_ns() - struct.unpack("<Q", rec)[0])

    samples = uvloop.run(consume())
    node.close()
    proc.join()
    return _latency_stats(samples)


def _latency_shm_worker() -> dict[str, float]:
    """The other direction: the node stamps, the worker sleeps in its blocking recv."""
    pair = ChannelPair(1 << 20)
    proc = CTX.Process(target=_shm_latency_worker_consumer, args=(pair,))
    proc.start()
    node = pair.node_end(proc.pid or 0)
    for _ in range(LATENCY_SAMPLES):
        time.sleep(LATENCY_GAP)
        node.send_nowait([struct.pack("<Q", time.monotonic_ns())])

    async def collect() -> list[int]:
        (rec,) = await node.recv()
        return list(struct.unpack(f"<{len(rec) // 8}Q", rec))

    samples = uvloop.run(collect())
    node.close()
    proc.join()
    return {f"worker_{k}": v for k, v in _latency_stats(samples).items()}


def _latency_queue() -> dict[str, float]:
    q: Any = CTX.Queue()
    proc = CTX.Process(target=_stamp_producer, args=(q.put,))
    proc.start()
    samples = []
    while (item := q.get()) is not None:
        samples.append(time.monotonic_ns() - struct.unpack("<Q", item)[0])
    proc.join()
    return _latency_stats(samples)


def _pipe_put(conn: Any) -> Callable[[bytes | None], None]:
    return lambda rec: conn.send_bytes(rec or b"")


def _latency_pipe() -> dict[str, float]:
    recv_end, send_end = CTX.Pipe(duplex=False)
    proc = CTX.Process(target=_stamp_producer, args=(_pipe_put(send_end),))
    proc.start()
    send_end.close()
    samples = []
    while rec := recv_end.recv_bytes():
        samples.append(time.monotonic_ns() - struct.unpack("<Q", rec)[0])
    proc.join()
    return _latency_stats(samples)


def _latency_fifo() -> dict[str, float]:
    q = faster_fifo.Queue()
    proc = CTX.Process(target=_stamp_producer, args=(q.put,))
    proc.start()
    samples = []
    while (item := q.get(timeout=60)) is not None:
        samples.append(time.monotonic_ns() - struct.unpack("<Q", item)[0])
    proc.join()
    return _latency_stats(samples)


def _print_profile(prof: cProfile.Profile, title: str) -> None:
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(8)
    print(f"== {title} ==\n{out.getvalue()}", file=sys.stderr)


def _calibrate() -> float:
    """µs of CPU for a fixed pure-Python loop: how loaded the shared machine is now."""
    start = time.process_time()
    total = 0
    for i in range(200_000):
        total += i & 7
    return (time.process_time() - start) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.8, help="streaming time per case")
    parser.add_argument("--profile", action="store_true", help="cProfile the shm 64 B case")
    args = parser.parse_args()
    secs = args.seconds
    benches: dict[str, Callable[[int], dict[str, float]]] = {
        "shm": lambda size: _bench_shm(size, secs, args.profile and size == 64),
        "mp_queue": lambda size: _bench_queue(size, secs, batched=False),
        "mp_queue_batched": lambda size: _bench_queue(size, secs, batched=True),
        "mp_pipe": lambda size: _bench_pipe(size, secs),
    }
    latency = {
        "shm": lambda: {**_latency_shm(), **_latency_shm_worker()},
        "mp_queue": _latency_queue,
        "mp_pipe": _latency_pipe,
    }
    if faster_fifo is not None:
        benches["faster_fifo"] = lambda size: _bench_fifo(size, secs)
        latency["faster_fifo"] = _latency_fifo
    result: dict[str, Any] = {"bench": "ring", "seconds_per_case": secs, "calib_us": _calibrate()}
    for name, bench in benches.items():
        small, mixed, mid, big = bench(64), bench(MIXED), bench(1024), bench(65536)
        row: dict[str, Any] = {
            "rps_64": round(small["rps"]),
            "rps_64_mixed": round(mixed["rps"]),
            "rps_1k": round(mid["rps"]),
            "mbps_64k": round(big["mbps"]),
        }
        if name == "shm":
            # Records/s if each side had a core of its own: CPU per record of
            # the slower side (the machine is shared, so wall-clock rates sag).
            for label, fig in (("64", small), ("64_mixed", mixed), ("1k", mid)):
                worst = max(fig["cpu_ns_per_rec_producer"], fig["cpu_ns_per_rec_consumer"])
                row[f"cpu_ns_per_rec_{label}"] = {
                    "producer": round(fig["cpu_ns_per_rec_producer"]),
                    "consumer": round(fig["cpu_ns_per_rec_consumer"]),
                }
                row[f"rps_{label}_cpu_bound"] = round(1e9 / worst)
            worst_64k = max(big["cpu_ns_per_rec_producer"], big["cpu_ns_per_rec_consumer"])
            row["mbps_64k_cpu_bound"] = round(65536 / worst_64k * 1e3)
        if name in latency:
            row.update({k: round(v, 1) for k, v in latency[name]().items()})
        result[name] = row
    shm = result["shm"]
    result["ratios"] = {
        f"shm_vs_{name}": {
            key: round(shm[key] / result[name][key], 2)
            for key in ("rps_64", "rps_64_mixed", "rps_1k", "mbps_64k")
        }
        for name in benches
        if name != "shm"
    }
    result["targets_met"] = {
        "rps_64>=1e6": shm["rps_64"] >= 1_000_000,
        "mbps_64k>=1500": shm["mbps_64k"] >= 1500,
        "rps_64>=5x_mp_queue": result["ratios"]["shm_vs_mp_queue"]["rps_64"] >= 5,
    }
    result["calib_us_end"] = _calibrate()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
