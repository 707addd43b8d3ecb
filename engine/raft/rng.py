"""A tiny seeded PRNG for randomized election timeouts.

Rules
-----
- The raft core may not import ``random`` (sans-IO, deterministic replay):
  randomness comes in as a seed (``Config.rng_seed``) and is advanced here.
- The state is one ``int`` kept in a slot of the node that owns it, so an idle
  group pays for no extra object (multi-raft hosts 10,000s of groups).

Theory of operation
-------------------
``seed_state`` mixes the configured seed with the node id through SplitMix64,
so that nodes sharing the default seed still draw different timeouts (equal
timeouts on every node would split votes forever). ``next_state`` is
Marsaglia's xorshift64*; its high bits are well distributed, which is all an
election timeout needs. Never use it for anything security-related.
"""

from __future__ import annotations

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def seed_state(seed: int, node_id: int) -> int:
    """A non-zero 64-bit state derived from ``seed`` and ``node_id`` (SplitMix64 finaliser)."""
    z = (seed * _GOLDEN + node_id * 0xBF58476D1CE4E5B9 + _GOLDEN) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    z ^= z >> 31
    return z or _GOLDEN


def next_state(state: int) -> int:
    """Advance a xorshift64 state (never returns 0 for a non-zero input)."""
    state ^= (state << 13) & _MASK64
    state ^= state >> 7
    state ^= (state << 17) & _MASK64
    return state


def draw_below(state: int, n: int) -> int:
    """A value in ``[0, n)`` from ``state`` (uses the multiplied high bits: xorshift64*)."""
    return (((state * 0x2545F4914F6CDD1D) & _MASK64) >> 32) % n
