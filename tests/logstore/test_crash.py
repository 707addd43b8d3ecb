"""SIGKILL crash tests with real processes, for every durable backend.

A child process opens the store and writes seeded random batches over many
ranges (appends with suffix overwrites, hard states, compactions, snapshots,
removals). Every batch also appends one entry to a *marker* range 0, so the
number of batches that survived is readable after recovery. The child reports
each batch on stdout only once it is durable (``write`` returned, or in submit
mode the future completed). The parent SIGKILLs it at a random moment,
reopens the store and checks:

- every acknowledged batch is there (marker count >= acknowledged count);
- the store equals a model that replayed exactly the first N batches of the
  same seeded sequence (N = marker count): so each surviving batch is whole,
  no later batch left any trace, and nothing older was lost (prefix
  property).

Several rounds run on one directory, each continuing from the recovered state.
Run as ``python -m tests.logstore.test_crash child ...`` it is the child.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path

import pytest

from logstore import HardState, LogEntry, LogStore, SnapshotMeta, WriteBatch, open_log_store
from logstore.memory import MemoryLogStore
from tests.logstore.conftest import DURABLE

REPO = Path(__file__).resolve().parents[2]
MARKER = 0
RANGES = range(1, 41)
ROUNDS = 5


def gen_batch(rng: random.Random, view: LogStore, round_no: int, j: int) -> WriteBatch:
    """The j-th batch of a round; depends only on ``rng`` and the store state,
    so the child (reading its store) and the parent (reading its model)
    generate the same sequence."""
    b = WriteBatch()
    mark = view.last_index(MARKER) + 1
    b.append(MARKER, [LogEntry(1, mark, 0, b"%d:%d" % (round_no, j))])
    for rid in rng.sample(RANGES, rng.randint(2, 6)):
        first, last = view.first_index(rid), view.last_index(rid)
        roll = rng.random()
        if roll < 0.7:
            lo = max(first, last + 1 - rng.choice((0, 0, 0, 1, 2)))
            big = rng.random() < 0.03
            b.append(
                rid,
                [
                    LogEntry(round_no + 1, i, 0, rng.randbytes(size(rng, big)))
                    for i in range(lo, lo + rng.randint(1, 3))
                ],
            )
        elif roll < 0.82:
            b.set_hard_state(rid, HardState(round_no + 1, rng.randint(0, 3), max(0, last)))
        elif roll < 0.9 and last >= first:
            b.compact(rid, rng.randint(first, last))
        elif roll < 0.97:
            idx = rng.randint(max(0, first - 1), last + 2)
            match = first - 1 <= idx <= last and rng.random() < 0.6
            term = view.term(rid, idx) if match else round_no + 1
            b.set_snapshot(rid, SnapshotMeta(idx, term, rng.randbytes(8)))
        else:
            b.remove_range(rid)
    return b


def size(rng: random.Random, big: bool) -> int:
    """Mostly small payloads; a big one now and then so that kills land
    inside a record that spans many pages."""
    return 65536 if big else rng.randint(0, 300)


# -- the child --------------------------------------------------------------------


def child_main(backend: str, path: str, seed: int, round_no: int, mode: str) -> None:
    store = open_log_store(backend, path)
    rng = random.Random(seed)
    out = sys.stdout.fileno()
    os.write(out, b"ready\n")
    inflight: deque[Future[None]] = deque()
    lock = threading.Lock()

    def report(j: int) -> None:
        with lock:
            os.write(out, b"%d\n" % j)

    def on_done(fut: Future[None], j: int) -> None:
        if fut.exception() is None:
            report(j)

    for j in range(10**9):
        b = gen_batch(rng, store, round_no, j)
        if mode == "write":
            store.write(b)
            report(j)
        else:
            fut = store.submit(b)
            fut.add_done_callback(lambda f, j=j: on_done(f, j))
            inflight.append(fut)
            if len(inflight) > 16:
                inflight.popleft().result()


# -- the parent -------------------------------------------------------------------


def read_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, left))
        if not ready:
            raise AssertionError(f"child silent for {timeout}s")
        chunk = os.read(proc.stdout.fileno(), 1)
        if not chunk:
            raise AssertionError(f"child exited early: {proc.wait()}")
        buf += chunk
    return buf


def run_round(
    backend: str, path: Path, seed: int, round_no: int, mode: str, delay: float
) -> int:
    """One child life, killed ``delay`` s after it opened the store: returns
    how many batches it acknowledged."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.logstore.test_crash", "child",
         backend, str(path), str(seed), str(round_no), mode],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
    )
    try:
        assert read_line(proc, 30) == b"ready\n"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        assert proc.stdout is not None
        acks = [int(x) for x in proc.stdout.read().split()]
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"child died on its own: {proc.returncode}"
    acked = max(acks) + 1 if acks else 0
    assert sorted(acks) == list(range(acked)), "acks must be a gap-free prefix"
    return acked


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("backend", DURABLE)
def test_sigkill_keeps_every_acked_batch_whole(backend: str, tmp_path: Path) -> None:
    # Kill timing is real time, so runs differ anyway; the seed fixes the ops.
    base = int(os.environ.get("LOGSTORE_CRASH_SEED") or random.randrange(1 << 30))
    print(f"crash test seed LOGSTORE_CRASH_SEED={base} ({backend})")  # shown on failure
    rng = random.Random(base)
    path = tmp_path / "store"
    model = MemoryLogStore()
    open_log_store(backend, path).close()  # create it before the first kill
    for round_no in range(ROUNDS):
        seed = base * 100 + round_no
        mode = "write" if round_no % 2 == 0 else "submit"
        delay = rng.choice((0.0, 0.05, rng.uniform(0.05, 0.5)))
        start = model.last_index(MARKER)
        acked = run_round(backend, path, seed, round_no, mode, delay)
        store = open_log_store(backend, path)
        try:
            survived = store.last_index(MARKER) - start
            print(f"round {round_no} {mode}: acked {acked}, survived {survived}")
            assert survived >= acked, f"round {round_no}: lost acknowledged batches"
            gen = random.Random(seed)
            for j in range(survived):
                model.write(gen_batch(gen, model, round_no, j))
            assert_same(store, model, f"seed {base} round {round_no} ({mode})")
        finally:
            store.close()


def assert_same(store: LogStore, model: LogStore, what: str) -> None:
    assert sorted(store.range_ids()) == sorted(model.range_ids()), what
    for rid in model.range_ids():
        first, last = model.first_index(rid), model.last_index(rid)
        assert (store.first_index(rid), store.last_index(rid)) == (first, last), f"{what} r{rid}"
        assert store.term(rid, first - 1) == model.term(rid, first - 1), f"{what} r{rid}"
        assert store.entries(rid, first, last + 1) == model.entries(rid, first, last + 1), what
        assert store.hard_state(rid) == model.hard_state(rid), f"{what} r{rid}"
        assert store.snapshot_meta(rid) == model.snapshot_meta(rid), f"{what} r{rid}"


if __name__ == "__main__" and sys.argv[1:2] == ["child"]:
    _, _, backend_arg, path_arg, seed_arg, round_arg, mode_arg = sys.argv
    child_main(backend_arg, path_arg, int(seed_arg), int(round_arg), mode_arg)
