"""engine/read_lease.py through the Store: lease reads skip the ReadIndex round while
the lease holds, fall back to it once it lapsed, never outlive a leadership change,
and keep every key linearizable under the randomized faults of test_store_random
(crashed voters come back holding their votes)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from engine.kv_codec import Get, Put, Value, decode_result, encode_command
from engine.proposal import Outcome
from engine.read_lease import lease_duration
from engine.store import Store
from engine.store_config import StoreConfig
from engine.testing.cluster import Cluster, even_ranges
from engine.testing.linearizability import HistoryRecorder, check_history
from tests.engine.test_store_random import (
    NODES,
    Run,
    client_op,
    collect,
    end_outage,
    fault,
    maybe_crash_coordinator,
    replicas_agree,
)


class LeaseCluster(Cluster):
    """Every store serves lease reads; a restarted one holds its votes back."""

    restarting = False

    def _new_store(self, n: int) -> Store:
        store = super()._new_store(n)
        store.use_lease_reads(hold_votes=self.restarting)
        return store

    def restart(self, n: int) -> None:
        self.restarting = True
        try:
            super().restart(n)
        finally:
            self.restarting = False


def _cluster(seed: int = 3) -> tuple[LeaseCluster, int, Store]:
    c = LeaseCluster(3, seed=seed, cfg=StoreConfig(seed=seed))
    c.bootstrap(even_ranges(1, NODES))
    c.elect_all()
    holder = c.leader_of(1)
    assert holder is not None
    return c, 1, c.stores[holder]


def _read(c: Cluster, s: Store, rid: int, key: bytes) -> tuple[bytes | None, int]:
    """Read ``key`` on ``s``; its value and the messages the cluster delivered for it."""
    before = c.messages_delivered
    req = s.read(rid, encode_command(Get(key)), keys=[key])
    comp = c.wait_for(s.node_id, req)
    assert comp is not None and comp.outcome == Outcome.OK, comp
    res = decode_result(comp.result)
    return (res.value if isinstance(res, Value) else None), c.messages_delivered - before


def test_reads_skip_the_round_while_the_lease_holds_then_renew_it() -> None:
    c, rid, s = _cluster()
    req = s.propose(rid, encode_command(Put(b"k", b"1")), keys=[b"k"])
    assert c.wait_for(s.node_id, req) is not None
    value, _ = _read(c, s, rid, b"k")  # earns the lease (a ReadIndex round)
    assert value == b"1"
    value, delivered = _read(c, s, rid, b"k")
    assert value == b"1" and delivered == 0, "a lease read needs no message"
    # Past the lease (no reads meanwhile): the next read takes a round again.
    c.run(int(lease_duration(c.cfg.election_ticks)) + 1, rounds_per_tick=1)
    _, delivered = _read(c, s, rid, b"k")
    assert delivered > 0


def test_a_deposed_leader_never_serves_from_its_old_lease() -> None:
    c, rid, s = _cluster(seed=5)
    _read(c, s, rid, b"k")
    other = next(n for n in NODES if n != s.node_id)
    assert s.transfer_leader(rid, other)
    c.run(5)
    assert c.leader_of(rid) == other
    req = s.read(rid, encode_command(Get(b"k")), keys=[b"k"])
    c.settle()
    comp = c.results[s.node_id].get(req)
    # Either still waiting for the new leader's read index or answered by it: never
    # an OK served from the old lease before the new leader confirmed it.
    rep = s.replica(rid)
    assert rep is not None and not rep.lease.valid(rep.raw.raft, float(s.now))
    assert comp is None or comp.outcome in (Outcome.OK, Outcome.TRYAGAIN)


def test_lease_reads_need_check_quorum() -> None:
    c = Cluster(1, cfg=StoreConfig(check_quorum=False))
    with pytest.raises(ValueError, match="check_quorum"):
        c.stores[1].use_lease_reads()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", [31, 32, 33, 34])
def test_random_faults_with_lease_reads_stay_linearizable(seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    c = LeaseCluster(3, seed=seed, max_delay=2, drop_rate=0.02, path=str(tmp_path),
                     cfg=StoreConfig(seed=seed, snapshot_entries=25, proposal_timeout_ticks=60,
                                     merge_resolve_ticks=10))
    c.bootstrap(even_ranges(4, NODES))
    c.elect_all()
    run = Run(c, rng, HistoryRecorder(c.clock))
    for tick in range(150):
        run.tick = tick
        if run.outage_until and tick >= run.outage_until:
            end_outage(run)
        for _ in range(rng.randrange(6)):
            client_op(run)
        if tick < 120 and rng.random() < 0.15:
            fault(run)
        c.tick()
        for _ in range(3):
            c.round()
            maybe_crash_coordinator(run)
        collect(run)
    end_outage(run)
    c.run(60)
    collect(run)
    history = run.rec.history()
    assert sum(op.complete is not None for op in history) > 50, f"seed {seed}: too few ops"
    verdict = check_history(history)
    assert verdict.ok, f"seed {seed}:\n{verdict.explain()}"
    replicas_agree(c)


@pytest.mark.parametrize("lease", [False, True])
def test_concurrent_follower_reads_are_all_answered(lease: bool) -> None:
    """Both followers ask the leader for a read index in the same round: their
    contexts must differ (the leader keys pending reads by context), else one of
    them waits for the read timeout."""
    c = (LeaseCluster if lease else Cluster)(3, seed=7, cfg=StoreConfig(seed=7))
    c.bootstrap(even_ranges(1, NODES))
    c.elect_all()
    leader = c.leader_of(1)
    followers = [c.stores[n] for n in NODES if n != leader]
    reqs = [(s, s.read(1, encode_command(Get(b"k")), keys=[b"k"])) for s in followers]
    for _ in range(5):
        c.tick()
        c.settle()
    for s, req in reqs:
        comp = c.results[s.node_id].get(req)
        assert comp is not None and comp.outcome == Outcome.OK, (s.node_id, comp)


def test_the_leader_answers_a_follower_read_index_from_its_lease() -> None:
    c, rid, s = _cluster(seed=11)
    _read(c, s, rid, b"k")  # the leader earns its lease
    follower = c.stores[next(n for n in NODES if n != s.node_id)]
    _, delivered = _read(c, follower, rid, b"k")
    assert delivered == 2, "READ_INDEX and its answer, no heartbeat round"


@pytest.mark.parametrize("seed", range(16))
def test_a_stalled_leaders_lease_runs_out_before_anyone_else_can_commit(seed: int) -> None:
    """The lease's length is what keeps it safe: a leader whose worker stalls (no
    ticks, so check-quorum never makes it step down) and is cut off must find its
    lease over, on the real clock, by the time the others have elected a leader and
    committed a newer value. A lease of twice the election timeout answers the stale
    value here (checked by hand: 1,000 ticks fail every seed, 20 ticks fail one of
    sixteen; the election itself takes about 15 ticks, so a smaller excess passes)."""
    c, rid, s = _cluster(seed=seed)
    now = [0.0]
    for store in c.stores.values():
        store.use_lease_reads(lambda: now[0])
    key = b"k"
    assert c.wait_for(s.node_id, s.propose(rid, encode_command(Put(key, b"old")),
                                           keys=[key])) is not None
    assert _read(c, s, rid, key)[0] == b"old"  # a ReadIndex round: the lease is earned
    stalled = s.node_id
    for n in NODES:
        if n != stalled:
            c.partition(stalled, n)
    new = None
    for _ in range(200):  # the others elect a leader and commit past the old one
        now[0] += 1
        for n, store in c.stores.items():
            if n != stalled:
                store.tick()
        c.round()
        lead = c.leader_of(rid)
        if lead is not None and lead != stalled:
            new = c.stores[lead]
            break
    assert new is not None, f"seed {seed}: no new leader"
    got = c.wait_for(new.node_id, new.propose(rid, encode_command(Put(key, b"new")),
                                              keys=[key]))
    assert got is not None and got.outcome == Outcome.OK
    req = s.read(rid, encode_command(Get(key)), keys=[key])  # the stalled one wakes up
    c.round()
    comp = c.results[stalled].get(req)
    assert comp is None or comp.outcome != Outcome.OK or \
        decode_result(comp.result) != Value(b"old"), f"seed {seed}: stale read from a lease"
