"""Prefix fingerprints of a raft log: the simulator's cheap way to compare logs.

Theory of operation
-------------------
``fold(prev, entry)`` hashes an entry's term, type and data together with the
fingerprint of everything before it, so the fingerprint at index ``i``
stands for the whole prefix ``1..i``. Two logs agree up to ``i`` exactly
when their fingerprints at ``i`` agree (up to a 2**-64 hash collision). That
turns every invariant of the Raft paper's figure 3 into O(1) comparisons:

- Log Matching: one global map ``(index, term) -> fingerprint``; a node
  appending an entry whose ``(index, term)`` is known with another
  fingerprint has a log that differs from another node's below that entry.
- State Machine Safety: one global map ``index -> fingerprint`` of applied
  prefixes.

The simulated state machine *is* this fold: applying an entry replaces the
state with ``fold(state, entry)``, and a snapshot carries the state, so a
snapshot that does not match the committed log is detected when installed.

``LogChain`` mirrors one node's durable log as fingerprints (from the
snapshot index on) so the simulator never has to read entries back.
Fingerprints use Python's ``hash`` (64-bit, fast, cached for bytes): they are
compared within one process only and nothing branches on their value, so a
run stays a pure function of its seed even with hash randomisation.
"""

from __future__ import annotations

import struct

from engine.raft.types import Entry

#: Fingerprint of the empty log.
GENESIS = 0

#: Snapshot data of the simulated state machine: index, term, fingerprint.
_SNAP_FORMAT = struct.Struct("<qqq")


def fold(prev: int, e: Entry) -> int:
    """Fingerprint of the prefix ending with ``e`` given the one before it."""
    return hash((prev, e.term, e.type, e.data))


def encode_state(index: int, term: int, fingerprint: int) -> bytes:
    """Snapshot data of the simulated state machine as of ``index``."""
    return _SNAP_FORMAT.pack(index, term, fingerprint)


def decode_state(data: bytes) -> tuple[int, int, int]:
    """``(index, term, fingerprint)`` from ``encode_state`` output."""
    index, term, fp = _SNAP_FORMAT.unpack(data)
    return int(index), int(term), int(fp)


class LogChain:
    """Fingerprints of one node's durable log, indices ``base .. last``.

    Invariant: ``_fps[k]`` is the fingerprint of the prefix ending at index
    ``base + k``; ``_fps[0]`` is the snapshot's (or ``GENESIS`` at base 0).
    Invariant: ``_terms[k]`` is the term of the entry at ``base + k``.
    """

    __slots__ = ("_fps", "_terms", "base")

    def __init__(self, base: int = 0, base_term: int = 0, base_fp: int = GENESIS) -> None:
        self.base = base
        self._fps = [base_fp]
        self._terms = [base_term]

    @property
    def last(self) -> int:
        return self.base + len(self._fps) - 1

    def fingerprint(self, index: int) -> int:
        """Fingerprint at ``index``; ``base <= index <= last``."""
        return self._fps[index - self.base]

    def term(self, index: int) -> int:
        return self._terms[index - self.base]

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> list[int]:
        """Mirror ``MemoryStorage.append``: entries at or below ``base`` are
        ignored, a conflicting suffix is replaced. Returns the fingerprints of
        the entries kept, aligned with the tail of ``entries``."""
        first = entries[0].index
        skip = self.base + 1 - first
        if skip > 0:
            entries = entries[skip:]
            if not entries:
                return []
            first = entries[0].index
        k = first - self.base
        assert k <= len(self._fps), f"gap: append at {first}, last is {self.last}"
        del self._fps[k:]
        del self._terms[k:]
        fp = self._fps[k - 1]
        out = []
        for e in entries:
            fp = hash((fp, e.term, e.type, e.data))  # fold(), inlined (hot path)
            out.append(fp)
        self._fps.extend(out)
        self._terms.extend(e.term for e in entries)
        return out

    def compact(self, index: int) -> None:
        """Forget fingerprints below ``index`` (the new snapshot index)."""
        k = index - self.base
        del self._fps[:k]
        del self._terms[:k]
        self.base = index

    def reset(self, base: int, base_term: int, base_fp: int) -> None:
        """Replace everything by a snapshot's position."""
        self.base = base
        self._fps = [base_fp]
        self._terms = [base_term]
