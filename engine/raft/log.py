"""``RaftLog``: the node's view of its whole log, stable storage plus the unstable tail.

Theory of operation
-------------------
::

    storage (durable, read-only view)      unstable (not yet durable)
    [first_index .......... stable last]   [offset .......... last_index]
              ^applied <= committed <= last_index

Reads ask the unstable part first (it is newer) and fall back to ``Storage``.
Writes go to the unstable part only; the caller persists them through
``Ready`` and the node moves the boundary with ``stable_to``.

Rules
-----
- Invariant: ``applied <= committed`` (paper fig. 2: lastApplied <= commitIndex).
- Invariant: ``committed <= last_index()`` except transiently never: commit
  only moves to an index the log holds.
- Committed entries are never truncated: ``maybe_append`` asserts it
  (a violation means a broken peer or a raft bug, not a recoverable error).
- Byte budgets use ``types.entry_size``; a budget always lets one entry
  through so that a large entry cannot stall replication.
"""

from __future__ import annotations

from operator import itemgetter

from engine.raft.errors import Compacted, Unavailable
from engine.raft.log_unstable import Unstable
from engine.raft.storage import Storage
from engine.raft.types import ENTRY_OVERHEAD, Entry, Snapshot

_data_of = itemgetter(3)

#: Ranges up to this many entries are read from storage without a byte budget and
#: limited here with C-level arithmetic (the common, small case); longer ranges
#: pass the budget down so a far-behind follower never loads the whole log.
_FAST_LIMIT_SPAN = 4096


#: A budget no slice can exceed (used once a bound proved the budget irrelevant).
_UNLIMITED = 1 << 62


def entries_size(ents: list[Entry] | tuple[Entry, ...]) -> int:
    """Total ``entry_size`` of ``ents`` without a Python-level loop (hot path)."""
    return sum(map(len, map(_data_of, ents))) + ENTRY_OVERHEAD * len(ents)


def limit_size(ents: list[Entry], max_bytes: int) -> list[Entry]:
    """The longest prefix of ``ents`` within ``max_bytes`` (never empty if ``ents`` is not).

    The whole list is checked first in C; only an over-budget list is walked.
    """
    if max_bytes >= _UNLIMITED or len(ents) <= 1 or entries_size(ents) <= max_bytes:
        return ents
    total = 0
    for i, e in enumerate(ents):
        total += len(e.data) + ENTRY_OVERHEAD
        if total > max_bytes and i > 0:
            return ents[:i]
    return ents


