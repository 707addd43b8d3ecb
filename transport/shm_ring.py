"""A single-producer/single-consumer ring of variable-length records in shared memory.

Byte layout (version 1, native byte order: both peers run on one host)
---------------------------------------------------------------------
The segment is a 256-byte header of four 64-byte cache lines, then the data
area. The producer's and the consumer's hot words live on different lines, so
neither side's stores evict the line the other side spins on.

    line 0 (static, written once by the creator)
      0   8s   magic            b"MRRING\\x00\\x01"
      8   u64  version          1
      16  u64  capacity         data-area bytes; a multiple of 8, >= 64
      24  u64  creator_pid
    line 1 (written only by the producer)
      64  u64  tail             bytes ever published; monotonic
      72  u64  producer_waiting 1 while the producer sleeps for space
      80  u64  producer_closed  1 once the producer ended the stream
    line 2 (written only by the consumer)
      128 u64  head             bytes ever consumed; monotonic
      136 u64  consumer_waiting 1 while the consumer sleeps for data
      144 u64  consumer_closed  1 once the consumer stopped reading
    line 3: reserved (zero)
    256 .. 256+capacity: data area

A counter ``c`` addresses data byte ``c % capacity``; always
``0 <= tail - head <= capacity`` and both are multiples of 8. The data area
holds *frames*, each starting at an 8-aligned position:

    0   u32  body_len   bytes of lengths table + payloads (unpadded)
    4   u32  count      records in the frame; 0xFFFFFFFF = WRAP marker
    8   count x u32     record lengths
    ..  payloads, back to back
    ..  padding up to the next multiple of 8 (contents undefined)

Wrap-around: frames are never split. When the next frame does not fit in the
bytes left before the end of the data area, the producer writes a WRAP header
there (8 bytes always fit: positions are 8-aligned) and the rest of that lap is
skipped by both sides. A frame occupies at most ``capacity // 2`` bytes, which
guarantees it fits once the ring is drained, wherever the counters stand: with
``p`` = position of an empty ring and frame size ``s <= capacity/2``, either
``s <= capacity - p`` (fits in place) or the skip of ``capacity - p < s`` bytes
plus ``s`` is ``< 2s <= capacity``. So a record whose frame exceeds half the
ring is rejected with ``RecordTooLarge`` (never chunked); the limit is
``record_limit`` bytes of payload.

Batching: one frame carries many records, with their lengths in one table, so
a batch costs one publication, one header write, one table copy and (for
small records) one joined copy on the producer side; on the consumer side one
``struct`` call per frame copies every small record out into its own
``bytes`` (larger ones are copied one slice each). Records go out as ``bytes``
copied straight from the ring, so they outlive the space they came from.

Publication order (the memory-ordering argument)
------------------------------------------------
The producer writes a whole frame, then stores ``tail``; the consumer loads
``tail``, then reads frames below it, then stores ``head``. Counters are stored
and loaded as aligned 8-byte words through a ``memoryview`` cast to ``"Q"``
(one machine store/load each). On x86-64 (TSO) stores become visible in program
order and loads are not reordered with older loads, so a consumer that sees a
``tail`` also sees every byte below it, and the producer never overwrites bytes
before the consumer's ``head`` store says it is done with them.

Hence the ring runs only on x86-64 (``UnsupportedPlatform`` elsewhere): on a
weakly ordered CPU (aarch64) pure Python has no store barrier to put between
the frame and ``tail``.

The one reordering TSO allows, a load passing an older store, would break the
sleep handshake (Dekker's pattern: "I store waiting=1, then load tail" vs "I
store tail, then load waiting"). Both sides therefore issue a full fence
between that store and that load: acquiring and releasing a ``threading.Lock``
is a locked read-modify-write instruction, which orders all earlier stores
before all later loads. The fence sits on the sleep path and once per batch on
the publish path, never per record. Channels also bound every sleep, so a
missed wake-up could only ever cost latency, never a hang.
"""

from __future__ import annotations

import os
import platform
import secrets
import struct
import threading
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from itertools import accumulate, islice, pairwise
from multiprocessing import resource_tracker, shared_memory
from typing import Final

from transport.errors import (
    ClosedResourceError,
    RecordTooLarge,
    RingCorrupted,
    UnsupportedPlatform,
)

__all__ = ["BytesLike", "ShmRing"]

#: A C-contiguous byte buffer with 1-byte items (``len`` must be its byte size).
BytesLike = bytes | bytearray | memoryview

