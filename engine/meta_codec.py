"""The meta range's identity and the byte codec of its commands and results.

The meta range is the raft group holding the cluster's directory of range
descriptors and its range-id allocator (``engine/meta.py`` is its state
machine, ``engine/meta_sync.py`` the node side). This module is what both
sides agree on: the range's well-known id, and the bytes of what is proposed
to it, read from it and answered by it.

Why a fixed id and a nominal span
---------------------------------
Users may store *any* byte string as a key, so there is no key interval left
over for the meta range: any span it took would overlap user ranges. Its
descriptor therefore has a *nominal* span (the whole key space it indexes)
and is recognised by its id, ``META_RANGE_ID`` = 2**64 - 1: the last id, which
the allocator (counting up from after the bootstrap's 1..n) refuses to hand
out, and a valid id everywhere else (log stores, the wire, the admin API's
``/ranges/{id}/...``, where 0 is refused). The rules that follow from that:

- the node's ``RangeDirectory`` keeps the meta descriptor aside, by id: key
  lookups, scans and range listings never see it;
- the ``Store`` never compares meta's span with another replica's (the
  overlap checks of snapshot installs and restart clean-up skip it): it lives
  in a key space of its own;
- meta is never split or merged (its state machine refuses, and so do the
  node's admin paths before anything is proposed).

Byte layout (all integers little-endian)
----------------------------------------
Every command and result starts with ``MAGIC`` (0xB0), which tells it apart
on the node<->worker ring from a ``kv_codec`` command (version byte 1) and an
admin command (0xA0); a future incompatible version takes another magic. As
in ``kv_codec``, ops below 16 are reads and ops from 16 up are writes, so
``worker_protocol.is_write_command`` needs no special case::

    descriptor := RangeDescriptor.encode() (engine/range_desc.py)
    dblob      := len:u32 | descriptor
    command    := MAGIC | op:u8 | body                  (no trailing bytes)

    op  name      body
    1   VERSION   (empty)                               read: version and counters
    2   CHANGES   since:u64 | after_id:u64 | limit:u32  read: a page of changes
    16  PUT       n:u32 | dblob * n                     write: learn descriptors
    17  ALLOCATE  count:u32                             write: reserve range ids

    result     := MAGIC | tag:u8 | body                 (no trailing bytes)

    tag name      body
    1   VERSION   version:u64 | next_id:u64 | ranges:u32
    2   CHANGES   version:u64 | more:u8 | n:u32 | (changed_at:u64 | dblob) * n
    3   PUT       version:u64 | applied:u32
    4   IDS       first:u64 | count:u32
    5   ERROR     len:u32 | message (UTF-8)

A CHANGES page holds the descriptors whose last change has a position
``(changed_at, range_id)`` strictly after ``(since, after_id)``, in that
order; the next page starts after the last entry returned (``more`` = 1 says
there is one). ``after_id = 2**64 - 1`` asks for the changes after version
``since``; ``since = 0`` reads the whole directory (versions start at 1).

Rules
-----
- ``decode_command``/``decode_result`` return a well-formed value or raise
  ``MetaCodecError``; nothing else escapes for any input. Every length and
  count is checked against the bytes that remain before anything is sliced.
- Values are frozen, slotted dataclasses validated when built, so an
  encoder is never handed something the decoder would refuse.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from engine.byte_reader import ByteReader
from engine.range_desc import U64_MAX, InvalidDescriptor, RangeDescriptor

#: The meta range's well-known id (see the module docstring).
META_RANGE_ID: Final = U64_MAX
#: First byte of every meta command and result.
MAGIC: Final = 0xB0

#: Most descriptors one PUT may carry (a split pushes 2, a reconciler round a few).
MAX_PUT: Final = 4096
#: Most ids one ALLOCATE may reserve.
MAX_ALLOCATE: Final = 1 << 20
#: Most descriptors one CHANGES page may ask for.
MAX_PAGE: Final = 4096

_HEAD: Final = struct.Struct("<BB")
_U8: Final = struct.Struct("<B")
_U32: Final = struct.Struct("<I")
_U64: Final = struct.Struct("<Q")
_CHANGES_CMD: Final = struct.Struct("<QQI")
_VERSION_RES: Final = struct.Struct("<QQI")
_CHANGES_RES: Final = struct.Struct("<QBI")
_PUT_RES: Final = struct.Struct("<QI")
_IDS_RES: Final = struct.Struct("<QI")
assert _HEAD.size == 2 and _CHANGES_CMD.size == 20 and _CHANGES_RES.size == 13


class MetaCodecError(ValueError):
    """Bytes that are not a valid meta command or result."""


class Op:
    VERSION: Final = 1
    CHANGES: Final = 2
    PUT: Final = 16
    ALLOCATE: Final = 17


class Tag:
    VERSION: Final = 1
    CHANGES: Final = 2
    PUT: Final = 3
    IDS: Final = 4
    ERROR: Final = 5


def _check_u64(name: str, value: int) -> None:
    if type(value) is not int or not 0 <= value <= U64_MAX:
        raise MetaCodecError(f"{name} {value!r} is not a 64-bit unsigned integer")


def _check_count(name: str, value: int, low: int, high: int) -> None:
    if type(value) is not int or not low <= value <= high:
        raise MetaCodecError(f"{name} {value!r} is outside {low}..{high}")


# --- commands -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadVersion:
    """The directory's version and the allocator's next id: the cheap poll."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadChanges:
    """A page of the descriptors changed after position ``(since, after_id)``; the
    default ``after_id`` makes it "after version ``since``"."""

    since: int
    after_id: int = U64_MAX
    limit: int = 1024

    def __post_init__(self) -> None:
        _check_u64("since", self.since)
        _check_u64("after_id", self.after_id)
        _check_count("limit", self.limit, 1, MAX_PAGE)


