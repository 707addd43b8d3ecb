"""``NodeAdmin``: the ``AdminBackend`` of a running node.

Status and ranges come from the workers' latest reports (no request to a
worker is made for them); ``/kv`` goes through the node's ``Router`` like a
RESP client would.

Split, merge and leader transfer are admin commands (``worker_protocol``)
sent like a KV command: ``Node.submit`` takes them to the range's leader
(local worker or forwarded), TRYAGAIN hints are followed a bounded number of
times. A split's new range id is allocated by the meta range (unique and
small cluster-wide), and after a split or merge the new descriptors are
pushed to meta (``engine/meta_sync.py``) — but only once the range's leader
confirmed the left-hand descriptor we computed from our cache: a stale cache
would compute wrong halves, and a wrong descriptor of a high enough
generation in meta would shadow the right one. When the check fails the
leader's node pushes the real ones (its reconciler). The meta range itself
is never split or merged (409). Merge works for neighbours
in the same worker (a split's halves); the bootstrap ranges alternate
workers, so merging two of them is refused by the Store with its reason.
Replica changes (``change_replicas``) are steps sent the same way, each
idempotent on the leader (``engine/replica_change.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from engine.admin.backend import (
    AdminError,
    BadRequest,
    Conflict,
    NodeStatus,
    RangeInfo,
    Timeout,
    TryAgain,
    UnknownRange,
)
from engine.client_errors import Timeout as ClientTimeout
from engine.kv_codec import Delete, Get, Int, Put, Value
from engine.meta_codec import META_RANGE_ID
from engine.meta_sync import MetaRefused, MetaUnavailable
from engine.proposal import Outcome
from engine.range_desc import RangeDescriptor
from engine.replica_change import ReplicaProgress, decode_progress
from engine.worker_protocol import AdminOp, encode_admin, unpack_status

if TYPE_CHECKING:
    from engine.node import Node

log = logging.getLogger("multiraft.admin")

#: A learner this close to the commit index is promoted: it is replicated entry by
#: entry by then, so the rest arrives within a round trip.
CATCH_UP_LAG = 64


class NodeAdmin:
    """Admin API over ``node`` (see the module docstring)."""

    def __init__(self, node: Node) -> None:
        self._node = node
        #: How long an added learner may take to catch up (a snapshot of the range).
        self.catch_up_timeout = 30.0

    async def status(self) -> NodeStatus:
        reports = self._node.worker_reports()
        ranges = [r for rep in reports for r in rep.ranges]
        user = [r for r in ranges if r.desc.range_id != META_RANGE_ID]  # keys: users' only
        return NodeStatus(
            node_id=self._node.id, version="0.1", uptime_s=self._node.uptime(),
            workers=len(self._node.worker_pids()), ranges=len(ranges),
            leaders=sum(r.is_leader for r in ranges), quiesced=sum(r.quiesced for r in ranges),
            keys=sum(r.keys for r in user), size_bytes=sum(r.size_bytes for r in user))

    async def ranges(self) -> list[RangeInfo]:
        """The user ranges in key order. The meta range is not listed: its span is
        nominal and a table row for it would look like a range over all keys (it is
        range ``META_RANGE_ID``; split and merge of it are refused, transfer-leader
        and replica changes work as for any range)."""
        held = {r.desc.range_id: r for rep in self._node.worker_reports() for r in rep.ranges}
        out = []
        for d in self._node.directory.all():
            r = held.get(d.range_id)
            out.append(RangeInfo(
                range_id=d.range_id, start_key=d.start_key, end_key=d.end_key,
                generation=d.generation, voters=d.voters, learners=d.learners,
                leader=self._node.directory.leader(d.range_id),
                term=r.term if r else None, applied_index=r.applied if r else None,
                quiesced=r.quiesced if r else False, keys=r.keys if r else 0,
                size_bytes=r.size_bytes if r else 0))
        return out

    async def split(self, range_id: int, key: bytes | None) -> tuple[RangeInfo, RangeInfo]:
        desc = self._user_desc(range_id, "split")
        new_id = await self._new_range_id()
        used_key = await self._run(range_id, encode_admin(AdminOp.SPLIT, new_id, key or b""))
        left, right = desc.split(used_key, new_id)
        await self._publish(left, [left, right])
        return self._info(left), self._info(right)

    async def merge(self, range_id: int) -> RangeInfo:
        """The Store merges only when one replica leads both ranges: first move the
        right-hand range's leadership to the left's leader, then propose the merge."""
        desc = self._user_desc(range_id, "merged")
        right = next((d for d in self._node.directory.all()
                      if desc.end_key and d.start_key == desc.end_key), None)
        if right is None:
            raise Conflict(f"range {range_id} has no right-hand neighbour")
        directory = self._node.directory
        for _ in range(8):
            lead = directory.leader(range_id)
            if lead and directory.leader(right.range_id) != lead:
                with contextlib.suppress(AdminError):
                    await self._run(right.range_id,
                                    encode_admin(AdminOp.TRANSFER_LEADER, lead), attempts=5)
                    await self._await_leader(right.range_id, lead)
            try:
                await self._run(range_id, encode_admin(AdminOp.MERGE), attempts=3,
                                follow_hints=False)
                break
            except TryAgain:
                continue
        else:
            raise TryAgain(f"ranges {range_id} and {right.range_id} did not get one leader")
        merged = desc.merge(right)
        await self._publish(merged, [merged])
        return self._info(merged)

    async def _publish(self, left: RangeDescriptor, descs: list[RangeDescriptor]) -> None:
        """Learn and push ``descs`` (computed from our cache) if the leader confirms
        ``left`` is the range's descriptor now (module docstring); best effort: meta
        being unreachable leaves the push to the reconciler."""
        try:
            actual = (await self._progress(left.range_id)).desc
        except AdminError as e:
            log.info("range %d: cannot confirm its new descriptor (%s); the leader's "
                     "reconciler pushes it to meta", left.range_id, e)
            return
        if actual != left:
            self._node.directory.update(actual)
            return
        for d in descs:
            self._node.directory.update(d)
        try:
            await self._node.meta.publish(descs)
        except (MetaUnavailable, MetaRefused) as e:
            log.warning("could not push %s to meta (%s): the reconciler will",
                        ", ".join(d.describe() for d in descs), e)

    async def _await_leader(self, range_id: int, target: int, timeout: float = 5.0) -> None:
        """Until the directory (fed by the workers' reports) shows ``target`` leading."""
        for _ in range(int(timeout / 0.05)):
            if self._node.directory.leader(range_id) == target:
                return
            await asyncio.sleep(0.05)

    async def transfer_leader(self, range_id: int, target: int) -> RangeInfo:
        desc = self._desc(range_id)
        if target not in desc.voters:
            raise BadRequest(f"node {target} is not a voter of range {range_id}")
        await self._run(range_id, encode_admin(AdminOp.TRANSFER_LEADER, target))
        await self._await_leader(range_id, target)
        return self._info(desc)

    def _desc(self, range_id: int) -> RangeDescriptor:
        desc = self._node.directory.get(range_id)
        if desc is None:
            raise UnknownRange(range_id)
        return desc

    def _user_desc(self, range_id: int, what: str) -> RangeDescriptor:
        if range_id == META_RANGE_ID:
            raise Conflict(f"the meta range (range {META_RANGE_ID}) is never {what}")
        return self._desc(range_id)

    async def _new_range_id(self) -> int:
        """A fresh range id from the meta range's allocator."""
        try:
            return await self._node.meta.allocate_range_id()
        except MetaUnavailable as e:
            raise TryAgain(f"cannot allocate a range id: {e}") from e
        except MetaRefused as e:
            raise Conflict(f"cannot allocate a range id: {e}") from e

    def _info(self, d: RangeDescriptor) -> RangeInfo:
        return RangeInfo(range_id=d.range_id, start_key=d.start_key, end_key=d.end_key,
                         generation=d.generation, voters=d.voters, learners=d.learners,
                         leader=self._node.directory.leader(d.range_id))

    async def _run(
        self, range_id: int, command: bytes, attempts: int = 20, *, follow_hints: bool = True,
    ) -> bytes:
        """Take an admin command to the range's leader; its OK payload. Without
        ``follow_hints`` a TRYAGAIN hint is not taken as the range's leader (a merge's
        hint names the right-hand range's leader)."""
        directory = self._node.directory
        for attempt in range(attempts):
            desc = self._desc(range_id)
            try:
                resp = await self._node.submit(desc, command)
            except ClientTimeout as e:
                raise Timeout(str(e)) from e
            outcome, hint = unpack_status(resp.status)
            if outcome == Outcome.OK:
                return resp.payload
            if outcome == Outcome.ERROR:
                raise Conflict(resp.payload.decode("utf-8", "replace"))
            if outcome == Outcome.UNKNOWN:
                raise Timeout("the outcome of the admin command is unknown")
            if outcome == Outcome.MISMATCH:
                if resp.payload:
                    directory.update(RangeDescriptor.decode(resp.payload))
                else:
                    directory.set_leader(range_id, None)
            elif follow_hints:
                directory.set_leader(range_id, hint or None)
            await asyncio.sleep(0.05 * (1 + min(attempt, 6)))
        raise TryAgain(f"range {range_id} has no reachable leader; retry")

    async def change_replicas(
        self, range_id: int, *, add: int | None = None, remove: int | None = None
    ) -> RangeInfo:
        """Add a node (learner -> caught up -> voter) or remove one (leadership moved
        away first), one step per admin op to the range's leader; each step checks the
        leader's current membership, so a retry of a failed or timed-out call resumes
        where it stopped (``engine/replica_change.py``)."""
        if (add is None) == (remove is None):
            raise BadRequest("give exactly one of add or remove")
        node = add if add is not None else remove
        assert node is not None
        if add is not None and self._node.book.address(node) is None:
            raise BadRequest(f"node {node} is not a node of this cluster (not in this "
                             "node's address book: a joining node shows up once it has "
                             "contacted the cluster)")
        self._desc(range_id)
        if add is not None:
            desc = await self._add_replica(range_id, node)
        else:
            desc = await self._remove_replica(range_id, node)
        await self._publish(desc, [desc])  # a replica change bumps the generation
        return self._info(desc)

    async def _add_replica(self, range_id: int, node: int) -> RangeDescriptor:
        prog = await self._progress(range_id)
        if node in prog.desc.voters:
            return prog.desc
        if node not in prog.desc.learners:
            await self._run(range_id, encode_admin(AdminOp.ADD_LEARNER, node))
            # The learner's node places traffic only for ranges its directory lists
            # it in (engine/placement.py): tell meta now, not after the catch-up.
            learner = (await self._progress(range_id)).desc
            await self._publish(learner, [learner])
        deadline = time.monotonic() + self.catch_up_timeout
        while True:
            prog = await self._progress(range_id)
            if node not in prog.desc.replicas:
                raise TryAgain(f"node {node} left range {range_id} while catching up")
            if prog.caught_up(node, CATCH_UP_LAG):
                break
            if time.monotonic() > deadline:
                raise Timeout(f"node {node} is a learner of range {range_id} but did not catch "
                              f"up in {self.catch_up_timeout:.0f} s; retry to finish")
            await asyncio.sleep(0.1)
        await self._run(range_id, encode_admin(AdminOp.PROMOTE_VOTER, node))
        return (await self._progress(range_id)).desc

    async def _remove_replica(self, range_id: int, node: int) -> RangeDescriptor:
        prog = await self._progress(range_id)
        if node not in prog.desc.replicas:
            return prog.desc
        if prog.leader == node:
            target = prog.best_voter_except(node)
            if target is None:
                raise Conflict(f"node {node} is the last voter of range {range_id}")
            await self._run(range_id, encode_admin(AdminOp.TRANSFER_LEADER, target))
            deadline = time.monotonic() + self.catch_up_timeout
            while prog.leader == node:
                if time.monotonic() > deadline:
                    raise TryAgain(f"range {range_id}: leadership did not move off node {node}")
                await asyncio.sleep(0.1)
                prog = await self._progress(range_id)
        await self._run(range_id, encode_admin(AdminOp.REMOVE_REPLICA, node))
        return (await self._progress(range_id)).desc

    async def _progress(self, range_id: int) -> ReplicaProgress:
        """The leader's view of the range's replicas (the leader learnt on the way)."""
        payload = await self._run(range_id, encode_admin(AdminOp.REPLICA_PROGRESS))
        prog = decode_progress(payload)
        self._node.directory.set_leader(range_id, prog.leader)
        return prog

    async def snapshot_file(self, range_id: int) -> Path:
        path = self._node.snapshot_path(range_id)
        if path is None:
            raise UnknownRange(range_id)
        return path  # a missing file (no image yet, or just removed) is the server's 404

    async def kv_get(self, key: bytes) -> bytes | None:
        res = await self._node.router.execute(Get(key))
        return res.value if isinstance(res, Value) else None

    async def kv_put(self, key: bytes, value: bytes) -> None:
        await self._node.router.execute(Put(key, value))

    async def kv_delete(self, key: bytes) -> bool:
        res = await self._node.router.execute(Delete((key,)))
        return isinstance(res, Int) and res.value > 0
