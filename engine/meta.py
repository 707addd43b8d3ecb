"""``MetaStateMachine``: the meta range's state — the range directory and the id allocator.

The meta range is a raft group like any other in a ``Store`` (snapshots,
recovery and replica moves work unchanged); this is the state machine it
runs. Its identity, and how it stays out of the user key space, are in
``engine/meta_codec.py``; the node side that reads and feeds it is
``engine/meta_sync.py``.

State
-----
- **The directory**: the cluster's range descriptors (user ranges only),
  under the generation rule of ``RangeDirectory``: a descriptor replaces the
  ones it overlaps only if its generation is higher than all of theirs. So a
  PUT is idempotent and commutative: a node may re-push after a crash, or
  push what another node already pushed, in any order, and the directory
  ends the same.
- **The version**: +1 for every command that changed the directory (never
  for one that did not, so an idle cluster's version is constant and a poll
  is one cheap read). Every descriptor records the version that last wrote
  it; ``_changes`` orders them by ``(changed_at, range_id)``, which is what a
  CHANGES page walks: a node that knows version ``v`` fetches only what
  changed after ``v``. A descriptor displaced by a newer one needs no
  removal record: the newer one overlaps it, has a higher generation and is
  itself in the delta, so the reader's ``RangeDirectory.update`` drops the
  old one the same way.
- **The allocator**: ``next_id``, the smallest id never handed out nor seen
  in a descriptor (ids run out before ``META_RANGE_ID``, the last one).
  ALLOCATE returns a block and moves it on; PUT moves it past any id it
  learns, so ids from elsewhere (an older scheme, a restored backup) are
  never handed out again. An allocation whose answer is lost is
  simply re-proposed: the lost ids are skipped, never reused. The allocator
  is not part of the version (the version is about the directory: a split's
  id allocation alone must not make every node refetch).

Rules
-----
- ``apply`` is deterministic and never raises for a bad command: an
  undecodable or refused command gets a ``MetaError`` result and changes
  nothing. A PUT naming the meta range itself is refused (meta's own
  descriptor is learnt by id from reports and MISMATCH answers).
- ``read`` serves VERSION and CHANGES and refuses writes.
- ``split``/``absorb`` raise ``MetaSplitRefused``: the node never proposes
  them for meta (the admin paths refuse first), so reaching them is a bug.

Snapshot image (little-endian), streamed in chunks of <= ``chunk_bytes``::

    header  := b"MRMETA" | format:u8 (=1) | version:u64 | last_id:u64 | n:u32
    entry   := changed_at:u64 | len:u32 | descriptor        (n times, key order)
    trailer := crc32c:u32 over every byte before it

``restore`` joins the stream (the image is the size of the directory this
object holds in memory anyway), checks the CRC and every invariant (entries
in key order and non-overlapping, ids unique and at most ``last_id``,
``changed_at <= version``), and only then swaps the new state in.
``last_id`` is ``next_id - 1`` (0: no id used yet).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import Final

import crc32c
from sortedcontainers import SortedDict

from engine.meta_codec import (
    META_RANGE_ID,
    AllocateIds,
    Changes,
    Ids,
    MetaCodecError,
    MetaError,
    MetaResult,
    PutApplied,
    PutDescriptors,
    ReadChanges,
    ReadVersion,
    VersionInfo,
    decode_command,
    encode_result,
)
from engine.range_desc import InvalidDescriptor, RangeDescriptor
from engine.range_directory import RangeDirectory

DEFAULT_CHUNK_BYTES: Final = 64 * 1024
#: A CHANGES page stops after this many descriptor bytes (at least one entry is
#: always returned), so pages of ranges with 64 KiB keys stay bounded too.
PAGE_BYTES: Final = 256 * 1024

_IMAGE_MAGIC: Final = b"MRMETA"
_IMAGE_FORMAT: Final = 1
_IMAGE_HEAD: Final = struct.Struct("<6sBQQI")
_ENTRY_HEAD: Final = struct.Struct("<QI")
_CRC: Final = struct.Struct("<I")


class MetaSplitRefused(ValueError):
    """The meta range was asked to split or absorb: it never does."""


class MetaSnapshotCorrupt(ValueError):
    """A meta image that fails its CRC or an invariant."""


class MetaStateMachine:
    """The meta range's directory, version and allocator (module docstring)."""

    def __init__(
        self, initial: Iterable[RangeDescriptor] = (), *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
        self._chunk_bytes = chunk_bytes
        #: Invariant: the live descriptors, non-overlapping, none of them meta's.
        self._dir = RangeDirectory([])
        #: Invariant: range id -> the version that last wrote it, for every live id.
        self._changed_at: dict[int, int] = {}
        #: Invariant: the keys are exactly ``{(changed_at[r], r)}``: the change order.
        self._changes: SortedDict = SortedDict()
        #: Invariant: >= every ``changed_at``; +1 per command that changed ``_dir``.
        self._version = 0
        #: Invariant: > every id ever allocated or seen in ``_dir``; >= 1.
        self._next_id = 1
        descs = tuple(initial)
        if any(d.range_id == META_RANGE_ID for d in descs):
            raise ValueError("the meta range's own descriptor is not kept in the directory")
        self._learn(descs)

    # --- introspection --------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self._version

    @property
    def next_id(self) -> int:
        return self._next_id

    def __len__(self) -> int:
        """The number of descriptors (shown as the range's key count)."""
        return len(self._dir)

    def descriptors(self) -> list[RangeDescriptor]:
        """The directory in key order."""
        return self._dir.all()

    # --- StateMachine protocol ------------------------------------------------------------

    def apply(self, commands: Sequence[bytes]) -> list[bytes]:
        return [encode_result(self._execute(raw, write=True)) for raw in commands]

    def read(self, query: bytes) -> bytes:
        return encode_result(self._execute(query, write=False))

    def snapshot(self) -> Iterator[bytes]:
        """The image as of this call (the descriptors are immutable values: the list
        holds references), encoded lazily."""
        entries = [(self._changed_at[d.range_id], d) for d in self._dir.all()]
        return self._image(self._version, self._next_id, entries)

    def restore(self, chunks: Iterable[bytes]) -> None:
        version, next_id, entries = _read_image(b"".join(chunks))
        fresh = RangeDirectory([])
        changed_at: dict[int, int] = {}
        changes = SortedDict()
        for at, d in entries:
            fresh.replace(d)
            changed_at[d.range_id] = at
            changes[(at, d.range_id)] = None
        self._dir, self._changed_at, self._changes = fresh, changed_at, changes
        self._version, self._next_id = version, next_id

    def split(self, key: bytes) -> MetaStateMachine:
        raise MetaSplitRefused("the meta range is never split")

    def absorb(self, right: MetaStateMachine) -> None:
        raise MetaSplitRefused("the meta range never absorbs another range")

    def approximate_size(self) -> int:
        """Roughly the directory's bytes (an estimate per descriptor: never used to
        split meta, only shown)."""
        return 64 * len(self._dir)

    def split_key(self) -> bytes | None:
        return None  # never split: a size-based trigger must find nothing to do

    # --- commands -------------------------------------------------------------------------

    def _execute(self, raw: bytes, *, write: bool) -> MetaResult:
        try:
            cmd = decode_command(raw)
        except MetaCodecError as e:
            return MetaError(f"bad meta command: {e}")
        if isinstance(cmd, ReadVersion):
            return VersionInfo(version=self._version, next_id=self._next_id,
                               ranges=len(self._dir))
        if isinstance(cmd, ReadChanges):
            return self._changes_after(cmd)
        if not write:
            return MetaError("write command on the read path")
        if isinstance(cmd, PutDescriptors):
            return self._put(cmd.descs)
        assert isinstance(cmd, AllocateIds)
        return self._allocate(cmd.count)

    def _put(self, descs: tuple[RangeDescriptor, ...]) -> MetaResult:
        if any(d.range_id == META_RANGE_ID for d in descs):
            return MetaError("the meta range's own descriptor is not kept in the directory")
        applied = self._learn(descs)
        return PutApplied(version=self._version, applied=applied)

    def _learn(self, descs: tuple[RangeDescriptor, ...]) -> int:
        """Apply the generation rule to each of ``descs`` (one version for all of
        them); how many took effect."""
        applied = 0
        version = self._version + 1
        for d in descs:
            removed = self._dir.replace(d)
            if removed is None:
                continue
            applied += 1
            for old in removed:
                at = self._changed_at.pop(old.range_id)
                del self._changes[(at, old.range_id)]
            self._changed_at[d.range_id] = version
            self._changes[(version, d.range_id)] = None
            self._next_id = max(self._next_id, d.range_id + 1)
        if applied:
            self._version = version
        return applied

    def _allocate(self, count: int) -> MetaResult:
        first = self._next_id
        if first + count - 1 >= META_RANGE_ID:
            return MetaError("range ids are exhausted")
        self._next_id = first + count
        return Ids(first=first, count=count)

    def _changes_after(self, cmd: ReadChanges) -> Changes:
        entries: list[tuple[int, RangeDescriptor]] = []
        size = 0
        more = False
        for at, rid in self._changes.irange(minimum=(cmd.since, cmd.after_id),
                                            inclusive=(False, True)):
            if len(entries) >= cmd.limit or (entries and size >= PAGE_BYTES):
                more = True
                break
            d = self._dir.get(rid)
            assert d is not None, "a change record names a live descriptor"
            entries.append((at, d))
            size += len(d.start_key) + len(d.end_key) + 64
        return Changes(version=self._version, more=more, entries=tuple(entries))

    # --- image ----------------------------------------------------------------------------

    def _image(
        self, version: int, next_id: int, entries: list[tuple[int, RangeDescriptor]],
    ) -> Iterator[bytes]:
        crc = 0
        buf = bytearray(_IMAGE_HEAD.pack(_IMAGE_MAGIC, _IMAGE_FORMAT, version, next_id - 1,
                                         len(entries)))
        for at, d in entries:
            raw = d.encode()
            buf += _ENTRY_HEAD.pack(at, len(raw))
            buf += raw
            if len(buf) >= self._chunk_bytes:
                chunk = bytes(buf[:self._chunk_bytes])
                del buf[:self._chunk_bytes]
                crc = crc32c.crc32c(chunk, crc)
                yield chunk
        crc = crc32c.crc32c(bytes(buf), crc)
        buf += _CRC.pack(crc)
        while buf:
            chunk = bytes(buf[:self._chunk_bytes])
            del buf[:self._chunk_bytes]
            yield chunk


def _read_image(data: bytes) -> tuple[int, int, list[tuple[int, RangeDescriptor]]]:
    """Parse and check a whole image; ``MetaSnapshotCorrupt`` on any fault."""
    if len(data) < _IMAGE_HEAD.size + _CRC.size:
        raise MetaSnapshotCorrupt(f"image of {len(data)} bytes is too short")
    body, (crc,) = data[:-_CRC.size], _CRC.unpack(data[-_CRC.size:])
    if crc32c.crc32c(body) != crc:
        raise MetaSnapshotCorrupt("image checksum mismatch")
    magic, fmt, version, last_id, n = _IMAGE_HEAD.unpack_from(body)
    if magic != _IMAGE_MAGIC or fmt != _IMAGE_FORMAT:
        raise MetaSnapshotCorrupt(f"not a meta image (magic {magic!r}, format {fmt})")
    pos = _IMAGE_HEAD.size
    entries: list[tuple[int, RangeDescriptor]] = []
    prev: RangeDescriptor | None = None
    ids: set[int] = set()
    for _ in range(n):
        if pos + _ENTRY_HEAD.size > len(body):
            raise MetaSnapshotCorrupt("image truncated in an entry header")
        at, dlen = _ENTRY_HEAD.unpack_from(body, pos)
        pos += _ENTRY_HEAD.size
        if pos + dlen > len(body):
            raise MetaSnapshotCorrupt("image truncated in a descriptor")
        try:
            d = RangeDescriptor.decode(body[pos:pos + dlen])
        except InvalidDescriptor as e:
            raise MetaSnapshotCorrupt(f"bad descriptor in image: {e}") from e
        pos += dlen
        if d.range_id == META_RANGE_ID or d.range_id in ids or d.range_id > last_id:
            raise MetaSnapshotCorrupt(f"bad or duplicate range id {d.range_id} in image")
        if at > version or at == 0:
            raise MetaSnapshotCorrupt(f"change version {at} outside 1..{version}")
        if prev is not None and (not prev.end_key or d.start_key < prev.end_key):
            raise MetaSnapshotCorrupt(f"{d.describe()} overlaps or precedes {prev.describe()}")
        ids.add(d.range_id)
        entries.append((at, d))
        prev = d
    if pos != len(body):
        raise MetaSnapshotCorrupt(f"{len(body) - pos} trailing bytes in image")
    return version, last_id + 1, entries
