"""Unit tests of the configuration changer (simple, enter/leave joint, learners)."""

from __future__ import annotations

import pytest

from engine.raft import ConfChange, ConfChangeSingle, ConfChangeTransition, ConfState
from engine.raft import ConfChangeType as T
from engine.raft.confchange import (
    ConfChangeError,
    apply_change,
    check_conf,
    enter_joint,
    enters_joint,
    leave_joint,
    simple,
)


def _ch(*pairs: tuple[int, int]) -> list[ConfChangeSingle]:
    return [ConfChangeSingle(t, n) for t, n in pairs]


BASE = ConfState(voters=(1, 2, 3))


def test_simple_add_remove_and_learners() -> None:
    assert simple(BASE, _ch((T.ADD_VOTER, 4))).voters == (1, 2, 3, 4)
    assert simple(BASE, _ch((T.REMOVE_NODE, 3))).voters == (1, 2)
    cs = simple(BASE, _ch((T.ADD_LEARNER, 4), (T.ADD_LEARNER, 5)))
    assert cs.learners == (4, 5)
    # Promote a learner; demote a voter (a single voter change each).
    assert simple(cs, _ch((T.ADD_VOTER, 4))) == ConfState(voters=(1, 2, 3, 4), learners=(5,))
    assert simple(BASE, _ch((T.ADD_LEARNER, 3))) == ConfState(voters=(1, 2), learners=(3,))


def test_simple_refuses_two_voter_changes() -> None:
    with pytest.raises(ConfChangeError, match="more than one voter"):
        simple(BASE, _ch((T.ADD_VOTER, 4), (T.ADD_VOTER, 5)))
    with pytest.raises(ConfChangeError, match="more than one voter"):
        simple(BASE, _ch((T.ADD_VOTER, 4), (T.REMOVE_NODE, 1)))


def test_simple_refused_in_joint_and_removing_all_voters() -> None:
    joint = enter_joint(BASE, True, _ch((T.ADD_VOTER, 4)))
    with pytest.raises(ConfChangeError, match="joint"):
        simple(joint, _ch((T.ADD_VOTER, 5)))
    with pytest.raises(ConfChangeError, match="removed all voters"):
        simple(ConfState(voters=(1,)), _ch((T.REMOVE_NODE, 1)))


def test_enter_and_leave_joint() -> None:
    joint = enter_joint(BASE, False, _ch((T.ADD_VOTER, 4), (T.REMOVE_NODE, 1)))
    assert joint == ConfState(voters=(2, 3, 4), voters_outgoing=(1, 2, 3))
    with pytest.raises(ConfChangeError, match="already joint"):
        enter_joint(joint, False, _ch((T.ADD_VOTER, 5)))
    assert leave_joint(joint) == ConfState(voters=(2, 3, 4))
    with pytest.raises(ConfChangeError, match="non-joint"):
        leave_joint(BASE)


def test_demotion_in_joint_goes_through_learners_next() -> None:
    joint = enter_joint(BASE, True, _ch((T.ADD_LEARNER, 3)))
    assert joint.learners_next == (3,) and joint.learners == ()
    assert 3 in joint.voters_outgoing and 3 not in joint.voters
    assert leave_joint(joint) == ConfState(voters=(1, 2), learners=(3,))
    # Re-promoting before leaving cancels the demotion.
    again = enter_joint(BASE, True, _ch((T.ADD_LEARNER, 3), (T.ADD_VOTER, 3)))
    assert again.learners_next == () and 3 in again.voters


def test_enters_joint_rules() -> None:
    assert enters_joint(ConfChange(tuple(_ch((T.ADD_VOTER, 4))))) == (False, False)
    assert enters_joint(ConfChange(tuple(_ch((T.ADD_VOTER, 4), (T.ADD_VOTER, 5))))) == (
        True, True)
    explicit = ConfChange(tuple(_ch((T.ADD_VOTER, 4))), ConfChangeTransition.JOINT_EXPLICIT)
    assert enters_joint(explicit) == (True, False)


def test_apply_change_dispatch() -> None:
    joint = apply_change(BASE, ConfChange(tuple(_ch((T.ADD_VOTER, 4), (T.ADD_VOTER, 5)))))
    assert joint.auto_leave and joint.voters_outgoing == (1, 2, 3)
    assert apply_change(joint, ConfChange()) == ConfState(voters=(1, 2, 3, 4, 5))


def test_check_conf_rejects_broken_states() -> None:
    with pytest.raises(ConfChangeError):
        check_conf(ConfState(voters=(1, 2), learners=(2,)))
    with pytest.raises(ConfChangeError):
        check_conf(ConfState(voters=(1,), learners_next=(1,)))
    with pytest.raises(ConfChangeError):
        check_conf(ConfState(voters=(1,), auto_leave=True))
    with pytest.raises(ConfChangeError):
        check_conf(ConfState(voters=(0,)))
    with pytest.raises(ConfChangeError, match="invalid node id"):
        simple(BASE, _ch((T.ADD_VOTER, 0)))
