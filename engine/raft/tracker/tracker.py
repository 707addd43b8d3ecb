"""``ProgressTracker``: the membership configuration, per-peer progress and votes.

Theory of operation
-------------------
The configuration is a ``ConfState`` (voters, learners, outgoing voters when
joint, learners-next, auto-leave). Every member has a ``Progress``; votes are
collected only during an election. Quorum questions (committed index, vote
outcome, is a quorum active) are answered with the pure functions of
``engine.raft.quorum``, joint-aware.

Rules
-----
- Invariant: ``progress`` holds exactly the ids of voters, outgoing voters,
  learners and learners-next.
- Invariant: ``progress[i].is_learner`` iff ``i in conf.learners``.
- The vote map is created when an election starts and dropped when it ends.
"""

from __future__ import annotations

from engine.raft.quorum import (
    INFINITE_INDEX,
    VoteResult,
    joint_committed_index,
    joint_vote_result,
)
from engine.raft.tracker.progress import Progress
from engine.raft.types import ConfState


class ProgressTracker:
    """Membership plus what the node knows about each member."""

    __slots__ = ("conf", "inflight_limits", "progress", "votes")

    def __init__(self, max_inflight: int, max_inflight_bytes: int) -> None:
        #: (max messages, max bytes) of every follower's inflight window.
        self.inflight_limits = (max_inflight, max_inflight_bytes)
        #: The current configuration (see module rules for its relation to ``progress``).
        self.conf = ConfState()
        #: Invariant: keys == all member ids of ``conf``.
        self.progress: dict[int, Progress] = {}
        #: Votes received in the current election; ``None`` outside elections.
        self.votes: dict[int, bool] | None = None

    # -- membership ---------------------------------------------------------------

    def is_joint(self) -> bool:
        return bool(self.conf.voters_outgoing)

    def is_voter(self, node: int) -> bool:
        c = self.conf
        return node in c.voters or node in c.voters_outgoing

    def voter_ids(self) -> list[int]:
        """All voters of both halves, sorted, without duplicates."""
        c = self.conf
        if not c.voters_outgoing:
            return list(c.voters)
        return sorted(set(c.voters) | set(c.voters_outgoing))

    def is_sole_voter(self, node: int) -> bool:
        """``node`` is the only voter (not joint): it alone makes every quorum. (A
        non-voter leading a one-voter group, a caretaker, is not.)"""
        c = self.conf
        return c.voters == (node,) and not c.voters_outgoing

    def new_progress(self, next_index: int, *, is_learner: bool) -> Progress:
        return Progress(next_index, self.inflight_limits, is_learner=is_learner)

    def set_conf(self, conf: ConfState, last_index: int) -> None:
        """Switch to ``conf`` (already validated): keep the progress of members that
        stay, create it (probing from ``last_index``) for new ones, drop the rest."""
        members = (
            set(conf.voters) | set(conf.voters_outgoing) | set(conf.learners)
            | set(conf.learners_next)
        )
        learners = set(conf.learners)
        old = self.progress
        new: dict[int, Progress] = {}
        for node in sorted(members):
            pr = old.get(node)
            if pr is None:
                pr = self.new_progress(max(last_index, 1), is_learner=node in learners)
                # A new member is presumed alive so that check-quorum does not
                # immediately depose the leader that just added it.
                pr.recent_active = True
            else:
                pr.is_learner = node in learners
            new[node] = pr
        self.progress = new
        self.conf = conf

    # -- quorum questions ------------------------------------------------------------

    def committed(self) -> int:
        """Largest index replicated on a (joint) quorum of voters (paper §5.3)."""
        c = self.conf
        prs = self.progress
        if not c.voters_outgoing:
            # Fast path of majority_committed_index for the single-config case.
            n = len(c.voters)
            if n == 0:
                return INFINITE_INDEX
            ms = sorted([prs[v].match for v in c.voters])
            return ms[n - (n // 2 + 1)]
        acked = {node: pr.match for node, pr in prs.items()}
        return joint_committed_index(c.voters, c.voters_outgoing, acked)

    def reset_votes(self) -> None:
        self.votes = None

    def record_vote(self, node: int, granted: bool) -> None:
        """Record ``node``'s first answer in this election (later duplicates are ignored)."""
        if self.votes is None:
            self.votes = {}
        self.votes.setdefault(node, granted)

    def tally_votes(self) -> tuple[int, int, VoteResult]:
        """(granted, rejected, outcome) counting voters only."""
        votes = self.votes or {}
        granted = rejected = 0
        for node in self.voter_ids():
            v = votes.get(node)
            if v is None:
                continue
            if v:
                granted += 1
            else:
                rejected += 1
        return granted, rejected, joint_vote_result(
            self.conf.voters, self.conf.voters_outgoing, votes
        )

    def quorum_active(self, self_id: int) -> bool:
        """Whether a quorum was heard from since the last call (check-quorum, thesis 6.2);
        resets the activity flags of the others for the next round."""
        active: dict[int, bool] = {}
        for node, pr in self.progress.items():
            if node == self_id:
                active[node] = True
                continue
            if not pr.is_learner:
                active[node] = pr.recent_active
            pr.recent_active = False
        c = self.conf
        return joint_vote_result(c.voters, c.voters_outgoing, active) is VoteResult.WON
