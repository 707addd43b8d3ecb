"""Randomized simulator runs: many seeds, every safety invariant after every
step, liveness after healing (engine/raft/testing).

Each seed is its own test so a failure names it; the failure message holds
the replay command. The CI default is ``SEEDS`` x ``STEPS`` (override with
``MULTIRAFT_SIM_SEEDS`` / ``MULTIRAFT_SIM_STEPS``; ``MULTIRAFT_SIM_SEED0``
shifts the seed range to explore new seeds). Seeds cycle through cluster
shapes (1, 2, 3 or 5 initial voters, 1-3 spare ids for membership changes);
every run has a lossy network, crashes, partitions, snapshots, membership
changes and reads, and every tenth seed serves its reads from the leader
lease (which turns crashes and clock skew off, see ``SimOptions``).
"""

from __future__ import annotations

import os

import pytest

from engine.raft.testing import SimOptions, SimStats, Simulator

SEEDS = int(os.environ.get("MULTIRAFT_SIM_SEEDS", "300"))
STEPS = int(os.environ.get("MULTIRAFT_SIM_STEPS", "2000"))
SEED0 = int(os.environ.get("MULTIRAFT_SIM_SEED0", "0"))

#: (initial voters, spare ids) cycled over seeds.
_SHAPES = ((3, 2), (3, 1), (5, 1), (3, 2), (1, 2), (5, 3), (2, 2))

_stats: dict[int, SimStats] = {}


def options(seed: int, steps: int = STEPS) -> SimOptions:
    voters, spares = _SHAPES[seed % len(_SHAPES)]
    return SimOptions(seed=seed, steps=steps, voters=voters, spares=spares,
                      lease_reads=seed % 10 == 9)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", range(SEED0, SEED0 + SEEDS))
def test_random_run(seed: int) -> None:
    """Safety after every step and liveness after healing, for one seed."""
    _stats[seed] = Simulator(options(seed)).run()


def test_runs_exercised_every_feature() -> None:
    """The randomized runs above are only worth something if they hit the hard
    cases: snapshots sent and installed, joint consensus, crashes inside a
    Ready, partitions, answered reads, asynchronous Readies, leader changes."""
    if len(_stats) < min(SEEDS, 50):
        pytest.skip(f"only {len(_stats)} seeds ran in this session")
    total = SimStats()
    for s in _stats.values():
        for name in SimStats.__dataclass_fields__:
            setattr(total, name, getattr(total, name) + getattr(s, name))
    print(f"sim totals over {len(_stats)} seeds: {total}")
    assert total.leaders > len(_stats)  # re-elections happen, not just the first
    assert total.snapshots_installed > 0
    assert total.conf_changes_applied > 0
    assert total.joint_entered > 0
    assert total.crashes_in_ready > 0
    assert total.partitions > 0
    assert total.reads_answered > 0
    assert total.async_readies > 0
    assert total.committed > 10 * len(_stats)


def test_same_seed_same_run() -> None:
    """A run is a pure function of its seed (what makes a printed seed useful)."""
    a = Simulator(options(7, steps=600))
    b = Simulator(options(7, steps=600))
    sa, sb = a.run(), b.run()
    assert sa == sb
    assert list(a.trace) == list(b.trace)
    assert a.now == b.now
