"""The initiating store's side of a merge: FREEZE (with its intent), then MERGE.

Theory of operation (the protocol itself is in ``engine/split_merge.py``)
------------------------------------------------------------------------
``Store.merge`` checks what it can up front (both leaders here, adjacent,
same replica sets) and hands the operation to ``begin``, which proposes
FREEZE through the right-hand range under an *internal* request id. When the
local right-hand replica applies the FREEZE (``freeze_applied``, called from
apply), its state is final: the coordinator reads its image and proposes
MERGE through the left-hand range under the *client's* request id, so the
client is answered when the merge applies (or is refused). ``settle`` runs
over each round's completions: it swallows the internal ones, fails the
client if the FREEZE did not happen, and otherwise answers the client with
the MERGE's outcome. It never unfreezes: a MERGE of the same intent may still
be in flight (a re-drive, or ours after a TRYAGAIN that only means *this*
proposal was replaced), so whether the right-hand range is unfrozen or merged
is the resolver's decision (``engine/merge_resolver.py``), which the
coordinator asks for at once (``merge_stalled``) when its MERGE did not
apply. For the same reason a MERGE TRYAGAIN is reported as UNKNOWN: the merge
may yet be completed by a re-drive.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from engine.proposal import Completion, EntryKind, Outcome
from engine.replica import Replica
from engine.split_merge import (
    FreezeCommand,
    MergeCommand,
    MergeIntent,
    encode_freeze,
    encode_merge,
)


class MergeHost(Protocol):
    """What the coordinator needs of its Store."""

    def replica(self, range_id: int) -> Replica | None: ...

    def new_request_id(self) -> int: ...

    def queue_command(
        self, rep: Replica, request_id: int, kind: EntryKind, payload: bytes
    ) -> None: ...

    def merge_stalled(self, right_id: int) -> None:
        """Our MERGE for ``right_id`` did not apply: let the resolver look now."""
        ...


@dataclass(slots=True)
class _MergeOp:
    request_id: int
    left_id: int
    left_generation: int
    right_id: int
    right_generation: int
    freeze_request: int
    merge_proposed: bool = False

    @property
    def intent(self) -> MergeIntent:
        return MergeIntent(self.left_id, self.left_generation)


class MergeCoordinator:
    """Merges this store initiated, from FREEZE to MERGE applied (or refused)."""

    __slots__ = ("_by_request", "_by_right")

    def __init__(self) -> None:
        #: Invariant: one op per right-hand range id.
        self._by_right: dict[int, _MergeOp] = {}
        #: The op of every outstanding internal or client request id.
        self._by_request: dict[int, _MergeOp] = {}

    def in_progress(self, right_id: int) -> bool:
        return right_id in self._by_right

    def begin(self, host: MergeHost, request_id: int, lhs: Replica, rhs: Replica) -> None:
        op = _MergeOp(request_id, lhs.range_id, lhs.desc.generation, rhs.range_id,
                      rhs.desc.generation, host.new_request_id())
        self._by_right[rhs.range_id] = op
        self._by_request[op.freeze_request] = op
        self._by_request[request_id] = op
        host.queue_command(rhs, op.freeze_request, EntryKind.FREEZE,
                           encode_freeze(FreezeCommand(rhs.desc.generation, op.intent)))

    def freeze_applied(self, host: MergeHost, rep: Replica) -> None:
        op = self._by_right.get(rep.range_id)
        if op is None or op.merge_proposed or rep.desc.generation != op.right_generation \
                or rep.merge_intent != op.intent:
            return
        lhs = host.replica(op.left_id)
        if lhs is None:
            return
        op.merge_proposed = True
        image = b"".join(rep.sm.snapshot())
        cmd = MergeCommand(op.left_generation, rep.desc, image)
        host.queue_command(lhs, op.request_id, EntryKind.MERGE, encode_merge(cmd))

    def settle(self, host: MergeHost, done: list[Completion]) -> list[Completion]:
        """Route a round's completions (see the module docstring)."""
        if not self._by_request:
            return done
        out = []
        for c in done:
            op = self._by_request.pop(c.request_id, None)
            if op is None:
                out.append(c)
                continue
            if c.request_id == op.freeze_request:
                if c.outcome != Outcome.OK and not op.merge_proposed:
                    self._finish(op)
                    out.append(replace(c, request_id=op.request_id))
                continue
            self._finish(op)
            if c.outcome != Outcome.OK:
                host.merge_stalled(op.right_id)
            out.append(replace(c, outcome=Outcome.UNKNOWN)
                       if c.outcome == Outcome.TRYAGAIN else c)
        return out

    def _finish(self, op: _MergeOp) -> None:
        self._by_right.pop(op.right_id, None)
        self._by_request.pop(op.freeze_request, None)
        self._by_request.pop(op.request_id, None)
