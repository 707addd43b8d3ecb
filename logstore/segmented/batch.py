"""Batch codec: resolved operations <-> the columnar record payload.

The byte layout is documented in ``format.py`` ("Batch payload"). This
module turns the planner's resolved operations (``logstore.rules``) into
that payload and back.

Theory of operation
-------------------
The hot case is a batch carrying one small entry for each of thousands of
ranges. Per-entry Python work is what limits throughput there, so entries
are never touched one at a time: the APPEND ops' entry lists are
concatenated into one flat list, transposed with a single ``zip(*flat)``,
and each column is turned into bytes by one C call (``array``, ``bytes``,
``b"".join``). The only per-op Python is one branch that records the op's
kind, range id and args.

Decoding is the mirror image (``array.frombytes`` per column) and checks that
the counts add up, so a CRC-valid payload that is internally inconsistent
(a bug, or a collision) is reported as corruption rather than misread.
``StoredEntries`` materialises ``LogEntry`` objects for a record read back
from disk only for the entries a reader asks for.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from itertools import accumulate
from typing import NamedTuple

from logstore.protocol import LogEntry, SnapshotMeta
from logstore.rules import Append, Compact, Remove, Resolved, SetHardState, Snapshot
from logstore.segmented.format import (
    OP_APPEND,
    OP_ARGS,
    OP_COMPACT,
    OP_HARD_STATE,
    OP_REMOVE,
    OP_RESET,
    OP_SNAPSHOT_META,
    PAYLOAD_HEAD,
    Columns,
    le_array,
    le_bytes,
    payload_size,
)


class PayloadError(ValueError):
    """A payload whose internal counts do not add up (the reader adds path/offset)."""


class Reset(NamedTuple):
    """Store-internal op (purge rewrite): drop the whole log, empty after (index, term)."""

    range_id: int
    point: int  # the log is empty after (point, term)
    term: int


class SetSnapshotMeta(NamedTuple):
    """Store-internal op (purge checkpoint): restate snapshot metadata, log untouched."""

    range_id: int
    meta: SnapshotMeta


#: What ``encode_batch`` takes: the planner's ops plus the store-internal ones.
DiskOp = Resolved | Reset | SetSnapshotMeta


class EncodedBatch(NamedTuple):
    """A batch ready to frame, plus what the index and the cache need from it.

    The payload is ``head + columns.blob``; they are kept apart so that the
    (large) blob is never copied again: it is written, checksummed and, when
    it compresses, compressed straight from ``columns.blob``.
    """

    head: bytes  # the payload up to the blob
    columns: Columns
    entries: list[LogEntry]  # every appended entry, in column (ordinal) order
    data_bytes: int  # sum of entry data lengths (for cache accounting)

    @property
    def payload(self) -> bytes:
        """The whole payload in one buffer (tests and tools; writers use the parts)."""
        return self.head + self.columns.blob


_EMPTY_Q: array[int] = array("Q")
_EMPTY_I: array[int] = array("I")


def encode_batch(ops: Sequence[DiskOp]) -> EncodedBatch:
    """Encode resolved ops. Raises ``TypeError``/``ValueError``/``OverflowError``
    on values that do not fit the columns (the planner has already checked)."""
    kinds = bytearray()
    range_ids = array("Q")
    args = array("Q")
    flat: list[LogEntry] = []
    snaps: list[bytes] = []
    for op in ops:
        # isinstance narrows for the type checker; Append first: the hot case.
        if isinstance(op, Append):
            ents = op.entries
            kinds.append(OP_APPEND)
            range_ids.append(op.range_id)
            args.append(ents[0].index)
            args.append(len(ents))
            flat += ents
        elif isinstance(op, SetHardState):
            kinds.append(OP_HARD_STATE)
            range_ids.append(op.range_id)
            args.extend(op.hard_state)
        elif isinstance(op, Snapshot):
            meta = op.meta
            kinds.append(OP_SNAPSHOT_META)
            kinds.append(OP_COMPACT if op.keep else OP_RESET)
            range_ids.append(op.range_id)
            range_ids.append(op.range_id)
            args.extend((meta.index, meta.term, len(meta.data), meta.index, meta.term))
            snaps.append(meta.data)
        elif isinstance(op, Compact):
            kinds.append(OP_COMPACT)
            range_ids.append(op.range_id)
            args.extend((op.index, op.term))
        elif isinstance(op, Reset):
            kinds.append(OP_RESET)
            range_ids.append(op.range_id)
            args.extend((op.point, op.term))
        elif isinstance(op, SetSnapshotMeta):
            kinds.append(OP_SNAPSHOT_META)
            range_ids.append(op.range_id)
            args.extend((op.meta.index, op.meta.term, len(op.meta.data)))
            snaps.append(op.meta.data)
        else:
            assert isinstance(op, Remove), f"unknown resolved op {op!r}"
            kinds.append(OP_REMOVE)
            range_ids.append(op.range_id)
    if flat:
        terms_t, _, types_t, datas = zip(*flat, strict=True)
        terms = array("Q", terms_t)
        types = bytes(types_t)
        lengths = array("I", map(len, datas))
        data_blob = b"".join(datas)
    else:
        terms, types, lengths, data_blob = _EMPTY_Q, b"", _EMPTY_I, b""
    blob = b"".join((data_blob, *snaps)) if snaps else data_blob
    cols = Columns(bytes(kinds), range_ids, args, terms, types, lengths, blob)
    return EncodedBatch(assemble_head(cols), cols, flat, len(data_blob))


def assemble_head(cols: Columns) -> bytes:
    """The payload bytes of ``cols`` before the blob (one join, no per-entry work)."""
    head = PAYLOAD_HEAD.pack(len(cols.kinds), len(cols.terms), len(cols.args), len(cols.blob))
    return b"".join(
        (
            head,
            cols.kinds,
            le_bytes(cols.range_ids),
            le_bytes(cols.args),
            le_bytes(cols.terms),
            cols.types,
            le_bytes(cols.lengths),
        )
    )


def assemble_payload(cols: Columns) -> bytes:
    """The whole payload of ``cols``."""
    return assemble_head(cols) + cols.blob


def decode_payload(payload: bytes | memoryview) -> Columns:
    """Split a payload into columns, checking that every count adds up."""
    if len(payload) < PAYLOAD_HEAD.size:
        raise PayloadError(f"payload of {len(payload)} bytes is shorter than its header")
    n_ops, n_entries, n_args, blob_len = PAYLOAD_HEAD.unpack_from(payload, 0)
    if payload_size(n_ops, n_entries, n_args, blob_len) != len(payload):
        raise PayloadError(
            f"payload counts ({n_ops} ops, {n_entries} entries, {n_args} args, "
            f"{blob_len} blob bytes) do not match its size {len(payload)}"
        )
    mv = memoryview(payload)
    pos = PAYLOAD_HEAD.size
    kinds = bytes(mv[pos : pos + n_ops])
    pos += n_ops
    range_ids = le_array("Q", mv[pos : pos + 8 * n_ops])
    pos += 8 * n_ops
    args = le_array("Q", mv[pos : pos + 8 * n_args])
    pos += 8 * n_args
    terms = le_array("Q", mv[pos : pos + 8 * n_entries])
    pos += 8 * n_entries
    types = bytes(mv[pos : pos + n_entries])
    pos += n_entries
    lengths = le_array("I", mv[pos : pos + 4 * n_entries])
    pos += 4 * n_entries
    blob = bytes(mv[pos:])
    cols = Columns(kinds, range_ids, args, terms, types, lengths, blob)
    _check_columns(cols)
    return cols


def _check_columns(cols: Columns) -> None:
    """Kinds known, args/entries/blob consumed exactly."""
    kinds = cols.kinds
    args = cols.args
    per_kind = [kinds.count(k) for k in range(len(OP_ARGS))]
    if sum(per_kind) != len(kinds) or per_kind[0]:
        raise PayloadError("unknown op kind")
    n_args = sum(c * n for c, n in zip(per_kind, OP_ARGS, strict=True))
    if n_args != len(args):
        raise PayloadError(f"ops use {n_args} args, payload has {len(args)}")
    m = len(kinds) - len(kinds.lstrip(bytes((OP_APPEND,))))
    n_entries = sum(args[1 : 2 * m : 2])  # leading APPENDs (the hot shape), in C
    snap_bytes = 0
    a = 2 * m
    for kind in kinds[m:]:
        if kind == OP_APPEND:
            n_entries += args[a + 1]
        elif kind == OP_SNAPSHOT_META:
            snap_bytes += args[a + 2]
        a += OP_ARGS[kind]
    if n_entries != len(cols.terms):
        raise PayloadError(f"appends carry {n_entries} entries, payload has {len(cols.terms)}")
    if sum(cols.lengths) + snap_bytes != len(cols.blob):
        raise PayloadError("entry and snapshot data lengths do not add up to the blob")


class StoredEntries:
    """The entries of a record read back from disk, decoded lazily.

    A reader usually wants a few entries of one range out of a record holding
    one entry for each of thousands of ranges: it gets exactly those as
    ``LogEntry`` objects (``take``), the rest stay in the columns.
    """

    __slots__ = ("_blob", "_offs", "_terms", "_types", "nbytes")

    def __init__(self, cols: Columns) -> None:
        self._terms = cols.terms
        self._types = cols.types
        self._blob = cols.blob
        # Invariant: entry o's data is _blob[_offs[o]:_offs[o + 1]].
        self._offs = array("Q", accumulate(cols.lengths, initial=0))
        self.nbytes = len(cols.blob) + 21 * len(cols.terms)

    def take(self, o: int, n: int, index: int) -> list[LogEntry]:
        """Entries at ordinals ``o .. o+n-1``, which hold indexes ``index, index+1, ...``."""
        offs = self._offs
        blob = self._blob
        datas = [blob[offs[j] : offs[j + 1]] for j in range(o, o + n)]
        return list(
            map(
                LogEntry,
                self._terms[o : o + n],
                range(index, index + n),
                self._types[o : o + n],
                datas,
            )
        )
