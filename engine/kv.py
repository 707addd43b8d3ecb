"""The default state machine: a sorted in-memory map of bytes to bytes.

One ``KVStateMachine`` holds the data of one range replica, the keys of
``[start, end)`` (``end == b""``: no upper bound). It implements the
``StateMachine`` protocol (``engine/statemachine.py``); commands and results
are the bytes of ``engine/kv_codec.py``.

Rules
-----
- **Deterministic apply.** Every replica applies the same commands and ends in
  the same state; nothing here reads a clock, randomness or the environment.
- **Never raise for a bad command.** Undecodable bytes, a non-integer INCR
  target, an overflow: each becomes an ``Error`` result; state is unchanged.
- **Keys outside the range are refused, not applied.** A command can be
  proposed while the range still covers its key and apply after a split
  committed ahead of it moved the key to the right-hand range. Such a command
  gets a ``RANGE_KEY_MISMATCH`` error and changes nothing (for a multi-key
  command: if any key is outside, none is written), so the router can
  re-route and retry it safely. Scans are clipped to the range instead: the
  router stitches a cross-range scan together range by range.
- **Reads never change state.** ``read`` refuses write commands; ``apply``
  also accepts read commands (a read through the log is linearizable too).

Theory of operation
-------------------
The map is a ``SortedDict`` (a dict plus a sorted key list): point operations
are dict-speed, ordered scans and split points are bisections.
``approximate_size`` is maintained incrementally on every write so it is
O(1) for the split planner, and ``split_key`` is the median key by count
(an O(log n) index into the sorted keys; by count rather than by bytes
because a byte-weighted median would need prefix sums over all values, and
for a split trigger "roughly half" is what matters).

``snapshot()`` captures the key and value lists when it is *called* (the keys
and values are immutable bytes, so this copies references, not data), then
encodes lazily: apply may go on while the chunks stream to a follower, and
the image still describes the moment of the call.

The image's byte layout is in ``engine/kv_snapshot.py``. ``restore`` decodes
and validates the whole stream (checksum included) before it swaps the new
map in, so a truncated or corrupt stream raises ``SnapshotCorrupt`` and
leaves the current state untouched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Final

from sortedcontainers import SortedDict  # type: ignore[import-untyped, unused-ignore]

from engine.kv_codec import (
    INT64_MAX,
    INT64_MIN,
    NIL_BYTES,
    OK_BYTES,
    Cas,
    Command,
    Count,
    Delete,
    Error,
    ErrorKind,
    Exists,
    Get,
    IncrBy,
    Int,
    KVCodecError,
    MGet,
    MSet,
    Nil,
    Ok,
    Pairs,
    Put,
    PutCond,
    Result,
    Scan,
    Value,
    Values,
    decode_command,
    encode_result,
    is_write,
)
from engine.kv_snapshot import SnapshotCorrupt, read_image, write_image

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "ERR_NOT_INTEGER",
    "ERR_OVERFLOW",
    "KVStateMachine",
    "SnapshotCorrupt",
    "parse_int64",
]

DEFAULT_CHUNK_BYTES: Final = 64 * 1024

#: Redis's integer syntax: no sign on zero, no "+", no leading zeros, no spaces.
_INT_RE: Final = re.compile(rb"0|-?[1-9][0-9]{0,18}")

#: The map of every replica that holds no data yet. A SortedDict costs ~1.6 KiB
#: even when empty, and a store hosts many empty or quiesced replicas, so they
#: share this one until their first write (which allocates their own).
_EMPTY: Final = SortedDict()

_OK: Final = Ok()
_NIL: Final = Nil()

ERR_NOT_INTEGER: Final = "value is not an integer or out of range"
ERR_OVERFLOW: Final = "increment or decrement would overflow"


def _in_range(key: bytes, start: bytes, end: bytes) -> bool:
    return start <= key and (not end or key < end)


def parse_int64(raw: bytes) -> int | None:
    """The integer ``raw`` spells in Redis's canonical form, or None."""
    if _INT_RE.fullmatch(raw) is None:
        return None
    n = int(raw)
    return n if INT64_MIN <= n <= INT64_MAX else None


