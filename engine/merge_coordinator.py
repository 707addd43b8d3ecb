"""The initiating store's side of a merge: FREEZE, then MERGE, or UNFREEZE on refusal.

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
client if the FREEZE did not happen, and unfreezes the right-hand range if
the MERGE definitely did not apply (ERROR or TRYAGAIN). After an UNKNOWN
outcome the right-hand range stays frozen: the merge may still apply.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from engine.proposal import Completion, EntryKind, Outcome
from engine.replica import Replica
from engine.split_merge import MergeCommand, encode_generation, encode_merge


class MergeHost(Protocol):
    """What the coordinator needs of its Store."""

    def replica(self, range_id: int) -> Replica | None: ...

    def new_request_id(self) -> int: ...

    def queue_command(
        self, rep: Replica, request_id: int, kind: EntryKind, payload: bytes
    ) -> None: ...


@dataclass(slots=True)
class _MergeOp:
    request_id: int
    left_id: int
    left_generation: int
    right_id: int
    right_generation: int
    freeze_request: int
    merge_proposed: bool = False
    unfreeze_request: int = 0


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
                           encode_generation(rhs.desc.generation))

    def freeze_applied(self, host: MergeHost, rep: Replica) -> None:
        op = self._by_right.get(rep.range_id)
        if op is None or op.merge_proposed or rep.desc.generation != op.right_generation:
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
            if c.request_id == op.unfreeze_request:
                continue
            self._finish(op)
            if c.outcome in (Outcome.ERROR, Outcome.TRYAGAIN):
                self._unfreeze(host, op)
            out.append(c)
        return out

    def _finish(self, op: _MergeOp) -> None:
        self._by_right.pop(op.right_id, None)
        self._by_request.pop(op.freeze_request, None)
        self._by_request.pop(op.request_id, None)

    def _unfreeze(self, host: MergeHost, op: _MergeOp) -> None:
        """The merge definitely did not apply: the right-hand range takes writes again."""
        rhs = host.replica(op.right_id)
        if rhs is None:
            return
        op.unfreeze_request = host.new_request_id()
        self._by_request[op.unfreeze_request] = op
        host.queue_command(rhs, op.unfreeze_request, EntryKind.UNFREEZE,
                           encode_generation(op.right_generation))
