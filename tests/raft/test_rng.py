"""The seeded PRNG: deterministic, per-node different, roughly uniform."""

from __future__ import annotations

from collections import Counter

from engine.raft import rng


def _draws(seed: int, node: int, n: int, k: int = 10) -> list[int]:
    s = rng.seed_state(seed, node)
    out = []
    for _ in range(n):
        s = rng.next_state(s)
        out.append(rng.draw_below(s, k))
    return out


def test_deterministic_for_seed_and_node() -> None:
    assert _draws(7, 1, 50) == _draws(7, 1, 50)
    assert _draws(7, 1, 50) != _draws(7, 2, 50)
    assert _draws(7, 1, 50) != _draws(8, 1, 50)


def test_roughly_uniform() -> None:
    counts = Counter(_draws(0, 1, 5000))
    assert set(counts) == set(range(10))
    assert min(counts.values()) > 350


def test_state_never_zero() -> None:
    s = rng.seed_state(0, 0)
    for _ in range(1000):
        s = rng.next_state(s)
        assert s != 0
