"""One replica: proposal batching and resolution, snapshot data codec."""

from __future__ import annotations

from engine.kv import KVStateMachine
from engine.kv_codec import Put, decode_result, encode_command
from engine.proposal import Completion, EntryKind, Outcome, PendingRead, wrap
from engine.raft.types import Entry
from engine.range_desc import RangeDescriptor
from engine.replica import (
    decode_snapshot_data,
    decode_snapshot_head,
    encode_snapshot_data,
    replica_seed,
)
from engine.snapshot_store import MemorySnapshotStore
from engine.split_merge import (
    FreezeCommand,
    MergeCommand,
    MergeIntent,
    SplitCommand,
    encode_freeze,
    encode_merge,
    encode_split,
)
from engine.store import Store
from logstore.factory import open_log_store

DESC = RangeDescriptor(range_id=3, start_key=b"", end_key=b"", voters=(1,))


def single_node_store() -> Store:
    s = Store(1, open_log_store("memory"), MemorySnapshotStore(),
              lambda d: KVStateMachine(d.start_key, d.end_key))
    s.bootstrap([DESC])
    for _ in range(5):
        s.process()
    rep = s.replica(3)
    assert rep is not None and rep.is_leader
    return s


def test_proposals_of_a_round_go_in_one_batch_and_complete_in_order() -> None:
    s = single_node_store()
    rep = s.replica(3)
    assert rep is not None
    last = rep.raw.last_index
    reqs = [s.propose(3, encode_command(Put(b"k%d" % i, b"v"))) for i in range(4)]
    done: list[Completion] = []
    for _ in range(5):
        done.extend(s.process().completions)
    assert [c.request_id for c in done] == reqs
    assert all(c.outcome == Outcome.OK for c in done)
    assert decode_result(done[0].result) == decode_result(done[1].result)
    assert rep.raw.last_index == last + 4


def test_a_different_entry_at_the_index_means_tryagain() -> None:
    s = single_node_store()
    rep = s.replica(3)
    assert rep is not None
    req = s.propose(3, encode_command(Put(b"k", b"v")))
    rep.flush_proposals(deadline=100, done=[])
    index = rep.raw.last_index
    pending = rep.proposals[index]
    done: list[Completion] = []
    # Same index and proposal id, other term: another leader's entry (Log Matching).
    foreign = wrap(EntryKind.USER, 1, pending.proposal_id, encode_command(Put(b"k", b"w")))
    rep.apply([Entry(pending.term + 1, index, 0, foreign)], done, s)
    assert done == [Completion(req, Outcome.TRYAGAIN, leader_hint=1)]
    assert not rep.proposals


def test_snapshot_data_carries_the_descriptor_and_freeze() -> None:
    data = encode_snapshot_data(DESC, True, b"image")
    assert decode_snapshot_data(data) == (DESC, True, b"image")


def test_replica_seeds_differ_across_nodes_and_ranges() -> None:
    seeds = {replica_seed(0, n, r) for n in range(1, 4) for r in range(1, 100)}
    assert len(seeds) == 3 * 99


def test_a_read_whose_key_moved_away_is_a_mismatch() -> None:
    s = Store(1, open_log_store("memory"), MemorySnapshotStore(),
              lambda d: KVStateMachine(d.start_key, d.end_key))
    narrow = RangeDescriptor(range_id=3, start_key=b"a", end_key=b"m", voters=(1,))
    s.bootstrap([narrow])
    rep = s.replica(3)
    assert rep is not None
    applied = rep.raw.applied
    rep.reads_ready = [PendingRead(1, b"q", 100, (b"q",), applied),
                       PendingRead(2, b"", 100, (b"b",), applied + 1)]
    done: list[Completion] = []
    rep.serve_reads(done)
    assert done == [Completion(1, Outcome.MISMATCH, descriptor=narrow)]
    assert [r.request_id for r in rep.reads_ready] == [2], "still waiting for apply"


def run_command(s: Store, rid: int, kind: EntryKind, payload: bytes) -> Completion:
    rep = s.replica(rid)
    assert rep is not None
    req = s.new_request_id()
    s.queue_command(rep, req, kind, payload)
    for _ in range(5):
        for c in s.process().completions:
            if c.request_id == req:
                return c
    raise AssertionError("the command never completed")


def test_freeze_records_its_intent_and_a_frozen_range_is_final() -> None:
    """A frozen range refuses another FREEZE, splits and merges (its image is final);
    only the UNFREEZE of its own intent unfreezes it."""
    s = single_node_store()
    rep = s.replica(3)
    assert rep is not None
    intent = MergeIntent(9, 4)
    freeze = encode_freeze(FreezeCommand(DESC.generation, intent))
    assert run_command(s, 3, EntryKind.FREEZE, freeze).outcome == Outcome.OK
    assert rep.frozen and rep.merge_intent == intent
    other = encode_freeze(FreezeCommand(DESC.generation, MergeIntent(9, 5)))
    for kind, payload in (
        (EntryKind.FREEZE, other),
        (EntryKind.SPLIT, encode_split(SplitCommand(50, DESC.generation, b"m"))),
        (EntryKind.UNFREEZE, other),
    ):
        got = run_command(s, 3, kind, payload)
        assert got.outcome == Outcome.ERROR, kind
    assert rep.frozen and rep.merge_intent == intent and rep.desc == DESC
    assert run_command(s, 3, EntryKind.UNFREEZE, freeze).outcome == Outcome.OK
    assert not rep.frozen and rep.merge_intent is None


def test_a_merge_refused_at_its_planned_generation_kills_the_intent() -> None:
    """Refused for differing replica sets at the planned generation: the left-hand
    generation moves, so no MERGE of that intent can ever apply later."""
    s = single_node_store()
    rep = s.replica(3)
    assert rep is not None
    left = RangeDescriptor(range_id=3, start_key=b"", end_key=b"m", voters=(1,))
    rep.desc = left
    right = RangeDescriptor(range_id=4, start_key=b"m", end_key=b"", voters=(1, 2))
    cmd = encode_merge(MergeCommand(left.generation, right, b""))
    got = run_command(s, 3, EntryKind.MERGE, cmd)
    assert got.outcome == Outcome.ERROR and b"replica sets differ" in got.result
    assert rep.desc.generation == left.generation + 1
    same = RangeDescriptor(range_id=4, start_key=b"m", end_key=b"", voters=(1,))
    late = encode_merge(MergeCommand(left.generation, same, b""))
    assert run_command(s, 3, EntryKind.MERGE, late).outcome == Outcome.ERROR
    assert rep.desc.end_key == b"m", "the dead intent's MERGE did not apply"


def test_snapshot_data_carries_the_merge_intent() -> None:
    data = encode_snapshot_data(DESC, True, b"image", MergeIntent(7, 2))
    assert decode_snapshot_head(data)[:3] == (DESC, True, MergeIntent(7, 2))
    assert decode_snapshot_data(data) == (DESC, True, b"image")
