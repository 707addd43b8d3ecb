"""The simulator's in-memory network: seeded drop, duplicate, reorder, delay
and (a)symmetric partitions over virtual time.

Theory of operation
-------------------
A sent message becomes an ``Envelope`` stamped with the virtual time it may
be delivered at (``now + delay``). Envelopes due now sit in ``_due``; later
ones wait in a heap keyed by due time and move to ``_due`` when the
simulator advances the clock. The simulator pulls one envelope at a time
with ``pop()``: with reordering on, a uniformly random due envelope, else
the oldest one. Duplicates are enqueued at send time as a second envelope
with its own delay, so a copy can overtake the original.

Partitions are a set of blocked *directed* links ``(frm, to)``: a symmetric
partition blocks both directions, an asymmetric one only one. The link is
checked when an envelope is popped, not when it is sent, so a partition
also cuts messages already in flight (as a real network cutting a
connection does). Random drops are decided at send time.

Rules
-----
- Every random decision uses the ``random.Random`` passed in, never the
  global generator: a run is a pure function of its seed.
- ``pop()`` reports a lost envelope instead of silently discarding it, so
  that the simulator can feed ``report_unreachable`` / ``report_snapshot``
  back to the sender as a real transport would.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import NamedTuple

from engine.raft.types import Message


class Envelope(NamedTuple):
    """A message in flight. ``incarnation`` is the sender's at send time, so that
    transport feedback never reaches a restarted sender that did not send it."""

    msg: Message
    incarnation: int


@dataclass(slots=True)
class NetworkFaults:
    """Fault rates of the network; all zero/False is a perfect network."""

    #: Probability that a sent message is lost.
    drop: float = 0.0
    #: Probability that a sent message is delivered twice.
    duplicate: float = 0.0
    #: Deliver due messages in random order rather than oldest first.
    reorder: bool = False
    #: Each message is delayed by a uniform 0..max_delay ticks.
    max_delay: int = 0


class SimNetwork:
    """Messages in flight between simulated nodes."""

    def __init__(self, rng: random.Random, faults: NetworkFaults | None = None) -> None:
        self._rng = rng
        self.faults = faults or NetworkFaults()
        # Invariant: every envelope in _due has due time <= _now.
        self._due: list[Envelope] = []
        # Invariant: heap of (due time, sequence, envelope) with due time > _now
        # at the moment of insertion; ``advance`` moves the due ones out.
        self._delayed: list[tuple[int, int, Envelope]] = []
        self._seq = 0
        self._now = 0
        # Invariant: (frm, to) in _blocked <=> messages frm -> to are lost.
        self._blocked: set[tuple[int, int]] = set()

    # -- sending / receiving ----------------------------------------------------

    def send(self, msg: Message, incarnation: int) -> bool:
        """Put ``msg`` in flight; returns False if it was dropped at once."""
        f = self.faults
        rng = self._rng
        if f.drop and rng.random() < f.drop:
            return False
        env = Envelope(msg, incarnation)
        self._enqueue(env)
        if f.duplicate and rng.random() < f.duplicate:
            self._enqueue(env)
        return True

    def _enqueue(self, env: Envelope) -> None:
        delay = self._rng.randint(0, self.faults.max_delay) if self.faults.max_delay else 0
        if delay == 0:
            self._due.append(env)
        else:
            self._seq += 1
            heapq.heappush(self._delayed, (self._now + delay, self._seq, env))

    def has_due(self) -> bool:
        return bool(self._due)

    def due_count(self) -> int:
        return len(self._due)

    def in_flight(self) -> int:
        return len(self._due) + len(self._delayed)

    def pop(self) -> tuple[Envelope, bool] | None:
        """The next due envelope and whether it is *lost* (its link is blocked);
        None if nothing is due."""
        due = self._due
        if not due:
            return None
        if self.faults.reorder and len(due) > 1:
            i = self._rng.randrange(len(due))
            due[i], due[-1] = due[-1], due[i]
            env = due.pop()
        else:
            env = due.pop(0)
        m = env.msg
        return env, (m.frm, m.to) in self._blocked

    def advance(self, now: int) -> None:
        """Move the clock to ``now`` and make the envelopes due by then deliverable."""
        self._now = now
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            self._due.append(heapq.heappop(delayed)[2])

    def clear(self) -> None:
        """Lose everything in flight (used by scenario tests)."""
        self._due.clear()
        self._delayed.clear()

    # -- partitions ---------------------------------------------------------------

    def is_blocked(self, frm: int, to: int) -> bool:
        return (frm, to) in self._blocked

    def block(self, frm: int, to: int) -> None:
        """Cut the one-way link ``frm -> to`` (an asymmetric partition)."""
        self._blocked.add((frm, to))

    def partition(self, *groups: set[int] | frozenset[int]) -> None:
        """Cut every link between nodes of different groups, both ways."""
        for i, a in enumerate(groups):
            for b in groups[i + 1 :]:
                for x in a:
                    for y in b:
                        self._blocked.add((x, y))
                        self._blocked.add((y, x))

    def heal(self) -> None:
        """Restore every link."""
        self._blocked.clear()

    @property
    def partitioned(self) -> bool:
        return bool(self._blocked)
