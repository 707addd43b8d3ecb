"""Durable state-machine snapshots: the other half of a replica's recovery.

Why a separate store
--------------------
The raft log store keeps entries and hard state; the state machine lives in
memory. After a restart a replica needs an image of its state machine as of
some applied index ``S`` and the log from ``S + 1`` on. The rule that makes
this safe is the Store's, not this module's: **the log is never compacted
past the index of the newest durable image** (the replica asks
``saved_index`` before compacting).

A record also carries the range descriptor and the membership as of ``S``,
because both change through log commands (split, merge, conf changes) and a
restarted replica must start from the values that match the image.

Backends
--------
``MemorySnapshotStore`` (tests, benchmarks: survives a simulated crash of the
``Store`` object because the harness keeps it) and ``DirSnapshotStore``
(one file per range, written to a temporary name, fsynced, renamed, and the
directory fsynced: a crash leaves either the old or the new image).
``save_many`` does the same for many images with one sync of the whole
filesystem (``syncfs``) instead of two fsyncs per file: bootstrapping 5,000
ranges was 15,000 fsyncs, minutes on a busy disk.

Tombstones
----------
A replica removed from this store (a conf change removed it, or a merge
absorbed its range) leaves a durable tombstone ``range id -> (generation,
index)``: the descriptor generation it had and the log index at which it was
removed. The Store drops any snapshot for that range that is not newer
(``Tombstone.covers``), so a stale leader that has not heard of the removal
cannot recreate the replica; a later re-add is at a higher log index and
passes. The tombstone is written *before* the image is removed, so a crash in
between is resolved at recovery (the image is not newer than the tombstone:
the leftover is destroyed). ``DirSnapshotStore`` keeps them in an append-only
file of fixed records ``range_id:u64 | generation:u64 | index:u64 | crc32c:u32``
(a torn last record is ignored: its removal is redone from the log).

File layout of ``DirSnapshotStore`` images (version 2, little-endian)::

    magic "MRSMSNAP" | version:u8 (=2) | index:u64 | term:u64
    | flags:u8 (bit 0: frozen, bit 1: a merge intent follows)
    | [left_id:u64 | left_generation:u64]   (only with flag bit 1)
    | desc_len:u32 | descriptor (RangeDescriptor.encode())
    | conf_len:u32 | conf state (raft_log.encode_conf_state)
    | image_len:u64 | image bytes (the concatenated StateMachine.snapshot() chunks)
    | crc32c:u32 of every byte before it

The image is streamed into the file chunk by chunk with a running CRC, so a
large state machine never sits in memory as one string on the write side.
Version 1 files (no intent, flag bit 1 never set) are still read.
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, Final, NamedTuple, Protocol, cast

import crc32c

from engine.raft.types import ConfState
from engine.raft_log import decode_conf_state, encode_conf_state
from engine.range_desc import RangeDescriptor
from engine.split_merge import MergeIntent

_MAGIC: Final = b"MRSMSNAP"
_VERSION: Final = 2
_HEAD: Final = struct.Struct("<8sBQQB")
_INTENT: Final = struct.Struct("<QQ")
_TOMB: Final = struct.Struct("<QQQ")
_TOMB_FILE: Final = "tombstones"
_U32: Final = struct.Struct("<I")
_U64: Final = struct.Struct("<Q")
_READ_CHUNK: Final = 1 << 16


class SnapshotCorrupt(Exception):
    """A snapshot file failed its checksum or framing; ``path`` says which."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path


class SnapshotRecord(NamedTuple):
    """The header of a durable image: where it stands and what it describes."""

    range_id: int
    index: int  # type: ignore[assignment]  # shadows tuple.index by design
    term: int
    descriptor: RangeDescriptor
    conf_state: ConfState
    #: The range applied a merge FREEZE and no UNFREEZE (engine/split_merge.py).
    frozen: bool = False
    #: The intent the FREEZE recorded (None when not frozen, or a version-1 FREEZE).
    merge_intent: MergeIntent | None = None


