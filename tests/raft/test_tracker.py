"""Unit tests of ``ProgressTracker``: membership reconciliation and quorum questions."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.raft import ConfState
from engine.raft.quorum import VoteResult, joint_committed_index
from engine.raft.tracker import ProgressTracker


def _tracker(cs: ConfState) -> ProgressTracker:
    t = ProgressTracker(256, 0)
    t.set_conf(cs, 10)
    return t


def test_set_conf_keeps_progress_of_staying_members() -> None:
    t = _tracker(ConfState(voters=(1, 2, 3)))
    t.progress[2].match = 7
    t.set_conf(ConfState(voters=(1, 2), learners=(4,)), 12)
    assert sorted(t.progress) == [1, 2, 4]
    assert t.progress[2].match == 7
    assert t.progress[4].is_learner and t.progress[4].next == 12
    assert t.progress[4].recent_active


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=1, max_size=7))
def test_committed_fast_path_matches_quorum_math(matches: list[int]) -> None:
    voters = tuple(range(1, len(matches) + 1))
    t = _tracker(ConfState(voters=voters))
    for v, m in zip(voters, matches, strict=True):
        t.progress[v].match = m
    assert t.committed() == joint_committed_index(voters, (), dict(zip(voters, matches,
                                                                        strict=True)))


def test_joint_committed_and_votes() -> None:
    t = _tracker(ConfState(voters=(1, 2, 3), voters_outgoing=(1, 4, 5)))
    for node, m in {1: 9, 2: 9, 3: 1, 4: 2, 5: 1}.items():
        t.progress[node].match = m
    assert t.committed() == 2
    t.record_vote(1, True)
    t.record_vote(2, True)
    assert t.tally_votes()[2] == VoteResult.PENDING
    t.record_vote(4, True)
    assert t.tally_votes() == (3, 0, VoteResult.WON)
    t.record_vote(4, False)  # a duplicate answer does not change the first one
    assert t.tally_votes()[0] == 3


def test_learner_votes_do_not_count() -> None:
    t = _tracker(ConfState(voters=(1, 2, 3), learners=(4,)))
    t.record_vote(1, True)
    t.record_vote(4, True)
    assert t.tally_votes()[2] == VoteResult.PENDING


def test_quorum_active_counts_self_and_resets() -> None:
    t = _tracker(ConfState(voters=(1, 2, 3)))
    t.progress[2].recent_active = True
    assert t.quorum_active(1)
    assert not t.quorum_active(1)  # flags were reset by the previous round
