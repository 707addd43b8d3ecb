"""Merges whose initiator crashed: the resolver finishes them, or unfreezes only once
no MERGE of the intent can ever apply (engine/merge_resolver.py)."""

from __future__ import annotations

import pytest

from engine.merge_resolver import HAND_OFF_AFTER, Resolution, decide, next_voter
from engine.proposal import Outcome
from engine.snapshot_store import MERGED, Tombstone
from engine.split_merge import MergeIntent
from engine.testing.cluster import Cluster
from tests.engine.test_split_merge import NODES, do, get, keys_of, one_range, put, split_at_m


def crash_coordinator_after_freeze(c: Cluster) -> int:
    """Start merge(1) on the leader of both ranges and crash it in the round in which
    its right-hand replica applied the FREEZE (its MERGE was queued, never proposed)."""
    leader = c.leader_of(1)
    assert leader is not None and c.leader_of(2) == leader
    c.stores[leader].merge(1)
    for _ in range(50):
        c.round()
        rhs = c.stores[leader].replica(2)
        assert rhs is not None
        if rhs.frozen:
            assert rhs.merge_intent == MergeIntent(1, rhs.merge_intent.left_generation
                                                   if rhs.merge_intent else -1)
            c.crash(leader)
            return leader
        c.tick()
    raise AssertionError("the FREEZE never applied")


@pytest.mark.timeout(30)
def test_a_merge_whose_coordinator_crashed_after_the_freeze_is_finished() -> None:
    c = one_range(seed=41, merge_resolve_ticks=10)
    split_at_m(c)
    crashed = crash_coordinator_after_freeze(c)
    for n in c.stores:
        c.stores[n].node_dead(crashed)
    c.run(15)
    c.restart(crashed)
    for n in c.stores:
        c.stores[n].node_alive(crashed)
    c.run(60)
    for n in NODES:
        assert c.stores[n].replica(2) is None, f"n{n}: the right-hand range is still there"
        assert keys_of(c, n, 1) == [b"a", b"f", b"m", b"q", b"z"]
        tomb = c.stores[n].tombstone(2)
        assert tomb is not None and tomb.gone_for_good
    assert put(c, 1, b"x", b"X").outcome == Outcome.OK
    assert get(c, 1, b"q") == b"Q"


@pytest.mark.timeout(30)
def test_a_dead_intent_is_unfrozen_and_the_range_takes_writes_again() -> None:
    """The left-hand range split (its generation moved) before any MERGE: no MERGE of
    the intent can apply any more, so the right-hand range is unfrozen."""
    c = one_range(seed=43, merge_resolve_ticks=1000)
    split_at_m(c)
    crashed = crash_coordinator_after_freeze(c)
    for n in c.stores:
        c.stores[n].node_dead(crashed)
    c.elect_all()
    leader = c.leader_of(1)
    assert leader is not None
    refused = do(c, leader, c.stores[leader].propose(2, b"", keys=[b"q"]))
    assert refused.outcome == Outcome.TRYAGAIN, "frozen"
    assert do(c, leader, c.stores[leader].split(1, b"f", 3)).outcome == Outcome.OK
    c.restart(crashed)
    for n in c.stores:
        c.stores[n].node_alive(crashed)
    c.run(1010)
    for n in NODES:
        rhs = c.stores[n].replica(2)
        assert rhs is not None and not rhs.frozen and rhs.merge_intent is None, f"n{n}"
    assert put(c, 2, b"q", b"Q2").outcome == Outcome.OK
    assert get(c, 2, b"q") == b"Q2" and get(c, 3, b"f") == b"F"


def test_decide_on_one_store() -> None:
    c = one_range(seed=45)
    split_at_m(c)
    leader = c.leader_of(1)
    assert leader is not None
    s = c.stores[leader]
    lhs, rhs = s.replica(1), s.replica(2)
    assert lhs is not None and rhs is not None and lhs.is_leader and rhs.is_leader
    assert decide(rhs, lhs, None) is Resolution.WAIT, "not frozen"
    gen = lhs.desc.generation
    rhs.frozen, rhs.merge_intent = True, MergeIntent(1, gen)
    assert decide(rhs, lhs, None) is Resolution.REDRIVE
    lhs.frozen = True
    assert decide(rhs, lhs, None) is Resolution.WAIT, "a frozen left side refuses merges"
    lhs.frozen = False
    rhs.merge_intent = MergeIntent(1, gen - 1)
    assert decide(rhs, lhs, None) is Resolution.UNFREEZE
    assert decide(rhs, None, None) is Resolution.WAIT, "no proof without the left side"
    assert decide(rhs, None, Tombstone(gen, 9)) is Resolution.WAIT, "removed, not merged"
    assert decide(rhs, None, Tombstone(gen, MERGED)) is Resolution.UNFREEZE
    follower = next(n for n in NODES if n != leader)
    f_lhs, f_rhs = c.stores[follower].replica(1), c.stores[follower].replica(2)
    assert f_lhs is not None and f_rhs is not None
    f_rhs.frozen, f_rhs.merge_intent = True, MergeIntent(1, gen)
    assert decide(f_rhs, f_lhs, None) is Resolution.PULL_LEFT
    f_rhs.merge_intent = MergeIntent(1, gen - 1)
    assert decide(f_rhs, f_lhs, None) is Resolution.WAIT, "only the RHS leader unfreezes"


def test_a_leader_that_cannot_decide_hands_leadership_on() -> None:
    """An RHS leader whose own store can never decide (no LHS replica here, no proof
    it is gone) moves leadership round the voters after HAND_OFF_AFTER looks."""
    c = one_range(seed=49, merge_resolve_ticks=2)
    split_at_m(c)
    leader = c.leader_of(2)
    assert leader is not None
    rhs = c.stores[leader].replica(2)
    assert rhs is not None
    assert next_voter(rhs) == next((n for n in NODES if n > leader), NODES[0])
    for n in NODES:  # frozen everywhere for a left range that exists nowhere
        rep = c.stores[n].replica(2)
        assert rep is not None
        rep.frozen, rep.merge_intent = True, MergeIntent(77, 0)
        c.stores[n]._resolver.note(rep, c.stores[n].now)  # what applying the FREEZE does
    c.run(2 * HAND_OFF_AFTER + 4)
    assert c.leader_of(2) not in (None, leader), "leadership moved on"
    for n in NODES:
        rep = c.stores[n].replica(2)
        assert rep is not None and rep.frozen, "and nothing unsafe happened"
