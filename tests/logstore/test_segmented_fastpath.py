"""The hot-shape fast path: recognised only when safe, identical to the planner's result."""

from __future__ import annotations

import pytest

from logstore.protocol import HardState, LogEntry, OpKind, WriteBatch
from logstore.rules import plan_batch
from logstore.segmented.batch import encode_batch
from logstore.segmented.fastpath import Extension, plan_extension
from logstore.segmented.format import OP_APPEND, OP_HARD_STATE
from logstore.segmented.index import RangeIndex, apply_columns


class _View:
    def __init__(self, ranges: dict[int, RangeIndex]) -> None:
        self.ranges = ranges

    def bounds(self, rid: int) -> tuple[int, int, int]:
        r = self.ranges.get(rid) or RangeIndex()
        return r.first, r.last, r.prev_term

    def base_term(self, rid: int, index: int) -> int:
        return self.ranges[rid].term(index)


def _ranges() -> dict[int, RangeIndex]:
    ranges: dict[int, RangeIndex] = {}
    b = WriteBatch()
    b.append(1, [LogEntry(1, 1), LogEntry(1, 2)])
    b.append(2, [LogEntry(1, 1)])
    apply_columns(ranges, 0, encode_batch(plan_batch(b, _View(ranges))).columns)
    return ranges


def _hot() -> WriteBatch:
    b = WriteBatch()
    b.append(1, [LogEntry(2, 3, 0, b"a")])
    b.set_hard_state(1, HardState(2, 1, 2))
    b.append(2, [LogEntry(2, 2, 1, b"b"), LogEntry(2, 3, 0, b"c")])
    b.append(3, [LogEntry(2, 1, 0, b"d")])
    b.set_hard_state(9, HardState(2, 0, 0))
    return b


def test_hot_batch_is_recognised_and_matches_the_planner() -> None:
    ranges = _ranges()
    ext = plan_extension(_hot().ops, ranges)
    assert isinstance(ext, Extension)
    cols = ext.encoded.columns
    assert cols.kinds == bytes([OP_APPEND] * 3 + [OP_HARD_STATE] * 2)
    assert list(cols.range_ids) == [1, 2, 3, 1, 9]
    assert list(cols.args) == [3, 1, 2, 2, 1, 1, 2, 1, 2, 2, 0, 0]
    # the same batch through the general planner gives the same index
    via_fast = _ranges()
    apply_columns(via_fast, 1, cols)
    via_planner = _ranges()
    apply_columns(via_planner, 1, encode_batch(plan_batch(_hot(), _View(via_planner))).columns)
    assert _dump(via_fast) == _dump(via_planner)


def _dump(ranges: dict[int, RangeIndex]) -> dict[int, tuple[object, ...]]:
    return {
        k: (r.first, r.terms.tolist(), r.locs.tolist(), r.hard_state) for k, r in ranges.items()
    }


def _variant(name: str) -> WriteBatch:
    b = WriteBatch()
    if name == "truncating":
        b.append(1, [LogEntry(2, 2)])
    elif name == "gap":
        b.append(1, [LogEntry(2, 5)])
    elif name == "twice":
        b.append(2, [LogEntry(1, 2)])
        b.append(2, [LogEntry(1, 3)])
    elif name == "compact":
        b.append(2, [LogEntry(1, 2)])
        b.compact(1, 1)
    elif name == "bool_term":
        b.append(2, [LogEntry(True, 2)])
    elif name == "str_data":
        b.append(2, [LogEntry(1, 2, 0, "x")])  # type: ignore[arg-type]
    elif name == "big_type":
        b.append(2, [LogEntry(1, 2, 256)])
    elif name == "negative_range":
        b.append(-2, [LogEntry(1, 1)])
    elif name == "hard_state_only":
        b.set_hard_state(1, HardState(1, 1, 1))
    elif name == "bad_hard_state":
        b.append(2, [LogEntry(1, 2)])
        b.ops.append((OpKind.HARD_STATE, 2, (1, 2)))
    return b


@pytest.mark.parametrize(
    "name",
    [
        "truncating", "gap", "twice", "compact", "bool_term", "str_data", "big_type",
        "negative_range", "hard_state_only", "bad_hard_state",
    ],
)  # fmt: skip
def test_anything_else_falls_back_to_the_planner(name: str) -> None:
    assert plan_extension(_variant(name).ops, _ranges()) is None


def test_empty_batch_falls_back() -> None:
    assert plan_extension([], {}) is None
