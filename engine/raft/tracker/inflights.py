"""The window of APPEND messages in flight to one follower, bounded by count AND bytes.

Theory of operation
-------------------
In the replicate state the leader sends entries optimistically, without
waiting for acknowledgements; ``Inflights`` remembers, per message, the last
index it carried and its entry bytes. An acknowledgement up to index ``i``
frees every message whose last index is ``<= i``. When the window is full
(``max_count`` messages or ``max_bytes`` bytes, 0 = no byte limit) the leader
pauses sending to that follower. This is the flow control that keeps a slow
follower from making the leader buffer unbounded data (etcd ``Inflights``).

Rules
-----
- Invariant: the recorded last indexes are strictly increasing.
- Invariant: ``count == len(_queue)`` and ``bytes == sum of queued sizes``.
- The queue is created on first use and dropped when empty: an idle group
  pays only for this small object.
"""

from __future__ import annotations

from collections import deque


class Inflights:
    """A FIFO of (last index, bytes) for unacknowledged APPEND messages."""

    __slots__ = ("_queue", "bytes", "max_bytes", "max_count")

    def __init__(self, max_count: int, max_bytes: int = 0) -> None:
        self.max_count = max_count
        #: 0 means no byte limit.
        self.max_bytes = max_bytes
        #: Invariant: ``bytes`` is the sum of the sizes in ``_queue``.
        self.bytes = 0
        #: Invariant: last indexes strictly increase front to back; ``None`` when empty.
        self._queue: deque[tuple[int, int]] | None = None

    @property
    def count(self) -> int:
        return len(self._queue) if self._queue is not None else 0

    def add(self, last_index: int, size: int) -> None:
        """Record a message carrying entries up to ``last_index`` totalling ``size`` bytes."""
        q = self._queue
        if q is None:
            q = self._queue = deque()
        assert not q or q[-1][0] < last_index, "inflight indexes must increase"
        q.append((last_index, size))
        self.bytes += size

    def free_le(self, index: int) -> None:
        """Free every message whose last index is ``<= index`` (they were acknowledged)."""
        q = self._queue
        if q is None:
            return
        freed = 0
        while q and q[0][0] <= index:
            freed += q.popleft()[1]
        self.bytes -= freed
        if not q:
            self._queue = None
            self.bytes = 0

    def free_first_one(self) -> None:
        """Free the oldest message: a heartbeat response proves the follower is alive,
        so a full window whose acknowledgements were lost must not stall forever."""
        q = self._queue
        if q:
            self.free_le(q[0][0])

    def full(self) -> bool:
        """Whether no further message may be sent until some are acknowledged."""
        q = self._queue
        if q is None:
            return False
        return len(q) >= self.max_count or (0 < self.max_bytes <= self.bytes)

    def reset(self) -> None:
        self._queue = None
        self.bytes = 0
