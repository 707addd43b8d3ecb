"""The safety invariants the simulator checks after every step.

Rules checked (Raft paper, figure 3, plus what a ``Ready`` user relies on)
---------------------------------------------------------------------------
- Election Safety: at most one leader per term.
- Leader Append-Only: a leader never overwrites or deletes its log entries;
  every append it asks to persist starts right after its last entry.
- Log Matching: two logs holding an entry with the same index and term are
  identical up to it (one fingerprint per ``(index, term)``, see ``chain``).
- Leader Completeness: an entry committed in term ``t`` is in the log of
  every leader of a term ``> t``.
- State Machine Safety: no two nodes apply different entries at one index
  (and nobody applies an entry it does not know to be committed, or out of
  order).
- Commit monotonic per node: durably across restarts, and in memory within
  one incarnation; durable term never decreases and a durable vote never
  changes within a term (so a crash cannot make a node vote twice).
- Snapshots hold the committed state as of their index, are never installed
  by a leader, and never move a node's applied state backwards.
- Membership agreement: every node that applies the conf change at index
  ``i`` ends with the same configuration, and a snapshot at ``i`` carries
  the configuration as of ``i`` (the membership analogue of State Machine
  Safety: a wrong configuration in a snapshot changes quorums after a
  restart).
- ReadIndex (safe mode): a read issued when index ``c`` was committed
  somewhere is answered with a read index ``>= c``.

Theory of operation
-------------------
Checks are incremental, fed by the simulator as it persists and applies a
node's ``Ready``: each costs O(entries in that Ready), so checking after
every step does not dominate a run.

Leader Completeness needs "committed in term t". The checker records, per
committed index, the smallest term of any node observed durably committing
it. Every observation happens in the term of commitment or later, so the
recorded term is an upper bound of the true one: requiring entries whose
recorded term is ``< t`` in a term-``t`` leader's log checks a subset of the
real property and never raises a false alarm (e.g. for a stale candidate
that wins term 5 from delayed votes after term 6 committed entries).
"""

from __future__ import annotations

import bisect

from engine.raft.testing.chain import LogChain
from engine.raft.types import ConfState, Entry, HardState


class InvariantViolation(AssertionError):
    """A Raft safety property does not hold; ``invariant`` names it."""

    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(f"{invariant}: {detail}")
        self.invariant = invariant


