"""Random membership changes over a fixed pool of node ids.

Theory of operation
-------------------
``random_change`` looks at the leader's membership (as of its applied
index) and picks a change that is valid for it, drawn from what an
operator does: add a learner, promote a learner, remove a voter or a
learner, add a voter directly, and multi-change joint transitions (enter
joint with ``JOINT_EXPLICIT`` / ``JOINT_IMPLICIT`` / ``AUTO``, leave with an
empty change). The raft core may still refuse the proposal (a change is
already pending, or the leader's view moved on); the simulator treats a
refusal as a dropped proposal.

Rules
-----
- Never leave fewer than ``min_voters`` voters, so that a run keeps a
  quorum worth electing; the pool limits the size from above.
- A joint configuration that must be left explicitly is left before any
  other change is drawn (nothing else is valid in it).
"""

from __future__ import annotations

import random

from engine.raft.types import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
    ConfState,
)


def is_joint(cs: ConfState) -> bool:
    return bool(cs.voters_outgoing)


def members(cs: ConfState) -> set[int]:
    """Every node the configuration replicates to (both halves of a joint one)."""
    return {*cs.voters, *cs.voters_outgoing, *cs.learners, *cs.learners_next}


def random_change(
    rng: random.Random, cs: ConfState, pool: list[int], min_voters: int
) -> ConfChange | None:
    """A change valid against ``cs``, or None if nothing applies."""
    if is_joint(cs):
        return None if cs.auto_leave else ConfChange()
    voters = list(cs.voters)
    learners = list(cs.learners)
    outsiders = [n for n in pool if n not in voters and n not in learners]
    add, remove = ConfChangeType.ADD_VOTER, ConfChangeType.REMOVE_NODE
    options: list[ConfChange] = []
    if outsiders:
        o = rng.choice(outsiders)
        options.append(_single(ConfChangeType.ADD_LEARNER, o))
        options.append(_single(add, o))
    if learners:
        ln = rng.choice(learners)
        options.append(_single(add, ln))
        options.append(_single(remove, ln))
    if len(voters) > min_voters:
        options.append(_single(remove, rng.choice(voters)))
    # Joint: swap a voter for a learner/outsider in one step (replica move).
    newcomers = learners + outsiders
    if newcomers and len(voters) >= min_voters:
        incoming = rng.choice(newcomers)
        outgoing = rng.choice(voters)
        transition = rng.choice(list(ConfChangeTransition))
        options.append(
            ConfChange(
                (ConfChangeSingle(add, incoming), ConfChangeSingle(remove, outgoing)),
                transition,
            )
        )
        # Demote a voter to learner while adding another (learners_next).
        options.append(
            ConfChange(
                (
                    ConfChangeSingle(add, incoming),
                    ConfChangeSingle(ConfChangeType.ADD_LEARNER, outgoing),
                ),
                ConfChangeTransition.JOINT_EXPLICIT,
            )
        )
    return rng.choice(options) if options else None


def _single(kind: ConfChangeType, node: int) -> ConfChange:
    return ConfChange((ConfChangeSingle(kind, node),))


_KIND = {ConfChangeType.ADD_VOTER: "+V", ConfChangeType.ADD_LEARNER: "+L",
         ConfChangeType.REMOVE_NODE: "-"}
_TRANSITION = {ConfChangeTransition.AUTO: "", ConfChangeTransition.JOINT_IMPLICIT: " joint",
               ConfChangeTransition.JOINT_EXPLICIT: " joint-explicit"}


def describe_change(cc: ConfChange) -> str:
    """Compact form for traces: ``+V4 -1 joint-explicit``, ``leave-joint``."""
    if not cc.changes:
        return "leave-joint"
    parts = " ".join(f"{_KIND[ConfChangeType(c.type)]}{c.node_id}" for c in cc.changes)
    return parts + _TRANSITION[ConfChangeTransition(cc.transition)]


def describe_conf(cs: ConfState) -> str:
    """Compact form for traces: ``V(1,2,3) L(4)``, joint as ``V(..) & V(..)``."""
    def ids(t: tuple[int, ...]) -> str:
        return ",".join(map(str, t))

    out = f"V({ids(cs.voters)})"
    if cs.voters_outgoing:
        out += f" & V({ids(cs.voters_outgoing)})"
    if cs.learners:
        out += f" L({ids(cs.learners)})"
    if cs.learners_next:
        out += f" L_next({ids(cs.learners_next)})"
    if cs.auto_leave:
        out += " auto-leave"
    return out
