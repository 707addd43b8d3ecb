"""Benchmark of receiving a streamed snapshot: peak memory and time, spool vs join.

Not a test. Prints ONE JSON line. A sender streams a synthetic image of
``--mib`` MiB in ``--chunk-kib`` KiB chunks (``engine/snapshot_stream.py``);
the receiver under test spools the chunks to a temporary file and the image
is then read back twice (restore + durable save, as ``Store`` does). The
baseline, measured in the same run, is what the receiver did before: keep
every chunk and join them into one bytes object at the end (then hand that
one string to restore and save). Peak memory is tracemalloc's peak over the
receive + read-back phase (the sender's generator is not counted: its chunks
are made on the fly in both runs); times are wall-clock of the same phase
without tracemalloc (tracemalloc slows allocation-heavy code).

    python3 loadtest/bench_snapshot_receive.py [--mib 64] [--chunk-kib 64] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import time
import tracemalloc
from collections.abc import Iterator

from engine.raft.types import ConfState, Message, MessageType, Snapshot, SnapshotMetadata
from engine.snapshot_stream import SnapshotReceiver, SnapshotSender

META = SnapshotMetadata(50, 4, ConfState(voters=(1, 2, 3)))
TEMPLATE = Message(MessageType.SNAPSHOT, 2, 1, 4, snapshot=Snapshot(META, b""))


def image(mib: int, chunk: int) -> Iterator[bytes]:
    yield b"prefix"
    block = b"\xa5" * chunk
    for _ in range((mib << 20) // chunk):
        yield block


def spooled(mib: int, chunk: int) -> int:
    """Receive through the spool, read it back twice; returns bytes read back."""
    tx, rx = SnapshotSender(), SnapshotReceiver()
    tx.start(7, TEMPLATE, image(mib, chunk))
    while tx:
        out, _ = tx.pump(4 * chunk)
        for rid, m in out:
            rx.add(rid, m)
        del out
    spool = rx.take(7, META.index, META.term)
    assert spool is not None
    total = 0
    for _ in range(2):
        for block in spool.chunks():
            total += len(block)
    spool.close()
    return total


def joined(mib: int, chunk: int) -> int:
    """The old receiver: keep the chunks, join them once at the end."""
    tx = SnapshotSender()
    tx.start(7, TEMPLATE, image(mib, chunk))
    chunks: list[bytes] = []
    while tx:
        out, _ = tx.pump(4 * chunk)
        for _, m in out:
            assert m.snapshot is not None
            chunks.append(m.snapshot.data)
        del out
    whole = b"".join(chunks)
    del chunks
    total = 0
    for _ in range(2):
        total += len(whole[6:])
    return total


def measure(fn: object, mib: int, chunk: int) -> tuple[float, int]:
    assert callable(fn)
    t0 = time.perf_counter()
    fn(mib, chunk)
    elapsed = time.perf_counter() - t0
    tracemalloc.start()
    try:
        fn(mib, chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return elapsed, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--chunk-kib", type=int, default=64)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    chunk = args.chunk_kib << 10
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        spooled(args.mib, chunk)
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(8)
        print(buf.getvalue(), file=sys.stderr)
    base_s, base_peak = measure(joined, args.mib, chunk)
    spool_s, spool_peak = measure(spooled, args.mib, chunk)
    print(json.dumps({
        "image_mib": args.mib,
        "chunk_kib": args.chunk_kib,
        "joined_peak_mib": round(base_peak / (1 << 20), 2),
        "spooled_peak_mib": round(spool_peak / (1 << 20), 3),
        "peak_ratio_spooled_vs_joined": round(spool_peak / base_peak, 4),
        "joined_mib_per_s": round(args.mib / base_s, 1),
        "spooled_mib_per_s": round(args.mib / spool_s, 1),
        "time_ratio_spooled_vs_joined": round(spool_s / base_s, 2),
    }))


if __name__ == "__main__":
    main()
