"""Purge of the segmented store: segments go, lagging ranges are reported or
rewritten, and after any mix of writes, purges and reopens the store reads
exactly like the in-memory model (the same ops applied to ``MemoryLogStore``).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from logstore.errors import Compacted, InvalidArgument, LogStoreError, Unavailable
from logstore.memory import MemoryLogStore
from logstore.protocol import HardState, LogEntry, SnapshotMeta, WriteBatch
from logstore.segmented import SegmentedLogStore
from tests.logstore import test_crash as crash

SEG = 4096


def _segments(path: Path) -> list[str]:
    return sorted(n for n in os.listdir(path) if n.endswith(".seg"))


def _append(store: SegmentedLogStore, rid: int, lo: int, n: int, term: int = 1) -> None:
    b = WriteBatch()
    b.append(rid, [LogEntry(term, i, 0, b"%d:%d" % (rid, i) * 20) for i in range(lo, lo + n)])
    store.write(b)


def _same(store: SegmentedLogStore, model: MemoryLogStore, rids: range) -> None:
    """Every read the protocol offers agrees between store and model."""
    assert sorted(store.range_ids()) == sorted(model.range_ids())
    for rid in rids:
        first, last = model.first_index(rid), model.last_index(rid)
        assert (store.first_index(rid), store.last_index(rid)) == (first, last), rid
        assert store.hard_state(rid) == model.hard_state(rid)
        assert store.snapshot_meta(rid) == model.snapshot_meta(rid)
        assert store.term(rid, first - 1) == model.term(rid, first - 1)
        assert store.entries(rid, first, last + 1) == model.entries(rid, first, last + 1)


@pytest.mark.timeout(30)
def test_compacted_segments_are_deleted(tmp_path: Path) -> None:
    store = SegmentedLogStore(tmp_path, segment_bytes=SEG)
    for i in range(1, 101):
        _append(store, 1, i, 1)
    assert len(_segments(tmp_path)) > 3
    b = WriteBatch()
    b.compact(1, 95)
    b.set_hard_state(1, HardState(1, 0, 95))
    store.write(b)
    res = store.purge()
    assert res.removed_files >= 3 and res.removed_bytes > 0
    assert res.lagging_ranges == () and res.rewritten_ranges == ()
    assert store.entries(1, 96, 101)[0] == LogEntry(1, 96, 0, b"1:96" * 20)
    store.close()
    store = SegmentedLogStore(tmp_path, segment_bytes=SEG)
    assert (store.first_index(1), store.last_index(1), store.term(1, 95)) == (96, 100, 1)
    assert store.hard_state(1) == HardState(1, 0, 95)
    store.close()


@pytest.mark.timeout(30)
def test_lagging_range_is_reported_then_rewritten(tmp_path: Path) -> None:
    store = SegmentedLogStore(tmp_path, segment_bytes=SEG, rewrite_lag_segments=3)
    _append(store, 7, 1, 2)  # range 7 never compacts: it pins the first segment
    for i in range(1, 30):
        _append(store, 1, i, 1)
    assert len(_segments(tmp_path)) == 2
    b = WriteBatch()
    b.compact(1, 29)
    store.write(b)
    res = store.purge()
    assert res.lagging_ranges == (7,) and res.removed_files == 0
    for i in range(30, 120):
        _append(store, 1, i, 1)
    b = WriteBatch()
    b.compact(1, 119)
    store.write(b)
    res = store.purge()
    assert res.rewritten_ranges == (7,)
    assert res.removed_files > 0 and res.lagging_ranges == ()
    assert store.entries(7, 1, 3) == [LogEntry(1, i, 0, b"7:%d" % i * 20) for i in (1, 2)]
    store.close()
    store = SegmentedLogStore(tmp_path, segment_bytes=SEG)
    assert store.entries(7, 1, 3) == [LogEntry(1, i, 0, b"7:%d" % i * 20) for i in (1, 2)]
    assert (store.first_index(1), store.last_index(1)) == (120, 119)
    store.close()


@pytest.mark.timeout(30)
def test_metadata_in_deleted_segments_survives(tmp_path: Path) -> None:
    """Hard state, snapshot and compaction point written once, long ago."""
    store = SegmentedLogStore(tmp_path, segment_bytes=SEG)
    b = WriteBatch()
    b.set_hard_state(5, HardState(3, 2, 9))
    b.set_snapshot(6, SnapshotMeta(50, 4, b"membership"))
    b.append(8, [LogEntry(2, 1), LogEntry(2, 2), LogEntry(3, 3)])
    b.compact(8, 3)
    store.write(b)
    for i in range(1, 80):
        _append(store, 1, i, 1)
        b = WriteBatch()
        b.compact(1, i)
        store.write(b)
    assert store.purge().removed_files > 0
    store.close()
    store = SegmentedLogStore(tmp_path, segment_bytes=SEG)
    assert store.hard_state(5) == HardState(3, 2, 9)
    assert store.snapshot_meta(6) == SnapshotMeta(50, 4, b"membership")
    assert (store.first_index(6), store.term(6, 50)) == (51, 4)
    assert (store.first_index(8), store.last_index(8), store.term(8, 3)) == (4, 3, 3)
    store.close()


def _random_batch(rng: random.Random, model: MemoryLogStore, rids: range) -> WriteBatch:
    b = WriteBatch()
    for _ in range(rng.randint(1, 4)):
        rid = rng.choice(rids)
        first, last = model.first_index(rid), model.last_index(rid)
        roll = rng.random()
        if roll < 0.55:
            lo = rng.randint(max(first - 2, 1), last + 1)
            term = rng.randint(1, 4)
            n = rng.randint(1, 6)
            b.append(
                rid,
                [
                    LogEntry(term, i, i % 3, rng.randbytes(rng.choice((5, 90, 700))))
                    for i in range(lo, lo + n)
                ],
            )
        elif roll < 0.7:
            b.set_hard_state(rid, HardState(rng.randint(0, 9), rng.randint(0, 3), last))
        elif roll < 0.85 and last >= first:
            b.compact(rid, rng.randint(first, last))
        elif roll < 0.95:
            idx = rng.randint(max(first - 1, 0), last + 3)
            b.set_snapshot(rid, SnapshotMeta(idx, rng.randint(1, 4), rng.randbytes(8)))
        else:
            b.remove_range(rid)
    return b


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", range(5))
def test_random_ops_purges_and_reopens_match_model(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    rids = range(1, 7)
    model = MemoryLogStore()
    opts = {
        "segment_bytes": SEG,
        "rewrite_lag_segments": rng.randint(1, 3),
        "cache_bytes": rng.choice((0, 1 << 20)),
    }
    store = SegmentedLogStore(tmp_path, **opts)
    try:
        for step in range(250):
            b = _random_batch(rng, model, rids)
            try:
                model.write(b)
            except InvalidArgument:
                with pytest.raises(InvalidArgument):
                    store.write(b)
                continue
            store.write(b, sync=rng.random() < 0.1)  # durability is the crash test's job
            roll = rng.random()
            if roll < 0.1:
                store.purge()
            elif roll < 0.15:
                store.close()
                store = SegmentedLogStore(tmp_path, **opts)
            if step % 25 == 0:
                _same(store, model, rids)
        _same(store, model, rids)
        store.close()
        store = SegmentedLogStore(tmp_path, **opts)
        _same(store, model, rids)
    except BaseException:
        print(f"seed={seed}")
        raise
    finally:
        store.close()


def test_reads_outside_the_log(tmp_path: Path) -> None:
    store = SegmentedLogStore(tmp_path)
    _append(store, 1, 1, 5)
    b = WriteBatch()
    b.compact(1, 2)
    store.write(b)
    with pytest.raises(Compacted):
        store.entries(1, 2, 4)
    with pytest.raises(Unavailable):
        store.entries(1, 3, 7)
    with pytest.raises(Compacted):
        store.term(1, 1)
    assert store.term(1, 2) == 1
    store.close()


def test_second_open_of_a_directory_is_refused(tmp_path: Path) -> None:
    store = SegmentedLogStore(tmp_path)
    with pytest.raises(LogStoreError):
        SegmentedLogStore(tmp_path)
    store.close()


# -- SIGKILL while rolling and purging ----------------------------------------------
# The shared crash test (test_crash.py) runs with default options, where a short
# run never fills a segment. This one uses tiny segments and purges every few
# batches, so kills land in rolls, rewrites, checkpoints and file deletions.

CRASH_OPTS = {"segment_bytes": 8192, "rewrite_lag_segments": 2}


def _crash_child(path: str, seed: int, round_no: int) -> None:
    store = SegmentedLogStore(path, **CRASH_OPTS)
    rng = random.Random(seed)
    out = sys.stdout.fileno()
    os.write(out, b"ready\n")
    for j in range(10**9):
        store.write(crash.gen_batch(rng, store, round_no, j))
        os.write(out, b"%d\n" % j)
        if j % 5 == 4:
            store.purge()


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_sigkill_during_rolls_and_purges(tmp_path: Path) -> None:
    base = int(os.environ.get("LOGSTORE_CRASH_SEED") or random.randrange(1 << 30))
    print(f"crash test seed LOGSTORE_CRASH_SEED={base}")
    rng = random.Random(base)
    path = tmp_path / "store"
    SegmentedLogStore(path, **CRASH_OPTS).close()
    model = MemoryLogStore()
    for round_no in range(4):
        seed = base * 100 + round_no
        start = model.last_index(crash.MARKER)
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.logstore.test_segmented_purge", "child",
             str(path), str(seed), str(round_no)],
            cwd=crash.REPO,
            env=dict(os.environ, PYTHONPATH=str(crash.REPO)),
            stdout=subprocess.PIPE,
        )  # fmt: skip
        try:
            assert crash.read_line(proc, 30) == b"ready\n"
            time.sleep(rng.uniform(0.2, 0.8))
            proc.send_signal(signal.SIGKILL)
            assert proc.stdout is not None
            acks = [int(x) for x in proc.stdout.read().split()]
        finally:
            proc.kill()
            proc.wait()
        acked = max(acks) + 1 if acks else 0
        store = SegmentedLogStore(path, **CRASH_OPTS)
        try:
            survived = store.last_index(crash.MARKER) - start
            segs = _segments(path)
            print(f"round {round_no}: acked {acked}, survived {survived}, segments {segs}")
            assert survived >= acked, f"seed {base} round {round_no}: lost acked batches"
            gen = random.Random(seed)
            for j in range(survived):
                model.write(crash.gen_batch(gen, model, round_no, j))
            crash.assert_same(store, model, f"seed {base} round {round_no}")
        finally:
            store.close()


if __name__ == "__main__" and sys.argv[1:2] == ["child"]:
    _crash_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
