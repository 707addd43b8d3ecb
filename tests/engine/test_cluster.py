"""The seeded in-memory cluster harness itself."""

from __future__ import annotations

from itertools import pairwise

from engine.store_config import StoreConfig
from engine.testing.cluster import Cluster, even_ranges, key_for


def trace(seed: int) -> tuple[int, int, list[int | None]]:
    c = Cluster(3, seed=seed, max_delay=3, drop_rate=0.1, cfg=StoreConfig(seed=seed))
    c.bootstrap(even_ranges(10, (1, 2, 3)))
    c.run(40)
    return c.messages_delivered, c.round_no, [c.leader_of(r) for r in range(1, 11)]


def test_runs_are_reproducible_from_the_seed() -> None:
    assert trace(3) == trace(3)
    assert trace(3) != trace(4)


def test_even_ranges_tile_the_key_space() -> None:
    descs = even_ranges(4, (1, 2, 3))
    assert descs[0].start_key == b"" and descs[-1].end_key == b""
    for a, b in pairwise(descs):
        assert a.end_key == b.start_key
    for i, d in enumerate(descs):
        assert d.contains(key_for(i, b"x"))


def test_partition_and_crash_stop_delivery() -> None:
    c = Cluster(3, seed=1)
    c.bootstrap(even_ranges(1, (1, 2, 3)))
    c.partition(1, 2)
    c.partition(1, 3)
    c.crash(2)
    c.run(30)
    assert c.leader_of(1) is None, "no two live nodes can talk: no quorum"
    c.heal()
    c.restart(2)
    c.elect_all()
    assert c.leader_of(1) is not None