class RaftLog:
    """Stable storage plus the unstable tail, with the commit and apply cursors."""

    __slots__ = (
        "applied",
        "applying",
        "committed",
        "max_applying_size",
        "max_entry_size",
        "storage",
        "tracked_from",
        "unstable",
    )

    def __init__(self, storage: Storage, max_applying_size: int) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        #: Invariant: ``applied <= committed <= last_index()``.
        self.committed = first - 1
        #: Invariant: ``first_index() - 1 <= applied <= committed``.
        self.applied = first - 1
        #: Invariant: ``applied <= applying <= committed``: the last index handed to
        #: the caller in a Ready's ``committed_entries``. ``applying > applied`` means
        #: a Ready's entries are being applied right now (between ``ready()`` and
        #: ``advance()``), when a snapshot must not be installed (``Raft._restore``).
        self.applying = self.applied
        self.max_applying_size = max_applying_size
        #: Invariant: every entry at index >= ``tracked_from`` was appended through
        #: this log and has ``entry_size <= max_entry_size``. Lets a byte budget be
        #: checked as ``count * max_entry_size`` without summing sizes (hot path).
        self.tracked_from = last + 1
        self.max_entry_size = 0

    # -- indexes and terms -------------------------------------------------------

    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        u = self.unstable
        n = len(u.entries)
        if n:
            return u.offset + n - 1
        if u.snapshot is not None:
            return u.snapshot.metadata.index
        # Everything below ``offset`` is stable: the caller persisted exactly what the
        # Readies asked for, so storage's last index is ``offset - 1`` (saves a call
        # on the hottest path).
        return u.offset - 1

    def persisted_index(self) -> int:
        """Last index the caller has confirmed durable (what a leader may count for itself)."""
        if self.unstable.snapshot is not None:
            return self.storage.last_index()
        return self.unstable.offset - 1

    def term(self, index: int) -> int:
        """Term at ``index``; raises ``Compacted``/``Unavailable`` outside the log."""
        u = self.unstable
        i = index - u.offset
        if i >= 0:
            if i < len(u.entries):
                return u.entries[i].term
            raise Unavailable(f"term of {index}: beyond last {self.last_index()}")
        snap = u.snapshot
        if snap is not None:
            # A pending snapshot replaces everything up to and including its index.
            if index == snap.metadata.index:
                return snap.metadata.term
            raise Compacted(f"term of {index}: below pending snapshot {snap.metadata.index}")
        # Valid for [first_index - 1, last stable]; storage raises outside.
        return self.storage.term(index)

    def term_or_zero(self, index: int) -> int:
        """Term at ``index``, or 0 when compacted or unavailable."""
        try:
            return self.term(index)
        except (Compacted, Unavailable):
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, index: int, term: int) -> bool:
        """Whether the log holds an entry at ``index`` with ``term`` (paper fig. 2 check)."""
        try:
            return self.term(index) == term
        except (Compacted, Unavailable):
            return False

    def is_up_to_date(self, last_index: int, term: int) -> bool:
        """Whether a log ending at (``last_index``, ``term``) is at least as up to date
        as ours: later last term wins, equal terms compare length. Reference: §5.4.1."""
        our_term = self.last_term()
        return term > our_term or (term == our_term and last_index >= self.last_index())

    # -- appending -----------------------------------------------------------------

    def maybe_append(
        self, index: int, log_term: int, commit: int, ents: tuple[Entry, ...]
    ) -> int | None:
        """Follower side of APPEND: if our entry at ``index`` has ``log_term``, append
        ``ents`` (replacing a conflicting suffix), advance commit, and return the last
        index the message vouches for; otherwise return ``None`` (reject)."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(ents)
        if ents:
            ci = self.find_conflict(ents)
            if ci:
                assert ci > self.committed, f"conflict at {ci} <= committed {self.committed}"
                start = ci - index - 1
                self.append(list(ents[start:]) if start else list(ents))
        self.commit_to(min(commit, last_new))
        return last_new

    def append(self, ents: list[Entry]) -> int:
        """Append ``ents`` to the unstable tail; returns the new last index."""
        if not ents:
            return self.last_index()
        assert ents[0].index - 1 >= self.committed, (
            f"append after {ents[0].index - 1} is below committed {self.committed}"
        )
        biggest = max(map(len, map(_data_of, ents))) + ENTRY_OVERHEAD
        self.max_entry_size = max(self.max_entry_size, biggest)
        # Entries replaced from an earlier index on are now all appended through us.
        self.tracked_from = min(self.tracked_from, ents[0].index)
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def find_conflict(self, ents: tuple[Entry, ...]) -> int:
        """Index of the first entry of ``ents`` that the log lacks or holds with another
        term, or 0 if the log already has them all.

        Binary search: by the Log Matching Property (§5.3) a matching entry implies
        every earlier entry matches, so "matches" is true on a prefix of ``ents``.
        """
        last = self.last_index()
        first_idx = ents[0].index
        # Entries past our last index cannot match; only the overlap is searched.
        hi = min(len(ents), last - first_idx + 1)
        if hi <= 0:
            return first_idx
        lo = 0
        while lo < hi:
            mid = (lo + hi) // 2
            e = ents[mid]
            if self.match_term(e.index, e.term):
                lo = mid + 1
            else:
                hi = mid
        return ents[lo].index if lo < len(ents) else 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= ``index`` whose term is <= ``term``, and that term
        (the fast-backtracking hint of thesis 3.5 / etcd). Stops at the compaction point."""
        while index > 0:
            try:
                t = self.term(index)
            except Compacted:
                return index, 0
            except Unavailable:
                index = self.last_index()
                continue
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    # -- commit and apply ------------------------------------------------------------

    def commit_to(self, commit: int) -> None:
        """Raise ``committed`` to ``commit`` (never lowers it)."""
        if commit > self.committed:
            assert commit <= self.last_index(), (
                f"commit {commit} beyond last index {self.last_index()}"
            )
            self.committed = commit

    def maybe_commit(self, max_index: int, term: int) -> bool:
        """Commit up to ``max_index`` if the entry there is from ``term``: a leader only
        commits entries of its own term by counting replicas (§5.4.2)."""
        if max_index > self.committed and self.term_or_zero(max_index) == term:
            self.commit_to(max_index)
            return True
        return False

    def applied_to(self, index: int) -> None:
        """The caller applied everything up to ``index`` (or installed a snapshot at it)."""
        assert index <= self.committed, (self.applied, index, self.committed)
        self.applied = max(self.applied, index)
        self.applying = max(self.applying, self.applied)

    def has_next_committed_entries(self) -> bool:
        snap = self.unstable.snapshot
        if snap is not None:
            return self.committed > max(self.applied, snap.metadata.index)
        return self.committed > self.applied

    def next_committed_entries(self) -> list[Entry]:
        """Committed, unapplied entries, at most ``max_applying_size`` bytes (one at least)."""
        lo = self.applied + 1
        snap = self.unstable.snapshot
        if snap is not None:
            # The pending snapshot is installed before these entries are applied.
            lo = max(lo, snap.metadata.index + 1)
        hi = self.committed + 1
        if lo >= hi:
            return []
        return self.slice(lo, hi, self.max_applying_size)

    # -- reading ---------------------------------------------------------------------

    def entries_from(self, lo: int, max_bytes: int) -> list[Entry]:
        """Entries ``[lo, last]`` within ``max_bytes``; raises ``Compacted``."""
        last = self.last_index()
        if lo > last:
            return []
        return self.slice(lo, last + 1, max_bytes)

    def slice(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries ``[lo, hi)`` within ``max_bytes``, from storage and/or the unstable tail."""
        first = self.first_index()
        if lo < first:
            raise Compacted(f"slice from {lo}: compacted (first is {first})")
        if lo >= self.tracked_from and (hi - lo) * self.max_entry_size <= max_bytes:
            # Within budget by the size bound: no per-entry size arithmetic needed.
            max_bytes = _UNLIMITED
        off = self.unstable.offset
        if lo >= off:
            return limit_size(self.unstable.slice(lo, hi), max_bytes)
        stored_hi = min(hi, off)
        if stored_hi - lo <= _FAST_LIMIT_SPAN:
            ents = limit_size(self.storage.entries(lo, stored_hi), max_bytes)
        else:
            budget = None if max_bytes >= _UNLIMITED else max_bytes
            ents = self.storage.entries(lo, stored_hi, budget)
        if len(ents) < stored_hi - lo or hi <= off:
            return ents
        if max_bytes >= _UNLIMITED:
            return ents + self.unstable.slice(off, hi)
        # Continue into the unstable tail with what is left of the budget.
        room = max_bytes - entries_size(ents)
        if room <= 0:
            return ents
        more = self.unstable.slice(off, hi)
        if entries_size(more) <= room:
            return ents + more
        taken = 0
        out = list(ents)
        for e in more:
            taken += len(e.data) + ENTRY_OVERHEAD
            if taken > room:
                break
            out.append(e)
        return out

    # -- snapshots ---------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The newest snapshot: a pending incoming one, else storage's."""
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def restore(self, snap: Snapshot) -> None:
        """Replace the log with ``snap`` (follower installing a leader's snapshot)."""
        self.committed = snap.metadata.index
        self.unstable.restore(snap)
        self.tracked_from = snap.metadata.index + 1

    def stable_to(self, index: int, term: int) -> None:
        self.unstable.stable_to(index, term)

    def stable_snap_to(self, index: int) -> None:
        self.unstable.stable_snap_to(index)
