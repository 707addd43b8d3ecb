"""Log-store benchmark: every backend side by side, against the raw disk limit.

Workloads: 1, 100 and 10,000 ranges; each batch carries one entry per range
(100-byte payloads, then 1 KiB), written with ``write(batch, sync=True)`` (one
durable batch at a time). For each backend it reports batches/s, entries/s,
payload MB/s, fsyncs/s, bytes on disk per entry and CPU µs per entry (process
CPU of all threads during the writes, batch building excluded), plus the raw
disk limit measured in the same run: plain ``os.write`` + ``os.fdatasync`` of
the same payload bytes in the same batch sizes, in two forms: ``raw`` overwrites
a preallocated (zero-filled, synced) file, the disk's real limit; and
``raw_append`` appends to a growing file, which costs a journal commit per
fdatasync for the size change (4-5x slower for small batches here), the
limit of an append-only log that does not preallocate. ``pct_of_raw`` is
against ``raw``, the stricter one. Then the recovery time (open
of a closed store, page cache dropped for its files with ``posix_fadvise``) of
a large log per durable backend.

fsyncs/s: sqlite syncs from C, invisible to Python, so the fsync count is
measured for every durable backend the same way: a short census run of the
same workload under ``strace -f -c -e trace=fsync,fdatasync`` gives fsyncs
per batch, multiplied by the timed run's batches/s (null without strace).

Usage::

    python3 loadtest/bench_logstore.py                    # default: a few minutes
    python3 loadtest/bench_logstore.py --recovery-mib 1024  # the ~1 GiB recovery figure
    python3 loadtest/bench_logstore.py --profile 10000     # cProfile headline per backend

Prints ONE JSON line on stdout; progress goes to stderr. The disk and CPU are
shared and noisy: compare ratios from one run (``pct_of_raw``,
``segmented_vs_sqlite``), not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from logstore import LogEntry, WriteBatch, open_log_store  # noqa: E402
from logstore.factory import DURABLE_BACKENDS, available_backends  # noqa: E402

MB = 1e6


class Payloads:
    """Fresh random payloads for every entry: nothing to compress, within a
    batch or across batches (an LSM compresses neighbouring keys, so reused
    bytes would flatter it). Generation is outside the timed section."""

    def __init__(self, n_ranges: int, size: int) -> None:
        self.size = size
        # A random block the size of one batch's payload (raw runners write it).
        self.pool = os.urandom(n_ranges * size)
        # Invariant: the entries of the last batch built, by range id - 1.
        self.last: list[LogEntry] = []

    def batch(self, n_ranges: int, index: int) -> WriteBatch:
        size, block = self.size, os.urandom(n_ranges * self.size)
        self.last = [
            LogEntry(1, index, 0, block[k * size : (k + 1) * size]) for k in range(n_ranges)
        ]
        b = WriteBatch()
        for rid, e in enumerate(self.last, start=1):
            b.append(rid, (e,))
        return b


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


RAW = ("raw", "raw_append")


class Runner:
    """One backend (or a raw file) on one workload, run in time slices so
    that every contender sees the same mix of disk noise."""

    def __init__(
        self, backend: str, root: Path, n_ranges: int, size: int, max_batches: int
    ) -> None:
        self.backend = backend
        self.path = root / f"{backend}-{n_ranges}-{size}"
        self.n_ranges = n_ranges
        self.size = size
        self.payloads = Payloads(n_ranges, size)
        self.wall = self.cpu = 0.0
        self.batches = 0
        if backend in RAW:
            self.path.mkdir(parents=True)
            self.block = self.payloads.pool[: n_ranges * size]
            flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if backend == "raw_append" else 0)
            self.fd = os.open(self.path / "raw.log", flags, 0o644)
            if backend == "raw":
                zeros = bytes(len(self.block))
                for _ in range(max_batches):
                    os.write(self.fd, zeros)
                os.fsync(self.fd)
                os.lseek(self.fd, 0, os.SEEK_SET)
        else:
            self.store = open_log_store(backend, self.path)

    def run_for(self, seconds: float, max_batches: int) -> None:
        spent = 0.0
        while self.batches < max_batches and (spent < seconds or self.batches < 3):
            if self.backend in RAW:
                t0, c0 = time.perf_counter(), time.process_time()
                os.write(self.fd, self.block)
                os.fdatasync(self.fd)
            else:
                b = self.payloads.batch(self.n_ranges, self.batches + 1)
                t0, c0 = time.perf_counter(), time.process_time()
                self.store.write(b, sync=True)
            dt = time.perf_counter() - t0
            self.cpu += time.process_time() - c0
            self.wall += dt
            spent += dt
            self.batches += 1

    def finish(self) -> dict[str, Any]:
        if self.backend in RAW:
            os.close(self.fd)
        else:
            assert self.store.last_index(self.n_ranges) == self.batches  # it holds the writes
            self.store.close()
        disk = dir_bytes(self.path) if self.backend != "memory" else 0
        shutil.rmtree(self.path, ignore_errors=True)
        n, entries, wall = self.batches, self.batches * self.n_ranges, self.wall
        return {
            "batches": n,
            "batches_s": round(n / wall, 1),
            "entries_s": round(entries / wall, 1),
            "mb_s": round(entries * self.size / wall / MB, 2),
            "cpu_us_per_entry": round(self.cpu / entries * 1e6, 2),
            "disk_bytes_per_entry": round(disk / entries, 1) if disk else None,
        }


def max_batches_for(n_ranges: int, size: int) -> int:
    """Cap a case at ~64 MB of payload per contender (and 20,000 batches)."""
    return max(4, min(20000, int(64e6 // (n_ranges * size))))


def census(backend: str, root: Path, n_ranges: int, size: int, batches: int) -> float | None:
    """fsync+fdatasync calls per batch, counted by strace over a short run
    minus a run of 0 batches (opening and closing a store syncs too)."""
    if backend not in DURABLE_BACKENDS:
        return 0.0
    strace = shutil.which("strace")
    if strace is None:
        return None
    with_batches = _count_syncs(strace, backend, root, n_ranges, size, batches)
    baseline = _count_syncs(strace, backend, root, n_ranges, size, 0)
    return round(max(0, with_batches - baseline) / batches, 2)


_STRACE_ROW = re.compile(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(?:fsync|fdatasync)$")


def _count_syncs(strace: str, backend: str, root: Path, n_ranges: int, size: int, n: int) -> int:
    out = root / "census.txt"
    path = root / f"census-{backend}"
    cmd = [strace, "-f", "-c", "-e", "trace=fsync,fdatasync", "-o", str(out), sys.executable,
           __file__, "--census-child", backend, str(path), str(n_ranges), str(size), str(n)]
    try:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rows = (_STRACE_ROW.match(line) for line in out.read_text().splitlines())
        return sum(int(m.group(1)) for m in rows if m)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def census_child(backend: str, path: str, n_ranges: int, size: int, batches: int) -> None:
    store = open_log_store(backend, path)
    payloads = Payloads(n_ranges, size)
    for i in range(1, batches + 1):
        store.write(payloads.batch(n_ranges, i), sync=True)
    store.close()


def drop_cache(path: Path) -> None:
    """Evict a closed store's (clean) pages so that reopening reads the disk."""
    for p in path.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def run_recovery(backend: str, root: Path, mib: int, progress: Progress) -> dict[str, Any]:
    """Write ~``mib`` MiB (1,000 ranges, 1 KiB entries, 1 MiB batches), reopen."""
    path = root / f"recovery-{backend}"
    n_ranges, size = 1000, 1024
    batches = max(1, mib * (1 << 20) // (n_ranges * size))
    payloads = Payloads(n_ranges, size)
    task = progress.add_task(f"recovery {backend}: writing {mib} MiB", total=batches)
    store = open_log_store(backend, path)
    for i in range(1, batches + 1):
        store.write(payloads.batch(n_ranges, i), sync=True)
        progress.advance(task)
    store.close()
    disk = dir_bytes(path)
    drop_cache(path)
    t0 = time.perf_counter()
    store = open_log_store(backend, path)
    open_s = time.perf_counter() - t0
    try:
        assert store.last_index(n_ranges) == batches
        t0 = time.perf_counter()
        got = store.entries(n_ranges // 2, batches, batches + 1)
        first_read_ms = (time.perf_counter() - t0) * 1e3
        assert got == [payloads.last[n_ranges // 2 - 1]]
    finally:
        store.close()
        shutil.rmtree(path, ignore_errors=True)
    progress.remove_task(task)
    return {
        "log_mib": round(disk / (1 << 20), 1),
        "entries": batches * n_ranges,
        "open_s": round(open_s, 3),
        "open_mb_s": round(disk / open_s / MB, 1),
        "first_read_ms": round(first_read_ms, 2),
    }


def profile(backends: list[str], root: Path, n_ranges: int, size: int) -> None:
    """Print the top of a cProfile of each backend's write path to stderr."""
    for backend in backends:
        path = root / f"profile-{backend}"
        store = open_log_store(backend, path)
        payloads = Payloads(n_ranges, size)
        batches = [payloads.batch(n_ranges, i) for i in range(1, 11)]
        prof = cProfile.Profile()
        prof.enable()
        for b in batches:
            store.write(b, sync=True)
        prof.disable()
        store.close()
        shutil.rmtree(path, ignore_errors=True)
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(8)
        print(f"== profile {backend} ({n_ranges} ranges x {size} B, 10 batches)", file=sys.stderr)
        print(buf.getvalue(), file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backends", default=",".join(available_backends()))
    ap.add_argument("--ranges", default="1,100,10000")
    ap.add_argument("--sizes", default="100,1024")
    ap.add_argument("--seconds", type=float, default=3.0, help="time budget per case")
    ap.add_argument("--recovery-mib", type=int, default=64, help="1024 for the ~1 GiB figure")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    ap.add_argument("--profile", type=int, default=0, metavar="RANGES",
                    help="only profile the write path at this many ranges (100 B entries)")
    ap.add_argument("--census-child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.census_child:
        b, p, r, s, n = args.census_child
        census_child(b, p, int(r), int(s), int(n))
        return
    backends = args.backends.split(",")
    root = Path(tempfile.mkdtemp(prefix="bench_logstore.", dir=args.dir))
    try:
        if args.profile:
            profile(backends, root, args.profile, 100)
            return
        print(json.dumps(run_all(args, backends, root)))
    finally:
        shutil.rmtree(root, ignore_errors=True)


ROUNDS = 6  # time slices per contender and case


def run_case(
    backends: list[str], root: Path, n_ranges: int, size: int, seconds: float
) -> dict[str, Any]:
    max_batches = max_batches_for(n_ranges, size)
    runners = [Runner(b, root, n_ranges, size, max_batches) for b in [*RAW, *backends]]
    for _ in range(ROUNDS):
        for r in runners:
            r.run_for(seconds / ROUNDS, max_batches * (_ + 1) // ROUNDS)
    results = {r.backend: r.finish() for r in runners}
    row: dict[str, Any] = {"ranges": n_ranges, "entry_bytes": size}
    for name in RAW:
        row[name] = results.pop(name)
        row[name]["fsyncs_s"] = row[name]["batches_s"]
        del row[name]["disk_bytes_per_entry"]
    raw = row["raw"]
    for backend, res in results.items():
        per_batch = census(backend, root, n_ranges, size, min(res["batches"], 50))
        res["fsyncs_per_batch"] = per_batch
        res["fsyncs_s"] = None if per_batch is None else round(per_batch * res["batches_s"], 1)
        res["pct_of_raw"] = round(100 * res["batches_s"] / raw["batches_s"], 1)
        row[backend] = res
    if "segmented" in row and "sqlite" in row:
        row["segmented_vs_sqlite"] = round(
            row["segmented"]["entries_s"] / row["sqlite"]["entries_s"], 2
        )
    return row


def run_all(args: argparse.Namespace, backends: list[str], root: Path) -> dict[str, Any]:
    workloads = []
    sizes = [int(x) for x in args.sizes.split(",")]
    range_counts = [int(x) for x in args.ranges.split(",")]
    with Progress(console=Console(stderr=True), transient=True) as progress:
        cases = progress.add_task("workloads", total=len(sizes) * len(range_counts))
        for size in sizes:
            for n_ranges in range_counts:
                progress.update(cases, description=f"{n_ranges} ranges x {size} B")
                workloads.append(run_case(backends, root, n_ranges, size, args.seconds))
                progress.advance(cases)
        recovery = {
            b: run_recovery(b, root, args.recovery_mib, progress)
            for b in backends
            if b in DURABLE_BACKENDS
        }
    return {
        "bench": "logstore",
        "cpus": os.cpu_count(),
        "sync": "write(batch, sync=True) per batch; raw = os.write + os.fdatasync "
        "(raw: preallocated file, raw_append: growing file)",
        "workloads": workloads,
        "recovery": recovery,
    }


if __name__ == "__main__":
    main()
