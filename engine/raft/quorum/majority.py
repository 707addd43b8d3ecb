"""Majority quorums: the committed index and the outcome of a vote among one voter set.

Rules
-----
- The committed index of a voter set is the largest index acknowledged by a
  majority: sort the acknowledged indexes and take the ``n // 2 + 1``-th
  largest (paper §5.3: "replicated on a majority of servers").
- An empty voter set commits ``INFINITE_INDEX`` and wins every vote, so that
  in a joint configuration with an empty half the other half decides alone.
- A voter with no acknowledgement counts as having acknowledged index 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum

#: What an empty configuration "commits": larger than any real index.
INFINITE_INDEX = (1 << 63) - 1


class VoteResult(IntEnum):
    PENDING = 0
    LOST = 1
    WON = 2


def majority_committed_index(voters: tuple[int, ...], acked: Mapping[int, int]) -> int:
    """Largest index acknowledged by a majority of ``voters`` (``acked[id]`` = match)."""
    n = len(voters)
    if n == 0:
        return INFINITE_INDEX
    if n == 1:
        return acked.get(voters[0], 0)
    srt = sorted([acked.get(v, 0) for v in voters])
    return srt[n - (n // 2 + 1)]


def majority_vote_result(voters: tuple[int, ...], votes: Mapping[int, bool]) -> VoteResult:
    """WON once a majority granted, LOST once a majority can no longer be reached."""
    n = len(voters)
    if n == 0:
        return VoteResult.WON
    granted = rejected = 0
    for v in voters:
        got = votes.get(v)
        if got is None:
            continue
        if got:
            granted += 1
        else:
            rejected += 1
    q = n // 2 + 1
    if granted >= q:
        return VoteResult.WON
    if n - rejected < q:
        return VoteResult.LOST
    return VoteResult.PENDING
