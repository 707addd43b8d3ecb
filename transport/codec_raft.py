"""Wire encoding of raft messages, each tagged with its range id (record kind RAFT_BATCH).

Byte layout (little-endian; follows the 6-byte envelope of ``codec_header``
whose ``count`` is the number of messages)
---------------------------------------------------------------------------
Each message::

    offset size field
    0      8    range_id      u64  the raft group the message belongs to
    8      1    type          u8   MessageType of the raft core
    9      1    flags         u8   bit 0 reject, bit 1 has snapshot; other bits must be 0
    10     8    to            u64
    18     8    frm           u64
    26     8    term          u64
    34     8    log_term      u64
    42     8    index         u64
    50     8    commit        u64
    58     8    reject_hint   u64
    66     4    context_len   u32
    70     4    n_entries     u32
    74     ...  context       context_len bytes
           ...  entries       if n_entries > 0, column-wise (see below)
           ...  snapshot      if flags bit 1 (see below)

Entries, ``n = n_entries``::

    terms   u64[n] | indexes u64[n] | types u8[n] | data_lens u32[n] | data (sum of data_lens)

Snapshot::

    index u64 | term u64 | auto_leave u8 | n_voters u32 | n_learners u32 |
    n_voters_outgoing u32 | n_learners_next u32 | data_len u32 |
    voters u64[] | learners u64[] | voters_outgoing u64[] | learners_next u64[] | data

Rules
-----
- ``snapshot is None`` and an empty snapshot are different values and both
  survive a round trip (flag bit 1).
- The decoder checks every count and length against the bytes left before
  it allocates; see ``codec_columns``.
- Decoded values are built by the constructors in ``RaftTypes``, called
  positionally in the field order of ``engine.raft.types`` (mirrored in
  ``codec_mirror``). Message and entry ``type`` come back as plain ``int``s:
  the transport does not know the enums, and ``IntEnum`` compares equal to them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Final, Generic, Protocol, TypeVar, cast

from transport import codec_mirror
from transport.codec_columns import (
    U8,
    U32,
    U64,
    Chunk,
    build_rows,
    pack_column,
    read_blobs,
    read_bytes,
    read_column,
    require,
)
from transport.errors import DecodeError

MsgT = TypeVar("MsgT")

MESSAGE_HEADER: Final = struct.Struct("<QBBQQQQQQQII")
assert MESSAGE_HEADER.size == 74
SNAPSHOT_HEADER: Final = struct.Struct("<QQBIIIII")
assert SNAPSHOT_HEADER.size == 37
#: Fixed bytes of one entry across its columns (term, index, type, data_len).
ENTRY_FIXED_SIZE: Final = 8 + 8 + 1 + 4

FLAG_REJECT: Final = 0x01
FLAG_SNAPSHOT: Final = 0x02
_KNOWN_FLAGS: Final = FLAG_REJECT | FLAG_SNAPSHOT


class EntryLike(Protocol):
    """What the encoder reads from an entry (``engine.raft.types.Entry`` fits)."""

    @property
    def term(self) -> int: ...
    @property
    def index(self) -> int: ...
    @property
    def type(self) -> int: ...
    @property
    def data(self) -> bytes: ...


class ConfStateLike(Protocol):
    @property
    def voters(self) -> Sequence[int]: ...
    @property
    def learners(self) -> Sequence[int]: ...
    @property
    def voters_outgoing(self) -> Sequence[int]: ...
    @property
    def learners_next(self) -> Sequence[int]: ...
    @property
    def auto_leave(self) -> bool: ...


class SnapshotMetadataLike(Protocol):
    @property
    def index(self) -> int: ...
    @property
    def term(self) -> int: ...
    @property
    def conf_state(self) -> ConfStateLike: ...


class SnapshotLike(Protocol):
    @property
    def metadata(self) -> SnapshotMetadataLike: ...
    @property
    def data(self) -> bytes: ...


class MessageLike(Protocol):
    """What the encoder reads from a message (``engine.raft.types.Message`` fits)."""

    @property
    def type(self) -> int: ...
    @property
    def to(self) -> int: ...
    @property
    def frm(self) -> int: ...
    @property
    def term(self) -> int: ...
    @property
    def log_term(self) -> int: ...
    @property
    def index(self) -> int: ...
    @property
    def entries(self) -> Sequence[EntryLike]: ...
    @property
    def commit(self) -> int: ...
    @property
    def reject(self) -> bool: ...
    @property
    def reject_hint(self) -> int: ...
    @property
    def context(self) -> bytes: ...
    @property
    def snapshot(self) -> SnapshotLike | None: ...


@dataclass(frozen=True, slots=True)
class RaftTypes(Generic[MsgT]):
    """The constructors the decoder builds raft values with.

    Each is called positionally with the fields of the matching
    ``engine.raft.types`` NamedTuple, in declaration order.
    """

    message: Callable[..., MsgT]
    entry: Callable[..., Any]
    snapshot: Callable[..., Any]
    snapshot_metadata: Callable[..., Any]
    conf_state: Callable[..., Any]


#: The transport's own mirror types: for its tests, fuzzing and benchmarks.
MIRROR_TYPES: Final[RaftTypes[codec_mirror.Message]] = RaftTypes(
    message=codec_mirror.Message,
    entry=codec_mirror.Entry,
    snapshot=codec_mirror.Snapshot,
    snapshot_metadata=codec_mirror.SnapshotMetadata,
    conf_state=codec_mirror.ConfState,
)

#: Field layout of ``Entry`` NamedTuples that ``_encode_entries`` may transpose with ``zip``.
_ENTRY_FIELDS: Final = ("term", "index", "type", "data")
_get_term = attrgetter("term")
_get_index = attrgetter("index")
_get_type = attrgetter("type")
_get_data = attrgetter("data")


def encode_messages(parts: list[Chunk], items: Iterable[tuple[int, MessageLike]]) -> int:
    """Append the encoding of each ``(range_id, message)`` to ``parts``; return the count.

    Raises ``struct.error``/``OverflowError``/``ValueError`` for a field
    outside its wire range (a negative id, a type above 255): a caller bug.
    """
    count = 0
    pack_header = MESSAGE_HEADER.pack
    for range_id, m in items:
        entries = m.entries
        context = m.context
        snapshot = m.snapshot
        flags = (FLAG_REJECT if m.reject else 0) | (FLAG_SNAPSHOT if snapshot is not None else 0)
        parts.append(
            pack_header(
                range_id, m.type, flags, m.to, m.frm, m.term, m.log_term, m.index,
                m.commit, m.reject_hint, len(context), len(entries),
            )
        )
        if context:
            parts.append(context)
        if entries:
            _encode_entries(parts, entries)
        if snapshot is not None:
            _encode_snapshot(parts, snapshot)
        count += 1
    return count


def _encode_entries(parts: list[Chunk], entries: Sequence[EntryLike]) -> None:
    if len(set(map(type, entries))) == 1 and getattr(type(entries[0]), "_fields", None) == (
        _ENTRY_FIELDS
    ):
        # NamedTuples laid out like ``Entry``: transpose in C, no attribute
        # lookups (measured ~2x faster than four attrgetter passes).
        terms, indexes, etypes, datas = zip(*cast(Sequence[tuple[int, int, int, bytes]], entries),
                                            strict=True)
    else:
        terms = tuple(map(_get_term, entries))
        indexes = tuple(map(_get_index, entries))
        etypes = tuple(map(_get_type, entries))
        datas = tuple(map(_get_data, entries))
    parts.append(pack_column(U64, terms))
    parts.append(pack_column(U64, indexes))
    parts.append(bytes(etypes))
    parts.append(pack_column(U32, map(len, datas)))
    parts.extend(datas)


def _encode_snapshot(parts: list[Chunk], snapshot: SnapshotLike) -> None:
    meta = snapshot.metadata
    cs = meta.conf_state
    data = snapshot.data
    parts.append(
        SNAPSHOT_HEADER.pack(
            meta.index, meta.term, 1 if cs.auto_leave else 0, len(cs.voters), len(cs.learners),
            len(cs.voters_outgoing), len(cs.learners_next), len(data),
        )
    )
    for ids in (cs.voters, cs.learners, cs.voters_outgoing, cs.learners_next):
        if ids:
            parts.append(pack_column(U64, ids))
    parts.append(data)


def decode_messages(
    types: RaftTypes[MsgT], mv: memoryview, off: int, count: int
) -> tuple[list[tuple[int, MsgT]], int]:
    """Decode ``count`` messages at ``off``; return ``[(range_id, message)]`` and the end."""
    # Every message has at least its fixed header: bound the count before any work.
    require(mv, off, count * MESSAGE_HEADER.size, "raft batch")
    unpack_header = MESSAGE_HEADER.unpack_from
    header_size = MESSAGE_HEADER.size
    new_message = types.message
    out: list[tuple[int, MsgT]] = []
    for _ in range(count):
        require(mv, off, header_size, "message header")
        (range_id, mtype, flags, to, frm, term, log_term, index, commit, reject_hint,
         context_len, n_entries) = unpack_header(mv, off)
        if flags & ~_KNOWN_FLAGS:
            raise DecodeError(f"unknown message flags {flags:#x}", off + 9)
        off += header_size
        context, off = read_bytes(mv, off, context_len, "message context")
        entries: tuple[Any, ...] = ()
        if n_entries:
            entries, off = _decode_entries(types, mv, off, n_entries)
        snapshot = None
        if flags & FLAG_SNAPSHOT:
            snapshot, off = _decode_snapshot(types, mv, off)
        out.append((
            range_id,
            new_message(
                mtype, to, frm, term, log_term, index, entries, commit,
                bool(flags & FLAG_REJECT), reject_hint, context, snapshot,
            ),
        ))
    return out, off


def _decode_entries(
    types: RaftTypes[Any], mv: memoryview, off: int, n: int
) -> tuple[tuple[Any, ...], int]:
    require(mv, off, n * ENTRY_FIXED_SIZE, "entry columns")
    terms, off = read_column(mv, off, U64, n, "entry terms")
    indexes, off = read_column(mv, off, U64, n, "entry indexes")
    etypes, off = read_column(mv, off, U8, n, "entry types")
    lengths, off = read_column(mv, off, U32, n, "entry lengths")
    datas, off = read_blobs(mv, off, lengths, "entry data")
    return tuple(build_rows(types.entry, terms, indexes, etypes, datas)), off


def _decode_snapshot(types: RaftTypes[Any], mv: memoryview, off: int) -> tuple[Any, int]:
    require(mv, off, SNAPSHOT_HEADER.size, "snapshot header")
    (index, term, auto_leave, n_voters, n_learners, n_outgoing, n_next,
     data_len) = SNAPSHOT_HEADER.unpack_from(mv, off)
    if auto_leave > 1:
        raise DecodeError(f"snapshot auto_leave byte {auto_leave} is not 0 or 1", off + 16)
    off += SNAPSHOT_HEADER.size
    id_sets: list[tuple[int, ...]] = []
    for n, what in ((n_voters, "voters"), (n_learners, "learners"),
                    (n_outgoing, "voters_outgoing"), (n_next, "learners_next")):
        ids, off = read_column(mv, off, U64, n, f"snapshot {what}")
        id_sets.append(tuple(ids))
    data, off = read_bytes(mv, off, data_len, "snapshot data")
    conf_state = types.conf_state(*id_sets, bool(auto_leave))
    metadata = types.snapshot_metadata(index, term, conf_state)
    return types.snapshot(metadata, data), off
