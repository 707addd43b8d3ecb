"""Placement: new replicas to the least-loaded worker (only with a complete view, sticky),
the size/load split and cold-merge planner and its loop, over hand-made reports and a fake
clock."""

from __future__ import annotations

import asyncio

import pytest

from engine.admin.backend import Conflict
from engine.meta_codec import META_RANGE_ID
from engine.placement import (
    MAX_SPLITS_PER_PASS,
    LeaderBalancer,
    LeaderMove,
    MergeDecision,
    PlacementLoop,
    ReplicaPlacement,
    SplitDecision,
    SplitPlanner,
    SplitPolicy,
)
from engine.range_desc import RangeDescriptor
from engine.worker_protocol import RangeReport, WorkerReport

pytestmark = pytest.mark.timeout(10)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def span(rid: int) -> RangeDescriptor:
    """Range ``rid`` of the test's key space: ``[rid, rid + 1)`` as one-byte keys."""
    return RangeDescriptor(range_id=rid, start_key=bytes([rid]), end_key=bytes([rid + 1]),
                           voters=(1, 2, 3))


class Node:
    """The node's side of ``ReplicaPlacement``: an owner map, per-worker replicas (range
    ids, each with its ``span``) and a directory that knows every range by default."""

    def __init__(self, held: list[set[int]]) -> None:
        self.held = held
        self.directory: dict[int, RangeDescriptor] = {rid: span(rid) for rid in range(1, 60)}
        self.owner: dict[int, int] = {rid: i for i, hs in enumerate(held) for rid in hs}
        self.clock = Clock()
        self.p = ReplicaPlacement(1, self.owner, len(held), self.reports, self.directory.get,
                                  pin_s=10.0, clock=self.clock)
        for i in range(len(held)):
            self.p.started(i)

    def reports(self, worker: int) -> dict[int, RangeReport]:
        return {rid: rr(rid) for rid in self.held[worker]}

    def report_all(self) -> None:
        for i in range(len(self.held)):
            self.p.reported(i)


def test_nothing_is_placed_until_every_worker_reported() -> None:
    n = Node([{1, 2}, {3}])
    assert n.p.place(9) is None
    n.p.reported(0)
    assert n.p.place(9) is None, "worker 1 has not reported: its replicas are unknown"
    n.p.reported(1)
    assert n.p.place(9) == 1
    assert n.owner[9] == 1, "remembered in the owner map at once"


def test_a_restarted_worker_blocks_new_placements_until_it_reports() -> None:
    n = Node([set(), set()])
    n.report_all()
    n.p.started(0)
    assert n.p.place(5) is None
    n.p.reported(0)
    assert n.p.place(5) == 0


def test_least_loaded_counts_placements_not_reported_yet() -> None:
    n = Node([{1}, {2, 3}, {4}])
    n.report_all()
    assert n.p.place(10) == 0
    assert n.p.place(11) == 2, "worker 0 has 1 + the pending range 10"
    assert n.p.place(12) == 0
    assert n.p.pinned() == {10: 0, 11: 2, 12: 0}


def test_a_pin_survives_a_stale_report_dropping_the_owner_entry() -> None:
    n = Node([set(), {1, 2}])
    n.report_all()
    assert n.p.place(7) == 0
    del n.owner[7]                  # a report written before the replica existed
    n.held[0].clear()
    n.held[1].clear()               # now worker 1 would look less loaded...
    n.held[0].update({20, 21})
    assert n.p.place(7) == 0, "...but routing never flips while the pin lasts"
    assert n.owner[7] == 0


def test_an_expired_pin_of_stray_traffic_leaves_the_owner_map() -> None:
    n = Node([set(), set()])
    n.report_all()
    assert n.p.place(7) == 0
    assert n.p.place(8) == 1
    n.held[1].add(8)                # the snapshot came for 8, never for 7
    n.clock.t += 11
    n.p.expire()
    assert 7 not in n.owner and n.owner[8] == 1
    assert n.p.pinned() == {}


def test_a_split_sibling_goes_to_the_worker_of_the_range_it_overlaps() -> None:
    n = Node([set(), {1, 2}])
    n.report_all()
    # Range 40 is the right half of a split of range 2 our replica has not applied yet.
    n.directory[40] = RangeDescriptor(range_id=40, start_key=b"\x02m", end_key=b"\x03",
                                      voters=(1, 2, 3), generation=1)
    assert n.p.place(40) == 1, "not the emptier worker 0: that would be a second replica"


