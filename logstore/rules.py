"""The protocol's per-range rules as code: batch planning and byte budgets.

Rules (from ``logstore.protocol``)
----------------------------------
A ``WriteBatch`` is all-or-nothing: a store must reject a bad batch with
``InvalidArgument`` *before* changing anything. Operations on one range
apply in batch order, so whether an operation is valid depends on the ones
before it in the same batch (append 5..9 then compact 7 is fine; compact 7
alone on a log ending at 5 is not). This module checks a batch against a
read-only view of the store and turns it into *resolved* operations that can
no longer fail:

- ``Append``: entries already trimmed of the part at or below the compaction
  point; ``truncates`` says whether a suffix of the existing log is replaced.
- ``Compact``: only real compactions (no-ops are dropped), with the term of
  the new compaction point resolved.
- ``Snapshot``: with ``keep`` resolved ("the log holds (index, term)").
- ``SetHardState`` and ``Remove`` unchanged.

Theory of operation
-------------------
``plan_batch`` walks the batch once, keeping a ``_Shadow`` per touched range:
its bounds as the batch has changed them so far, plus the terms the batch
itself appended. A term lookup inside the shadow answers from the batch's own
entries first and falls back to the store's (unchanged) base view only where
the base is still valid (not replaced by a truncation, a dropping snapshot or
a removal). Backends then apply the resolved list with no further checks.

Byte budgets count ``len(data) + ENTRY_OVERHEAD`` per entry, the same measure
the raft core uses (``engine.raft.types.entry_size``), so that a budget means
the same thing on both sides of the adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol, cast

from logstore.errors import Compacted, InvalidArgument, Unavailable
from logstore.protocol import HardState, LogEntry, OpKind, SnapshotMeta, WriteBatch

#: Fixed per-entry cost counted by byte budgets (mirrors the raft core's value).
ENTRY_OVERHEAD = 16

#: Range ids are unsigned 64-bit integers (ARCHITECTURE.md, "Ranges").
MAX_RANGE_ID = (1 << 64) - 1

#: Indices, terms, votes and commits must fit a signed 64-bit column (every
#: backend's lowest common denominator; raft never gets near 2**63).
_MAX_I63 = (1 << 63) - 1
_MAX_TYPE = 255


class BaseView(Protocol):
    """What the planner needs to know about the store before the batch."""

    def bounds(self, range_id: int) -> tuple[int, int, int]:
        """``(first_index, last_index, term(first_index - 1))`` of a range."""
        ...

    def base_term(self, range_id: int, index: int) -> int:
        """Term at ``index`` with ``first_index <= index <= last_index``."""
        ...


class Append(NamedTuple):
    range_id: int
    entries: Sequence[LogEntry]
    truncates: bool


class SetHardState(NamedTuple):
    range_id: int
    hard_state: HardState


class Snapshot(NamedTuple):
    range_id: int
    meta: SnapshotMeta
    keep: bool


class Compact(NamedTuple):
    range_id: int
    index: int  # type: ignore[assignment]  # shadows tuple.index by design
    term: int


class Remove(NamedTuple):
    range_id: int


Resolved = Append | SetHardState | Snapshot | Compact | Remove


class _Shadow:
    """A range's state as the batch has changed it so far (planning only)."""

    __slots__ = ("base_limit", "first", "last", "pend", "pend_lo", "prev_term")

    def __init__(self, first: int, last: int, prev_term: int) -> None:
        # Invariant: first - 1 <= last.
        self.first = first
        self.last = last
        # Invariant: prev_term == term(first - 1).
        self.prev_term = prev_term
        # Invariant: base entries are valid for first <= i <= base_limit.
        self.base_limit = last
        # Invariant: pend[i - pend_lo] is entry i as appended by this batch,
        # for pend_lo <= i <= last; empty if none.
        self.pend_lo = last + 1
        self.pend: list[LogEntry] = []

    def term(self, view: BaseView, range_id: int, index: int) -> int | None:
        """Term at ``index`` if ``first - 1 <= index <= last``, else ``None``."""
        if index == self.first - 1:
            return self.prev_term
        if index < self.first or index > self.last:
            return None
        if index >= self.pend_lo:
            return self.pend[index - self.pend_lo][0]
        assert index <= self.base_limit, "index neither appended nor in base"
        return view.base_term(range_id, index)

    def reset(self, index: int, term: int) -> None:
        """Forget every entry: the log becomes empty after ``(index, term)``."""
        self.first = index + 1
        self.last = index
        self.prev_term = term
        self.base_limit = -1
        self.pend_lo = index + 1
        self.pend = []

    def advance_first(self, index: int, term: int) -> None:
        """Drop entries ``<= index`` (``index`` within the log), keeping the rest."""
        self.first = index + 1
        self.prev_term = term
        if self.pend_lo < self.first:
            del self.pend[: self.first - self.pend_lo]
            self.pend_lo = self.first


