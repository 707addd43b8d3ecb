"""Quorum math against a naive model (property tests, etcd quorum/quick_test style)."""

from __future__ import annotations

from itertools import combinations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.raft.quorum import (
    INFINITE_INDEX,
    VoteResult,
    joint_committed_index,
    joint_vote_result,
    majority_committed_index,
    majority_vote_result,
)

ids = st.lists(st.integers(1, 9), max_size=7, unique=True).map(lambda xs: tuple(sorted(xs)))
acks = st.dictionaries(st.integers(1, 9), st.integers(0, 20))
votes = st.dictionaries(st.integers(1, 9), st.booleans())


def naive_committed(voters: tuple[int, ...], acked: dict[int, int]) -> int:
    """The largest index i such that some majority all acknowledged >= i."""
    if not voters:
        return INFINITE_INDEX
    q = len(voters) // 2 + 1
    best = 0
    for group in combinations(voters, q):
        best = max(best, min(acked.get(v, 0) for v in group))
    return best


def naive_vote(voters: tuple[int, ...], v: dict[int, bool]) -> VoteResult:
    if not voters:
        return VoteResult.WON
    q = len(voters) // 2 + 1
    yes = sum(1 for x in voters if v.get(x) is True)
    missing = sum(1 for x in voters if x not in v)
    if yes >= q:
        return VoteResult.WON
    if yes + missing >= q:
        return VoteResult.PENDING
    return VoteResult.LOST


@settings(max_examples=120, deadline=None)
@given(ids, acks)
def test_majority_committed_matches_naive(voters: tuple[int, ...], acked: dict[int, int]) -> None:
    assert majority_committed_index(voters, acked) == naive_committed(voters, acked)


@settings(max_examples=120, deadline=None)
@given(ids, ids, acks)
def test_joint_committed_is_min_of_halves(
    a: tuple[int, ...], b: tuple[int, ...], acked: dict[int, int]
) -> None:
    got = joint_committed_index(a, b, acked)
    want = naive_committed(a, acked) if not b else min(
        naive_committed(a, acked), naive_committed(b, acked))
    assert got == want


@settings(max_examples=120, deadline=None)
@given(ids, votes)
def test_majority_vote_matches_naive(voters: tuple[int, ...], v: dict[int, bool]) -> None:
    assert majority_vote_result(voters, v) == naive_vote(voters, v)


@settings(max_examples=120, deadline=None)
@given(ids, ids, votes)
def test_joint_vote_needs_both(a: tuple[int, ...], b: tuple[int, ...], v: dict[int, bool]) -> None:
    r1, r2 = naive_vote(a, v), naive_vote(b, v) if b else VoteResult.WON
    if r1 == VoteResult.WON and r2 == VoteResult.WON:
        want = VoteResult.WON
    elif VoteResult.LOST in (r1, r2):
        want = VoteResult.LOST
    else:
        want = VoteResult.PENDING
    assert joint_vote_result(a, b, v) == want


def test_examples() -> None:
    assert majority_committed_index((1, 2, 3), {1: 5, 2: 3, 3: 1}) == 3
    assert majority_committed_index((1, 2, 3, 4), {1: 5, 2: 3, 3: 1, 4: 9}) == 3
    assert majority_vote_result((1, 2, 3), {1: True, 2: False}) == VoteResult.PENDING
    assert majority_vote_result((1, 2, 3), {1: False, 2: False}) == VoteResult.LOST
