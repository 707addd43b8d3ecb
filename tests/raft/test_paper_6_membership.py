"""Raft paper §6 / thesis chapter 4 (cluster membership changes): single-server
changes, learners, joint consensus (enter/leave, auto-leave), one pending change,
and a leader that removes itself."""

from __future__ import annotations

import pytest

from engine.raft import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    MessageType,
    ProposalDropped,
    StateRole,
)
from tests.raft.net import Net

pytestmark = pytest.mark.timeout(10)

ADD = ConfChangeType.ADD_VOTER
LEARN = ConfChangeType.ADD_LEARNER
REMOVE = ConfChangeType.REMOVE_NODE


def _cc(*changes: tuple[int, int], transition: int = ConfChangeTransition.AUTO) -> ConfChange:
    return ConfChange(tuple(ConfChangeSingle(t, n) for t, n in changes), transition)


def _add_spare(net: Net, nid: int) -> None:
    """A new node starts with the group's genesis configuration (not containing
    itself), as a real joining replica would."""
    net.add_node(nid, MemoryStorage(ConfState(voters=(1, 2, 3))))


def _conf(net: Net, nid: int) -> ConfState:
    return net.nodes[nid].status().conf_state


def test_add_learner_replicates_without_voting() -> None:
    """Thesis 4.2.1: new servers join as non-voting members (learners) that receive
    the log but are not counted in majorities.
    Reference: section 6"""
    net = Net.of([1, 2, 3])
    leader = net.elect(1)
    _add_spare(net, 4)
    leader.propose_conf_change(_cc((LEARN, 4)))
    net.stabilize()
    assert _conf(net, 1).learners == (4,)
    leader.propose(b"to-learner")
    net.stabilize()
    assert net.data_applied(4) == [b"to-learner"]
    assert net.nodes[4].raft.is_learner
    # The learner's acknowledgement alone never makes a majority.
    net.isolate(2)
    net.isolate(3)
    leader.propose(b"needs-voters")
    net.stabilize()
    assert b"needs-voters" not in net.data_applied(1)


def test_add_voter_one_at_a_time() -> None:
    """"the cluster configuration ... changes one server at a time": a single added
    voter takes effect when the entry is applied and counts in majorities.
    Reference: section 6 (thesis 4.1)"""
    net = Net.of([1, 2, 3])
    leader = net.elect(1)
    _add_spare(net, 4)
    leader.propose_conf_change(_cc((ADD, 4)))
    net.stabilize()
    for nid in (1, 2, 3, 4):
        assert _conf(net, nid).voters == (1, 2, 3, 4)
    # Majority of 4 is 3: with 3 and 4 cut off, nothing commits.
    net.isolate(3)
    net.isolate(4)
    leader.propose(b"x")
    net.stabilize()
    assert b"x" not in net.data_applied(1)


def test_promote_learner_to_voter() -> None:
    """A caught-up learner is promoted with an ADD_VOTER change (thesis 4.2.1)."""
    net = Net.of([1, 2, 3], learners=[4])
    leader = net.elect(1)
    leader.propose_conf_change(_cc((ADD, 4)))
    net.stabilize()
    assert _conf(net, 1) == ConfState(voters=(1, 2, 3, 4))
    assert not net.nodes[4].raft.is_learner


def test_remove_follower() -> None:
    net = Net.of([1, 2, 3])
    leader = net.elect(1)
    leader.propose_conf_change(_cc((REMOVE, 3)))
    net.stabilize()
    assert _conf(net, 1).voters == (1, 2)
    net.isolate(3)
    leader.propose(b"two-of-two")
    net.stabilize()
    assert net.data_applied(2)[-1] == b"two-of-two"


def test_several_voter_changes_in_one_proposal_go_through_joint() -> None:
    """Changing two voters at once without joint consensus could create disjoint
    majorities (thesis figure 4.2), so an AUTO change of several voters enters a
    joint configuration instead of applying directly.
    Reference: section 6"""
    net = Net.of([1, 2, 3])
    leader = net.elect(1)
    net.auto_apply_conf = False
    leader.propose_conf_change(_cc((ADD, 4), (ADD, 5)))
    net.stabilize()
    cs = leader.apply_conf_change(_cc((ADD, 4), (ADD, 5)))
    assert cs.voters == (1, 2, 3, 4, 5) and cs.voters_outgoing == (1, 2, 3)
    assert cs.auto_leave