def plan_batch(batch: WriteBatch, view: BaseView) -> list[Resolved]:
    """Validate ``batch`` against ``view`` and resolve it; raise ``InvalidArgument``
    (naming the op) on the first broken rule. Pure: the store is not touched."""
    shadows: dict[int, _Shadow] = {}
    out: list[Resolved] = []
    for pos, (kind, range_id, payload) in enumerate(batch.ops):
        _check_range_id(range_id, pos)
        sh = shadows.get(range_id)
        if sh is None:
            sh = shadows[range_id] = _Shadow(*view.bounds(range_id))
        if kind is OpKind.APPEND:
            op: Resolved | None = _plan_append(sh, range_id, payload, pos)
        elif kind is OpKind.HARD_STATE:
            op = SetHardState(range_id, _check_hard_state(payload, pos))
        elif kind is OpKind.SNAPSHOT:
            op = _plan_snapshot(sh, view, range_id, _check_snapshot(payload, pos))
        elif kind is OpKind.COMPACT:
            op = _plan_compact(sh, view, range_id, payload, pos)
        elif kind is OpKind.REMOVE_RANGE:
            sh.reset(0, 0)
            op = Remove(range_id)
        else:
            raise InvalidArgument(f"op {pos}: unknown op kind {kind!r}")
        if op is not None:
            out.append(op)
    return out


def _plan_append(sh: _Shadow, range_id: int, payload: object, pos: int) -> Append | None:
    entries = _check_entries(payload, range_id, pos)
    if not entries:
        return None
    lo = entries[0].index
    if lo > sh.last + 1:
        raise InvalidArgument(
            f"op {pos}: gap in range {range_id}: append at {lo}, last index is {sh.last}"
        )
    if entries[-1].index < sh.first:
        return None  # everything at or below the compaction point: ignored
    if lo < sh.first:
        entries = entries[sh.first - lo :]
        lo = sh.first
    truncates = lo <= sh.last
    if lo <= sh.base_limit:
        sh.base_limit = lo - 1
    if lo < sh.pend_lo:
        sh.pend_lo = lo
        sh.pend = list(entries)
    else:
        del sh.pend[lo - sh.pend_lo :]
        sh.pend.extend(entries)
    sh.last = entries[-1].index
    return Append(range_id, entries, truncates)


def _plan_snapshot(sh: _Shadow, view: BaseView, range_id: int, meta: SnapshotMeta) -> Snapshot:
    keep = sh.term(view, range_id, meta.index) == meta.term
    if keep:
        sh.advance_first(meta.index, meta.term)
    else:
        sh.reset(meta.index, meta.term)
    return Snapshot(range_id, meta, keep)


def _plan_compact(
    sh: _Shadow, view: BaseView, range_id: int, payload: object, pos: int
) -> Compact | None:
    if type(payload) is not int or payload < 0:
        raise InvalidArgument(f"op {pos}: compact index must be a non-negative int")
    if payload < sh.first:
        return None  # at or below the current compaction point: a no-op
    if payload > sh.last:
        raise InvalidArgument(
            f"op {pos}: compact range {range_id} at {payload} beyond last index {sh.last}"
        )
    term = sh.term(view, range_id, payload)
    assert term is not None
    sh.advance_first(payload, term)
    return Compact(range_id, payload, term)


def _check_range_id(range_id: object, pos: int) -> None:
    if type(range_id) is not int or not 0 <= range_id <= MAX_RANGE_ID:
        raise InvalidArgument(f"op {pos}: range id {range_id!r} is not an unsigned 64-bit int")