def test_a_range_the_directory_does_not_know_is_not_placed() -> None:
    n = Node([set(), set()])
    n.report_all()
    assert n.p.place(99) is None
    assert 99 not in n.owner and n.p.pinned() == {}


def test_a_range_the_directory_does_not_place_here_is_not_placed() -> None:
    n = Node([set(), set()])
    n.report_all()
    n.directory[7] = RangeDescriptor(range_id=7, start_key=b"\x07", end_key=b"\x08",
                                     voters=(2, 3), generation=4)
    assert n.p.place(7) is None, "a stale leader's traffic for a replica we no longer have"


def test_a_range_goes_back_to_the_worker_that_last_held_it() -> None:
    n = Node([{1}, set()])
    n.report_all()
    n.held[0].discard(1)
    n.p.gone(1, 0)                  # removed: worker 0 keeps its tombstone
    del n.owner[1]
    assert n.p.place(1) == 0, "not the emptier worker 1"


def rr(rid: int, *, leader: bool = True, size: int = 100, keys: int = 10, writes: int = 0,
       reads: int = 0) -> RangeReport:
    return RangeReport(span(rid), 1 if leader else 2, 3, 10, leader, False, size, keys, writes,
                       reads)


POLICY = SplitPolicy(split_bytes=1000, split_qps=100, cooldown_s=30.0)


def test_size_split_of_a_range_led_here_only() -> None:
    p = SplitPlanner(POLICY)
    got = p.plan(0.0, [rr(1, size=2000), rr(2, size=5000, leader=False), rr(3, size=999)])
    assert [(d.range_id, d.reason) for d in got] == [(1, "size")]


def test_a_range_with_fewer_than_two_keys_is_never_split() -> None:
    assert SplitPlanner(POLICY).plan(0.0, [rr(1, size=10**6, keys=1)]) == []


def test_load_split_needs_two_looks_and_uses_the_rate() -> None:
    p = SplitPlanner(POLICY)
    assert p.plan(0.0, [rr(1, writes=10**6)]) == [], "one look gives no rate"
    assert p.plan(40.0, [rr(1, writes=10**6)]) == [], "idle for 40 s"
    got = p.plan(42.0, [rr(1, writes=10**6 + 150, reads=100)])   # 125 ops/s
    assert len(got) == 1 and got[0].reason == "load" and got[0].qps == pytest.approx(125)
    p2 = SplitPlanner(POLICY)
    p2.plan(0.0, [rr(1, writes=0)])
    assert p2.plan(40.0, [rr(1, writes=3000)]) == [], "75 ops/s is under the threshold"


def test_a_young_range_is_not_split_by_load() -> None:
    p = SplitPlanner(POLICY)
    p.plan(0.0, [rr(1)])
    assert p.plan(2.0, [rr(1, writes=10**4)]) == [], "a split's fresh half: no cascade"
    assert p.plan(30.0, [rr(1, writes=10**6)])[0].reason == "load"


def test_counters_going_backwards_start_a_new_baseline() -> None:
    p = SplitPlanner(POLICY)
    p.plan(0.0, [rr(1, writes=10**6)])
    assert p.plan(40.0, [rr(1, writes=50)]) == [], "recreated: no negative or huge rate"
    assert len(p.plan(41.0, [rr(1, writes=500)])) == 1


def test_cooldown_after_a_split() -> None:
    p = SplitPlanner(POLICY)
    assert len(p.plan(0.0, [rr(1, size=2000)])) == 1
    assert p.plan(10.0, [rr(1, size=2000)]) == [], "the report still shows the old size"
    assert len(p.plan(31.0, [rr(1, size=2000)])) == 1


def test_worst_first_and_capped_per_pass() -> None:
    p = SplitPlanner(POLICY)
    ranges = [rr(i, size=1000 + 100 * i) for i in range(1, MAX_SPLITS_PER_PASS + 3)]
    got = p.plan(0.0, ranges)
    assert [d.range_id for d in got] == list(range(MAX_SPLITS_PER_PASS + 2, 2, -1))
    rest = p.plan(1.0, ranges)
    assert sorted(d.range_id for d in rest) == [1, 2], "the rest in the next look"


