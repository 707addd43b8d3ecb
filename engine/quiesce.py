"""Quiescence: when an idle range may stop ticking and heartbeating.

Rules (CockroachDB's ``shouldReplicaQuiesce``, reduced to what our raft core exposes)
-----------------------------------------------------------------------------------
A **leader** quiesces its range when, at a tick, all of these hold:

- it has no pending proposals, no pending reads and no leadership transfer;
- its log is fully committed and applied (``applied == committed == last``),
  and there is nothing waiting in a ``Ready``;
- it is not in a joint configuration;
- every follower on a live node has ``match == last`` (followers on nodes
  declared dead do not hold quiescence back; they catch up once alive).

It then sends each follower a heartbeat flagged ``QUIESCE`` with
``commit == last`` and stops ticking. A **follower** that receives a
``QUIESCE`` heartbeat from its leader, in its term, quiesces only if its own
log ends at exactly that commit index (it has everything, and knows it is
committed); otherwise it treats it as an ordinary heartbeat and keeps ticking.

Anything else wakes a replica: a proposal, a read, any raft message other
than a quiesce heartbeat or the answer to one, or ``node_dead`` of its
leader's node (the follower then ticks and elects; pre-vote and the
leader-lease check keep that from disturbing ranges whose leader is alive).
"""

from __future__ import annotations

from engine.raft.rawnode import RawNode
from engine.raft.types import StateRole


def leader_may_quiesce(node: RawNode, busy: bool, dead_nodes: set[int]) -> bool:
    """Whether leader ``node`` may quiesce now; ``busy``: client work is pending."""
    r = node.raft
    if busy or r.role != StateRole.LEADER or r.lead_transferee:
        return False
    log = r.log
    last = log.last_index()
    if log.committed != last or log.applied != last or node.has_ready():
        return False
    if r.tracker.conf.voters_outgoing:
        return False
    me = r.id
    for nid, pr in r.tracker.progress.items():
        if nid != me and pr.match != last and nid not in dead_nodes:
            return False
    return True


def follower_may_quiesce(node: RawNode, leader: int, term: int, commit: int) -> bool:
    """Whether follower ``node``, having just stepped a quiesce heartbeat from
    ``leader`` in ``term`` with ``commit``, may stop ticking."""
    r = node.raft
    log = r.log
    return (r.role == StateRole.FOLLOWER and r.lead == leader and r.term == term
            and log.committed == commit and log.last_index() == commit)
