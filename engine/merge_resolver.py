"""Finishing or undoing a merge whose initiator crashed or lost track of it.

The problem
-----------
A merge freezes the right-hand range (RHS) through its own log, then commits
a MERGE entry carrying the frozen image through the left-hand range's (LHS)
log (``engine/split_merge.py``). If the initiating store crashes between the
two, or its MERGE proposal is lost or times out, nothing else would ever
touch the RHS again: it stays frozen and every write gets TRYAGAIN.

Why not simply unfreeze after a timeout
---------------------------------------
Because a MERGE entry may still be in flight in the LHS log. Worked example
(stores A, B, C hold both ranges; A leads both)::

    A: FREEZE(R, intent=(L, g)) commits and applies on A, B, C
    A: proposes MERGE(L, g, image) to L; it reaches B and C's logs, uncommitted
    A crashes; B becomes leader of R, C of L
    B (timeout): "R is frozen, undo it" -> UNFREEZE commits on R; R takes put(k)=1,
                  acknowledged
    C: the old MERGE commits in L's log (it was on a majority) and applies:
       L absorbs the *frozen* image and every store drops R
    => the acknowledged put(k)=1 is lost.

The rule
--------
Unfreeze only when **no MERGE of this intent can ever apply**, and otherwise
finish the merge. Three facts make that decidable on one store:

1. The FREEZE records its intent ``(left_id, left_generation)``, durably
   (entry, image, raft snapshot); a frozen range refuses another FREEZE, so
   the intent of a frozen range never changes. UNFREEZE names the intent.
2. A MERGE applies only at ``left_generation`` and every applied MERGE, and
   every MERGE *refused* at that generation, bumps the LHS generation. So
   once the LHS's applied generation passed ``left_generation`` without the
   merge applying, no MERGE of the intent will ever apply.
3. A store that applies the MERGE on its LHS replica destroys its RHS replica
   at once (or, when it jumps over the entry with a snapshot, destroys every
   replica the snapshot overlaps), and tombstones/overlap checks keep the RHS
   from being recreated here. So **on one store**, "the RHS replica still
   exists and the local LHS replica applied past ``left_generation``" proves
   the MERGE did not and will not apply.

Every ``merge_resolve_ticks`` each frozen replica with an intent is examined
against the LHS replica on the same store (the replica sets are the same by
construction) and ``decide`` picks:

- ``REDRIVE``: the LHS here is the leader, at ``left_generation``, not itself
  frozen: propose the MERGE again, with the image of the local frozen RHS
  replica (identical on every replica that applied the FREEZE: nothing
  applies to a frozen range). A duplicate of a MERGE that already applied is
  refused (the generation moved), so re-driving is idempotent.
- ``PULL_LEFT``: as REDRIVE, but the LHS here is a follower. Normally the
  LHS leader holds a frozen RHS replica too and re-drives itself; but if the
  replica sets drifted apart (a conf change raced the FREEZE) it may hold
  none. So after ``HAND_OFF_AFTER`` such looks in a row this store asks the
  LHS leader to hand LHS leadership here (a follower's transfer request is
  forwarded), and then re-drives: the MERGE applies, or is refused and kills
  the intent, either way ending the wait.
- ``UNFREEZE``: the RHS here is the leader and fact 3 holds (or the LHS was
  merged away itself: it was frozen, refusing our MERGE, until it vanished):
  propose UNFREEZE(intent) through the RHS log.
- ``DESTROY``: the local LHS already covers the RHS's start key: the RHS
  replica is a leftover of an applied merge.
- ``WAIT``: anything else (no local LHS and no proof it is gone; not the
  leader that may act): look again next time. A *leader* of the RHS that has
  waited ``HAND_OFF_AFTER`` looks in a row hands RHS leadership on to the next
  voter: its own store may never be able to decide (its LHS replica is a
  stale leftover, say), and leadership moving round the voters reaches a
  store that can (leadership transfer is always safe). In the example above, B sees
  its LHS replica at generation ``g`` and waits; C (leading L, holding a
  frozen R) re-drives the MERGE, which applies once, or is refused and
  bumps L's generation, after which B unfreezes.
"""

from __future__ import annotations

from enum import Enum
from typing import Final, Protocol

from engine.proposal import Completion, EntryKind
from engine.replica import Replica
from engine.snapshot_store import Tombstone
from engine.split_merge import FreezeCommand, MergeCommand, encode_freeze, encode_merge

#: Consecutive WAIT verdicts after which an RHS leader hands leadership on.
HAND_OFF_AFTER: Final = 3


class Resolution(Enum):
    WAIT = "wait"
    REDRIVE = "redrive"
    UNFREEZE = "unfreeze"
    DESTROY = "destroy"
    PULL_LEFT = "pull_left"


def decide(rhs: Replica, lhs: Replica | None, left_tomb: Tombstone | None) -> Resolution:
    """What this store should do about the frozen ``rhs`` (see the module docstring).
    ``lhs`` is the local replica of the intent's left range, ``left_tomb`` its
    tombstone here, if any."""
    intent = rhs.merge_intent
    if not rhs.frozen or intent is None:
        return Resolution.WAIT
    if lhs is None:
        if left_tomb is not None and left_tomb.gone_for_good and rhs.is_leader:
            return Resolution.UNFREEZE
        return Resolution.WAIT
    if lhs.desc.contains(rhs.desc.start_key):
        return Resolution.DESTROY
    if lhs.desc.generation > intent.left_generation:
        return Resolution.UNFREEZE if rhs.is_leader else Resolution.WAIT
    if lhs.desc.generation == intent.left_generation and not lhs.frozen:
        return Resolution.REDRIVE if lhs.is_leader else Resolution.PULL_LEFT
    return Resolution.WAIT


