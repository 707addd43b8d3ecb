"""Batched replay builds exactly the index that record-by-record replay builds."""

from __future__ import annotations

import random

import pytest

from logstore.protocol import HardState, LogEntry, WriteBatch
from logstore.rules import plan_batch
from logstore.segmented import replay
from logstore.segmented.batch import decode_payload, encode_batch
from logstore.segmented.format import Columns
from logstore.segmented.index import RangeIndex, apply_columns
from logstore.segmented.replay import MAX_RUN, Replayer


class _View:
    """A planner view over a plain index (what the store does, minus the files)."""

    def __init__(self, ranges: dict[int, RangeIndex]) -> None:
        self.ranges = ranges

    def bounds(self, rid: int) -> tuple[int, int, int]:
        r = self.ranges.get(rid) or RangeIndex()
        return r.first, r.last, r.prev_term

    def base_term(self, rid: int, index: int) -> int:
        return self.ranges[rid].term(index)


def _records(seed: int, n: int) -> list[Columns]:
    """Mostly hot-shape records over the same ranges, with irregular ones mixed in."""
    rng = random.Random(seed)
    ranges: dict[int, RangeIndex] = {}
    out = []
    rids = list(range(1, 9))
    for k in range(n):
        b = WriteBatch()
        roll = rng.random()
        for rid in rids:
            last = ranges[rid].last if rid in ranges else 0
            if roll < 0.08 and rid == 3:
                lo = max(1, last - 1)  # a truncating append: breaks the run
            else:
                lo = last + 1
            b.append(rid, [LogEntry(1 + k // 20, lo, 0, b"%d" % k)])
        if roll < 0.85:
            for rid in rids:
                b.set_hard_state(rid, HardState(1, 0, k))
        elif roll < 0.9:
            b.compact(2, ranges[2].last if 2 in ranges else 0)
        cols = decode_payload(encode_batch(plan_batch(b, _View(ranges))).payload)
        apply_columns(ranges, k, cols)
        out.append(cols)
    return out


def _dump(ranges: dict[int, RangeIndex]) -> dict[int, tuple[object, ...]]:
    return {
        rid: (r.first, r.prev_term, r.terms.tolist(), r.locs.tolist(), r.hard_state, r.hs_rec)
        for rid, r in ranges.items()
    }


@pytest.mark.parametrize("seed", range(5))
def test_batched_replay_equals_record_by_record(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes: list[bool] = []
    real = replay._apply_run

    def counting(*args: object) -> bool:
        outcomes.append(real(*args))  # type: ignore[arg-type]
        return outcomes[-1]

    monkeypatch.setattr(replay, "_apply_run", counting)
    records = _records(seed, 3 * MAX_RUN)
    one: dict[int, RangeIndex] = {}
    for rec, cols in enumerate(records):
        apply_columns(one, rec, cols)
    batched: dict[int, RangeIndex] = {}
    replayer = Replayer(batched)
    for rec, cols in enumerate(records):
        replayer.add(rec, cols)
    replayer.flush()
    assert _dump(batched) == _dump(one)
    assert True in outcomes and False in outcomes, "both the batched and the fallback path ran"
