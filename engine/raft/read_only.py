"""The leader's queue of pending ReadIndex requests (thesis 6.4, SAFE option).

Theory of operation
-------------------
A read at the leader is linearizable if, after the read arrives, the leader
(1) has committed an entry of its current term, (2) records its commit index
as the read index, (3) confirms with a heartbeat round that a quorum still
follows it, and (4) the state machine has applied up to the read index.
``ReadOnly`` handles (2) and (3): ``add_request`` records the index, the
leader piggybacks the request's context on a heartbeat, ``recv_ack`` counts
the responses, and once a quorum acknowledged a context, ``advance`` releases
that request and every request queued before it (a later heartbeat round
confirms leadership for earlier reads too).

Rules
-----
- Invariant: ``queue`` and ``pending`` hold the same contexts, ``queue`` in
  arrival order.
- A duplicate context is ignored (the first request keeps its slot): callers
  must use unique request ids.
"""

from __future__ import annotations


class ReadIndexStatus:
    """One pending read: its context, the commit index when it arrived, its requester."""

    __slots__ = ("acks", "ctx", "frm", "index")

    def __init__(self, ctx: bytes, index: int, frm: int) -> None:
        self.ctx = ctx
        self.index = index
        #: The node that asked (the leader itself for a local read).
        self.frm = frm
        #: Voters that acknowledged a heartbeat carrying ``ctx``.
        self.acks: dict[int, bool] = {}


class ReadOnly:
    """Pending SAFE reads of a leader, in arrival order."""

    __slots__ = ("pending", "queue")

    def __init__(self) -> None:
        #: Invariant: same keys as ``queue``.
        self.pending: dict[bytes, ReadIndexStatus] = {}
        self.queue: list[bytes] = []

    def add_request(self, index: int, ctx: bytes, frm: int) -> None:
        if ctx in self.pending:
            return
        self.pending[ctx] = ReadIndexStatus(ctx, index, frm)
        self.queue.append(ctx)

    def recv_ack(self, node: int, ctx: bytes) -> dict[int, bool] | None:
        """Record ``node``'s heartbeat acknowledgement of ``ctx``; returns the acks so far
        (``None`` if ``ctx`` is not pending)."""
        rs = self.pending.get(ctx)
        if rs is None:
            return None
        rs.acks[node] = True
        return rs.acks

    def advance(self, ctx: bytes) -> list[ReadIndexStatus]:
        """Release ``ctx`` and every request queued before it, in order."""
        if ctx not in self.pending:
            return []
        i = self.queue.index(ctx)
        released = self.queue[: i + 1]
        del self.queue[: i + 1]
        return [self.pending.pop(c) for c in released]

    def last_pending_ctx(self) -> bytes | None:
        return self.queue[-1] if self.queue else None
