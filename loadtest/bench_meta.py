"""Benchmark: what the meta range costs a node at 10,000 ranges (one JSON line).

Runs ``MetaSync`` against a real ``MetaStateMachine`` through an in-process
``submit`` (the codec both ways, no raft, no sockets: this measures the meta
path's own CPU, not the cluster's latency) and reports:

- ``full_load_ms``: a node's first refresh (every descriptor, paged);
- ``idle_poll_us``: a refresh when nothing changed (one VERSION read);
- ``delta_ms``: a refresh after one split elsewhere (two descriptors);
- ``snapshot_ms`` / ``restore_ms``: the meta image of all ranges, both ways;
- ``put_us``: applying one 2-descriptor PUT (a split's push) in the state machine.

Baseline, measured in the same run: ``baseline_ms``, the least any node must do
with a 10,000-range directory — decode every descriptor's bytes and build a
``RangeDirectory`` from them. ``full_load_x_baseline`` is the ratio (the shared
CPU is noisy: quote ratios).

    python3 loadtest/bench_meta.py [--ranges 10000] [--profile]
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
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.meta import MetaStateMachine
from engine.meta_codec import META_RANGE_ID, PutDescriptors, encode_command
from engine.meta_sync import MetaSync
from engine.proposal import Outcome
from engine.range_desc import RangeDescriptor
from engine.range_directory import RangeDirectory
from engine.worker_protocol import is_write_command, pack_status
from transport import ClientResponse

META = RangeDescriptor(range_id=META_RANGE_ID, start_key=b"", end_key=b"", voters=(1, 2, 3))


def layout(n: int) -> list[RangeDescriptor]:
    bounds = [b""] + [b"user:%08d" % i for i in range(1, n)] + [b""]
    return [RangeDescriptor(range_id=i + 1, start_key=bounds[i], end_key=bounds[i + 1],
                            voters=(1, 2, 3), generation=3) for i in range(n)]


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranges", type=int, default=10_000)
    ap.add_argument("--profile", action="store_true", help="cProfile the full load")
    args = ap.parse_args()
    descs = layout(args.ranges)
    sm = MetaStateMachine(descs)

    async def submit(desc: RangeDescriptor, command: bytes) -> ClientResponse:
        out = sm.apply([command])[0] if is_write_command(command) else sm.read(command)
        return ClientResponse(0, pack_status(Outcome.OK, 1), out)

    def fresh() -> MetaSync:
        return MetaSync(RangeDirectory([META]), submit, list)

    raw = [d.encode() for d in descs]
    baseline = best_of(3, lambda: RangeDirectory([RangeDescriptor.decode(r) for r in raw]))
    full = best_of(3, lambda: asyncio.run(fresh().refresh()))

    sync = fresh()
    asyncio.run(sync.refresh())
    polls = 200

    async def idle() -> None:
        for _ in range(polls):
            await sync.refresh()

    idle_s = best_of(3, lambda: asyncio.run(idle())) / polls
    next_id = [args.ranges + 1]

    def one_split() -> None:
        i = len(descs) // 2 + next_id[0] - args.ranges  # a different range each time
        d = descs[i]
        left, right = d.split(d.start_key + b"/x", next_id[0])
        descs[i] = left
        next_id[0] += 1
        sm.apply([encode_command(PutDescriptors((left, right)))])
        asyncio.run(sync.refresh())

    delta = best_of(5, one_split)
    image = list(sm.snapshot())
    snap = best_of(3, lambda: list(sm.snapshot()))
    restore = best_of(3, lambda: MetaStateMachine().restore(image))
    pushes = 2000
    cmds = []
    for i in range(pushes):
        d = descs[i]  # the first ranges: not split above
        left, right = d.split(d.start_key + b"/p", next_id[0] + i)
        cmds.append(encode_command(PutDescriptors((left, right))))
    put = float("inf")
    block = pushes // 8  # the best block: the CPU is shared and noisy
    for b in range(0, pushes, block):
        t0 = time.perf_counter()
        for c in cmds[b:b + block]:
            sm.apply([c])
        put = min(put, (time.perf_counter() - t0) / block)

    headline = ""
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        asyncio.run(fresh().refresh())
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(6)
        headline = " | ".join(line.strip() for line in buf.getvalue().splitlines()
                              if "{" in line or ".py:" in line)[:600]
    out = {
        "bench": "meta", "ranges": args.ranges,
        "baseline_ms": round(baseline * 1e3, 2), "full_load_ms": round(full * 1e3, 2),
        "full_load_x_baseline": round(full / baseline, 2),
        "idle_poll_us": round(idle_s * 1e6, 1), "delta_ms": round(delta * 1e3, 3),
        "snapshot_ms": round(snap * 1e3, 2), "restore_ms": round(restore * 1e3, 2),
        "image_bytes": sum(map(len, image)), "put_us": round(put * 1e6, 1),
    }
    if headline:
        out["profile_top"] = headline
    print(json.dumps(out))


if __name__ == "__main__":
    main()
