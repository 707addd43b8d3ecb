"""The validated configuration of one raft node (one replica of one group).

Rules
-----
- A ``Config`` is immutable and validated when built: a bad value raises
  ``InvalidConfig`` at construction, never later inside the state machine.
- Lease-based reads are only safe when the leader steps down on losing its
  quorum (thesis 6.4.1), so ``LEASE_BASED`` requires ``check_quorum``.
- Sizes are in bytes as counted by ``types.entry_size`` (payload plus a fixed
  per-entry overhead); ``0`` means unlimited where documented.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from engine.raft.errors import RaftError


class InvalidConfig(RaftError, ValueError):
    """A ``Config`` field is out of range or inconsistent with another field."""


class ReadOnlyOption(IntEnum):
    """How the leader confirms it is still leader before serving a read (thesis 6.4)."""

    #: Exchange a heartbeat round with a quorum for each batch of reads (ReadIndex).
    SAFE = 0
    #: Trust the leader lease kept by check-quorum (depends on bounded clock drift).
    LEASE_BASED = 1


@dataclass(frozen=True, slots=True)
class Config:
    """Parameters of one raft node. ``id`` must be >= 1 and unique in the group.

    Timeouts are in ticks: the caller decides how long a tick is. The election
    timeout is drawn uniformly from ``[election_ticks, 2 * election_ticks)``.
    """

    id: int
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    rng_seed: int = 0
    #: Upper bound of the entries' bytes in one APPEND (at least one entry is always sent).
    max_size_per_msg: int = 1 << 20
    #: Max APPEND messages in flight to one follower in the replicate state.
    max_inflight_msgs: int = 256
    #: Max entry bytes in flight to one follower (0 = unlimited).
    max_inflight_bytes: int = 0
    #: Max bytes of uncommitted entries the leader accepts (0 = unlimited).
    max_uncommitted_size: int = 0
    #: Max bytes of committed entries handed out in one ``Ready``.
    max_committed_size_per_ready: int = 1 << 24
    pre_vote: bool = True
    check_quorum: bool = True
    read_only_option: ReadOnlyOption = ReadOnlyOption.SAFE
    #: Followers drop proposals instead of forwarding them to the leader.
    disable_proposal_forwarding: bool = False
    #: The last applied index when restarting (entries up to it are not handed out again).
    applied: int = 0

    def __post_init__(self) -> None:
        if self.id < 1:
            raise InvalidConfig(f"id must be >= 1, got {self.id}")
        if self.heartbeat_ticks < 1:
            raise InvalidConfig(f"heartbeat_ticks must be >= 1, got {self.heartbeat_ticks}")
        if self.election_ticks <= self.heartbeat_ticks:
            raise InvalidConfig(
                f"election_ticks ({self.election_ticks}) must be greater than "
                f"heartbeat_ticks ({self.heartbeat_ticks})"
            )
        if self.max_inflight_msgs < 1:
            raise InvalidConfig(f"max_inflight_msgs must be >= 1, got {self.max_inflight_msgs}")
        for name in ("max_size_per_msg", "max_inflight_bytes", "max_uncommitted_size",
                     "applied"):
            if getattr(self, name) < 0:
                raise InvalidConfig(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_committed_size_per_ready < 1:
            raise InvalidConfig("max_committed_size_per_ready must be >= 1")
        if not isinstance(self.read_only_option, ReadOnlyOption):
            raise InvalidConfig(f"unknown read_only_option {self.read_only_option!r}")
        if self.read_only_option is ReadOnlyOption.LEASE_BASED and not self.check_quorum:
            raise InvalidConfig("read_only_option LEASE_BASED requires check_quorum=True")