@dataclass(frozen=True, slots=True)
class PutDescriptors:
    """Learn descriptors under the generation rule (idempotent, commutative)."""

    descs: tuple[RangeDescriptor, ...]

    def __post_init__(self) -> None:
        _check_count("descriptor count", len(self.descs), 1, MAX_PUT)
        for d in self.descs:
            if not isinstance(d, RangeDescriptor):
                raise MetaCodecError(f"not a RangeDescriptor: {d!r}")


@dataclass(frozen=True, slots=True)
class AllocateIds:
    """Reserve ``count`` consecutive fresh range ids."""

    count: int = 1

    def __post_init__(self) -> None:
        _check_count("count", self.count, 1, MAX_ALLOCATE)


MetaCommand = ReadVersion | ReadChanges | PutDescriptors | AllocateIds


# --- results --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionInfo:
    version: int
    next_id: int
    ranges: int

    def __post_init__(self) -> None:
        _check_u64("version", self.version)
        _check_u64("next_id", self.next_id)
        _check_count("ranges", self.ranges, 0, 0xFFFFFFFF)


@dataclass(frozen=True, slots=True, kw_only=True)
class Changes:
    """``entries``: ``(changed_at, descriptor)`` in change order; ``version``: the
    directory's version when the page was read."""

    version: int
    more: bool
    entries: tuple[tuple[int, RangeDescriptor], ...]

    def __post_init__(self) -> None:
        _check_u64("version", self.version)
        for at, d in self.entries:
            _check_u64("changed_at", at)
            if not isinstance(d, RangeDescriptor):
                raise MetaCodecError(f"not a RangeDescriptor: {d!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class PutApplied:
    """How many of a PUT's descriptors took effect, and the version after it."""

    version: int
    applied: int

    def __post_init__(self) -> None:
        _check_u64("version", self.version)
        _check_count("applied", self.applied, 0, MAX_PUT)


@dataclass(frozen=True, slots=True, kw_only=True)
class Ids:
    """The ids ``first .. first + count - 1``, reserved for the caller alone."""

    first: int
    count: int

    def __post_init__(self) -> None:
        _check_u64("first", self.first)
        _check_count("count", self.count, 1, MAX_ALLOCATE)
        if self.first + self.count - 1 > U64_MAX:
            raise MetaCodecError("id block runs past 2**64 - 1")


@dataclass(frozen=True, slots=True)
class MetaError:
    """A refused command (nothing changed); ``message`` says why."""

    message: str


MetaResult = VersionInfo | Changes | PutApplied | Ids | MetaError


# --- encoding -------------------------------------------------------------------------


def _dblob(d: RangeDescriptor) -> bytes:
    raw = d.encode()
    return _U32.pack(len(raw)) + raw


def encode_command(cmd: MetaCommand) -> bytes:
    if isinstance(cmd, ReadVersion):
        return _HEAD.pack(MAGIC, Op.VERSION)
    if isinstance(cmd, ReadChanges):
        return _HEAD.pack(MAGIC, Op.CHANGES) + _CHANGES_CMD.pack(cmd.since, cmd.after_id,
                                                                   cmd.limit)
    if isinstance(cmd, PutDescriptors):
        return b"".join([_HEAD.pack(MAGIC, Op.PUT), _U32.pack(len(cmd.descs)),
                         *map(_dblob, cmd.descs)])
    return _HEAD.pack(MAGIC, Op.ALLOCATE) + _U32.pack(cmd.count)


def encode_result(res: MetaResult) -> bytes:
    if isinstance(res, VersionInfo):
        return _HEAD.pack(MAGIC, Tag.VERSION) + _VERSION_RES.pack(res.version, res.next_id,
                                                                   res.ranges)
    if isinstance(res, Changes):
        parts = [_HEAD.pack(MAGIC, Tag.CHANGES),
                 _CHANGES_RES.pack(res.version, int(res.more), len(res.entries))]
        for at, d in res.entries:
            parts.append(_U64.pack(at))
            parts.append(_dblob(d))
        return b"".join(parts)
    if isinstance(res, PutApplied):
        return _HEAD.pack(MAGIC, Tag.PUT) + _PUT_RES.pack(res.version, res.applied)
    if isinstance(res, Ids):
        return _HEAD.pack(MAGIC, Tag.IDS) + _IDS_RES.pack(res.first, res.count)
    msg = res.message.encode("utf-8", "replace")
    return _HEAD.pack(MAGIC, Tag.ERROR) + _U32.pack(len(msg)) + msg


# --- decoding -------------------------------------------------------------------------


class _Reader(ByteReader):
    """The meta format's cursor: adds embedded descriptors."""

    __slots__ = ()
    error = MetaCodecError

    def descriptor(self) -> RangeDescriptor:
        (n,) = self.unpack(_U32)
        try:
            return RangeDescriptor.decode(self.take(n))
        except InvalidDescriptor as e:
            raise MetaCodecError(f"bad descriptor: {e}") from e


def _header(r: _Reader, what: str) -> int:
    magic, code = r.unpack(_HEAD)
    if magic != MAGIC:
        raise MetaCodecError(f"not a meta {what}: first byte {magic:#x}")
    return code


def decode_command(data: bytes) -> MetaCommand:
    """Parse untrusted ``data``; raises ``MetaCodecError`` on any fault."""
    r = _Reader(bytes(data))
    op = _header(r, "command")
    cmd: MetaCommand
    if op == Op.VERSION:
        cmd = ReadVersion()
    elif op == Op.CHANGES:
        since, after, limit = r.unpack(_CHANGES_CMD)
        cmd = ReadChanges(since=since, after_id=after, limit=limit)
    elif op == Op.PUT:
        n = r.count("descriptor count", 4, high=MAX_PUT)
        cmd = PutDescriptors(tuple(r.descriptor() for _ in range(n)))
    elif op == Op.ALLOCATE:
        (count,) = r.unpack(_U32)
        cmd = AllocateIds(count)
    else:
        raise MetaCodecError(f"unknown meta op {op}")
    r.finish()
    return cmd


def decode_result(data: bytes) -> MetaResult:
    """Parse untrusted ``data``; raises ``MetaCodecError`` on any fault."""
    r = _Reader(bytes(data))
    tag = _header(r, "result")
    res: MetaResult
    if tag == Tag.VERSION:
        version, next_id, ranges = r.unpack(_VERSION_RES)
        res = VersionInfo(version=version, next_id=next_id, ranges=ranges)
    elif tag == Tag.CHANGES:
        version, more, n = r.unpack(_CHANGES_RES)
        if more > 1:
            raise MetaCodecError(f"bad 'more' flag {more}")
        if n * 12 > len(r.data) - r.pos:
            raise MetaCodecError(f"change count {n} is impossible here")
        entries = []
        for _ in range(n):
            (at,) = r.unpack(_U64)
            entries.append((at, r.descriptor()))
        res = Changes(version=version, more=bool(more), entries=tuple(entries))
    elif tag == Tag.PUT:
        version, applied = r.unpack(_PUT_RES)
        res = PutApplied(version=version, applied=applied)
    elif tag == Tag.IDS:
        first, count = r.unpack(_IDS_RES)
        res = Ids(first=first, count=count)
    elif tag == Tag.ERROR:
        (n,) = r.unpack(_U32)
        try:
            res = MetaError(r.take(n).decode("utf-8"))
        except UnicodeDecodeError as e:
            raise MetaCodecError(f"error message is not UTF-8: {e}") from e
    else:
        raise MetaCodecError(f"unknown meta result tag {tag}")
    r.finish()
    return res


def is_meta_command(raw: bytes) -> bool:
    """Whether ``raw`` is (claims to be) a meta command: its first byte is ``MAGIC``."""
    return bool(raw) and raw[0] == MAGIC
