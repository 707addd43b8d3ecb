"""``ReadLease``: a leader's read lease, earned by ReadIndex rounds, on a caller's clock.

Why
---
A linearizable read by ReadIndex costs a heartbeat round to a quorum per
batch of reads: on a busy node that is most of a read's cost (two network
hops, two extra worker rounds). Thesis 6.4.1: with check-quorum, a follower
that heard from the leader ignores vote requests for an election timeout, so
while a quorum heard from the leader less than that ago no other leader can
exist, and the leader may answer reads at its commit index without asking.

Theory of operation
-------------------
- A ReadIndex round started at time ``T`` (the heartbeats carrying its
  context leave after ``T``) and confirmed by raft (a ReadState) proves that
  a quorum received a heartbeat of this term after ``T``. Each of those
  voters refuses votes until at least ``election_ticks - 2`` of its ticks
  have passed: it resets its election clock on receipt, and a worker's tick
  clock never runs fast (late ticks are dropped, never bunched; the two
  ticks account for the phase of both clocks). So the lease lasts until
  ``T + duration`` with ``duration = (election_ticks - 2) * (1 - DRIFT)``
  ticks, ``DRIFT`` covering clock-rate differences between hosts.
- The lease is measured on the caller's clock in *tick units*: the worker's
  real monotonic clock divided by the tick length (never the Store's tick
  counter there: a stalled worker drops ticks, which would stretch the
  lease in real time), the Store's own tick counter in simulations (whose
  ticks are never dropped).
- While valid, a read is served at the current commit index, which covers
  every write acknowledged before the read arrived: the lease is only
  earned once raft answered a ReadIndex, i.e. after the leader committed an
  entry of its term. Once less than half the lease is left, the next batch
  of reads also starts a renewal round, so a steadily read range keeps its
  lease without waiting on a round.
- The lease is void when this replica is not the leader of the term that
  earned it, when a leadership transfer is in progress or was handed off
  (``lease_revoked``: the transferee's forced election ignores leases), or
  when the voter set changed since the round started.

Rules
-----
- A voter that restarts forgets whom it heard from and would vote at once;
  the worker holds back votes of recovered replicas for an election timeout
  (``Store.use_lease_reads(hold_votes=True)``), which keeps the argument
  above true across crashes.
- Off unless the Store's owner turns it on: ReadIndex stays the fallback
  whenever the lease is not valid.
"""

from __future__ import annotations

from typing import Final

from engine.raft.core import Raft
from engine.raft.types import NONE, StateRole

__all__ = ["DRIFT", "ReadLease", "lease_duration"]

#: Fraction of the lease given up for clock-rate differences between hosts.
DRIFT: Final = 0.1
#: At most this many unconfirmed rounds are remembered (older ones are forgotten:
#: they only cost a missed renewal).
_MAX_ROUNDS: Final = 64


def lease_duration(election_ticks: int) -> float:
    """How long, in ticks, a confirmed round keeps the lease (module docstring)."""
    return max(0.0, (election_ticks - 2) * (1 - DRIFT))


class ReadLease:
    """The lease of one replica (see the module docstring)."""

    __slots__ = ("_rounds", "_term", "_until", "_voters")

    def __init__(self) -> None:
        #: Invariant: the lease holds until this clock value, for ``_term`` and
        #: ``_voters`` only (-inf: none earned).
        self._until = float("-inf")
        self._term = 0
        self._voters: frozenset[int] = frozenset()
        #: Invariant: ReadIndex context -> (start time, term, voters) of a round not
        #: yet confirmed; at most ``_MAX_ROUNDS`` entries, oldest first.
        self._rounds: dict[bytes, tuple[float, int, frozenset[int]]] = {}

    def valid(self, raft: Raft, now: float) -> bool:
        """Whether reads may be served at the commit index right now."""
        return (
            now < self._until
            and raft.role == StateRole.LEADER
            and raft.term == self._term
            and not raft.lease_revoked
            and raft.lead_transferee == NONE
            and _voters(raft) == self._voters
        )

    def needs_renewal(self, now: float, duration: float) -> bool:
        """Less than half the lease is left and no round is on its way."""
        return not self._rounds and self._until - now < duration / 2

    def round_started(self, ctx: bytes, raft: Raft, now: float) -> None:
        """A ReadIndex round with context ``ctx`` was started at ``now``."""
        if len(self._rounds) >= _MAX_ROUNDS:
            del self._rounds[next(iter(self._rounds))]
        self._rounds[ctx] = (now, raft.term, _voters(raft))

    def round_confirmed(self, ctx: bytes, raft: Raft, duration: float) -> None:
        """Raft answered the round ``ctx`` (a ReadState): extend the lease from its
        start, if it was this term's and the voters are unchanged."""
        started = self._rounds.pop(ctx, None)
        if started is None:
            return
        start, term, voters = started
        if term != raft.term or voters != _voters(raft) or raft.role != StateRole.LEADER:
            return
        if term != self._term or voters != self._voters:
            self._until = float("-inf")
        self._term, self._voters = term, voters
        self._until = max(self._until, start + duration)

    def forget_rounds(self) -> None:
        """Drop the unconfirmed rounds (their reads were failed or moved away)."""
        self._rounds.clear()


def _voters(raft: Raft) -> frozenset[int]:
    conf = raft.tracker.conf
    return frozenset(conf.voters) | frozenset(conf.voters_outgoing)
