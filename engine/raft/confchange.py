"""Membership changes: compute the next ``ConfState`` from the current one and a
``ConfChange`` (pure set math; the tracker then reconciles progress).

Theory of operation (thesis 4.1-4.3, etcd ``confchange.Changer``)
------------------------------------------------------------------
- *Simple* change: at most one voter added or removed (learners are free).
  Any two majorities of configurations differing by one voter overlap, so the
  change is safe without a joint phase.
- *Enter joint*: the current voters become the outgoing half, the changes are
  applied to the incoming half; decisions then need both majorities.
  A voter demoted to learner stays an outgoing voter and is parked in
  ``learners_next`` until the joint configuration is left.
- *Leave joint*: drop the outgoing half; ``learners_next`` become learners.
  With ``auto_leave`` the leader proposes this by itself once the entering
  change is applied.

Rules
-----
- Invariant (checked by ``check_conf``): voters and learners are disjoint,
  ``learners_next`` is a subset of the outgoing voters and disjoint from the
  learners, and a non-joint configuration has no ``learners_next`` and no
  ``auto_leave``.
- An invalid change raises ``ConfChangeError`` and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.raft.errors import RaftError
from engine.raft.types import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
    ConfState,
)


class ConfChangeError(RaftError):
    """A ``ConfChange`` cannot be applied to the current configuration."""


def enters_joint(cc: ConfChange) -> tuple[bool, bool]:
    """(uses a joint configuration, leaves it automatically) for a non-empty change."""
    if cc.transition != ConfChangeTransition.AUTO or len(cc.changes) > 1:
        return True, cc.transition != ConfChangeTransition.JOINT_EXPLICIT
    return False, False


def apply_change(conf: ConfState, cc: ConfChange) -> ConfState:
    """The configuration after applying ``cc`` to ``conf`` (leave, enter joint or simple)."""
    if cc.leaves_joint:
        return leave_joint(conf)
    joint, auto_leave = enters_joint(cc)
    if joint:
        return enter_joint(conf, auto_leave, cc.changes)
    return simple(conf, cc.changes)


class _Sets:
    """Mutable working copy of a ``ConfState``'s sets."""

    __slots__ = ("incoming", "learners", "learners_next", "outgoing")

    def __init__(self, conf: ConfState) -> None:
        self.incoming = set(conf.voters)
        self.outgoing = set(conf.voters_outgoing)
        self.learners = set(conf.learners)
        self.learners_next = set(conf.learners_next)

    def freeze(self, auto_leave: bool) -> ConfState:
        return ConfState(
            voters=tuple(sorted(self.incoming)),
            learners=tuple(sorted(self.learners)),
            voters_outgoing=tuple(sorted(self.outgoing)),
            learners_next=tuple(sorted(self.learners_next)),
            auto_leave=auto_leave,
        )

    def apply(self, changes: Iterable[ConfChangeSingle]) -> None:
        for ch in changes:
            node = ch.node_id
            if node < 1:
                raise ConfChangeError(f"invalid node id {node}")
            if ch.type == ConfChangeType.ADD_VOTER:
                self.make_voter(node)
            elif ch.type == ConfChangeType.ADD_LEARNER:
                self.make_learner(node)
            elif ch.type == ConfChangeType.REMOVE_NODE:
                self.remove(node)
            else:
                raise ConfChangeError(f"unknown change type {ch.type}")
        if not self.incoming:
            raise ConfChangeError("removed all voters")

    def make_voter(self, node: int) -> None:
        self.learners.discard(node)
        self.learners_next.discard(node)
        self.incoming.add(node)

    def make_learner(self, node: int) -> None:
        if node in self.learners:
            return
        self.incoming.discard(node)
        self.learners_next.discard(node)
        if node in self.outgoing:
            # Still a voter of the outgoing half: becomes a learner on leaving joint.
            self.learners_next.add(node)
        else:
            self.learners.add(node)

    def remove(self, node: int) -> None:
        self.incoming.discard(node)
        self.learners.discard(node)
        self.learners_next.discard(node)


def simple(conf: ConfState, changes: Iterable[ConfChangeSingle]) -> ConfState:
    """Apply changes that alter at most one voter, outside a joint configuration."""
    if conf.voters_outgoing:
        raise ConfChangeError("can't apply a simple config change in a joint config")
    s = _Sets(conf)
    s.apply(changes)
    if len(s.incoming.symmetric_difference(conf.voters)) > 1:
        raise ConfChangeError("more than one voter changed without entering joint config")
    return check_conf(s.freeze(False))


def enter_joint(
    conf: ConfState, auto_leave: bool, changes: Iterable[ConfChangeSingle]
) -> ConfState:
    """Enter the joint configuration (C_old, C_new) of thesis 4.3."""
    if conf.voters_outgoing:
        raise ConfChangeError("config is already joint")
    if not conf.voters:
        raise ConfChangeError("can't make a zero-voter config joint")
    s = _Sets(conf)
    s.outgoing = set(conf.voters)
    s.apply(changes)
    return check_conf(s.freeze(auto_leave))


def leave_joint(conf: ConfState) -> ConfState:
    """Leave the joint configuration: C_new alone."""
    if not conf.voters_outgoing:
        raise ConfChangeError("can't leave a non-joint config")
    s = _Sets(conf)
    s.learners |= s.learners_next
    s.learners_next = set()
    s.outgoing = set()
    return check_conf(s.freeze(False))


def check_conf(conf: ConfState) -> ConfState:
    """Return ``conf`` if it satisfies the module invariants, else raise ``ConfChangeError``."""
    voters = set(conf.voters) | set(conf.voters_outgoing)
    learners = set(conf.learners)
    nxt = set(conf.learners_next)
    if voters & learners:
        raise ConfChangeError(f"nodes {sorted(voters & learners)} are voters and learners")
    if not nxt <= set(conf.voters_outgoing):
        raise ConfChangeError(f"learners_next {sorted(nxt)} not all outgoing voters")
    if nxt & learners:
        raise ConfChangeError(f"nodes {sorted(nxt & learners)} in learners and learners_next")
    if not conf.voters_outgoing and (nxt or conf.auto_leave):
        raise ConfChangeError("learners_next/auto_leave set outside a joint config")
    for field in (conf.voters, conf.learners, conf.voters_outgoing, conf.learners_next):
        if any(n < 1 for n in field) or len(set(field)) != len(field):
            raise ConfChangeError(f"invalid or duplicate node ids in {field}")
    return conf
