"""Joint quorums (thesis 4.3): a decision needs a majority of the incoming AND of
the outgoing voter set; with an empty outgoing set this is plain majority."""

from __future__ import annotations

from collections.abc import Mapping

from engine.raft.quorum.majority import (
    VoteResult,
    majority_committed_index,
    majority_vote_result,
)


def joint_committed_index(
    incoming: tuple[int, ...], outgoing: tuple[int, ...], acked: Mapping[int, int]
) -> int:
    """The index committed in both halves: the smaller of the two majorities' indexes."""
    ci = majority_committed_index(incoming, acked)
    if not outgoing:
        return ci
    return min(ci, majority_committed_index(outgoing, acked))


def joint_vote_result(
    incoming: tuple[int, ...], outgoing: tuple[int, ...], votes: Mapping[int, bool]
) -> VoteResult:
    """WON if both halves won, LOST if either lost, PENDING otherwise."""
    r1 = majority_vote_result(incoming, votes)
    if not outgoing:
        return r1
    r2 = majority_vote_result(outgoing, votes)
    if r1 == r2:
        return r1
    if VoteResult.LOST in (r1, r2):
        return VoteResult.LOST
    return VoteResult.PENDING
