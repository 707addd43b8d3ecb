"""What the leader knows about one follower's log, and how it replicates to it.

Theory of operation (etcd's progress states)
--------------------------------------------
- PROBE: the leader does not know where the follower's log matches. It sends
  at most one APPEND per heartbeat interval (``probe_sent`` pauses it) and
  walks ``next`` back using the follower's reject hints (fast backtracking).
- REPLICATE: the follower accepted an append; the leader streams entries
  optimistically, moving ``next`` past what it sent, limited by ``Inflights``.
- SNAPSHOT: the follower needs entries the leader has compacted; the leader
  sent a snapshot and sends nothing else until the snapshot is acknowledged
  or reported failed (``report_snapshot``).

Rules
-----
- Invariant: ``0 <= match < next``.
- Invariant: ``pending_snapshot != 0`` only in SNAPSHOT.
- Invariant: no inflight window unless in REPLICATE. The window object exists
  only while messages are in flight: an idle group's progress holds none.
"""

from __future__ import annotations

from enum import IntEnum

from engine.raft.tracker.inflights import Inflights


class ProgressState(IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Progress:
    """The leader's replication state for one peer (self included)."""

    __slots__ = (
        "_inflights",
        "_limits",
        "is_learner",
        "lease_stamp",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "state",
    )

    def __init__(
        self,
        next_index: int,
        limits: tuple[int, int],
        *,
        match: int = 0,
        is_learner: bool = False,
    ) -> None:
        #: Invariant: highest index known to be replicated on the peer; ``match < next``.
        self.match = match
        #: Next index to send.
        self.next = next_index
        self.state = ProgressState.PROBE
        #: Index of the snapshot in flight (SNAPSHOT state only).
        self.pending_snapshot = 0
        #: Heard from since the last check-quorum round (the leader counts itself active).
        self.recent_active = False
        #: PROBE: an append was sent and not yet answered; pauses further probes.
        self.probe_sent = False
        self.is_learner = is_learner
        #: (max messages, max bytes; 0 = unlimited) of the inflight window, shared
        #: by every progress of one tracker.
        self._limits = limits
        #: Invariant: None, or a non-empty window (REPLICATE only).
        self._inflights: Inflights | None = None
        #: Leader only: the newest send stamp (leader tick + 1) of a heartbeat this peer
        #: acknowledged in the current term; 0 if none (see ``Raft._lease_valid``).
        self.lease_stamp = 0

    def __repr__(self) -> str:
        return (
            f"Progress(match={self.match}, next={self.next}, state={self.state.name}, "
            f"pending_snapshot={self.pending_snapshot}, inflight={self.inflight_count})"
        )

    def reset(self, next_index: int, match: int = 0) -> None:
        """Forget everything (a new term): PROBE from ``next_index``."""
        self._reset_state(ProgressState.PROBE)
        self.match = match
        self.next = next_index
        self.recent_active = False
        self.lease_stamp = 0

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self._inflights = None

    def become_probe(self) -> None:
        """Go to PROBE. Coming from SNAPSHOT, resume after the snapshot if it was sent."""
        if self.state is ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, n: int) -> bool:
        """The peer acknowledged up to ``n``; returns whether ``match`` moved."""
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.probe_sent = False
        self.next = max(self.next, n + 1)
        return updated

    def sent_entries(self, last_index: int, size: int) -> None:
        """An APPEND carrying entries up to ``last_index`` (``size`` bytes) was sent."""
        if self.state is ProgressState.REPLICATE:
            self.next = last_index + 1
            inf = self._inflights
            if inf is None:
                inf = self._inflights = Inflights(*self._limits)
            inf.add(last_index, size)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """The peer rejected an append at ``rejected``; move ``next`` back using the
        hint. Returns False for a stale rejection (already superseded)."""
        if self.state is ProgressState.REPLICATE:
            # Sent optimistically: a rejection at or below match is stale.
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        # PROBE/SNAPSHOT: only the rejection of the latest probe counts.
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        """Whether the leader must hold off sending entries to this peer."""
        st = self.state
        if st is ProgressState.PROBE:
            return self.probe_sent
        if st is ProgressState.REPLICATE:
            inf = self._inflights
            return inf is not None and inf.full()
        return True

    # -- the inflight window ---------------------------------------------------------

    @property
    def inflight_count(self) -> int:
        return self._inflights.count if self._inflights is not None else 0

    @property
    def inflight_bytes(self) -> int:
        return self._inflights.bytes if self._inflights is not None else 0

    def inflights_full(self) -> bool:
        return self._inflights is not None and self._inflights.full()

    def free_inflights_le(self, index: int) -> None:
        """Acknowledged up to ``index``: free those messages (drop an empty window)."""
        inf = self._inflights
        if inf is not None:
            inf.free_le(index)
            if not inf.count:
                self._inflights = None

    def free_first_inflight(self) -> None:
        inf = self._inflights
        if inf is not None:
            inf.free_first_one()
            if not inf.count:
                self._inflights = None
