"""The unstable tail of the raft log: entries (and maybe a snapshot) the node
knows about but the caller has not yet confirmed durable.

Theory of operation
-------------------
New entries (a leader's proposals, a follower's appended entries) and an
incoming snapshot land here first. ``RawNode.ready`` hands them to the caller
to persist; ``RawNode.advance`` calls ``stable_to``/``stable_snap_to`` and they
are dropped from here, after which the ``Storage`` view answers for them.

Rules
-----
- Invariant: ``entries[i].index == offset + i``.
- Invariant: if ``snapshot`` is set, ``offset == snapshot.metadata.index + 1``.
- ``stable_to(i, t)`` only acts if the entry at ``i`` still has term ``t``:
  between ``ready()`` and ``advance()`` a conflicting append may have replaced
  the suffix, and those replacement entries are not yet durable.
"""

from __future__ import annotations

from engine.raft.types import Entry, Snapshot


class Unstable:
    """Entries ``[offset, offset + len(entries))`` and a pending snapshot, not yet durable."""

    __slots__ = ("entries", "offset", "snapshot")

    def __init__(self, offset: int) -> None:
        #: Invariant: ``entries[i].index == offset + i``.
        self.entries: list[Entry] = []
        #: Index of ``entries[0]`` (or of the next entry to come when empty).
        self.offset = offset
        #: Invariant: ``None`` or ``offset == snapshot.metadata.index + 1``.
        self.snapshot: Snapshot | None = None

    def maybe_first_index(self) -> int | None:
        """First log index if a pending snapshot fixes it, else ``None`` (ask storage)."""
        if self.snapshot is not None:
            return self.snapshot.metadata.index + 1
        return None

    def maybe_last_index(self) -> int | None:
        """Last log index if the unstable part knows it, else ``None`` (ask storage)."""
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.metadata.index
        return None

    def maybe_term(self, index: int) -> int | None:
        """Term at ``index`` if known here, else ``None``."""
        off = self.offset
        if index < off:
            snap = self.snapshot
            if snap is not None and snap.metadata.index == index:
                return snap.metadata.term
            return None
        i = index - off
        if i < len(self.entries):
            return self.entries[i].term
        return None

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to ``index`` (if it still has ``term``) are durable: drop them."""
        i = index - self.offset
        if i < 0 or i >= len(self.entries) or self.entries[i].term != term:
            return
        del self.entries[: i + 1]
        self.offset = index + 1

    def stable_snap_to(self, index: int) -> None:
        """The pending snapshot at ``index`` is installed in storage: forget it."""
        if self.snapshot is not None and self.snapshot.metadata.index == index:
            self.snapshot = None

    def restore(self, snap: Snapshot) -> None:
        """Replace everything with ``snap``: the log now starts after it."""
        self.offset = snap.metadata.index + 1
        self.entries = []
        self.snapshot = snap

    def truncate_and_append(self, ents: list[Entry]) -> None:
        """Append ``ents``, first dropping any unstable entry at or after ``ents[0].index``."""
        after = ents[0].index
        n = len(self.entries)
        if after == self.offset + n:
            self.entries.extend(ents)
        elif after <= self.offset:
            # The whole unstable part is replaced; storage answers below ``after``.
            self.offset = after
            self.entries = list(ents)
        else:
            del self.entries[after - self.offset :]
            self.entries.extend(ents)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries ``[lo, hi)``; the caller guarantees ``offset <= lo <= hi <= last + 1``."""
        off = self.offset
        assert off <= lo <= hi <= off + len(self.entries), (lo, hi, off, len(self.entries))
        return self.entries[lo - off : hi - off]