MAGIC: Final = b"MRRING\x00\x01"
VERSION: Final = 1
HEADER_SIZE: Final = 256
ALIGN: Final = 8
WRAP: Final = 0xFFFFFFFF
MIN_CAPACITY: Final = 64
MAX_CAPACITY: Final = 1 << 31  # body_len is a u32; half the ring must fit in it

_STATIC = struct.Struct("=8sQQQ")
_FRAME = struct.Struct("=II")
FRAME_HEADER_SIZE: Final = _FRAME.size
assert _STATIC.size == 32 and FRAME_HEADER_SIZE == ALIGN

# Word indexes of the counters in the header viewed as u64s (byte offset / 8).
_TAIL: Final = 64 // 8
_PRODUCER_WAITING: Final = 72 // 8
_PRODUCER_CLOSED: Final = 80 // 8
_HEAD: Final = 128 // 8
_CONSUMER_WAITING: Final = 136 // 8
_CONSUMER_CLOSED: Final = 144 // 8

# Average record size at or below which a frame's payloads are joined into one
# buffer and copied in once; above it, each payload is copied into place on its
# own (the join's extra copy then costs more than the per-record slice).
_JOIN_THRESHOLD: Final = 2048

# CPUs with total store order, on which the header's ordering argument holds.
_TSO_MACHINES: Final = frozenset({"x86_64", "amd64"})

_fence_lock = threading.Lock()


def _fence() -> None:
    """Full memory fence: a lock round-trip is a locked RMW instruction (see header)."""
    _fence_lock.acquire()
    _fence_lock.release()


def _renew_fence_lock() -> None:
    """A fork may copy the lock while another thread holds it; the child gets a fresh one."""
    global _fence_lock
    _fence_lock = threading.Lock()


os.register_at_fork(after_in_child=_renew_fence_lock)


def _require_tso(machine: str | None = None) -> None:
    """Refuse to run where plain stores may become visible out of order."""
    machine = platform.machine() if machine is None else machine
    if machine.lower() not in _TSO_MACHINES:
        raise UnsupportedPlatform(machine)


