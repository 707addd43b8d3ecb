"""The Store on a seeded in-memory network of three stores (engine/testing/cluster.py)."""

from __future__ import annotations

import json

import pytest

from engine.kv import KVStateMachine
from engine.kv_codec import Get, Put, Value, decode_result, encode_command
from engine.outbox import NodeBatch
from engine.proposal import Completion, Outcome
from engine.raft.types import MessageType
from engine.range_desc import RangeDescriptor
from engine.snapshot_store import MemorySnapshotStore
from engine.store import Store, _compacted
from engine.store_config import StoreConfig
from engine.testing.cluster import Cluster, even_ranges, key_for
from logstore.factory import open_log_store
from tests.engine.example_sm import CounterMap

NODES = (1, 2, 3)


def put(c: Cluster, range_index: int, suffix: bytes, value: bytes) -> Completion | None:
    rid = range_index + 1
    leader = c.leader_of(rid)
    assert leader is not None
    key = key_for(range_index, suffix)
    req = c.stores[leader].propose(rid, encode_command(Put(key, value)), keys=[key])
    return c.wait_for(leader, req)


def get(c: Cluster, range_index: int, suffix: bytes) -> bytes | None:
    rid = range_index + 1
    leader = c.leader_of(rid)
    assert leader is not None
    key = key_for(range_index, suffix)
    req = c.stores[leader].read(rid, encode_command(Get(key)), keys=[key])
    got = c.wait_for(leader, req)
    assert got is not None and got.outcome == Outcome.OK, got
    res = decode_result(got.result)
    return getattr(res, "value", None)


def kv_items(c: Cluster, node: int, rid: int) -> list[tuple[bytes, bytes]]:
    rep = c.stores[node].replica(rid)
    assert rep is not None
    sm = rep.sm
    assert isinstance(sm, KVStateMachine)
    return list(sm.items())


def cluster(ranges: int, seed: int = 7, **cfg: object) -> Cluster:
    c = Cluster(3, seed=seed, cfg=StoreConfig(seed=seed, **cfg))  # type: ignore[arg-type]
    c.bootstrap(even_ranges(ranges, NODES))
    c.elect_all()
    return c


@pytest.mark.timeout(60)
def test_thousand_ranges_writes_and_reads_land_and_leaders_spread() -> None:
    n = 1000
    c = cluster(n)
    leaders = [c.leader_of(r) for r in range(1, n + 1)]
    for node in NODES:
        assert leaders.count(node) > n // 4, "bootstrap campaign spreads leaders"
    reqs = []
    for i in range(n):
        rid = i + 1
        leader = leaders[i]
        assert leader is not None
        key = key_for(i, b"x")
        reqs.append((leader, c.stores[leader].propose(
            rid, encode_command(Put(key, b"v%d" % i)), keys=[key])))
    c.settle()
    for leader, req in reqs:
        got = c.wait_for(leader, req)
        assert got is not None and got.outcome == Outcome.OK
    for i in range(0, n, 97):
        assert get(c, i, b"x") == b"v%d" % i
    c.settle()
    for rid in range(1, n + 1, 53):
        assert kv_items(c, 1, rid) == kv_items(c, 2, rid) == kv_items(c, 3, rid)
        assert len(kv_items(c, 1, rid)) == 1


def test_one_log_write_and_fsync_per_round_for_many_ranges() -> None:
    c = cluster(60)
    s = c.stores[1]
    led = [r for r in s.range_ids() if c.leader_of(r) == 1]
    assert len(led) >= 10
    before = (s.stats.log_writes, s.stats.fsyncs)
    for rid in led:
        key = key_for(rid - 1, b"a")
        s.propose(rid, encode_command(Put(key, b"1")), keys=[key])
    out = s.process()
    assert (s.stats.log_writes, s.stats.fsyncs) == (before[0] + 1, before[1] + 1)
    appends = [m for b in out.outgoing.values() for _, m in b.messages
               if m.type == MessageType.APPEND]
    assert len(appends) == 2 * len(led)
    assert set(out.outgoing) == {2, 3}, "one batch per destination node"


def test_reads_of_one_range_share_one_read_index_round() -> None:
    c = cluster(3)
    assert put(c, 0, b"a", b"1") is not None
    leader = c.leader_of(1)
    assert leader is not None
    s = c.stores[leader]
    key = key_for(0, b"a")
    reqs = [s.read(1, encode_command(Get(key)), keys=[key]) for _ in range(5)]
    s.process()
    rep = s.replica(1)
    assert rep is not None and len(rep.reads_by_ctx) == 1
    for r in reqs:
        got = c.wait_for(leader, r)
        assert got is not None and got.outcome == Outcome.OK
        assert decode_result(got.result) == Value(b"1")