class InvariantChecker:
    """Global knowledge the invariants are checked against."""

    def __init__(
        self, bootstrap: tuple[int, int, int] | None = None,
        bootstrap_conf: ConfState | None = None,
    ) -> None:
        """``bootstrap``: ``(index, term, fingerprint)`` of the snapshot every
        initial voter starts from, committed by construction, with membership
        ``bootstrap_conf``."""
        # Invariant: leaders[t] is the only node ever seen leading term t.
        self.leaders: dict[int, int] = {}
        # Terms whose leader's completeness is not checked yet (its log was not
        # all durable when it was first seen leading).
        self.unchecked: set[int] = set()
        # Invariant: one fingerprint per (index, term) ever appended anywhere.
        self._by_index_term: dict[tuple[int, int], int] = {}
        # Invariant: committed[i] is the fingerprint of the committed prefix 1..i,
        # for every index some node durably committed (or installed a snapshot at).
        self.committed: dict[int, int] = {0: 0}
        # Invariant: commit_term[i] >= the term in which index i was committed.
        self._commit_term: dict[int, int] = {0: 0}
        # Invariant: max_committed = max(committed).
        self.max_committed = 0
        # Read requests issued: context -> index committed (somewhere) when issued.
        self._reads: dict[bytes, int] = {}
        # Reads answered: context -> the read index of the first answer.
        self.answered: dict[bytes, int] = {}
        # Invariant: confs[i] is the membership right after the conf change at
        # index i, as every node that applied it got it; _conf_indexes is sorted.
        self._confs: dict[int, ConfState] = {}
        self._conf_indexes: list[int] = []
        if bootstrap is not None:
            index, term, fp = bootstrap
            for i in range(1, index):
                self.committed[i] = self._commit_term[i] = 0  # never compared: below it
            self.committed[index] = fp
            self._commit_term[index] = 0
            self._by_index_term[(index, term)] = fp
            self.max_committed = index
            if bootstrap_conf is not None:
                self._record_conf(index, bootstrap_conf)

    # -- elections ----------------------------------------------------------------

    def on_leader(self, node: int, term: int, chain: LogChain | None) -> None:
        """``node`` is leader of ``term`` after a step. ``chain`` is its log, or
        None while part of it is not durable yet (a pending Ready): then
        completeness is checked at the first call with the chain."""
        known = self.leaders.get(term)
        if known is None:
            self.leaders[term] = node
            self.unchecked.add(term)
        elif known != node:
            raise InvariantViolation(
                "election safety", f"term {term} has leaders {known} and {node}"
            )
        if chain is not None and term in self.unchecked:
            self.unchecked.discard(term)
            self._check_completeness(node, term, chain)

    def _check_completeness(self, node: int, term: int, chain: LogChain) -> None:
        i = self.max_committed
        commit_term = self._commit_term
        while i > 0 and commit_term[i] >= term:
            i -= 1
        if i <= chain.base:
            # Covered by the node's snapshot, which was checked when installed.
            return
        if i > chain.last or chain.fingerprint(i) != self.committed[i]:
            raise InvariantViolation(
                "leader completeness",
                f"leader {node} of term {term} lacks entry {i} committed in term "
                f"<= {commit_term[i]} (its log ends at {chain.last})",
            )

    # -- persistence ----------------------------------------------------------------

    def on_append(
        self, node: int, chain: LogChain, entries: list[Entry] | tuple[Entry, ...],
        is_leader: bool,
    ) -> None:
        """``node`` persists ``entries`` into the log ``chain`` mirrors (call before
        the chain is updated: it checks the append, then mirrors it)."""
        if is_leader and entries[0].index != chain.last + 1:
            raise InvariantViolation(
                "leader append-only",
                f"leader {node} appends at {entries[0].index} over its log ending at "
                f"{chain.last}",
            )
        prev = entries[0].index - 1
        if chain.base <= prev <= chain.last and chain.term(prev) > entries[0].term:
            raise InvariantViolation(
                "log term order", f"node {node} appends term {entries[0].term} after "
                f"term {chain.term(prev)} at {prev}",
            )
        fps = chain.append(entries)
        table = self._by_index_term
        kept = entries[len(entries) - len(fps) :]
        for e, fp in zip(kept, fps, strict=True):
            known = table.setdefault((e.index, e.term), fp)
            if known != fp:
                raise InvariantViolation(
                    "log matching",
                    f"node {node} holds entry (index {e.index}, term {e.term}) "
                    "with a prefix differing from another node's",
                )

    def on_hard_state(
        self, node: int, old: HardState, new: HardState, chain: LogChain
    ) -> None:
        """``node`` durably replaces ``old`` by ``new`` (its log already persisted)."""
        if new.term < old.term:
            raise InvariantViolation("term monotonic", f"node {node}: {old} -> {new}")
        if new.term == old.term and old.vote and new.vote != old.vote:
            raise InvariantViolation(
                "one vote per term", f"node {node} in term {new.term}: {old.vote} -> {new.vote}"
            )
        if new.commit < old.commit:
            raise InvariantViolation(
                "commit monotonic", f"node {node} durable commit {old.commit} -> {new.commit}"
            )
        if new.commit > chain.last:
            raise InvariantViolation(
                "commit within log", f"node {node} commits {new.commit} > last {chain.last}"
            )
        lo = max(old.commit, chain.base)
        for i in range(lo + 1, new.commit + 1):
            self._record_committed(node, i, chain.fingerprint(i), new.term)

    def _record_committed(self, node: int, index: int, fp: int, term: int) -> None:
        known = self.committed.setdefault(index, fp)
        if known != fp:
            raise InvariantViolation(
                "committed logs agree", f"node {node} committed a different entry at {index}"
            )
        seen = self._commit_term.get(index)
        if seen is None or term < seen:
            self._commit_term[index] = term
        if index > self.max_committed:
            # Committed indices form a prefix: every index below was committed first.
            assert all(i in self.committed for i in range(self.max_committed + 1, index)), (
                f"node {node} commits {index} past a gap above {self.max_committed}"
            )
            self.max_committed = index

    def on_snapshot(
        self, node: int, index: int, term: int, state: tuple[int, int, int], *,
        is_leader: bool, applied: int,
    ) -> None:
        """``node``, having applied up to ``applied``, installs a snapshot at
        ``(index, term)`` holding ``state``."""
        if is_leader:
            raise InvariantViolation(
                "leader append-only", f"leader {node} replaces its log by snapshot {index}"
            )
        if index <= applied:
            raise InvariantViolation(
                "applied monotonic", f"node {node} applied {applied}, installs snapshot {index}"
            )
        s_index, s_term, fp = state
        if (s_index, s_term) != (index, term):
            raise InvariantViolation(
                "snapshot data", f"node {node}: metadata ({index}, {term}) holds state "
                f"as of ({s_index}, {s_term})",
            )
        known = self.committed.get(index)
        if known is None:
            raise InvariantViolation(
                "snapshot committed", f"node {node} installs snapshot {index} never committed"
            )
        if known != fp:
            raise InvariantViolation(
                "snapshot data", f"node {node}: snapshot {index} differs from committed log"
            )
        table_fp = self._by_index_term.setdefault((index, term), fp)
        if table_fp != fp:
            raise InvariantViolation(
                "log matching", f"node {node}: snapshot ({index}, {term}) differs from a log"
            )

    # -- application ------------------------------------------------------------------

    def on_apply(self, node: int, e: Entry, fp: int, applied: int, commit: int) -> None:
        """``node`` applies ``e`` (fingerprint ``fp``) right after index ``applied``,
        knowing ``commit`` durably."""
        if e.index != applied + 1:
            raise InvariantViolation(
                "apply order", f"node {node} applies {e.index} after {applied}"
            )
        if e.index > commit:
            raise InvariantViolation(
                "apply committed only", f"node {node} applies {e.index} > commit {commit}"
            )
        known = self.committed.get(e.index)
        if known != fp:
            raise InvariantViolation(
                "state machine safety",
                f"node {node} applies at {e.index} an entry (term {e.term}) differing from "
                "the committed one" if known is not None else
                f"node {node} applies {e.index} which nobody durably committed",
            )

    def on_committed(self, node: int, before: int, now: int) -> None:
        """In-memory commit index of one incarnation of ``node`` after a step."""
        if now < before:
            raise InvariantViolation(
                "commit monotonic", f"node {node} commit index {before} -> {now}"
            )

    # -- membership -------------------------------------------------------------------

    def on_conf_change(self, node: int, index: int, conf: ConfState) -> None:
        """``node`` applied the conf change at ``index`` and now has ``conf``."""
        known = self._confs.get(index)
        if known is None:
            self._record_conf(index, conf)
        elif known != conf:
            raise InvariantViolation(
                "membership agreement",
                f"node {node} has {conf} after the conf change at {index}; another has {known}",
            )

    def check_snapshot_conf(self, node: int, index: int, conf: ConfState) -> None:
        """A snapshot at ``index`` (made or installed by ``node``) must carry the
        membership as of ``index``: the one after the last conf change at or below."""
        i = bisect.bisect_right(self._conf_indexes, index) - 1
        if i < 0:
            return
        want = self._confs[self._conf_indexes[i]]
        if conf != want:
            raise InvariantViolation(
                "snapshot membership",
                f"node {node}: snapshot {index} holds {conf}, the membership at {index} "
                f"(since {self._conf_indexes[i]}) is {want}",
            )

    def _record_conf(self, index: int, conf: ConfState) -> None:
        self._confs[index] = conf
        bisect.insort(self._conf_indexes, index)

    # -- reads ------------------------------------------------------------------------

    def on_read_request(self, ctx: bytes) -> None:
        self._reads[ctx] = self.max_committed

    def on_read_state(self, node: int, index: int, ctx: bytes) -> None:
        need = self._reads.get(ctx)
        if need is None:
            raise InvariantViolation("read index", f"node {node} answers unknown read {ctx!r}")
        if index < need:
            raise InvariantViolation(
                "read index linearizable",
                f"node {node} answers read {ctx!r} at {index}; {need} was committed when issued",
            )
        self.answered.setdefault(ctx, index)
