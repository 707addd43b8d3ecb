"""``NodeAdmin``: the ``AdminBackend`` of a running node.

Status and ranges come from the workers' latest reports (no request to a
worker is made for them); ``/kv`` goes through the node's ``Router`` like a
RESP client would.

Split, merge and leader transfer are admin commands (``worker_protocol``)
sent like a KV command: ``Node.submit`` takes them to the range's leader
(local worker or forwarded), TRYAGAIN hints are followed a bounded number of
times. A split's new range id is ``node_id << 40 | n`` with ``n`` a
millisecond clock made strictly increasing: unique across the cluster
without a meta range to allocate from (as long as node ids are unique and a
node's clock does not go back across a restart). Merge works for neighbours
in the same worker (a split's halves); the bootstrap ranges alternate
workers, so merging two of them is refused by the Store with its reason.
Replica changes through the node are not built yet (409 says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
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
from engine.proposal import Outcome
from engine.range_desc import RangeDescriptor
from engine.worker_protocol import AdminOp, encode_admin, unpack_status

if TYPE_CHECKING:
    from engine.node import Node

_NOT_BUILT = "not supported by this node version yet (the Store supports it; the node does not)"


class NodeAdmin:
    """Admin API over ``node`` (see the module docstring)."""

    def __init__(self, node: Node) -> None:
        self._node = node
        #: Invariant: the clock part of the last range id this node allocated.
        self._last_id_clock = 0

    async def status(self) -> NodeStatus:
        reports = self._node.worker_reports()
        ranges = [r for rep in reports for r in rep.ranges]
        return NodeStatus(
            node_id=self._node.id, version="0.1", uptime_s=self._node.uptime(),
            workers=len(self._node.worker_pids()), ranges=len(ranges),
            leaders=sum(r.is_leader for r in ranges), quiesced=sum(r.quiesced for r in ranges),
            keys=0, size_bytes=0)

    async def ranges(self) -> list[RangeInfo]:
        held = {r.desc.range_id: r for rep in self._node.worker_reports() for r in rep.ranges}
        out = []
        for d in self._node.directory.all():
            r = held.get(d.range_id)
            out.append(RangeInfo(
                range_id=d.range_id, start_key=d.start_key, end_key=d.end_key,
                generation=d.generation, voters=d.voters, learners=d.learners,
                leader=self._node.directory.leader(d.range_id),
                term=r.term if r else None, applied_index=r.applied if r else None,
                quiesced=r.quiesced if r else False))
        return out

    async def split(self, range_id: int, key: bytes | None) -> tuple[RangeInfo, RangeInfo]:
        desc = self._desc(range_id)
        new_id = self._new_range_id()
        used_key = await self._run(range_id, encode_admin(AdminOp.SPLIT, new_id, key or b""))
        left, right = desc.split(used_key, new_id)
        self._node.directory.update(left)
        self._node.directory.update(right)
        return self._info(left), self._info(right)

    async def merge(self, range_id: int) -> RangeInfo:
        """The Store merges only when one replica leads both ranges: first move the
        right-hand range's leadership to the left's leader, then propose the merge."""
        desc = self._desc(range_id)
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
        directory.update(merged)
        return self._info(merged)

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

    def _new_range_id(self) -> int:
        now = max(int(time.time() * 1000), self._last_id_clock + 1)
        self._last_id_clock = now
        return (self._node.id << 40) | (now & ((1 << 40) - 1))

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
        raise Conflict(f"replica changes: {_NOT_BUILT}")

    async def kv_get(self, key: bytes) -> bytes | None:
        res = await self._node.router.execute(Get(key))
        return res.value if isinstance(res, Value) else None

    async def kv_put(self, key: bytes, value: bytes) -> None:
        await self._node.router.execute(Put(key, value))

    async def kv_delete(self, key: bytes) -> bool:
        res = await self._node.router.execute(Delete((key,)))
        return isinstance(res, Int) and res.value > 0
