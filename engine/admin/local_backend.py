"""``LocalBackend``: the admin API over in-process KV state machines, no raft.

What it is for: a real, complete ``AdminBackend`` for one process — the
admin server's and CLI's tests, and trying the API without a cluster. It
holds a directory of ``RangeDescriptor``s (one node, voter = this node) and
one ``KVStateMachine`` per range. Split and merge really split and absorb
the state machines and derive the new descriptors with
``RangeDescriptor.split``/``merge`` (so the generation and adjacency rules
are the ones the store uses); reads and writes go through the KV command
codec and ``apply``/``read`` exactly as a replica's would.

What it is not: replicated. Leader transfer and replica changes need other
nodes, so they answer ``Conflict`` ("single-node local backend") rather
than pretend.

Theory of operation
-------------------
``_starts`` is the sorted list of range start keys and ``_ranges`` maps a
start key to its (descriptor, state machine); routing a key is a
``bisect_right`` over ``_starts``. ``_by_id`` maps range ids to start keys.
Every operation runs to completion on the event loop thread without an
``await`` in the middle, so no other request sees a half-done split.
"""

from __future__ import annotations

import bisect
import time
from pathlib import Path

from engine.admin.backend import (
    BadRequest,
    Conflict,
    NodeStatus,
    RangeInfo,
    UnknownRange,
)
from engine.kv import KVStateMachine
from engine.kv_codec import (
    Delete,
    Error,
    Get,
    Int,
    Put,
    PutCond,
    Value,
    decode_result,
    encode_command,
)
from engine.range_desc import MergeRefused, RangeDescriptor, SplitRefused

__all__ = ["LocalBackend"]

_VERSION = "0.1.0"


class LocalBackend:
    """A single-node, unreplicated ``AdminBackend`` (see the module docstring)."""

    def __init__(self, node_id: int = 1, split_points: tuple[bytes, ...] = ()) -> None:
        points = sorted(set(split_points))
        if b"" in points:
            raise ValueError("split points must be non-empty keys")
        self._node_id = node_id
        self._started = time.monotonic()
        bounds = [b"", *points, b""]
        # Invariant: _starts is sorted, _starts[0] == b"", and the ranges in
        # _ranges, in _starts order, tile the whole key space without gaps.
        self._starts: list[bytes] = []
        self._ranges: dict[bytes, tuple[RangeDescriptor, KVStateMachine]] = {}
        # Invariant: _by_id[d.range_id] == d.start_key for every descriptor d held.
        self._by_id: dict[int, bytes] = {}
        # Invariant: _applied[id] counts the write commands applied to range id.
        self._applied: dict[int, int] = {}
        for i in range(len(bounds) - 1):
            desc = RangeDescriptor(
                range_id=i + 1, start_key=bounds[i], end_key=bounds[i + 1], voters=(node_id,)
            )
            self._install(desc, KVStateMachine(desc.start_key, desc.end_key))

    # --- directory ----------------------------------------------------------------------

    def _install(self, desc: RangeDescriptor, sm: KVStateMachine) -> None:
        if desc.start_key not in self._ranges:
            bisect.insort(self._starts, desc.start_key)
        self._ranges[desc.start_key] = (desc, sm)
        self._by_id[desc.range_id] = desc.start_key
        self._applied.setdefault(desc.range_id, 0)

    def _remove(self, desc: RangeDescriptor) -> None:
        del self._ranges[desc.start_key]
        self._starts.remove(desc.start_key)
        del self._by_id[desc.range_id]
        del self._applied[desc.range_id]

    def _get(self, range_id: int) -> tuple[RangeDescriptor, KVStateMachine]:
        start = self._by_id.get(range_id)
        if start is None:
            raise UnknownRange(range_id)
        return self._ranges[start]

    def _route(self, key: bytes) -> tuple[RangeDescriptor, KVStateMachine]:
        return self._ranges[self._starts[bisect.bisect_right(self._starts, key) - 1]]

    def _info(self, desc: RangeDescriptor, sm: KVStateMachine) -> RangeInfo:
        return RangeInfo(
            range_id=desc.range_id, start_key=desc.start_key, end_key=desc.end_key,
            generation=desc.generation, voters=desc.voters, learners=desc.learners,
            leader=self._node_id, applied_index=self._applied[desc.range_id],
            keys=len(sm), size_bytes=sm.approximate_size(),
        )

    # --- AdminBackend -------------------------------------------------------------------

    async def status(self) -> NodeStatus:
        sms = [sm for _, sm in self._ranges.values()]
        return NodeStatus(
            node_id=self._node_id, version=_VERSION,
            uptime_s=time.monotonic() - self._started, workers=1, ranges=len(sms),
            leaders=len(sms), quiesced=0, keys=sum(map(len, sms)),
            size_bytes=sum(sm.approximate_size() for sm in sms),
        )

    async def ranges(self) -> list[RangeInfo]:
        return [self._info(*self._ranges[s]) for s in self._starts]

    async def split(self, range_id: int, key: bytes | None) -> tuple[RangeInfo, RangeInfo]:
        desc, sm = self._get(range_id)
        if key is None:
            key = sm.split_key()
            if key is None:
                raise Conflict(
                    f"r{range_id} holds too few keys to pick a split key; give one explicitly"
                )
        try:
            left, right = desc.split(key, max(self._by_id) + 1)
        except SplitRefused as e:
            raise BadRequest(str(e)) from None
        right_sm = sm.split(key)
        self._install(left, sm)
        self._install(right, right_sm)
        return self._info(left, sm), self._info(right, right_sm)

    async def merge(self, range_id: int) -> RangeInfo:
        left, left_sm = self._get(range_id)
        if not left.end_key:
            raise Conflict(f"r{range_id} is the last range: it has no right-hand neighbour")
        right, right_sm = self._ranges[left.end_key]
        try:
            merged = left.merge(right)
        except MergeRefused as e:
            raise Conflict(str(e)) from None
        left_sm.absorb(right_sm)
        self._remove(right)
        self._install(merged, left_sm)
        return self._info(merged, left_sm)

    async def transfer_leader(self, range_id: int, target: int) -> RangeInfo:
        self._get(range_id)
        raise Conflict(
            f"single-node local backend: r{range_id} has no other replica to lead "
            f"(asked for node {target})"
        )

    async def snapshot_file(self, range_id: int) -> Path:
        self._get(range_id)
        raise Conflict(f"single-node local backend: r{range_id} lives in memory only, "
                       "there is no durable image file")

    async def change_replicas(
        self, range_id: int, *, add: int | None = None, remove: int | None = None
    ) -> RangeInfo:
        self._get(range_id)
        raise Conflict(
            f"single-node local backend: cannot change r{range_id}'s replicas "
            f"(add={add}, remove={remove})"
        )

    async def kv_get(self, key: bytes) -> bytes | None:
        _, sm = self._route(key)
        res = decode_result(sm.read(encode_command(Get(key))))
        return res.value if isinstance(res, Value) else None

    async def kv_put(self, key: bytes, value: bytes) -> None:
        self._write(key, encode_command(Put(key, value, PutCond.NONE)))

    async def kv_delete(self, key: bytes) -> bool:
        res = self._write(key, encode_command(Delete((key,))))
        assert isinstance(res, Int), res
        return res.value > 0

    def _write(self, key: bytes, command: bytes) -> object:
        desc, sm = self._route(key)
        (raw,) = sm.apply([command])
        res = decode_result(raw)
        # Routing is exact here, so a RANGE_KEY_MISMATCH would be our bug.
        assert not isinstance(res, Error), res
        self._applied[desc.range_id] += 1
        return res
