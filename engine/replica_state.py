"""A replica's durable state: creating a new range's initial records, recovering a
replica after a restart, and spotting leftovers.

Rules
-----
- A new range (bootstrap, or a split's right-hand side) starts from an initial
  snapshot at ``(INITIAL_INDEX, INITIAL_TERM)`` with its membership, as
  CockroachDB does: no replica ever has an empty log *and* no membership, and
  every replica of the range starts from the same position and data.
- The image is saved *before* the log records are written: a range is only
  recovered if it has an image (``SnapshotStore.range_ids``), so a crash in
  between leaves only unreachable log records.
- Recovery starts a replica from its newest durable image (``applied`` = the
  image's index, membership as of the image) and lets raft replay the log
  after it. If a crash separated saving an installed snapshot's image from
  writing its log record, the log is repaired to agree with the image first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Final

from engine.meta_codec import META_RANGE_ID
from engine.raft.types import ConfState
from engine.raft_log import encode_conf_state
from engine.range_desc import RangeDescriptor
from engine.replica import Replica
from engine.snapshot_store import SnapshotRecord, SnapshotStore
from engine.statemachine import StateMachine
from engine.store_config import StoreConfig
from logstore.protocol import HardState as LogHardState
from logstore.protocol import LogStore, SnapshotMeta, WriteBatch

INITIAL_INDEX: Final = 5
INITIAL_TERM: Final = 5

SMFactory = Callable[[RangeDescriptor], StateMachine]


def write_initial_states(
    ranges: Sequence[tuple[RangeDescriptor, ConfState, StateMachine, int]],
    snapshots: SnapshotStore, wb: WriteBatch,
) -> None:
    """Save each state machine's image as its range's initial snapshot (all in one
    ``save_many``: one sync, however many ranges) and add the matching log records to
    ``wb`` (the caller writes it, synced, before creating the replicas). The last item
    of each tuple is the vote of the initial hard state (0: none; see
    ``Store.bootstrap`` for the pre-agreed leader)."""
    snapshots.save_many([
        (SnapshotRecord(desc.range_id, INITIAL_INDEX, INITIAL_TERM, desc, conf), sm.snapshot())
        for desc, conf, sm, _ in ranges])
    for desc, conf, _, vote in ranges:
        rid = desc.range_id
        wb.set_snapshot(rid, SnapshotMeta(INITIAL_INDEX, INITIAL_TERM, encode_conf_state(conf)))
        wb.set_hard_state(rid, LogHardState(INITIAL_TERM, vote, INITIAL_INDEX))


def recover(
    node_id: int, range_id: int, *, log: LogStore, snapshots: SnapshotStore,
    sm_factory: SMFactory, cfg: StoreConfig,
) -> Replica:
    """Rebuild a replica from its newest durable image and the log after it."""
    got = snapshots.load(range_id)
    assert got is not None, f"r{range_id} listed without an image"
    rec, chunks = got
    sm = sm_factory(rec.descriptor)
    sm.restore(chunks)
    repair_log(log, rec)
    return Replica(
        node_id=node_id, desc=rec.descriptor, sm=sm, log=log, snapshots=snapshots,
        applied=rec.index, conf_state=rec.conf_state, cfg=cfg, frozen=rec.frozen,
        merge_intent=rec.merge_intent,
    )


def repair_log(log: LogStore, rec: SnapshotRecord) -> None:
    """Make the log agree with a durable image newer than it."""
    rid = rec.range_id
    assert log.first_index(rid) <= rec.index + 1, f"r{rid}: log compacted past its image"
    wb = WriteBatch()
    if log.last_index(rid) < rec.index:
        wb.set_snapshot(rid, SnapshotMeta(rec.index, rec.term, encode_conf_state(rec.conf_state)))
    hs = log.hard_state(rid) or LogHardState()
    if hs.commit < rec.index:
        term = max(hs.term, rec.term)
        wb.set_hard_state(rid, LogHardState(term, hs.vote if term == hs.term else 0, rec.index))
    if wb:
        log.write(wb, sync=True)


def superseded(replicas: Iterable[Replica]) -> list[Replica]:
    """Replicas whose span overlaps one of a higher generation: leftovers (a merged
    right-hand range whose removal a crash interrupted). One sweep by start key. The
    meta range's span is nominal (``engine/meta_codec.py``): it is never swept."""
    losers: list[Replica] = []
    prev: Replica | None = None
    user = (r for r in replicas if r.range_id != META_RANGE_ID)
    for rep in sorted(user, key=lambda r: r.desc.start_key):
        if prev is not None and (not prev.desc.end_key or rep.desc.start_key < prev.desc.end_key):
            if prev.desc.generation < rep.desc.generation:
                losers.append(prev)
                prev = rep
            else:
                losers.append(rep)
        else:
            prev = rep
    return losers