class KVStateMachine:
    """A range replica's sorted bytes-to-bytes map (see the module docstring)."""

    __slots__ = ("_chunk_bytes", "_data", "_end", "_size", "_start")

    def __init__(
        self, start: bytes = b"", end: bytes = b"", *, chunk_bytes: int = DEFAULT_CHUNK_BYTES
    ) -> None:
        if end and end <= start:
            raise ValueError(f"empty key range [{start!r}, {end!r})")
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
        # Invariant: every key k in _data satisfies _start <= k < _end (or _end == b"").
        self._start = start
        self._end = end
        # Invariant: _data is _EMPTY (shared, never written) or this replica's own
        # map; _store allocates the own map on the first write (see _EMPTY).
        self._data = _EMPTY
        # Invariant: _size == sum(len(k) + len(v) for k, v in _data.items()).
        self._size = 0
        self._chunk_bytes = chunk_bytes

    # --- introspection --------------------------------------------------------------------

    @property
    def bounds(self) -> tuple[bytes, bytes]:
        """The key interval ``(start, end)`` this replica holds (end b"" = +inf)."""
        return self._start, self._end

    def __len__(self) -> int:
        return len(self._data)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """All ``(key, value)`` pairs in key order (a view: do not apply meanwhile)."""
        data = self._data
        return ((k, data[k]) for k in data)

    # --- StateMachine protocol ------------------------------------------------------------

    def apply(self, commands: Sequence[bytes]) -> list[bytes]:
        """Decode and execute each command; one encoded result per command."""
        results: list[bytes] = []
        append = results.append
        for raw in commands:
            try:
                cmd = decode_command(raw)
            except KVCodecError as e:
                append(encode_result(Error(ErrorKind.ERR, f"bad command: {e}")))
                continue
            if type(cmd) is Put:  # the hot path skips the generic dispatch and encoder
                res = self._put(cmd)
                append(OK_BYTES if res is _OK else NIL_BYTES if res is _NIL else encode_result(res))
            else:
                append(encode_result(self.execute(cmd)))
        return results

    def read(self, query: bytes) -> bytes:
        """Answer a read command; a write command is refused (reads never mutate)."""
        try:
            cmd = decode_command(query)
        except KVCodecError as e:
            return encode_result(Error(ErrorKind.ERR, f"bad command: {e}"))
        if is_write(cmd):
            return encode_result(Error(ErrorKind.ERR, "write command on the read path"))
        return encode_result(self.execute(cmd))

    def snapshot(self) -> Iterator[bytes]:
        """The image as of this call, streamed in chunks of <= ``chunk_bytes``."""
        data = self._data
        keys: list[bytes] = list(data.keys())
        values: list[bytes] = list(map(data.__getitem__, keys))  # C-level dict lookups
        return write_image(self._start, self._end, keys, values, self._chunk_bytes)

    def restore(self, chunks: Iterable[bytes]) -> None:
        """Replace all state (bounds included) with the image ``chunks`` encode.
        Raises ``SnapshotCorrupt`` and keeps the current state on a bad stream."""
        image = read_image(chunks)
        data = SortedDict(zip(image.keys, image.values, strict=True)) if image.keys else _EMPTY
        size = sum(map(len, image.keys)) + sum(map(len, image.values))
        self._data, self._start, self._end, self._size = data, image.start, image.end, size

    def split(self, key: bytes) -> KVStateMachine:
        """Keep ``[start, key)``; return a new state machine with ``[key, end)``."""
        if not (self._start < key and (not self._end or key < self._end)):
            raise ValueError(
                f"split key {key!r} not strictly inside [{self._start!r}, {self._end!r})"
            )
        idx: int = self._data.bisect_left(key)
        right_keys: list[bytes] = self._data.keys()[idx:]
        right_values: list[bytes] = self._data.values()[idx:]
        right = KVStateMachine(key, self._end, chunk_bytes=self._chunk_bytes)
        if right_keys:
            right._data = SortedDict(zip(right_keys, right_values, strict=True))
            right._size = sum(map(len, right_keys)) + sum(map(len, right_values))
            del self._data.keys()[idx:]
            self._size -= right._size
        self._end = key
        return right

    def absorb(self, right: KVStateMachine) -> None:
        """Take over ``right``'s keys and extend our range to its end. ``right``
        is left empty: its replica is being removed by the merge."""
        if not self._end or right._start != self._end:
            raise ValueError(
                f"cannot absorb [{right._start!r}, {right._end!r}) into "
                f"[{self._start!r}, {self._end!r}): not the adjacent right-hand range"
            )
        if not self._data:
            self._data = right._data  # take the map over: O(1)
        elif right._data:
            self._data.update(right._data)
        self._size += right._size
        self._end = right._end
        right._data = _EMPTY
        right._size = 0

    def approximate_size(self) -> int:
        """Bytes of keys plus values held; exact, maintained on every write."""
        return self._size

    def split_key(self) -> bytes | None:
        """The median key by count, or None with fewer than two keys."""
        n = len(self._data)
        if n < 2:
            return None
        key: bytes = self._data.keys()[n // 2]
        return key

    # --- typed execution ------------------------------------------------------------------

    def execute(self, cmd: Command) -> Result:
        """Execute one decoded command (read or write) and return its result."""
        match cmd:
            case Put():
                return self._put(cmd)
            case Get(key):
                if not _in_range(key, self._start, self._end):
                    return self._mismatch(key)
                v: bytes | None = self._data.get(key)
                return _NIL if v is None else Value(v)
            case Delete(keys):
                return self._delete(keys)
            case Cas():
                return self._cas(cmd)
            case IncrBy(key, delta):
                return self._incrby(key, delta)
            case MSet(pairs):
                return self._mset(pairs)
            case MGet(keys):
                if (bad := self._first_outside(keys)) is not None:
                    return self._mismatch(bad)
                return Values(tuple([self._data.get(k) for k in keys]))
            case Exists(keys):
                if (bad := self._first_outside(keys)) is not None:
                    return self._mismatch(bad)
                return Int(sum(1 for k in keys if k in self._data))
            case Scan(start, end, limit):
                return self._scan(start, end, limit)
            case Count():
                return Int(len(self._data))
        raise AssertionError(f"unhandled KV command {cmd!r}")

    def _mismatch(self, key: bytes) -> Error:
        return Error(
            ErrorKind.RANGE_KEY_MISMATCH,
            f"key {key!r} outside range [{self._start!r}, {self._end!r})",
        )

    def _first_outside(self, keys: Iterable[bytes]) -> bytes | None:
        start, end = self._start, self._end
        for k in keys:
            if not _in_range(k, start, end):
                return k
        return None

    def _store(self, key: bytes, value: bytes) -> None:
        data = self._data
        if data is _EMPTY:
            data = self._data = SortedDict()
        old: bytes | None = data.get(key)
        if old is None:
            data[key] = value  # a new key: SortedDict also inserts it into its key order
            self._size += len(key) + len(value)
        else:
            # Overwrite: the key order is unchanged, so skip SortedDict's
            # membership check and sorted-list work (SortedDict is a dict subclass).
            dict.__setitem__(data, key, value)
            self._size += len(value) - len(old)

    def _put(self, cmd: Put) -> Result:
        key, value, cond = cmd
        if key < self._start or (self._end and key >= self._end):
            return self._mismatch(key)
        if cond is not PutCond.NONE and (key in self._data) != (cond is PutCond.XX):
            return _NIL
        self._store(key, value)
        return _OK

    def _delete(self, keys: tuple[bytes, ...]) -> Result:
        if (bad := self._first_outside(keys)) is not None:
            return self._mismatch(bad)
        removed = 0
        for k in keys:
            old: bytes | None = self._data.pop(k, None)
            if old is not None:
                self._size -= len(k) + len(old)
                removed += 1
        return Int(removed)

    def _cas(self, cmd: Cas) -> Result:
        if not _in_range(cmd.key, self._start, self._end):
            return self._mismatch(cmd.key)
        current: bytes | None = self._data.get(cmd.key)
        if current is None or current != cmd.expected:
            return Int(0)
        self._store(cmd.key, cmd.new)
        return Int(1)

    def _incrby(self, key: bytes, delta: int) -> Result:
        if not _in_range(key, self._start, self._end):
            return self._mismatch(key)
        raw: bytes | None = self._data.get(key)
        current = 0 if raw is None else parse_int64(raw)
        if current is None:
            return Error(ErrorKind.ERR, ERR_NOT_INTEGER)
        n = current + delta
        if not INT64_MIN <= n <= INT64_MAX:
            return Error(ErrorKind.ERR, ERR_OVERFLOW)
        self._store(key, str(n).encode())
        return Int(n)

    def _mset(self, pairs: tuple[tuple[bytes, bytes], ...]) -> Result:
        # Check every key first: MSET within a range is all-or-nothing.
        if (bad := self._first_outside(k for k, _ in pairs)) is not None:
            return self._mismatch(bad)
        for k, v in pairs:
            self._store(k, v)
        return _OK

    def _scan(self, start: bytes, end: bytes, limit: int | None) -> Result:
        lo = max(start, self._start)
        if not end:
            hi = self._end
        elif not self._end:
            hi = end
        else:
            hi = min(end, self._end)
        if hi and lo >= hi:
            return Pairs(())
        data = self._data
        keys = data.irange(lo, hi or None, inclusive=(True, False))
        if limit is not None:
            keys = islice(keys, limit)
        return Pairs(tuple([(k, data[k]) for k in keys]))
