"""``StoreConfig``: the tunables of one ``Store`` (validated when built).

Ticks are the Store's unit of time: the caller decides how long one is
(``[raft] tick_ms``). Every deadline below is in ticks of the Store's own
clock, which advances only when ``Store.tick()`` is called.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreConfig:
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    #: Whether the worker may turn on lease reads (``Store.use_lease_reads``; needs
    #: ``check_quorum``). The Store itself serves them only once told to.
    lease_reads: bool = True
    #: Pack per-range heartbeats into one record per node pair (off: the baseline).
    coalesce_heartbeats: bool = True
    #: Stop ticking idle ranges (CockroachDB's quiescence).
    quiesce: bool = True
    #: A proposal not resolved within this many ticks is answered UNKNOWN.
    proposal_timeout_ticks: int = 100
    #: A read not served within this many ticks is answered TRYAGAIN.
    read_timeout_ticks: int = 50
    #: Take a durable state-machine snapshot and compact the log once this many
    #: entries were applied since the last one (0: never).
    snapshot_entries: int = 10_000
    #: Snapshot bytes a store streams per round, over all followers (rate limit).
    snapshot_bytes_per_round: int = 4 << 20
    #: Max bytes of one raft APPEND message.
    max_size_per_msg: int = 1 << 20
    #: A frozen range (a merge in progress) is looked at by the merge resolver this
    #: many ticks after it froze, and again every as many ticks while it stays frozen.
    merge_resolve_ticks: int = 30
    #: Seeds each replica's election-timeout RNG (combined with node and range id).
    seed: int = 0

    def __post_init__(self) -> None:
        if self.heartbeat_ticks < 1 or self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("need 1 <= heartbeat_ticks < election_ticks")
        for name in ("proposal_timeout_ticks", "read_timeout_ticks", "snapshot_bytes_per_round",
                     "merge_resolve_ticks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.snapshot_entries < 0:
            raise ValueError("snapshot_entries must be >= 0")