def _check_entries(payload: object, range_id: int, pos: int) -> Sequence[LogEntry]:
    """Entries must be ``(term, index, type, data)`` tuples with consecutive indices."""
    if not isinstance(payload, list | tuple):
        raise InvalidArgument(f"op {pos}: append payload must be a list of entries")
    if not payload:
        return payload
    expect = -1
    for e in payload:
        if not isinstance(e, tuple) or len(e) != 4:
            raise InvalidArgument(f"op {pos}: {e!r} is not a (term, index, type, data) entry")
        term, index, etype, data = e
        if (
            type(term) is not int
            or type(index) is not int
            or not isinstance(etype, int)  # IntEnum members (EntryType) are ints
            or etype.__class__ is bool
            or not isinstance(data, bytes)
            or not (0 <= term <= _MAX_I63 and 0 <= index <= _MAX_I63 and 0 <= etype <= _MAX_TYPE)
        ):
            raise InvalidArgument(f"op {pos}: malformed entry {e!r:.200} for range {range_id}")
        if expect >= 0 and index != expect:
            raise InvalidArgument(
                f"op {pos}: entries for range {range_id} not consecutive "
                f"(index {index} after {expect - 1})"
            )
        expect = index + 1
    return payload


def _check_hard_state(payload: object, pos: int) -> HardState:
    # Called once per range per batch (thousands per batch): unpack once and
    # compare directly rather than a generator over the fields.
    if isinstance(payload, tuple) and len(payload) == 3:
        term, vote, commit = payload
        if (
            type(term) is int
            and type(vote) is int
            and type(commit) is int
            and 0 <= term <= _MAX_I63
            and 0 <= vote <= _MAX_I63
            and 0 <= commit <= _MAX_I63
        ):
            # Any NamedTuple of this layout (the raft core's HardState) passes as is.
            if type(payload) is tuple:
                return HardState(term, vote, commit)
            return cast(HardState, payload)
    raise InvalidArgument(f"op {pos}: hard state must be (term, vote, commit) ints")


def _check_snapshot(payload: object, pos: int) -> SnapshotMeta:
    if (
        not isinstance(payload, tuple)
        or len(payload) != 3
        or type(payload[0]) is not int
        or type(payload[1]) is not int
        or not 0 <= payload[0] <= _MAX_I63
        or not 0 <= payload[1] <= _MAX_I63
        or not isinstance(payload[2], bytes)
    ):
        raise InvalidArgument(f"op {pos}: snapshot meta must be (index, term, data bytes)")
    return payload if isinstance(payload, SnapshotMeta) else SnapshotMeta(*payload)


def check_slice(range_id: int, lo: int, hi: int, first: int, last: int) -> None:
    """The ``entries(lo, hi)`` contract of every backend, for a range holding
    ``[first, last]``: Compacted below ``first``, Unavailable past ``last``,
    InvalidArgument for ``lo > hi``."""
    if lo < first:
        raise Compacted(f"range {range_id}: index {lo} compacted (first is {first})")
    if hi > last + 1:
        raise Unavailable(f"range {range_id}: index {hi - 1} beyond last {last}")
    if lo > hi:
        raise InvalidArgument(f"range {range_id}: lo {lo} > hi {hi}")


def check_term_index(range_id: int, index: int, first: int, last: int) -> None:
    """The ``term(index)`` contract: answerable for ``[first - 1, last]`` (the entry
    just before ``first`` is the compaction point, whose term is kept)."""
    if index < first - 1:
        raise Compacted(f"range {range_id}: index {index} compacted (first is {first})")
    if index > last:
        raise Unavailable(f"range {range_id}: index {index} beyond last {last}")


def limit_size(entries: list[LogEntry], max_bytes: int | None) -> list[LogEntry]:
    """The longest prefix within ``max_bytes`` (never empty if ``entries`` is not)."""
    if max_bytes is None:
        return entries
    total = 0
    for i, e in enumerate(entries):
        total += len(e.data) + ENTRY_OVERHEAD
        if total > max_bytes and i > 0:
            return entries[:i]
    return entries
