"""Quorum math, pure functions over voter sets: committed index and vote outcome.

A *majority configuration* is a tuple of voter ids; a *joint configuration*
is a pair (incoming, outgoing) of them (thesis 4.3): a decision in a joint
configuration needs a majority of BOTH halves.
"""

from engine.raft.quorum.joint import joint_committed_index, joint_vote_result
from engine.raft.quorum.majority import (
    INFINITE_INDEX,
    VoteResult,
    majority_committed_index,
    majority_vote_result,
)

__all__ = [
    "INFINITE_INDEX",
    "VoteResult",
    "joint_committed_index",
    "joint_vote_result",
    "majority_committed_index",
    "majority_vote_result",
]