#: ``Tombstone.index`` of a range absorbed by a merge: its id never lives again.
MERGED: Final = (1 << 63) - 1


class Tombstone(NamedTuple):
    """A replica removed from this store: its generation and the removal's log index
    (``MERGED`` when a merge absorbed the range)."""

    generation: int
    index: int  # type: ignore[assignment]  # shadows tuple.index by design

    @property
    def gone_for_good(self) -> bool:
        return self.index == MERGED

    def covers(self, generation: int, index: int) -> bool:
        """Whether a snapshot of ``(generation, index)`` predates the removal."""
        return generation < self.generation or (
            generation == self.generation and index <= self.index)


class SnapshotStore(Protocol):
    """Where replicas keep durable state-machine images (one per range)."""

    def save(self, record: SnapshotRecord, chunks: Iterable[bytes]) -> None:
        """Durably replace the range's image; returns once it is durable."""
        ...

    def save_many(self, images: Sequence[tuple[SnapshotRecord, Iterable[bytes]]]) -> None:
        """``save`` of several ranges' images at once (each is replaced whole or not
        at all by a crash); returns once all are durable."""
        ...

    def load(self, range_id: int) -> tuple[SnapshotRecord, Iterator[bytes]] | None:
        """The range's newest image, or None if it has none."""
        ...

    def saved_index(self, range_id: int) -> int:
        """Index of the newest durable image (0 if none): the compaction limit."""
        ...

    def range_ids(self) -> list[int]: ...

    def remove(self, range_id: int) -> None: ...

    def save_tombstone(self, range_id: int, tomb: Tombstone) -> None:
        """Durably record that the replica of ``range_id`` was removed here."""
        ...

    def tombstones(self) -> dict[int, Tombstone]: ...


class MemorySnapshotStore:
    """Images kept in a dict; "durable" for as long as the object lives."""

    def __init__(self) -> None:
        # Invariant: every value's record.range_id equals its key.
        self._images: dict[int, tuple[SnapshotRecord, bytes]] = {}
        self._tombs: dict[int, Tombstone] = {}
        self.saves = 0

    def save(self, record: SnapshotRecord, chunks: Iterable[bytes]) -> None:
        self._images[record.range_id] = (record, b"".join(chunks))
        self.saves += 1

    def save_many(self, images: Sequence[tuple[SnapshotRecord, Iterable[bytes]]]) -> None:
        for record, chunks in images:
            self.save(record, chunks)

    def load(self, range_id: int) -> tuple[SnapshotRecord, Iterator[bytes]] | None:
        got = self._images.get(range_id)
        if got is None:
            return None
        return got[0], iter((got[1],))

    def saved_index(self, range_id: int) -> int:
        got = self._images.get(range_id)
        return got[0].index if got is not None else 0

    def range_ids(self) -> list[int]:
        return sorted(self._images)

    def remove(self, range_id: int) -> None:
        self._images.pop(range_id, None)

    def save_tombstone(self, range_id: int, tomb: Tombstone) -> None:
        self._tombs[range_id] = tomb

    def tombstones(self) -> dict[int, Tombstone]:
        return dict(self._tombs)