def test_disabled_and_zero_qps() -> None:
    off = SplitPlanner(SplitPolicy(1000, 100, 30.0, enabled=False))
    assert off.plan(0.0, [rr(1, size=10**9)]) == []
    no_load = SplitPlanner(SplitPolicy(1000, 0, 30.0))
    no_load.plan(0.0, [rr(1, writes=0)])
    assert no_load.plan(1.0, [rr(1, writes=10**9)]) == []


def test_loop_splits_what_the_planner_chose_and_survives_refusals() -> None:
    clock = Clock()
    node = Node([set()])
    report = WorkerReport(0, 0, 0, 0, 0.0, (rr(1, size=5000), rr(2, size=4000)))
    calls: list[int] = []

    async def split(rid: int) -> None:
        calls.append(rid)
        if rid == 1:
            raise Conflict("the range changed meanwhile")

    async def merge(rid: int) -> None:
        raise AssertionError(f"nothing is cold: merge of {rid}")

    loop = PlacementLoop(SplitPlanner(POLICY), node.p, lambda: [report], split, merge,
                         interval_s=0.01, clock=clock)
    got = asyncio.run(loop.run_once())
    assert [d.range_id for d in got if isinstance(d, SplitDecision)] == [1, 2]
    assert calls == [1, 2] and loop.splits_done == 1
    assert asyncio.run(loop.run_once()) == [], "cooling down"


def test_the_meta_range_is_never_split() -> None:
    meta = RangeReport(RangeDescriptor(range_id=META_RANGE_ID, start_key=b"", end_key=b"",
                                       voters=(1,)), 1, 1, 1, True, False, 10**9, 10**6)
    assert SplitPlanner(POLICY).plan(0.0, [meta]) == []


MERGE = SplitPolicy(split_bytes=1000, split_qps=100, cooldown_s=30.0, merge_bytes=500,
                    merge_qps=10)


def halves(ops: int = 0, *, size: int = 100, left_leader: bool = True,
           voters: tuple[int, ...] = (1, 2, 3)) -> list[RangeReport]:
    """Ranges 1 ``[a, m)`` and 2 ``[m, z)`` of one worker, with ``ops`` reads each."""
    out = []
    for rid, (lo, hi) in ((1, (b"a", b"m")), (2, (b"m", b"z"))):
        desc = RangeDescriptor(range_id=rid, start_key=lo, end_key=hi, voters=voters)
        leader = left_leader or rid == 2
        out.append(RangeReport(desc, 1, 3, 10, leader, False, size, 5, 0, ops))
    return out


def look(p: SplitPlanner, now: float, groups: list[list[RangeReport]]) -> list[MergeDecision]:
    p.plan(now, [r for g in groups for r in g])
    return p.plan_merges(now, groups)


def test_cold_small_neighbours_merge_once_they_are_old_enough() -> None:
    p = SplitPlanner(MERGE)
    assert look(p, 0.0, [halves(0)]) == [], "no rate yet"
    assert look(p, 10.0, [halves(10)]) == [], "1 ops/s is cold, but both are young"
    got = look(p, 31.0, [halves(20)])
    assert got == [MergeDecision(1, 2, 200)]
    assert look(p, 33.0, [halves(20)]) == [], "cooling down (the reports lag the merge)"


@pytest.mark.parametrize(("groups", "why"), [
    ([halves(10_000)], "hot"),
    ([halves(0, size=300)], "too big together"),
    ([halves(0, left_leader=False)], "the left is led elsewhere"),
    ([halves(0)[:1], halves(0)[1:]], "two workers"),
])
def test_no_merge(groups: list[list[RangeReport]], why: str) -> None:
    p = SplitPlanner(MERGE)
    look(p, 0.0, [halves(0)])
    assert look(p, 40.0, groups) == [], why


def test_no_merge_of_different_replica_sets() -> None:
    p = SplitPlanner(MERGE)
    a, b = halves(0)
    b = RangeReport(RangeDescriptor(range_id=2, start_key=b"m", end_key=b"z", voters=(1, 2)),
                    1, 3, 10, True, False, 100, 5, 0, 0)
    look(p, 0.0, [[a, b]])
    assert look(p, 40.0, [[a, b]]) == []


