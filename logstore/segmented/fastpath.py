"""The hot batch shape, planned and encoded without per-entry Python.

A worker's batch is almost always: for many ranges, entries that extend the
range's log (the first index is ``last_index + 1``), plus hard states. The
general planner (``logstore.rules.plan_batch``) spends several Python
operations per op and per entry on it; this module recognises that shape
with column-wide C calls (``map``/``set`` over ``itemgetter`` columns for the
types, the ``array``/``bytes`` conversions the encoding needs anyway for the
value ranges) and builds the record's columns directly.

Rules
-----
- **Conservative.** ``plan_extension`` returns ``None`` at the first thing it
  does not recognise (another op kind, a range appended twice, an append
  that does not start at ``last + 1``, a value of a type or size it does not
  take); the store then runs the general planner, which accepts or rejects
  the batch with the exact rules. So the fast path never changes what is
  accepted, only how fast.
- **Reordering.** In the record, the APPEND ops come first (in batch order),
  then the HARD_STATE ops (in batch order). That is the same state as batch
  order: an append and a hard state never affect each other, ops on
  different ranges commute, and each range has at most one append here.
- **Same result as replay.** ``apply_extension`` is the specialisation of
  ``index.apply_columns`` to these columns; recovery replays the record with
  the general function and must (and, tested, does) reach the same index.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from itertools import chain
from operator import add, attrgetter, itemgetter
from typing import NamedTuple, cast

from logstore.protocol import HardState, LogEntry, OpKind
from logstore.rules import MAX_RANGE_ID
from logstore.segmented.batch import EncodedBatch, assemble_head
from logstore.segmented.format import OP_APPEND, OP_HARD_STATE, Columns
from logstore.segmented.index import ORD_BITS, RangeIndex

# array("Q") enforces exactly the planner's range-id bound.
assert MAX_RANGE_ID == (1 << 64) - 1
assert int(OpKind.APPEND) == OP_APPEND and int(OpKind.HARD_STATE) == OP_HARD_STATE

_MAX_I63 = (1 << 63) - 1
_KINDS = {OpKind.APPEND, OpKind.HARD_STATE}
_INT = {int}
_FIRST = itemgetter(0)
_SECOND = itemgetter(1)
_THIRD = itemgetter(2)
_FOURTH = itemgetter(3)
_GET_FIRST = attrgetter("first")
_GET_TERMS = attrgetter("terms")


class Extension(NamedTuple):
    """A batch of the hot shape, encoded, with what applying it needs."""

    encoded: EncodedBatch
    targets: list[RangeIndex | None]  # per APPEND op: the range's index (None: new)
    append_rids: Sequence[int]
    counts: list[int]
    hard_states: Sequence[tuple[int, HardState]]


def plan_extension(
    ops: list[tuple[OpKind, int, object]], ranges: dict[int, RangeIndex]
) -> Extension | None:
    """The batch as an ``Extension``, or ``None`` if it is not of the hot shape."""
    if not ops:
        return None
    # itemgetter columns, not zip(*ops): zip allocates one iterator per op.
    kinds = list(map(_FIRST, ops))
    rids = list(map(_SECOND, ops))
    kind_set = set(kinds)
    if not kind_set <= _KINDS or set(map(type, rids)) != _INT:
        return None
    hard_states: Sequence[tuple[int, HardState]] = ()
    if kind_set == {OpKind.APPEND}:
        app_rids: Sequence[int] = rids
        app_payloads: Sequence[object] = list(map(_THIRD, ops))
    else:
        app = [(r, p) for k, r, p in ops if k is OpKind.APPEND]
        app_rids, app_payloads = zip(*app, strict=True) if app else ((), ())
        hard_states = [(r, p) for k, r, p in ops if k is OpKind.HARD_STATE]  # type: ignore[misc]
        if not _hard_states_ok(hard_states):
            return None
    if not app_rids:
        return None
    if len(set(app_rids)) != len(app_rids) or set(map(type, app_payloads)) != {list}:
        return None
    counts = list(map(len, app_payloads))  # type: ignore[arg-type]
    if min(counts) == 0:
        return None
    flat: list[LogEntry] = list(chain.from_iterable(app_payloads))  # type: ignore[arg-type]
    if not all(
        issubclass(t, tuple) and len(getattr(t, "_fields", ())) == 4 for t in set(map(type, flat))
    ):
        return None
    terms = list(map(_FIRST, flat))
    idxs = list(map(_SECOND, flat))
    types = list(map(_THIRD, flat))
    datas = list(map(_FOURTH, flat))
    if (
        set(map(type, terms)) != _INT
        or set(map(type, idxs)) != _INT
        or set(map(type, types)) != _INT
        or set(map(type, datas)) != {bytes}
    ):
        return None
    # Value ranges, checked by the C conversions the encoding needs anyway
    # (array 'Q': 0 <= v < 2**64; 'q': v < 2**63; bytes(): 0 <= v <= 255).
    try:
        range_ids = array("Q", app_rids)
        range_ids.extend(r for r, _ in hard_states)
        term_col = array("Q", terms)
        array("q", terms)
        array("q", idxs)
        type_col = bytes(types)
    except (OverflowError, ValueError):
        return None
    targets = list(map(ranges.get, app_rids))
    if None in targets:
        starts = [1 if r is None else r.first + len(r.terms) for r in targets]
    else:  # all known: three C passes instead of a Python loop
        starts = list(map(add, map(_GET_FIRST, targets), map(len, map(_GET_TERMS, targets))))
    if len(flat) == len(counts):  # one entry per op: the entries' indexes are the starts
        if idxs != starts:
            return None
    elif idxs != list(chain.from_iterable(map(range, starts, map(add, starts, counts)))):
        return None
    cols = _columns(range_ids, starts, counts, term_col, type_col, datas, hard_states)
    encoded = EncodedBatch(assemble_head(cols), cols, flat, len(cols.blob))
    return Extension(encoded, targets, app_rids, counts, hard_states)


def _hard_states_ok(hard_states: Sequence[tuple[int, object]]) -> bool:
    if not hard_states:
        return True
    values = [v for _, v in hard_states]
    if set(map(type, values)) != {HardState}:
        return False
    flat: list[int] = list(chain.from_iterable(values))  # type: ignore[arg-type]
    return set(map(type, flat)) == _INT and min(flat) >= 0 and max(flat) <= _MAX_I63


def _columns(  # noqa: PLR0917  # private helper fed straight from plan_extension's columns
    range_ids: array[int],  # the APPENDs' then the HARD_STATEs' range ids
    starts: list[int],
    counts: list[int],
    terms: array[int],
    types: bytes,
    datas: list[bytes],
    hard_states: Sequence[tuple[int, HardState]],
) -> Columns:
    kinds = bytes((OP_APPEND,)) * len(starts) + bytes((OP_HARD_STATE,)) * len(hard_states)
    args = array("Q", bytes(16 * len(starts)))
    args[0::2] = array("Q", starts)
    args[1::2] = array("Q", counts)
    if hard_states:
        args.extend(chain.from_iterable(hs for _, hs in hard_states))
    return Columns(
        kinds, range_ids, args, terms, types, array("I", map(len, datas)), b"".join(datas)
    )


def apply_extension(ranges: dict[int, RangeIndex], rec: int, ext: Extension) -> None:
    """Apply an extension written as record ``rec`` (same effect as ``apply_columns``)."""
    terms = ext.encoded.columns.terms
    loc = rec << ORD_BITS
    if None in ext.targets:
        targets = [
            r if r is not None else ranges.setdefault(rid, RangeIndex())
            for r, rid in zip(ext.targets, ext.append_rids, strict=True)
        ]
    else:
        targets = cast(list[RangeIndex], ext.targets)
    if len(terms) == len(targets):  # one entry per op (the hot case)
        for r, term, at in zip(targets, terms, range(loc, loc + len(terms)), strict=True):
            r.terms.append(term)
            r.locs.append(at)
    else:
        _apply_runs(targets, ext.counts, terms, loc)
    for rid, hs in ext.hard_states:
        target = ranges.get(rid)
        if target is None:
            target = ranges[rid] = RangeIndex()
        target.hard_state = hs
        target.hs_rec = rec


def _apply_runs(targets: list[RangeIndex], counts: list[int], terms: array[int], loc: int) -> None:
    o = 0
    for r, n in zip(targets, counts, strict=True):
        r.terms.extend(terms[o : o + n])
        r.locs.extend(range(loc + o, loc + o + n))
        o += n
