"""Store benchmark: three Stores in one process on the in-memory network.

Prints ONE JSON line with:

- ``writes``: committed writes/s with 1, 100 and 10,000 active ranges, for the
  memory and segmented log stores, and fsyncs per committed write (summed over
  the three stores). Baselines in the same run: the smallest range count's
  figure (``x_vs_smallest`` ratios) and "one fsync per replica per write"
  (3.0 fsyncs/write), what a store without batched persistence does.
- ``heartbeats``: messages per tick with N active (unquiesced) ranges,
  coalesced vs uncoalesced (the baseline), and their ratio.
- ``idle``: with N ranges quiesced, CPU (fraction of one core) and messages
  per second at 10 ticks/s, against the same ranges unquiesced (the baseline,
  measured at the smaller size only: at 100,000 ranges it would take minutes),
  and the process RSS.
- ``memory``: Python memory per quiesced replica (tracemalloc), including the
  empty state machine and the memory log/snapshot stores' per-range records.

    python3 loadtest/bench_store.py [--active 1,100,10000] [--idle 10000,100000]
        [--hb-ranges 10000] [--seconds 2] [--profile] [--no-baseline]

An empty ``--active``/``--idle`` or ``--hb-ranges 0`` skips that part (to
run the parts as separate processes on a busy machine).

``--profile`` prints a cProfile of the 100-range memory write loop to stderr.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.kv_codec import Put, encode_command
from engine.proposal import Outcome
from engine.store_config import StoreConfig
from engine.testing.cluster import Cluster, even_ranges, key_for

NODES = (1, 2, 3)
TICKS_PER_SECOND = 10


def rss_bytes() -> int:
    """Resident memory of this process (all clusters built so far included)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build(ranges: int, backend: str, path: str | None, **cfg: Any) -> Cluster:
    # State-machine images stay in memory: with snapshots off they are written only
    # at bootstrap (one fsynced file per range in a DirSnapshotStore), which is not
    # what is measured here.
    c = Cluster(3, seed=1, backend=backend, path=path, cfg=StoreConfig(seed=1, **cfg),
                dir_snapshots=False)
    c.bootstrap(even_ranges(ranges, NODES))
    c.elect_all(max_ticks=300)
    return c


def write_rate(ranges: int, backend: str, seconds: float) -> dict[str, float]:
    """Closed loop: one outstanding write per range, re-proposed as each completes."""
    with tempfile.TemporaryDirectory() as tmp:
        c = build(ranges, backend, tmp if backend != "memory" else None,
                  snapshot_entries=0)
        leaders = {rid: c.leader_of(rid) for rid in range(1, ranges + 1)}
        fsyncs0 = 0
        outstanding: dict[tuple[int, int], int] = {}
        done = 0
        seq = 0

        def propose(rid: int) -> None:
            nonlocal seq
            seq += 1
            leader = leaders[rid]
            assert leader is not None
            key = key_for(rid - 1, b"%d" % (seq % 64))
            req = c.stores[leader].propose(rid, encode_command(Put(key, b"x" * 64)), keys=[key])
            outstanding[(leader, req)] = rid

        for rid in leaders:
            propose(rid)
        # Warm-up: until every range completed a write. Then measure at least
        # ``seconds`` and at least two writes per range (with 10,000 ranges one
        # round takes a while: a short window would count nothing).
        warm = set(leaders)
        start = 0.0
        while not start or time.perf_counter() - start < seconds or done < 2 * ranges:
            c.round()
            for node, results in c.results.items():
                for req, comp in list(results.items()):
                    del results[req]
                    rid = outstanding.pop((node, req))
                    assert comp.outcome == Outcome.OK, comp
                    done += 1
                    warm.discard(rid)
                    propose(rid)
            if not start and not warm:
                start = time.perf_counter()
                done = 0
                fsyncs0 = sum(s.stats.fsyncs for s in c.stores.values())
        elapsed = time.perf_counter() - start
        fsyncs = sum(s.stats.fsyncs for s in c.stores.values()) - fsyncs0
        for log in c.logs.values():
            log.close()
    return {"writes_per_s": round(done / elapsed, 1),
            "fsyncs_per_write": round(fsyncs / max(done, 1), 4)}


