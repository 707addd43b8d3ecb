"""Recovery time of a segmented log store of about 1 GiB (issue 3 target: < 10 s).

Builds a log of ``--ranges`` ranges with one ``--entry-bytes`` entry per range
per batch (incompressible data, so the bytes on disk are the real volume)
until the segment files reach ``--gib`` GiB, closes it, then measures in the
same run:

- ``raw_read_s``: plain sequential read of the same files (the disk limit),
- ``recovery_s``: ``SegmentedLogStore(path)`` (scan, CRC, decode, rebuild index),

once with the files in the page cache ("warm") and once after dropping them
from it with ``posix_fadvise(DONTNEED)`` ("cold"). Prints one JSON line;
``--profile`` adds the top functions of a cProfile of one warm recovery.

    python3 loadtest/bench_recovery.py --gib 1 --dir /tmp/bench_recovery
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from logstore.protocol import LogEntry, WriteBatch
from logstore.segmented import SegmentedLogStore


def build(path: Path, gib: float, ranges: int, entry_bytes: int) -> tuple[int, float]:
    """Write the log; (entries written, seconds)."""
    target = int(gib * (1 << 30))
    store = SegmentedLogStore(path)
    t0 = time.perf_counter()
    index = written = 0
    while True:
        index += 1
        b = WriteBatch()
        blob = os.urandom(ranges * entry_bytes)  # fresh: zstd must find nothing to share
        for rid in range(ranges):
            off = rid * entry_bytes
            b.append(rid, [LogEntry(1, index, 0, blob[off : off + entry_bytes])])
        store.write(b, sync=False)
        written += ranges
        if index % 20 == 0 and _size(path) >= target:
            break
    store.close()
    return written, time.perf_counter() - t0


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("*.seg"))


def drop_cache(path: Path) -> None:
    for p in path.glob("*.seg"):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def raw_read(path: Path) -> float:
    t0 = time.perf_counter()
    for p in sorted(path.glob("*.seg")):
        with open(p, "rb") as f:
            while f.read(8 << 20):
                pass
    return time.perf_counter() - t0


def recover(path: Path) -> tuple[float, float, int]:
    """(wall seconds, cpu seconds, records) of one open."""
    t0, c0 = time.perf_counter(), time.process_time()
    store = SegmentedLogStore(path)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    records = store.recovery.records
    store.close()
    return wall, cpu, records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--ranges", type=int, default=10_000)
    ap.add_argument("--entry-bytes", type=int, default=100)
    ap.add_argument("--dir", default="/tmp/bench_recovery")
    ap.add_argument("--keep", action="store_true", help="keep the log afterwards")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    path = Path(args.dir)
    shutil.rmtree(path, ignore_errors=True)
    entries, build_s = build(path, args.gib, args.ranges, args.entry_bytes)
    size = _size(path)
    out: dict[str, object] = {
        "bench": "segmented_recovery",
        "log_bytes": size,
        "entries": entries,
        "ranges": args.ranges,
        "entry_bytes": args.entry_bytes,
        "build_s": round(build_s, 2),
    }
    for label in ("cold", "warm"):
        if label == "cold":
            drop_cache(path)
        raw = raw_read(path)
        if label == "cold":
            drop_cache(path)
        wall, cpu, records = recover(path)
        out[f"{label}_raw_read_s"] = round(raw, 3)
        out[f"{label}_recovery_s"] = round(wall, 3)
        out[f"{label}_recovery_cpu_s"] = round(cpu, 3)
        out[f"{label}_recovery_vs_raw_read"] = round(wall / raw, 2) if raw else None
        out["records"] = records
    out["recovery_us_per_entry_warm"] = round(out["warm_recovery_s"] / entries * 1e6, 3)  # type: ignore[operator]
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        SegmentedLogStore(path).close()
        prof.disable()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(6)
        print(s.getvalue(), file=sys.stderr)
    if not args.keep:
        shutil.rmtree(path, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