def test_follower_refuses_proposals_with_a_leader_hint() -> None:
    c = cluster(3)
    leader = c.leader_of(1)
    follower = next(n for n in NODES if n != leader)
    key = key_for(0, b"a")
    req = c.stores[follower].propose(1, encode_command(Put(key, b"1")), keys=[key])
    got = c.wait_for(follower, req)
    assert got == Completion(req, Outcome.TRYAGAIN, leader_hint=leader)


def test_key_outside_range_stale_generation_and_unknown_range_are_mismatches() -> None:
    c = cluster(3)
    s = c.stores[1]
    desc = s.replica(1)
    assert desc is not None
    outside = key_for(2, b"a")
    r1 = s.propose(1, encode_command(Put(outside, b"1")), keys=[outside])
    r2 = s.read(1, b"", generation=desc.desc.generation + 1)
    r3 = s.propose(999, b"")
    out = s.process()
    by_id = {c.request_id: c for c in out.completions}
    assert by_id[r1].outcome == Outcome.MISMATCH and by_id[r1].descriptor == desc.desc
    assert by_id[r2].outcome == Outcome.MISMATCH
    assert by_id[r3] == Completion(r3, Outcome.MISMATCH)


def test_idle_ranges_quiesce_to_zero_messages_and_wake_on_traffic() -> None:
    c = cluster(200)
    assert put(c, 5, b"a", b"1") is not None
    c.run(5)
    assert all(s.ticking_count() == 0 for s in c.stores.values())
    c.settle()
    assert not any(s.has_work() for s in c.stores.values())
    before = c.messages_delivered
    c.run(50)
    assert c.messages_delivered == before, "a quiesced cluster sends nothing"
    got = put(c, 5, b"b", b"2")
    assert got is not None and got.outcome == Outcome.OK
    assert get(c, 5, b"a") == b"1"
    c.run(5)
    assert all(s.ticking_count() == 0 for s in c.stores.values()), "re-quiesces"


def test_dead_leader_node_wakes_its_followers_who_elect_others_stay_quiet() -> None:
    c = cluster(60)
    c.run(5)
    led_by_1 = [r for r in range(1, 61) if c.leader_of(r) == 1]
    c.crash(1)
    for n in (2, 3):
        c.stores[n].node_dead(1)
    awake = sum(s.ticking_count() for s in c.stores.values())
    assert awake == 2 * len(led_by_1), "only followers of the dead leader wake"
    for _ in range(60):
        c.run(1)
        if all(c.leader_of(r) in (2, 3) for r in led_by_1):
            break
    assert all(c.leader_of(r) in (2, 3) for r in led_by_1)
    got = put(c, led_by_1[0] - 1, b"z", b"after")
    assert got is not None and got.outcome == Outcome.OK
    c.run(10)
    assert all(s.ticking_count() == 0 for s in c.stores.values()), \
        "ranges quiesce again without waiting for the dead node"


def test_isolated_leader_proposal_is_tryagain_once_overwritten() -> None:
    c = cluster(1, proposal_timeout_ticks=500)
    old = c.leader_of(1)
    assert old is not None
    for n in NODES:
        if n != old:
            c.partition(old, n)
    key = key_for(0, b"k")
    req = c.stores[old].propose(1, encode_command(Put(key, b"lost")), keys=[key])
    c.run(40)
    new = c.leader_of(1)
    assert new is not None and new != old
    assert put(c, 0, b"k", b"won") is not None
    c.heal()
    got = c.wait_for(old, req)
    assert got is not None and got.outcome == Outcome.TRYAGAIN
    assert get(c, 0, b"k") == b"won"


def test_unresolved_proposal_times_out_unknown() -> None:
    c = cluster(1, proposal_timeout_ticks=20)
    leader = c.leader_of(1)
    assert leader is not None
    for n in NODES:
        if n != leader:
            c.partition(leader, n)
    key = key_for(0, b"k")
    req = c.stores[leader].propose(1, encode_command(Put(key, b"x")), keys=[key])
    got = c.wait_for(leader, req, max_ticks=40)
    assert got is not None and got.outcome == Outcome.UNKNOWN


def test_early_send_hands_out_pre_votes_before_the_write() -> None:
    early: list[dict[int, NodeBatch]] = []
    s = Store(1, open_log_store("memory"), MemorySnapshotStore(),
              lambda d: KVStateMachine(d.start_key, d.end_key), early_send=early.append)
    s.bootstrap([RangeDescriptor(range_id=3, start_key=b"", end_key=b"", voters=NODES)],
                campaign=False)
    rep = s.replica(3)
    assert rep is not None
    rep.raw.campaign()
    s.tick()
    out = s.process()
    votes = [m for batches in early for b in batches.values() for _, m in b.messages]
    assert votes and all(m.type == MessageType.PRE_VOTE for m in votes), \
        "pre-votes may leave before the write; nothing else was sent early"
    assert not any(b.messages for b in out.outgoing.values())