class DirSnapshotStore:
    """One file per range under ``path`` (see the module docstring for the layout)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._dir = Path(path)
        self._dir.mkdir(parents=True, exist_ok=True)
        # Invariant: _index[r] is the index in r's file header (cache of the disk).
        self._index: dict[int, int] = {}
        for p in self._dir.glob("r*.snap"):
            rec = self._read_header(p)
            self._index[rec.range_id] = rec.index
        #: Invariant: mirrors the valid records of the tombstone file (last one wins).
        self._tombs = self._load_tombstones()

    def _file(self, range_id: int) -> Path:
        return self._dir / f"r{range_id}.snap"

    def save(self, record: SnapshotRecord, chunks: Iterable[bytes]) -> None:
        tmp = self._write_tmp(record, chunks, sync=True)
        os.replace(tmp, self._file(record.range_id))
        self._fsync_dir()
        self._index[record.range_id] = record.index

    def save_many(self, images: Sequence[tuple[SnapshotRecord, Iterable[bytes]]]) -> None:
        """Write every temporary file, make them all durable with one ``syncfs`` (one
        fsync each where the platform has none), then rename them and fsync the
        directory once. A crash before the directory sync keeps, per range, the old
        image or the new one."""
        if not images:
            return
        tmps = [self._write_tmp(record, chunks, sync=False) for record, chunks in images]
        _sync_files(self._dir, tmps)
        for (record, _), tmp in zip(images, tmps, strict=True):
            os.replace(tmp, self._file(record.range_id))
        self._fsync_dir()
        for record, _ in images:
            self._index[record.range_id] = record.index

    def _write_tmp(self, record: SnapshotRecord, chunks: Iterable[bytes], sync: bool) -> Path:
        """The image in ``r<id>.tmp``, CRC-framed; fsynced if ``sync``."""
        tmp = self._file(record.range_id).with_suffix(".tmp")
        desc = record.descriptor.encode()
        conf = encode_conf_state(record.conf_state)
        with open(tmp, "wb") as f:
            intent = record.merge_intent
            flags = int(record.frozen) | (2 if intent is not None else 0)
            head = b"".join((
                _HEAD.pack(_MAGIC, _VERSION, record.index, record.term, flags),
                _INTENT.pack(*intent) if intent is not None else b"",
                _U32.pack(len(desc)), desc, _U32.pack(len(conf)), conf,
            ))
            f.write(head)
            len_pos = f.tell()
            f.write(_U64.pack(0))  # back-patched once the image length is known
            crc = crc32c.crc32c(head)
            total = 0
            for chunk in chunks:
                f.write(chunk)
                total += len(chunk)
            f.seek(len_pos)
            f.write(_U64.pack(total))
            f.flush()
            # The CRC covers the header, the patched length and the image: reread the
            # image from the page cache rather than holding it in memory.
            crc = crc32c.crc32c(_U64.pack(total), crc)
            with open(tmp, "rb") as r:
                r.seek(len_pos + _U64.size)
                while block := r.read(_READ_CHUNK):
                    crc = crc32c.crc32c(block, crc)
            f.seek(0, os.SEEK_END)
            f.write(_U32.pack(crc))
            f.flush()
            if sync:
                os.fsync(f.fileno())
        return tmp

    def load(self, range_id: int) -> tuple[SnapshotRecord, Iterator[bytes]] | None:
        p = self._file(range_id)
        if not p.exists():
            return None
        rec, start, length = self._verify(p)
        return rec, self._stream(p, start, length)

    def saved_index(self, range_id: int) -> int:
        return self._index.get(range_id, 0)

    def range_ids(self) -> list[int]:
        return sorted(self._index)

    def remove(self, range_id: int) -> None:
        self._file(range_id).unlink(missing_ok=True)
        self._index.pop(range_id, None)
        self._fsync_dir()

    def save_tombstone(self, range_id: int, tomb: Tombstone) -> None:
        rec = _TOMB.pack(range_id, tomb.generation, tomb.index)
        with open(self._dir / _TOMB_FILE, "ab") as f:
            f.write(rec + _U32.pack(crc32c.crc32c(rec)))
            f.flush()
            os.fsync(f.fileno())
        self._tombs[range_id] = tomb

    def tombstones(self) -> dict[int, Tombstone]:
        return dict(self._tombs)

    def _load_tombstones(self) -> dict[int, Tombstone]:
        p = self._dir / _TOMB_FILE
        out: dict[int, Tombstone] = {}
        if not p.exists():
            return out
        raw = p.read_bytes()
        size = _TOMB.size + _U32.size
        for pos in range(0, len(raw) - size + 1, size):
            rec = raw[pos:pos + _TOMB.size]
            (crc,) = _U32.unpack_from(raw, pos + _TOMB.size)
            if crc != crc32c.crc32c(rec):
                if pos + size == len(raw) - len(raw) % size:
                    break  # a torn last record: that removal is redone from the log
                raise SnapshotCorrupt(str(p), f"tombstone record at {pos}: bad crc")
            rid, gen, index = _TOMB.unpack(rec)
            out[rid] = Tombstone(gen, index)
        return out

    # -- reading ------------------------------------------------------------------------

    def _read_header(self, p: Path) -> SnapshotRecord:
        with open(p, "rb") as f:
            return self._parse_header(f, str(p))[0]

    def _parse_header(self, f: BinaryIO, path: str) -> tuple[SnapshotRecord, int]:
        raw = f.read(_HEAD.size)
        if len(raw) < _HEAD.size:
            raise SnapshotCorrupt(path, "short header")
        magic, version, index, term, flags = _HEAD.unpack(raw)
        if magic != _MAGIC or version not in (1, _VERSION) or flags & ~3 or (
            version == 1 and flags & 2
        ):
            raise SnapshotCorrupt(path, f"bad magic/version/flags {magic!r}/{version}/{flags}")
        intent = None
        pos = _HEAD.size
        if flags & 2:
            raw_intent = f.read(_INTENT.size)
            if len(raw_intent) < _INTENT.size:
                raise SnapshotCorrupt(path, "short merge intent")
            intent = MergeIntent(*_INTENT.unpack(raw_intent))
            pos += _INTENT.size
        desc_raw = _read_blob(f, path)
        conf_raw = _read_blob(f, path)
        try:
            desc = RangeDescriptor.decode(desc_raw)
            conf = decode_conf_state(conf_raw)
        except ValueError as e:
            raise SnapshotCorrupt(path, str(e)) from e
        pos += 2 * _U32.size + len(desc_raw) + len(conf_raw)
        return SnapshotRecord(desc.range_id, index, term, desc, conf, bool(flags & 1),
                              intent), pos

    def _verify(self, p: Path) -> tuple[SnapshotRecord, int, int]:
        """Check the whole file's CRC; return the record and the image's offset/length."""
        path = str(p)
        size = p.stat().st_size
        with open(p, "rb") as f:
            rec, pos = self._parse_header(f, path)
            raw_len = f.read(_U64.size)
            if len(raw_len) < _U64.size:
                raise SnapshotCorrupt(path, "short image length")
            (length,) = _U64.unpack(raw_len)
            start = pos + _U64.size
            if start + length + _U32.size != size:
                raise SnapshotCorrupt(path, f"image length {length} does not match file size")
            f.seek(0)
            crc = 0
            remaining = start + length
            while remaining:
                block = f.read(min(_READ_CHUNK, remaining))
                crc = crc32c.crc32c(block, crc)
                remaining -= len(block)
            (want,) = _U32.unpack(f.read(_U32.size))
            if crc != want:
                raise SnapshotCorrupt(path, f"crc mismatch: stored {want:#x}, computed {crc:#x}")
        return rec, start, length

    @staticmethod
    def _stream(p: Path, start: int, length: int) -> Iterator[bytes]:
        with open(p, "rb") as f:
            f.seek(start)
            while length:
                block = f.read(min(_READ_CHUNK, length))
                length -= len(block)
                yield block

    def _fsync_dir(self) -> None:
        fd = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _libc_syncfs() -> Callable[[int], int] | None:
    """Linux ``syncfs(2)`` through libc, or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return cast("Callable[[int], int]", fn)


_SYNCFS: Final = _libc_syncfs()


def _sync_files(directory: Path, paths: Sequence[Path]) -> None:
    """Make the written ``paths`` (all under ``directory``) durable: one ``syncfs`` of
    their filesystem, or an fsync each. An error is raised, never ignored: the
    caller's images would not be durable."""
    if _SYNCFS is not None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            if _SYNCFS(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"syncfs({directory}): {os.strerror(err)}")
        finally:
            os.close(fd)
        return
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _read_blob(f: BinaryIO, path: str) -> bytes:
    raw = f.read(_U32.size)
    if len(raw) < _U32.size:
        raise SnapshotCorrupt(path, "short blob length")
    (n,) = _U32.unpack(raw)
    data = f.read(n)
    if len(data) < n:
        raise SnapshotCorrupt(path, "short blob")
    return data