def next_voter(rhs: Replica) -> int | None:
    """The voter after this node in ``rhs``'s descriptor (round robin), if any."""
    voters = [v for v in rhs.desc.voters if v != rhs.node_id]
    if not voters:
        return None
    later = [v for v in voters if v > rhs.node_id]
    return later[0] if later else voters[0]


class ResolverHost(Protocol):
    """What the resolver needs of its Store."""

    def replica(self, range_id: int) -> Replica | None: ...

    def tombstone(self, range_id: int) -> Tombstone | None: ...

    def merge_in_progress(self, right_id: int) -> bool: ...

    def new_request_id(self) -> int: ...

    def queue_command(
        self, rep: Replica, request_id: int, kind: EntryKind, payload: bytes
    ) -> None: ...

    def transfer_leader(self, range_id: int, to: int) -> bool: ...

    def destroy_merged(self, rep: Replica, done: list[Completion]) -> None:
        """Destroy a leftover replica of a range a merge absorbed (tombstoned)."""
        ...

    def pull_leadership(self, rep: Replica) -> None:
        """Ask ``rep``'s leader to transfer leadership to this store."""
        ...


class MergeResolver:
    """The Store's frozen replicas and what it last decided about them."""

    __slots__ = ("_due", "_internal", "_period", "_waits")

    def __init__(self, period: int) -> None:
        self._period = period
        #: Frozen replicas (range id) -> the tick of their next look.
        #: Invariant: holds every frozen replica of the Store.
        self._due: dict[int, int] = {}
        #: Frozen ranges this store leads -> consecutive WAIT verdicts (hand-off).
        self._waits: dict[int, int] = {}
        #: Request ids of the resolver's own proposals: their completions are swallowed.
        self._internal: set[int] = set()

    def __bool__(self) -> bool:
        return bool(self._due)

    def note(self, rep: Replica, now: int) -> None:
        """Look at ``rep`` after a period if it is frozen."""
        if rep.frozen and rep.range_id not in self._due:
            self._due[rep.range_id] = now + self._period

    def stalled(self, range_id: int, now: int) -> None:
        """Look at ``range_id`` at the next tick (its coordinator's MERGE failed)."""
        if range_id in self._due:
            self._due[range_id] = now

    def forget(self, range_id: int) -> None:
        self._due.pop(range_id, None)
        self._waits.pop(range_id, None)

    def tick(self, host: ResolverHost, now: int, done: list[Completion]) -> None:
        """Look at the frozen replicas that are due and act on ``decide``."""
        for rid, due in list(self._due.items()):
            if due > now:
                continue
            rhs = host.replica(rid)
            if rhs is None or not rhs.frozen:
                self.forget(rid)
                continue
            self._due[rid] = now + self._period
            intent = rhs.merge_intent
            if intent is None or host.merge_in_progress(rid):
                continue
            lhs = host.replica(intent.left_id)
            what = decide(rhs, lhs, host.tombstone(intent.left_id))
            if what is Resolution.REDRIVE and lhs is not None:
                image = b"".join(rhs.sm.snapshot())
                cmd = MergeCommand(intent.left_generation, rhs.desc, image)
                self._propose(host, lhs, EntryKind.MERGE, encode_merge(cmd))
            elif what is Resolution.UNFREEZE:
                undo = FreezeCommand(rhs.desc.generation, intent)
                self._propose(host, rhs, EntryKind.UNFREEZE, encode_freeze(undo))
            elif what is Resolution.DESTROY:
                host.destroy_merged(rhs, done)
            self._maybe_hand_off(host, rhs, what)

    def _maybe_hand_off(self, host: ResolverHost, rhs: Replica, what: Resolution) -> None:
        """Move leadership after ``HAND_OFF_AFTER`` looks in a row that could not act:
        the RHS's on to the next voter (WAIT as its leader), or the LHS's here
        (PULL_LEFT)."""
        rid = rhs.range_id
        stuck = what is Resolution.PULL_LEFT or (what is Resolution.WAIT and rhs.is_leader)
        if not stuck:
            self._waits.pop(rid, None)
            return
        waits = self._waits[rid] = self._waits.get(rid, 0) + 1
        if waits % HAND_OFF_AFTER:
            return
        if what is Resolution.PULL_LEFT:
            intent = rhs.merge_intent
            lhs = host.replica(intent.left_id) if intent is not None else None
            if lhs is not None:
                host.pull_leadership(lhs)
            return
        to = next_voter(rhs)
        if to is not None:
            host.transfer_leader(rid, to)

    def _propose(self, host: ResolverHost, rep: Replica, kind: EntryKind, payload: bytes) -> None:
        request_id = host.new_request_id()
        self._internal.add(request_id)
        host.queue_command(rep, request_id, kind, payload)

    def public(self, done: list[Completion]) -> list[Completion]:
        """``done`` without the completions of the resolver's own proposals."""
        if not self._internal:
            return done
        out = []
        for c in done:
            if c.request_id in self._internal:
                self._internal.discard(c.request_id)
            else:
                out.append(c)
        return out


__all__ = ["HAND_OFF_AFTER", "MergeResolver", "Resolution", "ResolverHost", "decide",
           "next_voter"]