def test_bootstrap_leads_by_agreement_without_an_election() -> None:
    """Range 3: voter 3 mod 3 = 0 (node 1) holds every voter's initial vote, so it
    leads at once and its first messages are appends, never votes."""
    early: list[dict[int, NodeBatch]] = []
    s = Store(1, open_log_store("memory"), MemorySnapshotStore(),
              lambda d: KVStateMachine(d.start_key, d.end_key), early_send=early.append)
    s.bootstrap([RangeDescriptor(range_id=3, start_key=b"", end_key=b"", voters=NODES),
                 RangeDescriptor(range_id=4, start_key=b"", end_key=b"", voters=NODES)])
    lead, follow = s.replica(3), s.replica(4)
    assert lead is not None and lead.is_leader
    assert follow is not None and not follow.is_leader and follow.raw.raft.vote == 2
    s.process()
    sent = [(rid, m) for batches in early for b in batches.values() for rid, m in b.messages]
    assert sent and {rid for rid, _ in sent} == {3}
    assert all(m.type == MessageType.APPEND for _, m in sent)
    assert {m.to for _, m in sent} == {2, 3}


def test_a_second_state_machine_plugs_in() -> None:
    c = Cluster(3, seed=3, sm_factory=lambda d: CounterMap(d.start_key, d.end_key))
    c.bootstrap([RangeDescriptor(range_id=1, start_key=b"", end_key=b"", voters=NODES)])
    c.elect_all()
    leader = c.leader_of(1)
    assert leader is not None
    s = c.stores[leader]
    for _ in range(3):
        req = s.propose(1, json.dumps({"op": "add", "name": "hits", "by": 2}).encode())
        got = c.wait_for(leader, req)
        assert got is not None and got.outcome == Outcome.OK
        assert "value" in json.loads(got.result)
    req = s.read(1, json.dumps({"op": "get", "name": "hits"}).encode())
    got = c.wait_for(leader, req)
    assert got is not None and json.loads(got.result) == {"value": 6}


def test_bootstrap_is_idempotent_and_close_answers_pending_requests() -> None:
    c = cluster(3)
    s = c.stores[1]
    assert s.bootstrap(even_ranges(3, NODES)) == 0, "existing ranges are not recreated"
    leader = c.leader_of(1)
    assert leader is not None
    for n in NODES:
        if n != leader:
            c.partition(leader, n)
    key = key_for(0, b"a")
    req = c.stores[leader].propose(1, encode_command(Put(key, b"1")), keys=[key])
    c.round()
    assert c.stores[leader].close() == [Completion(req, Outcome.UNKNOWN)]


def test_node_alive_wakes_quiesced_leaders_to_catch_the_node_up() -> None:
    c = cluster(30)
    c.crash(3)
    for n in (1, 2):
        c.stores[n].node_dead(3)
    c.run(40)  # ranges led by 3 elect elsewhere; then all quiesce without node 3
    assert all(c.leader_of(r) in (1, 2) for r in range(1, 31))
    assert put(c, 4, b"late", b"1") is not None
    c.run(5)
    assert all(c.stores[n].ticking_count() == 0 for n in (1, 2))
    c.restart(3)
    for n in (1, 2):
        c.stores[n].node_alive(3)
    c.run(30)
    assert kv_items(c, 3, 5) == kv_items(c, 1, 5) and len(kv_items(c, 3, 5)) == 1
    assert all(s.ticking_count() == 0 for s in c.stores.values())


def test_shrunken_scheduler_sets_are_rebuilt() -> None:
    """A private helper with a cost invariant: idle ticks must not scan old capacity."""
    big = set(range(1000))
    same, high = _compacted(big, 0)
    assert same is big and high == 1000
    small = {1, 2}
    rebuilt, high = _compacted(small, 1000)
    assert rebuilt == small and rebuilt is not small and high == 2


def test_split_round_steps_arrivals_while_the_write_is_in_flight() -> None:
    c = Cluster(3, seed=7, cfg=StoreConfig(seed=7), overlap=True)
    c.bootstrap(even_ranges(20, NODES))
    c.elect_all()
    got = put(c, 3, b"a", b"1")
    assert got is not None and got.outcome == Outcome.OK
    assert get(c, 3, b"a") == b"1"
    s = c.stores[1]
    rnd = s.begin_round()
    with pytest.raises(AssertionError):
        s.begin_round()
    s.step_arrivals()
    s.finish_round(rnd)
