"""Raft core benchmark: one in-process 3-node group in steady state.

Prints ONE JSON line:

- ``batch_<n>``: committed entries/s (wall, and per CPU-second, since the
  wall figure suffers when other processes share the core) and µs of CPU
  per entry when the leader proposes ``propose_batch`` batches of ``n``
  100-byte entries, each batch pumped to commit on the leader (entries
  counted as the leader hands them out committed); ``msgs_per_batch`` is the
  raft messages delivered per batch;
- ``us_per_msg``: CPU per message delivered in an idle group exchanging
  heartbeats (tick + step + Ready handling, the per-message overhead);
- ``idle_group_bytes``: tracemalloc'd bytes per idle 3-voter ``RawNode``
  with an empty log, averaged over ``--groups`` (100,000 by default) groups
  sharing one read-only storage view, and ``idle_group_with_storage_bytes``
  with a ``MemoryStorage`` each;
- ``calib_us``: CPU of a fixed pure-Python loop measured in the same run,
  the baseline to compare figures across noisy runs/machines; the
  ``vs_batch_1`` ratios compare batch sizes within the run.

Messages are delivered directly (no simulator, no invariant checks): the
figures are the raft core's cost plus a minimal caller (MemoryStorage
appends, a deque of messages).

Usage: ``python3 loadtest/bench_raft.py [--quick] [--groups N] [--profile BATCH]``
(``--profile`` prints the cProfile top functions of that batch size to stderr;
that batch's figures then include the profiler's overhead).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pstats
import sys
import time
import tracemalloc
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.raft import Config, RawNode
from engine.raft.storage import MemoryStorage
from engine.raft.types import ConfState, Message, StateRole

VOTERS = (1, 2, 3)
ENTRY = b"x" * 100


class Group:
    """Three RawNodes wired back to back; ``pump`` runs them until quiet."""

    def __init__(self) -> None:
        cs = ConfState(voters=VOTERS)
        self.storages = {i: MemoryStorage(cs) for i in VOTERS}
        self.nodes = {
            i: RawNode(Config(id=i, rng_seed=i, max_inflight_msgs=4096), self.storages[i])
            for i in VOTERS
        }
        self.delivered = 0
        self.committed_on_leader = 0
        self.leader = 1
        self.nodes[1].campaign()
        self.pump()
        assert self.nodes[1].role == StateRole.LEADER, "node 1 failed to become leader"

    def pump(self) -> None:
        nodes = self.nodes
        storages = self.storages
        queue: deque[Message] = deque()
        busy = True
        while busy:
            busy = False
            for i, node in nodes.items():
                if not node.has_ready():
                    continue
                busy = True
                rd = node.ready()
                queue.extend(rd.messages)
                st = storages[i]
                if rd.entries:
                    st.append(rd.entries)
                if rd.hard_state is not None:
                    st.set_hard_state(rd.hard_state)
                queue.extend(rd.persisted_messages)
                if i == self.leader:
                    self.committed_on_leader += len(rd.committed_entries)
                node.advance(rd)
            while queue:
                m = queue.popleft()
                nodes[m.to].step(m)
                self.delivered += 1
                busy = True

    def compact(self) -> None:
        """Keep memory flat over long runs: drop the committed log everywhere."""
        for st in self.storages.values():
            commit = st.hard_state.commit
            if commit > st.first_index():
                st.compact(commit - 1)


def bench_batch(batch: int, entries: int, profile: bool) -> dict[str, float]:
    g = Group()
    datas = [ENTRY] * batch
    leader = g.nodes[g.leader]
    rounds = max(1, entries // batch)
    gc.collect()
    prof = cProfile.Profile() if profile else None
    start_msgs = g.delivered
    start_committed = g.committed_on_leader
    t0, c0 = time.perf_counter(), time.process_time()
    if prof:
        prof.enable()
    for r in range(rounds):
        leader.propose_batch(datas)
        g.pump()
        if r % 256 == 255:
            g.compact()
    if prof:
        prof.disable()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    committed = g.committed_on_leader - start_committed
    assert committed == rounds * batch, f"committed {committed} of {rounds * batch}"
    if prof:
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(15)
    return {
        "entries_per_s": round(committed / wall),
        "entries_per_cpu_s": round(committed / cpu),
        "cpu_us_per_entry": round(cpu / committed * 1e6, 3),
        "msgs_per_batch": round((g.delivered - start_msgs) / rounds, 2),
    }


def bench_heartbeats(ticks: int) -> float:
    """CPU µs per message in an idle group that only exchanges heartbeats."""
    g = Group()
    nodes = list(g.nodes.values())
    start = g.delivered
    c0 = time.process_time()
    for _ in range(ticks):
        for n in nodes:
            n.tick()
        g.pump()
    cpu = time.process_time() - c0
    msgs = g.delivered - start
    assert msgs >= ticks * 2, f"only {msgs} messages in {ticks} ticks"
    return round(cpu / msgs * 1e6, 3)


def bench_idle_memory(groups: int, own_storage: bool) -> float:
    """Bytes per idle 3-voter follower RawNode with an empty log."""
    cs = ConfState(voters=VOTERS)
    shared = MemoryStorage(cs)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    keep = [
        RawNode(Config(id=1, rng_seed=i), MemoryStorage(cs) if own_storage else shared)
        for i in range(groups)
    ]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    per = (after - before) / len(keep)
    del keep
    return round(per, 1)


def calibrate() -> float:
    """CPU µs of a fixed pure-Python workload (the run's speed baseline)."""
    c0 = time.process_time()
    d: dict[int, int] = {}
    for i in range(200_000):
        d[i & 1023] = d.get(i & 1023, 0) + i
    return round((time.process_time() - c0) * 1e6, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="fewer entries (smoke run)")
    ap.add_argument("--groups", type=int, default=100_000)
    ap.add_argument("--profile", type=int, default=0, help="cProfile this batch size")
    args = ap.parse_args()
    scale = 0.1 if args.quick else 1.0
    calib = calibrate()
    out: dict[str, object] = {"bench": "raft", "calib_us": calib}
    sizes = {1: 10_000, 16: 80_000, 256: 400_000}
    for batch, n in sizes.items():
        out[f"batch_{batch}"] = bench_batch(batch, int(n * scale), args.profile == batch)
    base = out["batch_1"]
    assert isinstance(base, dict)
    for batch in (16, 256):
        fig = out[f"batch_{batch}"]
        assert isinstance(fig, dict)
        fig["vs_batch_1"] = round(fig["entries_per_s"] / base["entries_per_s"], 1)
    out["us_per_msg"] = bench_heartbeats(int(2000 * scale))
    groups = max(1000, int(args.groups * (0.1 if args.quick else 1)))
    out["idle_groups"] = groups
    out["idle_group_bytes"] = bench_idle_memory(groups, own_storage=False)
    out["idle_group_with_storage_bytes"] = bench_idle_memory(groups, own_storage=True)
    out["calib_us_end"] = calibrate()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
