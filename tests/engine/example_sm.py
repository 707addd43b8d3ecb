"""An example user state machine: named counters, written the way a library
user would write one against ``engine.statemachine.StateMachine`` (it is the
worked example in ``engine/STATEMACHINE.md``).

It deliberately makes different choices from the built-in KV machine, to
show the protocol does not depend on them: commands and results are JSON
(readable, self-describing; never pickle, which would execute whatever a
log entry says), the data is a plain dict, and the snapshot is JSON lines.

Commands (``apply``)::

    {"op": "add",   "name": "visits", "by": 3}   -> {"value": <new value>}
    {"op": "reset", "name": "visits"}            -> {"value": 0}

Queries (``read``)::

    {"op": "get", "name": "visits"}              -> {"value": <value, 0 if never set>}
    {"op": "top", "n": 3}                        -> {"top": [[name, value], ...]}

Anything else, or a name outside this replica's key range, gets
``{"error": "..."}``: apply must not raise for a bad command.

Keys: a counter's position in the range key space is its name's UTF-8 bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

CHUNK_BYTES = 4096
_PER_COUNTER_OVERHEAD = 8  # an int64's worth, for approximate_size


class CounterMap:
    """Named integer counters for one key range ``[start, end)``."""

    def __init__(self, start: bytes = b"", end: bytes = b"") -> None:
        self._start = start
        self._end = end
        # Invariant: every name n satisfies start <= n.encode() < end (or end == b"").
        self._counters: dict[str, int] = {}
        # Invariant: _size == sum(len(n.encode()) + 8 for n in _counters).
        self._size = 0

    # --- what the engine calls ----------------------------------------------------------

    def apply(self, commands: Sequence[bytes]) -> list[bytes]:
        return [_dump(self._apply_one(raw)) for raw in commands]

    def read(self, query: bytes) -> bytes:
        try:
            q = json.loads(query)
            if q["op"] == "get":
                name = self._name(q)
                return _dump({"value": self._counters.get(name, 0)})
            if q["op"] == "top":
                n = int(q["n"])
                best = sorted(self._counters.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
                return _dump({"top": [list(kv) for kv in best]})
            return _dump({"error": f"unknown query {q['op']!r}"})
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            return _dump({"error": f"bad query: {e}"})

    def snapshot(self) -> Iterator[bytes]:
        # Capture now (a shallow copy: ints and strs are immutable), encode lazily.
        items = sorted(self._counters.items())
        header = {"start": self._start.hex(), "end": self._end.hex()}
        return _chunk_lines([header, *items])

    def restore(self, chunks: Iterable[bytes]) -> None:
        lines = _split_lines(chunks)
        header = json.loads(next(lines))
        start, end = bytes.fromhex(header["start"]), bytes.fromhex(header["end"])
        counters: dict[str, int] = {}
        for line in lines:
            name, value = json.loads(line)
            counters[name] = value
        self._start, self._end, self._counters = start, end, counters
        self._size = sum(len(n.encode()) + _PER_COUNTER_OVERHEAD for n in counters)

    def split(self, key: bytes) -> CounterMap:
        right = CounterMap(key, self._end)
        for name in [n for n in self._counters if n.encode() >= key]:
            right._counters[name] = self._counters.pop(name)
            moved = len(name.encode()) + _PER_COUNTER_OVERHEAD
            right._size += moved
            self._size -= moved
        self._end = key
        return right

    def absorb(self, right: CounterMap) -> None:
        assert right._start == self._end, "absorb takes the adjacent right-hand range"
        self._counters.update(right._counters)
        self._size += right._size
        self._end = right._end
        right._counters, right._size = {}, 0

    def approximate_size(self) -> int:
        return self._size

    def split_key(self) -> bytes | None:
        # Sorting is O(n log n): fine for an example; a real machine keeps an
        # ordered index (the KV machine's SortedDict) to make this O(log n).
        if len(self._counters) < 2:
            return None
        names = sorted(n.encode() for n in self._counters)
        return names[len(names) // 2]

    # --- helpers ------------------------------------------------------------------------

    def _apply_one(self, raw: bytes) -> dict[str, Any]:
        try:
            cmd = json.loads(raw)
            name = self._name(cmd)
            if cmd["op"] == "add":
                by = cmd["by"]
                if type(by) is not int:
                    return {"error": "'by' must be an integer"}
                if name not in self._counters:
                    self._size += len(name.encode()) + _PER_COUNTER_OVERHEAD
                self._counters[name] = self._counters.get(name, 0) + by
                return {"value": self._counters[name]}
            if cmd["op"] == "reset":
                if name in self._counters:
                    self._counters[name] = 0
                return {"value": 0}
            return {"error": f"unknown command {cmd['op']!r}"}
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            return {"error": f"bad command: {e}"}

    def _name(self, msg: dict[str, Any]) -> str:
        name = msg["name"]
        if not isinstance(name, str):
            raise TypeError("'name' must be a string")
        key = name.encode()
        if key < self._start or (self._end and key >= self._end):
            raise ValueError(f"{name!r} is outside this range")
        return name


def _dump(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _chunk_lines(objs: list[Any]) -> Iterator[bytes]:
    buf = bytearray()
    for obj in objs:
        buf += _dump(obj) + b"\n"
        while len(buf) >= CHUNK_BYTES:
            yield bytes(buf[:CHUNK_BYTES])
            del buf[:CHUNK_BYTES]
    if buf:
        yield bytes(buf)


def _split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from lines
    if pending:
        raise ValueError("snapshot stream does not end with a newline: truncated")