def test_merging_is_off_by_default() -> None:
    p = SplitPlanner(POLICY)
    look(p, 0.0, [halves(0)])
    assert look(p, 40.0, [halves(0)]) == []


def test_a_neighbour_led_elsewhere_merges_only_after_staying_quiesced() -> None:
    left = halves(0)[0]
    desc = RangeDescriptor(range_id=2, start_key=b"m", end_key=b"z", voters=(1, 2, 3))

    def right(quiesced: bool) -> RangeReport:
        return RangeReport(desc, 2, 3, 10, False, quiesced, 100, 5, 0, 0)

    p = SplitPlanner(MERGE)
    look(p, 0.0, [[left, right(True)]])
    assert look(p, 20.0, [[left, right(False)]]) == [], "woke up: reads or writes"
    assert look(p, 40.0, [[left, right(True)]]) == [], "quiet only since 40"
    assert look(p, 71.0, [[left, right(True)]]) == [MergeDecision(1, 2, 200)]


def led_by(rid: int, leader: int, voters: tuple[int, ...] = (1, 2, 3)) -> RangeReport:
    """Range ``rid`` as node 1 sees it: led by ``leader``."""
    desc = RangeDescriptor(range_id=rid, start_key=bytes([rid]), end_key=bytes([rid + 1]),
                           voters=voters)
    return RangeReport(desc, leader, 3, 10, leader == 1, False, 100, 5, 0, 0)


def test_a_node_leading_too_many_hands_its_coldest_to_the_least_busy_voters() -> None:
    b = LeaderBalancer(1, cooldown_s=30.0)
    ranges = [led_by(rid, 1) for rid in range(1, 7)] + [led_by(7, 2), led_by(8, 3)]
    qps = {rid: float(10 - rid) for rid in range(1, 7)}   # range 6 is the coldest
    moves = b.plan(0.0, ranges, qps)
    assert moves == [LeaderMove(6, 2), LeaderMove(5, 3), LeaderMove(4, 2)]
    # The next look sees the moves done: 3/3/2 is within the slack.
    after = [led_by(rid, {6: 2, 5: 3, 4: 2}.get(rid, 1)) for rid in range(1, 7)]
    assert b.plan(5.0, [*after, led_by(7, 2), led_by(8, 3)], qps) == []


def test_balanced_meta_and_single_voter_ranges_stay() -> None:
    b = LeaderBalancer(1, cooldown_s=30.0)
    even = [led_by(1, 1), led_by(2, 1), led_by(3, 2), led_by(4, 2), led_by(5, 3), led_by(6, 3)]
    assert b.plan(0.0, even, {}) == []
    solo = [led_by(rid, 1, voters=(1,)) for rid in range(1, 9)]
    meta = RangeReport(RangeDescriptor(range_id=META_RANGE_ID, start_key=b"", end_key=b"",
                                       voters=(1, 2, 3)), 1, 1, 1, True, False)
    assert b.plan(0.0, [*solo, meta, led_by(20, 2), led_by(21, 3)], {}) == []


def test_a_moved_range_cools_down() -> None:
    b = LeaderBalancer(1, cooldown_s=30.0)
    ranges = [led_by(1, 1), led_by(2, 1), led_by(3, 1), led_by(4, 1)]
    assert b.plan(0.0, ranges, {}) == [LeaderMove(1, 2), LeaderMove(2, 3)]
    assert [m.range_id for m in b.plan(1.0, ranges, {})] == [3, 4], "1 and 2 are cooling"
    assert b.plan(2.0, ranges, {}) == []


def test_loop_moves_leaderships_when_balancing_is_on() -> None:
    node = Node([set()])
    report = WorkerReport(0, 0, 0, 0, 0.0, tuple(led_by(rid, 1) for rid in range(1, 5)))
    moved: list[tuple[int, int]] = []

    async def transfer(rid: int, target: int) -> None:
        moved.append((rid, target))

    async def never(rid: int) -> None:
        raise AssertionError(rid)

    loop = PlacementLoop(SplitPlanner(POLICY), node.p, lambda: [report], never, never,
                         interval_s=0.01, balancer=LeaderBalancer(1, 30.0), transfer=transfer,
                         clock=Clock())
    asyncio.run(loop.run_once())
    assert moved == [(1, 2), (2, 3)] and loop.transfers_done == 2
