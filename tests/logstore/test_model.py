"""Random operation sequences on every backend against a naive model.

The model below is written independently of the backends (no shared code
with ``logstore.rules``): a dict of entries per range, a deep copy per batch
for atomicity, and the protocol's rules spelled out in the most direct way.
Hypothesis generates abstract steps (append at some offset from the last
index, compact at some distance from the first, snapshot matching or not,
remove, hard state, budgeted reads, reopen); each is interpreted against the
model's current state, so most batches are valid and some are not (gaps,
compaction beyond the last index), and both sides must agree on which.
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logstore import (
    Compacted,
    HardState,
    InvalidArgument,
    LogEntry,
    LogStore,
    SnapshotMeta,
    Unavailable,
    WriteBatch,
    open_log_store,
)
from tests.logstore.conftest import BACKENDS, DURABLE, dump

OVERHEAD = 16  # the byte-budget cost per entry (logstore.rules.ENTRY_OVERHEAD)
RANGES = (1, 2, 3)


@dataclass
class NaiveRange:
    first: int = 1
    last: int = 0
    prev_term: int = 0
    log: dict[int, LogEntry] = field(default_factory=dict)
    hs: HardState | None = None
    snap: SnapshotMeta | None = None

    def term(self, i: int) -> int | None:
        if i == self.first - 1:
            return self.prev_term
        e = self.log.get(i)
        return None if e is None else e.term

    def is_initial(self) -> bool:
        return self == NaiveRange()


class NaiveStore:
    """The protocol, spelled out without any cleverness."""

    def __init__(self) -> None:
        self.ranges: dict[int, NaiveRange] = {}

    def get(self, rid: int) -> NaiveRange:
        return self.ranges.get(rid, NaiveRange())

    def write(self, ops: list[tuple[str, int, object]]) -> None:
        saved = copy.deepcopy(self.ranges)
        try:
            for name, rid, arg in ops:
                r = self.ranges.setdefault(rid, NaiveRange())
                getattr(self, "_" + name)(rid, r, arg)
        except InvalidArgument:
            self.ranges = saved
            raise
        self.ranges = {k: v for k, v in self.ranges.items() if not v.is_initial()}

    def _append(self, rid: int, r: NaiveRange, entries: list[LogEntry]) -> None:
        if entries[0].index > r.last + 1:
            raise InvalidArgument("gap")
        kept = [e for e in entries if e.index >= r.first]
        if not kept:
            return
        for i in range(kept[0].index, r.last + 1):
            del r.log[i]
        for e in kept:
            r.log[e.index] = e
        r.last = kept[-1].index

    def _compact(self, rid: int, r: NaiveRange, index: int) -> None:
        if index < r.first:
            return
        if index > r.last:
            raise InvalidArgument("compact beyond last")
        r.prev_term = r.log[index].term
        for i in range(r.first, index + 1):
            del r.log[i]
        r.first = index + 1

    def _snap(self, rid: int, r: NaiveRange, meta: SnapshotMeta) -> None:
        held = r.first - 1 <= meta.index <= r.last and r.term(meta.index) == meta.term
        if held:
            for i in range(r.first, meta.index + 1):
                del r.log[i]
        else:
            r.log.clear()
            r.last = meta.index
        r.first, r.prev_term, r.snap = meta.index + 1, meta.term, meta

    def _hs(self, rid: int, r: NaiveRange, hs: HardState) -> None:
        r.hs = hs

    def _remove(self, rid: int, r: NaiveRange, arg: object) -> None:
        self.ranges[rid] = NaiveRange()

    def dump(self) -> dict[int, tuple[object, ...]]:
        return {
            rid: (
                r.first,
                r.last,
                r.prev_term,
                [r.log[i] for i in range(r.first, r.last + 1)],
                r.hs,
                r.snap,
            )
            for rid, r in sorted(self.ranges.items())
        }


# -- steps ------------------------------------------------------------------------

rid_st = st.sampled_from(RANGES)
# (kind, range, a, b, c); kinds repeated to weight them. Invalid ops ("gap",
# "overcompact") are rare so that most batches succeed and logs grow.
op_st = st.tuples(
    st.sampled_from(["append"] * 6 + ["compact"] * 2 + ["snap"] * 2 + ["hs", "remove", "gap",
                                                                      "overcompact"]),
    rid_st,
    st.integers(0, 100),
    st.integers(0, 6),
    st.integers(0, 64),
)
batch_st = st.lists(op_st, min_size=1, max_size=6).map(lambda ops: ("batch", ops))
step_st = st.one_of(
    batch_st,
    batch_st,
    batch_st,
    st.tuples(rid_st, st.integers(0, 300)).map(lambda a: ("read", a)),
    st.just(("reopen", None)),
)


def materialize(
    model: NaiveStore, ops: list[tuple[str, int, int, int, int]], term: int
) -> list[tuple[str, int, object]]:
    """Turn abstract ops into concrete ones against the model state *as the
    batch will have changed it* (approximated by a scratch copy)."""
    scratch = copy.deepcopy(model)
    out: list[tuple[str, int, object]] = []
    for name, rid, a, b, c in ops:
        r = scratch.get(rid)
        span = r.last - r.first + 1  # number of entries
        concrete: tuple[str, int, object]
        if name in ("append", "gap"):
            # back > 0 overwrites a suffix; the gap kind starts 2 past the end
            lo = r.last + 3 if name == "gap" else max(1, r.last + 1 - a % 4)
            entries = [
                LogEntry(term, i, i % 3, bytes([i % 251]) * c) for i in range(lo, lo + b + 1)
            ]
            concrete = ("append", rid, entries)
        elif name == "compact":
            concrete = ("compact", rid, r.first - 1 + a * (span + 1) // 101)
        elif name == "overcompact":
            concrete = ("compact", rid, r.last + 1 + a % 3)
        elif name == "snap":
            # from two below the compaction point to two past the last index
            idx = max(0, r.first - 3 + a * (span + 5) // 101)
            t = r.term(idx)
            t = t if b % 2 and t is not None else term
            concrete = ("snap", rid, SnapshotMeta(idx, t, b"m"))
        elif name == "hs":
            concrete = ("hs", rid, HardState(term, a, b))
        else:
            concrete = ("remove", rid, None)
        out.append(concrete)
        with contextlib.suppress(InvalidArgument):
            scratch.write([concrete])
    return out


def to_batch(ops: list[tuple[str, int, object]]) -> WriteBatch:
    wb = WriteBatch()
    for name, rid, arg in ops:
        if name == "append":
            wb.append(rid, arg)  # type: ignore[arg-type]
        elif name == "compact":
            wb.compact(rid, arg)  # type: ignore[arg-type]
        elif name == "snap":
            wb.set_snapshot(rid, arg)  # type: ignore[arg-type]
        elif name == "hs":
            wb.set_hard_state(rid, arg)  # type: ignore[arg-type]
        else:
            wb.remove_range(rid)
    return wb


def check_read(store: LogStore, model: NaiveStore, rid: int, budget: int) -> None:
    r = model.get(rid)
    assert store.first_index(rid) == r.first
    assert store.last_index(rid) == r.last
    want = [r.log[i] for i in range(r.first, r.last + 1)]
    got = store.entries(rid, r.first, r.last + 1, max_bytes=budget)
    # The exact cut under a budget: the longest prefix within it, at least one.
    n, total = 0, 0
    for e in want:
        total += len(e.data) + OVERHEAD
        if total > budget and n > 0:
            break
        n += 1
    assert got == want[:n]
    with pytest.raises(Compacted):
        store.entries(rid, r.first - 1, r.last + 1)
    with pytest.raises(Unavailable):
        store.term(rid, r.last + 1)


def run_steps(backend: str, steps: list[tuple[str, object]], path: Path) -> None:
    store = open_log_store(backend, path)
    model = NaiveStore()
    try:
        for term, (kind, arg) in enumerate(steps, start=1):
            if kind == "batch":
                ops = materialize(model, arg, term)  # type: ignore[arg-type]
                try:
                    model.write(ops)
                except InvalidArgument:
                    with pytest.raises(InvalidArgument):
                        store.write(to_batch(ops))
                else:
                    store.write(to_batch(ops))
            elif kind == "read":
                rid, budget = arg  # type: ignore[misc]
                check_read(store, model, rid, budget)
            elif backend in DURABLE:
                store.close()
                store = open_log_store(backend, path)
            assert dump(store) == model.dump(), f"after step {term}: {kind} {arg}"
    finally:
        store.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
def test_random_ops_match_naive_model(backend: str) -> None:
    # Durable backends pay an fsync per batch on a shared disk: fewer examples
    # there; the memory backend exercises the shared rules at volume.
    examples = 40 if backend in DURABLE else 200

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(steps=st.lists(step_st, min_size=1, max_size=16))
    def check(steps: list[tuple[str, object]]) -> None:
        with tempfile.TemporaryDirectory() as d:
            run_steps(backend, steps, Path(d) / "store")

    check()