def heartbeat_messages(ranges: int, coalesce: bool) -> float:
    c = build(ranges, "memory", None, quiesce=False, coalesce_heartbeats=coalesce)
    c.run(2)
    before = c.messages_delivered
    ticks = 3
    c.run(ticks)
    return (c.messages_delivered - before) / ticks


def tick_cost(c: Cluster, ticks: int) -> tuple[float, float]:
    """CPU seconds and messages per tick, driving ``ticks`` ticks (each + rounds)."""
    before = c.messages_delivered
    cpu0 = time.process_time()
    c.run(ticks)
    cpu = time.process_time() - cpu0
    return cpu / ticks, (c.messages_delivered - before) / ticks


def bytes_per_quiesced_replica(ranges: int) -> int:
    """Traced Python memory of a quiesced cluster, per replica (tracemalloc, so that
    memory freed by earlier measurements cannot hide it as RSS reuse would)."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    c = build(ranges, "memory", None)
    c.run(5)
    assert all(s.ticking_count() == 0 for s in c.stores.values()), "did not quiesce"
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del c
    return round(used / (3 * ranges))


def idle(ranges: int, baseline: bool) -> dict[str, float]:
    c = build(ranges, "memory", None)
    c.run(5)
    assert all(s.ticking_count() == 0 for s in c.stores.values()), "did not quiesce"
    cpu_per_tick, msgs_per_tick = tick_cost(c, 50)
    out: dict[str, float] = {
        "ranges": ranges,
        "cpu_core_fraction": round(cpu_per_tick * TICKS_PER_SECOND, 5),
        "messages_per_s": msgs_per_tick * TICKS_PER_SECOND,
        "rss_mib": round(rss_bytes() / 2**20),
    }
    if baseline:
        del c
        unq = build(ranges, "memory", None, quiesce=False)
        unq.run(3)
        cpu_u, msgs_u = tick_cost(unq, 5)
        out["unquiesced_cpu_core_fraction"] = round(cpu_u * TICKS_PER_SECOND, 3)
        out["unquiesced_messages_per_s"] = msgs_u * TICKS_PER_SECOND
        out["cpu_ratio_unquiesced_vs_quiesced"] = round(cpu_u / max(cpu_per_tick, 1e-9), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--active", default="1,100,10000")
    ap.add_argument("--idle", default="10000,100000")
    ap.add_argument("--hb-ranges", type=int, default=10000)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the unquiesced idle baseline (minutes at 100,000 ranges)")
    args = ap.parse_args()
    result: dict[str, Any] = {"bench": "store"}

    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        write_rate(100, "memory", args.seconds)
        prof.disable()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(15)
        print(s.getvalue(), file=sys.stderr)

    active = [int(x) for x in args.active.split(",") if x]
    if active:
        writes: dict[str, Any] = {}
        for backend in ("memory", "segmented"):
            per = {str(n): write_rate(n, backend, args.seconds) for n in active}
            base = per[str(min(active))]["writes_per_s"]
            for v in per.values():
                v["x_vs_smallest"] = round(v["writes_per_s"] / base, 2)
                v["fsync_saving_vs_unbatched"] = round(3.0 / max(v["fsyncs_per_write"], 1e-9),
                                                       1)
            writes[backend] = per
        result["writes"] = writes

    if args.hb_ranges:
        co = heartbeat_messages(args.hb_ranges, True)
        un = heartbeat_messages(args.hb_ranges, False)
        result["heartbeats"] = {"ranges": args.hb_ranges, "coalesced_msgs_per_tick": co,
                                "uncoalesced_msgs_per_tick": un, "ratio": round(un / co, 1)}

    sizes = [int(x) for x in args.idle.split(",") if x]
    if sizes:
        result["idle"] = [idle(n, baseline=(n == min(sizes) and not args.no_baseline))
                          for n in sizes]
        n_mem = min(min(sizes), 5000)
        result["memory"] = {"ranges": n_mem, "bytes_per_quiesced_replica":
                            bytes_per_quiesced_replica(n_mem), "target": 4096}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
