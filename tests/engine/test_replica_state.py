"""Initial records, recovery repair and leftover detection (engine/replica_state.py)."""

from __future__ import annotations

from engine.kv import KVStateMachine
from engine.raft.types import ConfState
from engine.range_desc import RangeDescriptor
from engine.replica_state import (
    INITIAL_INDEX,
    INITIAL_TERM,
    recover,
    repair_log,
    superseded,
    write_initial_states,
)
from engine.snapshot_store import MemorySnapshotStore, SnapshotRecord
from engine.store import Store
from engine.store_config import StoreConfig
from logstore.factory import open_log_store
from logstore.protocol import HardState, WriteBatch

NODES = (1, 2, 3)


def kv(d: RangeDescriptor) -> KVStateMachine:
    return KVStateMachine(d.start_key, d.end_key)


def test_initial_state_then_recover() -> None:
    log, snaps = open_log_store("memory"), MemorySnapshotStore()
    desc = RangeDescriptor(range_id=4, start_key=b"a", end_key=b"z", voters=NODES)
    conf = ConfState(voters=NODES)
    wb = WriteBatch()
    write_initial_states([(desc, conf, kv(desc), 0)], snaps, wb)
    log.write(wb)
    assert log.hard_state(4) == HardState(INITIAL_TERM, 0, INITIAL_INDEX)
    rep = recover(2, 4, log=log, snapshots=snaps, sm_factory=kv, cfg=StoreConfig())
    assert rep.desc == desc and rep.conf_state == conf and rep.raw.applied == INITIAL_INDEX


def test_repair_moves_the_log_up_to_a_newer_image() -> None:
    log = open_log_store("memory")
    desc = RangeDescriptor(range_id=4, start_key=b"", end_key=b"", voters=NODES)
    repair_log(log, SnapshotRecord(4, 30, 7, desc, ConfState(voters=NODES)))
    assert (log.first_index(4), log.last_index(4), log.term(4, 30)) == (31, 30, 7)
    assert log.hard_state(4) == HardState(7, 0, 30)


def test_lower_generation_overlaps_are_leftovers() -> None:
    log, snaps = open_log_store("memory"), MemorySnapshotStore()
    s = Store(1, log, snaps, kv)
    merged = RangeDescriptor(range_id=1, start_key=b"", end_key=b"", voters=NODES, generation=3)
    stale = RangeDescriptor(range_id=2, start_key=b"m", end_key=b"", voters=NODES, generation=2)
    other = RangeDescriptor(range_id=3, start_key=b"", end_key=b"", voters=(4, 5, 6))
    s.bootstrap([merged, stale, other], campaign=False)
    reps = [s.replica(1), s.replica(2)]
    assert all(r is not None for r in reps)
    assert superseded([r for r in reps if r is not None]) == [s.replica(2)]
    # A Store recovering over this state drops the leftover at once.
    again = Store(1, log, snaps, kv)
    assert again.range_ids() == [1]