def test_only_one_conf_change_pending_at_a_time() -> None:
    """Thesis 4.1: "a leader ... will not begin a new configuration change until
    the previous one is committed": a second proposal is dropped until the first
    is applied."""
    net = Net.of([1, 2, 3])
    leader = net.elect(1)
    net.auto_apply_conf = False
    leader.propose_conf_change(_cc((LEARN, 4)))
    with pytest.raises(ProposalDropped, match="not yet applied"):
        leader.propose_conf_change(_cc((LEARN, 5)))
    net.stabilize()
    # Applied (by the caller, here without switching config), the next one is accepted.
    net.auto_apply_conf = True
    leader.propose_conf_change(_cc((LEARN, 5)))


def test_new_leader_does_not_accept_conf_change_before_applying_its_log() -> None:
    """A new leader conservatively assumes an unapplied conf change may be in its log
    (pending index = its last index at election)."""
    net = Net.of([1, 2, 3])
    leader = net.elect(1)
    rd = leader.ready() if leader.has_ready() else None
    assert rd is None
    r = leader.raft
    r.pending_conf_index = leader.last_index + 5
    with pytest.raises(ProposalDropped):
        leader.propose_conf_change(_cc((LEARN, 4)))


def test_joint_consensus_requires_both_majorities() -> None:
    """"In the joint consensus ... Agreement (for elections and entry commitment)
    requires separate majorities from both the old and new configurations."
    Reference: section 6"""
    net = Net.of([1, 2, 3])
    leader = net.elect(1)
    for nid in (4, 5):
        _add_spare(net, nid)
    leader.propose_conf_change(
        _cc((ADD, 4), (ADD, 5), (REMOVE, 2), (REMOVE, 3),
            transition=ConfChangeTransition.JOINT_EXPLICIT)
    )
    net.stabilize()
    conf = _conf(net, 1)
    assert conf.voters == (1, 4, 5) and conf.voters_outgoing == (1, 2, 3)
    # New majority {1,4,5} without the old one ({1} alone of {1,2,3}) is not enough.
    net.isolate(2)
    net.isolate(3)
    leader.propose(b"joint")
    net.stabilize()
    assert b"joint" not in net.data_applied(1)
    net.heal()
    net.tick_all(2)
    assert b"joint" in net.data_applied(1)
    # Explicit transition: stays joint until told to leave.
    assert _conf(net, 1).voters_outgoing
    leader.propose_conf_change(ConfChange())
    net.stabilize()
    assert _conf(net, 1) == ConfState(voters=(1, 4, 5))


def test_joint_auto_leave_is_proposed_by_leader() -> None:
    """With an implicit transition the leader proposes leaving C_old,new as soon as
    the entering entry is applied (thesis 4.3: "the leader ... creates a log entry
    describing C_new")."""
    net = Net.of([1, 2, 3])
    leader = net.elect(1)
    _add_spare(net, 4)
    leader.propose_conf_change(_cc((ADD, 4), (REMOVE, 3)))
    net.stabilize()
    for nid in (1, 2, 4):
        assert _conf(net, nid) == ConfState(voters=(1, 2, 4))
    ccs = [e for e in net.applied[1] if e.type == EntryType.CONF_CHANGE]
    assert len(ccs) == 2  # enter joint, then the automatic leave


def test_demote_voter_through_joint_uses_learners_next() -> None:
    """A voter demoted inside a joint configuration stays an outgoing voter and
    becomes a learner only when the joint configuration is left."""
    net = Net.of([1, 2, 3])
    leader = net.elect(1)
    net.auto_apply_conf = True
    leader.propose_conf_change(
        _cc((LEARN, 3), transition=ConfChangeTransition.JOINT_EXPLICIT)
    )
    net.stabilize()
    conf = _conf(net, 1)
    assert conf.learners_next == (3,) and 3 in conf.voters_outgoing
    leader.propose_conf_change(ConfChange())
    net.stabilize()
    assert _conf(net, 1) == ConfState(voters=(1, 2), learners=(3,))


