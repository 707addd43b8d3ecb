"""When a leader and a follower may quiesce (engine/quiesce.py)."""

from __future__ import annotations

from engine.kv_codec import Put, encode_command
from engine.quiesce import follower_may_quiesce, leader_may_quiesce
from engine.store_config import StoreConfig
from engine.testing.cluster import Cluster, even_ranges, key_for


def setup() -> tuple[Cluster, int, int]:
    c = Cluster(3, seed=4, cfg=StoreConfig(seed=4, quiesce=False))
    c.bootstrap(even_ranges(1, (1, 2, 3)))
    c.elect_all()
    c.run(3)
    leader = c.leader_of(1)
    assert leader is not None
    return c, leader, next(n for n in (1, 2, 3) if n != leader)


def test_caught_up_idle_leader_may_quiesce_but_not_when_busy() -> None:
    c, leader, _ = setup()
    raw = c.stores[leader].replica(1).raw  # type: ignore[union-attr]
    assert leader_may_quiesce(raw, False, set())
    assert not leader_may_quiesce(raw, True, set())


def test_lagging_follower_holds_quiescence_unless_its_node_is_dead() -> None:
    c, leader, follower = setup()
    c.crash(follower)
    key = key_for(0, b"a")
    c.stores[leader].propose(1, encode_command(Put(key, b"1")), keys=[key])
    c.run(3)
    raw = c.stores[leader].replica(1).raw  # type: ignore[union-attr]
    assert not leader_may_quiesce(raw, False, set())
    assert leader_may_quiesce(raw, False, {follower})


def test_follower_quiesces_only_when_its_log_ends_at_the_leaders_commit() -> None:
    c, leader, follower = setup()
    rep = c.stores[follower].replica(1)
    assert rep is not None
    raw = rep.raw
    last, term = raw.last_index, raw.term
    assert follower_may_quiesce(raw, leader, term, last)
    assert not follower_may_quiesce(raw, leader, term, last + 1)
    assert not follower_may_quiesce(raw, follower, term, last)
    assert not follower_may_quiesce(raw, leader, term + 1, last)
