"""Benchmark: the linearizability checker on generated KV histories. Prints
one JSON line. Not a test.

Usage (from the repo root): PYTHONPATH=. python3 loadtest/bench_linearizability.py

A history comes from a sequential execution (each operation takes effect at
a random instant inside its [invoke, complete] window; 10 clients, each with
one operation in flight; half reads, half writes, a share of the writes
time out with an unknown outcome, half of those applied). The baseline is
replaying the same operations once in their true order through the model
(``step``): the least any checker must do. The ratio is the price of the
search.
"""

from __future__ import annotations

import json
import random
import time

from engine.testing.linearizability import Operation, OpKind, check_history, step


def generate(n: int, keys: int, unknown: float, seed: int) -> list[tuple[float, Operation]]:
    """``n`` operations with their true linearization instants."""
    rng = random.Random(seed)
    clients = [0.0] * 10
    plan = []
    for _ in range(n):
        c = rng.randrange(len(clients))
        invoke = clients[c] + rng.random()
        duration = rng.random() * 5
        clients[c] = invoke + duration
        at = invoke + rng.random() * duration
        plan.append((at, invoke, invoke + duration, c, rng.randrange(keys), rng.random()))
    plan.sort()
    state: dict[bytes, bytes] = {}
    out = []
    for at, invoke, complete, c, k, r in plan:
        key = b"k%d" % k
        if r < 0.5:
            op = Operation(kind=OpKind.GET, key=key, invoke=invoke, complete=complete,
                           result=state.get(key), client=c)
        else:
            value = b"%f" % at
            timed_out = rng.random() < unknown
            if not timed_out or rng.random() < 0.5:
                state[key] = value
            else:
                continue  # lost before it was applied: not part of the true order
            op = Operation(kind=OpKind.PUT, key=key, invoke=invoke,
                           complete=None if timed_out else complete, value=value, result=True,
                           client=c)
        out.append((at, op))
    return out


def replay(ordered: list[Operation]) -> None:
    state: dict[bytes, bytes | None] = {}
    for op in ordered:
        ok, state[op.key] = step(state.get(op.key), op)
        assert ok


def run(n: int, keys: int, unknown: float) -> dict[str, float]:
    timed = generate(n, keys, unknown, seed=n + keys)
    ops = [op for _, op in timed]
    t0 = time.perf_counter()
    verdict = check_history(ops)
    t1 = time.perf_counter()
    replay(ops)  # already in true order
    t2 = time.perf_counter()
    assert verdict.ok, verdict.explain()
    return {
        "ops": len(ops),
        "keys": keys,
        "unknown_share": unknown,
        "check_ops_per_s": round(len(ops) / (t1 - t0)),
        "baseline_replay_ops_per_s": round(len(ops) / (t2 - t1)),
        "check_over_replay_time": round((t1 - t0) / (t2 - t1), 1),
        "steps": sum(k.steps for k in verdict.keys),
    }


def main() -> None:
    results = [run(20_000, 100, 0.05), run(20_000, 5, 0.05), run(20_000, 5, 0.2)]
    print(json.dumps({"bench": "linearizability", "runs": results}))


if __name__ == "__main__":
    main()
