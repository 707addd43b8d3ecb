"""What the placement decisions cost the node's event loop, at 10,000 replicas per node.

Prints ONE JSON line. The placement loop runs on the node's event loop every
``placement.interval_ms``, and ``ReplicaPlacement.place`` runs inside the
routing of peer traffic, so both must stay far below a tick:

- ``plan_us``: one ``SplitPlanner.plan`` look over ``--ranges`` replica
  reports (a third led here, counters moving), after a first look that set
  the baselines;
- ``fold_us`` (baseline, same run): touching every report once the way the
  node folds a full worker report (a dict store per replica) — the least any
  look at the reports can cost; ``plan_over_fold`` is the ratio;
- ``place_new_us``: placing a range the directory knows and no local replica
  overlaps (the scan over every local replica, then the least-loaded pick);
- ``place_pinned_us``: the next records of that range (the pin);
- ``place_unknown_us``: a range the directory does not know (dropped).

Usage (from the repo root): ``PYTHONPATH=. python3 loadtest/bench_placement.py [--ranges N]
[--profile]``
(``--profile`` prints the cProfile headline of ``plan`` to stderr).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import time
from collections.abc import Callable

from engine.placement import ReplicaPlacement, SplitPlanner, SplitPolicy
from engine.range_desc import RangeDescriptor
from engine.worker_protocol import RangeReport


def reports(n: int, step: int) -> list[RangeReport]:
    out = []
    for i in range(n):
        desc = RangeDescriptor(range_id=i + 1, start_key=b"k%08d" % i,
                               end_key=b"k%08d" % (i + 1), voters=(1, 2, 3))
        leader = i % 3 == 0
        out.append(RangeReport(desc, 1 if leader else 2, 5, 100, leader, False,
                               10_000 + i, 100, step * (i % 7), step * (i % 5)))
    return out


def per_call_us(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - t) / repeat)
    return best * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranges", type=int, default=10_000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    n = args.ranges
    first, second = reports(n, 1), reports(n, 2)
    planner = SplitPlanner(SplitPolicy(split_bytes=64 << 20, split_qps=5000, cooldown_s=60))
    now = [0.0]

    def look() -> None:
        now[0] += 2.0
        planner.plan(now[0], second if int(now[0]) % 4 else first)

    planner.plan(0.0, first)
    plan_us = per_call_us(look, 20)

    held: list[dict[int, RangeReport]] = [{}, {}]
    owner: dict[int, int] = {}

    def fold() -> None:
        for r in second:
            rid = r.desc.range_id
            held[rid & 1][rid] = r
            owner[rid] = rid & 1

    fold_us = per_call_us(fold, 20)
    directory = {r.desc.range_id: r.desc for r in second}
    far = RangeDescriptor(range_id=n + 1, start_key=b"z", end_key=b"", voters=(1, 2, 3))
    directory[far.range_id] = far
    placement = ReplicaPlacement(1, owner, 2, lambda i: held[i], directory.get, pin_s=1e9)
    placement.reported(0)
    placement.reported(1)
    t = time.perf_counter()
    placement.place(far.range_id)
    place_new_us = (time.perf_counter() - t) * 1e6
    pinned_us = per_call_us(lambda: placement.place(far.range_id), 10_000)
    unknown_us = per_call_us(lambda: placement.place(10 * n), 10_000)
    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(lambda: [look() for _ in range(20)])
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(6)
        print(buf.getvalue(), file=sys.stderr)
    print(json.dumps({
        "ranges": n, "plan_us": round(plan_us, 1), "fold_us": round(fold_us, 1),
        "plan_over_fold": round(plan_us / fold_us, 2), "place_new_us": round(place_new_us, 1),
        "place_pinned_us": round(pinned_us, 3), "place_unknown_us": round(unknown_us, 3),
    }))


if __name__ == "__main__":
    main()
