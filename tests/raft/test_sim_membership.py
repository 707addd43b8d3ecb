"""The simulator's membership-change generator (engine/raft/testing/membership.py)."""

from __future__ import annotations

import random

from engine.raft.confchange import apply_change
from engine.raft.testing.membership import (
    describe_change,
    describe_conf,
    is_joint,
    members,
    random_change,
)
from engine.raft.types import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
    ConfState,
)


def test_random_changes_are_valid_and_keep_enough_voters() -> None:
    """A random walk of generated changes, applied with the core's own
    configuration math: every change is accepted, joint configurations are
    left before anything else, and no configuration drops below the minimum."""
    rng = random.Random(17)
    pool = [1, 2, 3, 4, 5]
    cs = ConfState(voters=(1, 2, 3))
    kinds = set()
    for _ in range(2000):
        cc = random_change(rng, cs, pool, min_voters=2)
        if cc is None:
            assert is_joint(cs) and cs.auto_leave
            cc = ConfChange()  # what the leader proposes by itself
        if is_joint(cs):
            assert cc.leaves_joint
        kinds.add(describe_change(cc).rsplit(" ", 1)[-1])
        cs = apply_change(cs, cc)
        assert members(cs) <= set(pool)
        assert len(cs.voters) >= 2
    assert {"joint", "joint-explicit", "leave-joint"} <= kinds


def test_descriptions_are_compact() -> None:
    add, remove = ConfChangeType.ADD_VOTER, ConfChangeType.REMOVE_NODE
    cc = ConfChange(
        (ConfChangeSingle(add, 4), ConfChangeSingle(remove, 1)),
        ConfChangeTransition.JOINT_EXPLICIT,
    )
    assert describe_change(cc) == "+V4 -1 joint-explicit"
    assert describe_change(ConfChange()) == "leave-joint"
    cs = ConfState(voters=(2, 3, 4), voters_outgoing=(1, 2, 3), learners_next=(1,))
    assert describe_conf(cs) == "V(2,3,4) & V(1,2,3) L_next(1)"