def test_removed_leader_hands_over_and_steps_down() -> None:
    """"the leader ... steps down (returns to follower state) once it has committed
    the C_new log entry" (section 6); it first hands leadership to an up-to-date
    voter of C_new so the group stays live.
    Reference: section 6"""
    net = Net.of([1, 2, 3])
    leader = net.elect(1)
    leader.propose_conf_change(_cc((REMOVE, 1)))
    net.stabilize()
    assert net.sent(MessageType.TIMEOUT_NOW)
    # The transferee may still be applying the change when TIMEOUT_NOW arrives (it
    # then must not campaign); the handover is retried after an election timeout.
    for _ in range(40):
        net.tick_all(1)
        if leader.role == StateRole.FOLLOWER:
            break
    assert leader.role == StateRole.FOLLOWER
    new = [n for n in (2, 3) if net.nodes[n].role == StateRole.LEADER]
    assert len(new) == 1
    net.nodes[new[0]].propose(b"after")
    net.stabilize()
    assert b"after" in net.data_applied(2) and b"after" in net.data_applied(3)
    # The removed node never campaigns again.
    net.tick(1, 100)
    assert net.nodes[1].role == StateRole.FOLLOWER


def test_conf_change_forwarded_by_follower() -> None:
    net = Net.of([1, 2, 3])
    net.elect(1)
    _add_spare(net, 4)
    net.nodes[2].propose_conf_change(_cc((LEARN, 4)))
    net.stabilize()
    assert _conf(net, 1).learners == (4,)


def test_invalid_conf_change_is_dropped() -> None:
    net = Net.of([1, 2, 3])
    leader = net.elect(1)
    with pytest.raises(ProposalDropped, match="leave a non-joint"):
        leader.propose_conf_change(ConfChange())
    with pytest.raises(ProposalDropped, match="removed all voters"):
        leader.propose_conf_change(
            _cc((REMOVE, 1), (REMOVE, 2), (REMOVE, 3),
                transition=ConfChangeTransition.JOINT_EXPLICIT)
        )


def test_removed_node_with_unknown_commit_may_campaign_as_caretaker() -> None:
    """Membership takes effect when applied, so a crashed removed leader can hold the
    log the remaining voters need to agree on the new configuration (etcd-io/etcd
    #12359). Such a node (removed or demoted, holding entries not known committed)
    may campaign when check-quorum's leader lease keeps it from disrupting a healthy
    group; without check-quorum, or with nothing uncommitted, it may not."""
    cs = ConfState(voters=(2, 3))

    def removed(pre_vote: bool, check_quorum: bool, last: int, commit: int,
                conf: ConfState = cs) -> StateRole:
        st = MemoryStorage(conf)
        st.append([Entry(1, i) for i in range(1, last + 1)])
        st.set_hard_state(HardState(1, 0, commit))
        net = Net(cfg={"pre_vote": pre_vote, "check_quorum": check_quorum})
        node = net.add_node(1, st)
        node.campaign()
        return node.role

    assert removed(True, True, last=5, commit=3) == StateRole.PRE_CANDIDATE
    assert removed(False, True, last=5, commit=3) == StateRole.CANDIDATE
    assert removed(True, True, last=5, commit=5) == StateRole.FOLLOWER
    # Pre-vote alone does not protect a healthy leader: no caretaker then.
    assert removed(True, False, last=5, commit=3) == StateRole.FOLLOWER
    demoted = ConfState(voters=(2, 3), learners=(1,))
    assert removed(True, True, last=5, commit=3, conf=demoted) == StateRole.PRE_CANDIDATE
    assert removed(True, True, last=5, commit=5, conf=demoted) == StateRole.FOLLOWER


def test_caretaker_of_one_voter_group_confirms_reads_with_the_voter() -> None:
    """A caretaker leading a one-voter group is not that voter: it must not answer a
    ReadIndex on its own (found by the simulator, seed 21179). Reference: thesis 6.4"""
    cs = ConfState(voters=(2,))
    st1 = MemoryStorage(cs)
    st1.append([Entry(1, i) for i in range(1, 6)])
    st1.set_hard_state(HardState(1, 0, 3))
    st2 = MemoryStorage(cs)
    st2.append([Entry(1, i) for i in range(1, 4)])
    st2.set_hard_state(HardState(1, 0, 3))
    net = Net(cfg={"pre_vote": False})
    caretaker = net.add_node(1, st1)
    net.add_node(2, st2)
    caretaker.campaign()
    net.deliver(net.outbox(1))
    net.deliver(net.outbox(2))
    assert caretaker.role == StateRole.LEADER
    caretaker.read_index(b"r")
    net.outbox(1)
    assert not net.read_states[1]