def _align(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


@contextmanager
def _untracked() -> Iterator[None]:
    """Attach without registering the segment with multiprocessing's resource tracker.

    Python < 3.13 registers *attachers* too, so the tracker would unlink the
    creator's segment when the attacher exits (and warn about a "leak"); and
    unregistering afterwards would drop the creator's own registration from a
    tracker shared through fork/spawn. Only the creator owns the segment.
    """
    original = resource_tracker.register
    resource_tracker.register = lambda name, rtype: None
    try:
        yield
    finally:
        resource_tracker.register = original


class ShmRing:
    """One SPSC ring in a shared-memory segment; see the module header.

    Each process uses one ring as either its producer or its consumer. Methods
    never block: waiting (and wake-up descriptors) belong to the channel.
    """

    __slots__ = (
        "_buf",
        "_closed",
        "_ctr",
        "_head",
        "_is_creator",
        "_owner_pid",
        "_seen_head",
        "_shm",
        "_tail",
        "_unlinked",
        "capacity",
        "max_frame",
        "name",
        "record_limit",
    )

    def __init__(self, shm: shared_memory.SharedMemory, *, is_creator: bool) -> None:
        """Wrap a mapped segment; use ``create`` or ``attach`` instead."""
        self._shm = shm
        self._is_creator = is_creator
        # Invariant: the pid of the process that created the segment; a copy of
        # this object inherited by a forked child must never unlink it.
        self._owner_pid = os.getpid()
        self._closed = False
        self._unlinked = False
        self.name = shm.name
        mapped = shm.buf
        assert mapped is not None, "a SharedMemory is mapped until close()"
        magic, version, capacity = b"", 0, 0
        if len(mapped) >= HEADER_SIZE:
            magic, version, capacity, _pid = _STATIC.unpack_from(mapped, 0)
        if magic != MAGIC or version != VERSION:
            shm.close()
            raise RingCorrupted(f"bad ring magic {magic!r} or version {version}", 0)
        if (
            capacity % ALIGN
            or not MIN_CAPACITY <= capacity <= MAX_CAPACITY
            or len(mapped) < HEADER_SIZE + capacity
        ):
            shm.close()
            raise RingCorrupted(f"bad ring capacity {capacity} for a {len(mapped)}-byte segment", 0)
        self.capacity: int = capacity
        self.max_frame: int = (capacity // 2) & ~(ALIGN - 1)
        self.record_limit: int = self.max_frame - FRAME_HEADER_SIZE - 4
        self._ctr = mapped[:HEADER_SIZE].cast("Q")
        self._buf = mapped[HEADER_SIZE : HEADER_SIZE + capacity]
        # Invariant: _tail is the producer's private copy of ctr[_TAIL] (only
        # the producer writes it); _head likewise for the consumer. Each process
        # uses only the copy of its own role.
        self._tail: int = self._ctr[_TAIL]
        self._head: int = self._ctr[_HEAD]
        # Invariant: the head the producer saw on its last try_write; a changed
        # ctr[_HEAD] means space was freed since.
        self._seen_head: int = self._head

    # -- lifecycle -------------------------------------------------------------

    @classmethod
    def create(cls, capacity: int, *, prefix: str = "mrring") -> ShmRing:
        """Create a zeroed ring with ``capacity`` data bytes (rounded up to 8)."""
        _require_tso()
        capacity = _align(max(capacity, MIN_CAPACITY))
        if capacity > MAX_CAPACITY:
            raise ValueError(f"ring capacity {capacity} exceeds {MAX_CAPACITY}")
        name = f"{prefix}_{os.getpid()}_{secrets.token_hex(6)}"
        shm = shared_memory.SharedMemory(name=name, create=True, size=HEADER_SIZE + capacity)
        try:
            mapped = shm.buf
            assert mapped is not None, "a SharedMemory is mapped until close()"
            mapped[:HEADER_SIZE] = bytes(HEADER_SIZE)
            _STATIC.pack_into(mapped, 0, MAGIC, VERSION, capacity, os.getpid())
            del mapped
            return cls(shm, is_creator=True)
        except BaseException:
            shm.close()
            shm.unlink()
            raise

    @classmethod
    def attach(cls, name: str) -> ShmRing:
        """Map an existing ring by name. Attachers never unlink and are never tracked."""
        _require_tso()
        with _untracked():
            shm = shared_memory.SharedMemory(name=name, create=False)
        return cls(shm, is_creator=False)

    def unlink(self) -> None:
        """Remove the segment's name (creator only; mappings stay valid). Idempotent.

        The channel unlinks right after creating, before forking, so a crash of
        either process can never leave a name behind in /dev/shm.
        """
        if not self._is_creator or os.getpid() != self._owner_pid:
            raise PermissionError("only the creating process of a ring unlinks it")
        if not self._unlinked:
            self._unlinked = True
            self._shm.unlink()

    def close(self) -> None:
        """Unmap the ring in this process; the creating process also unlinks. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._ctr.release()
        self._buf.release()
        self._shm.close()
        if self._is_creator and os.getpid() == self._owner_pid:
            self.unlink()

    @property
    def closed(self) -> bool:
        """Whether this process unmapped the ring."""
        return self._closed

    # -- producer ----------------------------------------------------------------

    def try_write(self, records: Sequence[BytesLike], start: int = 0) -> tuple[int, bool]:
        """Publish ``records[start:]`` as frames while they fit, without blocking.

        Returns ``(next_index, wake_consumer)``: ``next_index == len(records)``
        when all were written, and ``wake_consumer`` says the consumer is asleep
        and must be signalled. A record that can never fit raises
        ``RecordTooLarge``: with ``start == 0`` the whole batch is checked before
        anything is written; a retry (``start > 0``) checks only the records
        that could fit in the free space, so retrying a huge batch is not
        quadratic.
        """
        if self._closed:
            raise ClosedResourceError("ring is closed")
        n = len(records)
        if start >= n:
            return n, False
        ctr = self._ctr
        cap = self.capacity
        head = ctr[_HEAD]
        self._seen_head = head
        tail = self._tail
        # Every record costs at least its 4-byte length: no more than this fit.
        window = (cap - (tail - head)) // 4 + 1
        pending = records[start : start + window]
        lens = list(map(len, pending))
        total = sum(lens)
        if total > self.record_limit or (start == 0 and len(lens) < n):
            # A new batch is checked whole; `total` alone clears small batches.
            biggest = max(lens)
            if start == 0 and len(lens) < n:
                biggest = max(biggest, *map(len, islice(records, len(lens), None)))
            if biggest > self.record_limit:
                raise RecordTooLarge(biggest, self.record_limit)
        count = len(lens)
        body = 4 * count + total
        if FRAME_HEADER_SIZE + body <= min(cap - tail % cap, cap - (tail - head), self.max_frame):
            # Common case: the whole batch fits in place as one frame.
            self._write_frame(tail % cap, pending, lens, lo=0, hi=count, body=body)
            tail += FRAME_HEADER_SIZE + _align(body)
            idx = count
        else:
            tail, idx = self._write_frames(pending, lens, head, tail)
        if tail == self._tail:
            return start + idx, False
        self._tail = tail
        ctr[_TAIL] = tail  # publish: every frame below is complete
        _fence()
        return start + idx, bool(ctr[_CONSUMER_WAITING])

    def _write_frames(
        self, pending: Sequence[BytesLike], lens: list[int], head: int, tail: int
    ) -> tuple[int, int]:
        """Split ``pending`` into frames that fit, wrapping as needed; nothing is published.

        Returns the new (unpublished) tail and how many records were written.
        """
        cap = self.capacity
        cum = list(accumulate(lens, initial=0))
        idx = 0
        count = len(lens)
        while idx < count:
            free = cap - (tail - head)
            pos = tail % cap
            contig = cap - pos
            room = min(contig, free, self.max_frame) - FRAME_HEADER_SIZE
            first = 4 + lens[idx]
            if first > room:
                after_wrap = min(free - contig, self.max_frame) - FRAME_HEADER_SIZE
                if contig < free and first <= after_wrap:
                    _FRAME.pack_into(self._buf, pos, 0, WRAP)
                    tail += contig
                    continue
                break  # full until the consumer frees space
            base = cum[idx]
            # Largest k with 4k + (cum[idx+k] - base) <= room; k >= 1 holds.
            end = _last_fitting(cum, idx, base, room)
            body = 4 * (end - idx) + cum[end] - base
            self._write_frame(pos, pending, lens, lo=idx, hi=end, body=body)
            tail += FRAME_HEADER_SIZE + _align(body)
            idx = end
        return tail, idx

    def _write_frame(
        self,
        pos: int,
        records: Sequence[BytesLike],
        lens: list[int],
        *,
        lo: int,
        hi: int,
        body: int,
    ) -> None:
        """Copy records[lo:hi] into a frame at data position ``pos``."""
        buf = self._buf
        k = hi - lo
        _FRAME.pack_into(buf, pos, body, k)
        table = pos + FRAME_HEADER_SIZE
        data = table + 4 * k
        buf[table:data] = memoryview(array("I", lens[lo:hi])).cast("B")
        payload = body - 4 * k
        if payload <= _JOIN_THRESHOLD * k:
            buf[data : data + payload] = b"".join(records[lo:hi])
            return
        for i in range(lo, hi):
            size = lens[i]
            buf[data : data + size] = records[i]
            data += size

    def producer_prepare_sleep(self) -> bool:
        """Announce the producer will sleep for space; False means retry instead.

        Sets ``producer_waiting``, fences, then re-checks: if the consumer freed
        space or went away since the last ``try_write``, the flag is withdrawn.
        """
        ctr = self._ctr
        ctr[_PRODUCER_WAITING] = 1
        _fence()
        if ctr[_HEAD] != self._seen_head or ctr[_CONSUMER_CLOSED]:
            ctr[_PRODUCER_WAITING] = 0
            return False
        return True

    def producer_end_sleep(self) -> None:
        """Withdraw ``producer_waiting`` after waking (a no-op once the ring is closed)."""
        if not self._closed:
            self._ctr[_PRODUCER_WAITING] = 0

    def close_producer(self) -> bool:
        """End the stream; returns whether the sleeping consumer must be signalled."""
        if self._closed:
            return False
        ctr = self._ctr
        ctr[_PRODUCER_CLOSED] = 1
        _fence()
        return bool(ctr[_CONSUMER_WAITING])

    @property
    def consumer_closed(self) -> bool:
        """Whether the consumer stopped reading (writes can never be delivered)."""
        return bool(self._ctr[_CONSUMER_CLOSED])

    # -- consumer ----------------------------------------------------------------

    def try_read(self) -> tuple[list[bytes], bool]:
        """Take every published record, without blocking.

        Returns ``(records, wake_producer)``. Each record is copied straight out
        of the ring into its own ``bytes`` (one copy, no intermediate buffer),
        then the space is released; ``wake_producer`` says the producer sleeps
        for space and must be signalled.
        """
        if self._closed:
            raise ClosedResourceError("ring is closed")
        ctr = self._ctr
        head = self._head
        tail = ctr[_TAIL]
        if tail == head:
            return [], False
        avail = tail - head
        cap = self.capacity
        if avail > cap or avail < 0 or avail % ALIGN:
            raise RingCorrupted(f"tail {tail} is not within one lap of head {head}", head)
        out: list[bytes] = []
        pos = head % cap
        while avail:
            used = _read_frame(self._buf, pos, min(avail, cap - pos), out)
            avail -= used
            pos = (pos + used) % cap
        self._head = tail
        ctr[_HEAD] = tail  # release the space: every record is copied out
        _fence()
        return out, bool(ctr[_PRODUCER_WAITING])

    def consumer_prepare_sleep(self) -> bool:
        """Announce the consumer will sleep for data; False means read again instead.

        Sets ``consumer_waiting``, fences, then re-checks ``tail`` and the
        producer's close flag, so a record published in the meantime is never
        slept through (see "Publication order" above).
        """
        ctr = self._ctr
        ctr[_CONSUMER_WAITING] = 1
        _fence()
        if ctr[_TAIL] != self._head or ctr[_PRODUCER_CLOSED]:
            ctr[_CONSUMER_WAITING] = 0
            return False
        return True

    def consumer_end_sleep(self) -> None:
        """Withdraw ``consumer_waiting`` after waking (a no-op once the ring is closed)."""
        if not self._closed:
            self._ctr[_CONSUMER_WAITING] = 0

    def close_consumer(self) -> bool:
        """Stop reading; returns whether the sleeping producer must be signalled."""
        if self._closed:
            return False
        ctr = self._ctr
        ctr[_CONSUMER_CLOSED] = 1
        _fence()
        return bool(ctr[_PRODUCER_WAITING])

    @property
    def producer_closed(self) -> bool:
        """Whether the producer ended the stream (after draining, nothing more comes)."""
        return bool(self._ctr[_PRODUCER_CLOSED])

    def is_empty(self) -> bool:
        """Whether every published byte has been consumed (a snapshot)."""
        ctr = self._ctr
        return bool(ctr[_TAIL] == ctr[_HEAD])


def _last_fitting(cum: list[int], lo: int, base: int, room: int) -> int:
    """Largest ``end`` in (lo, len(cum)) with ``4*(end-lo) + cum[end] - base <= room``.

    A binary search over prefix sums: O(log n) Python steps per frame instead of
    one per record. The caller guarantees ``end = lo + 1`` fits.
    """
    good, bad = lo + 1, len(cum)
    while bad - good > 1:
        mid = (good + bad) // 2
        if 4 * (mid - lo) + cum[mid] - base <= room:
            good = mid
        else:
            bad = mid
    return good


def _read_frame(buf: memoryview, pos: int, limit: int, out: list[bytes]) -> int:
    """Append the records of the frame at ``pos`` to ``out``; return the bytes it occupies.

    ``limit`` is how many published bytes lie between ``pos`` and the end of
    the lap; every length is checked against it before anything is sliced.
    """
    body, count = _FRAME.unpack_from(buf, pos)
    if count == WRAP:
        return limit  # the rest of the lap is skipped
    occupied = FRAME_HEADER_SIZE + _align(body)
    data = pos + FRAME_HEADER_SIZE + 4 * count
    if occupied > limit or 4 * count > body:
        raise RingCorrupted(f"frame of {body} bytes / {count} records overruns", pos)
    lens = _table(count).unpack_from(buf, pos + FRAME_HEADER_SIZE)
    if sum(lens) != body - 4 * count:
        raise RingCorrupted("record lengths disagree with the frame length", pos)
    if count == 1:
        out.append(buf[data : data + lens[0]].tobytes())
    elif lens.count(lens[0]) == count:
        # Equal lengths (fixed-size records): one cached struct builds every
        # bytes object in C, several times cheaper than a slice per record.
        out += _uniform(lens[0], count).unpack_from(buf, data)
    elif max(lens) < len(_FIELD):
        # Mixed small records: the same, with a format assembled per frame.
        out += struct.unpack_from("".join(map(_FIELD.__getitem__, lens)), buf, data)
    else:
        out += [buf[a:b].tobytes() for a, b in pairwise(accumulate(lens, initial=data))]
    return occupied


@lru_cache(maxsize=256)
def _table(count: int) -> struct.Struct:
    """The struct of a frame's lengths table of ``count`` u32s."""
    return struct.Struct(f"={count}I")


@lru_cache(maxsize=64)
def _uniform(size: int, count: int) -> struct.Struct:
    """The struct of ``count`` back-to-back records of ``size`` bytes each."""
    return struct.Struct(f"{size}s" * count)


# Struct field codes "0s".."4095s": records up to 4 KiB are unpacked by one
# struct format per frame, assembled from these without per-record formatting.
_FIELD: Final = tuple(f"{n}s" for n in range(4096))
