"""engine/admin/local_backend.py: split and merge really move the data and
follow the descriptor rules; routing stays exact; replication is refused."""

from __future__ import annotations

import asyncio
import random
from itertools import pairwise

import pytest

from engine.admin import BadRequest, Conflict, LocalBackend, UnknownRange


def test_random_splits_and_merges_keep_every_key_reachable() -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)

    async def main() -> None:
        b = LocalBackend()
        model: dict[bytes, bytes] = {}
        for step in range(300):
            op = rng.random()
            key = b"k%03d" % rng.randrange(200)
            if op < 0.5:
                model[key] = b"v%d" % step
                await b.kv_put(key, model[key])
            elif op < 0.6:
                assert await b.kv_delete(key) == (model.pop(key, None) is not None)
            elif op < 0.8:
                r = rng.choice(await b.ranges())
                try:
                    left, right = await b.split(r.range_id, key)
                except (BadRequest, Conflict):
                    continue
                assert left.end_key == right.start_key == key
                assert right.generation == left.generation == r.generation + 1
            else:
                r = rng.choice(await b.ranges())
                try:
                    merged = await b.merge(r.range_id)
                except Conflict:
                    assert r.end_key == b""
                    continue
                assert merged.range_id == r.range_id and merged.start_key == r.start_key
            ranges = await b.ranges()
            assert ranges[0].start_key == b"" and ranges[-1].end_key == b""
            assert all(x.end_key == y.start_key for x, y in pairwise(ranges))
            assert sum(r.keys for r in ranges) == len(model)
        for k in (b"k%03d" % i for i in range(200)):
            assert await b.kv_get(k) == model.get(k)

    try:
        asyncio.run(main())
    except AssertionError:
        print(f"seed={seed}")
        raise


def test_errors() -> None:
    async def main() -> None:
        b = LocalBackend(node_id=4, split_points=(b"m",))
        with pytest.raises(UnknownRange):
            await b.split(9, b"a")
        with pytest.raises(BadRequest):
            await b.split(1, b"")
        with pytest.raises(Conflict, match="too few keys"):
            await b.split(1, None)
        with pytest.raises(Conflict, match="single-node"):
            await b.transfer_leader(1, 2)
        with pytest.raises(Conflict, match="single-node"):
            await b.change_replicas(2, remove=4)
        status = await b.status()
        assert (status.node_id, status.ranges, status.leaders) == (4, 2, 2)

    asyncio.run(main())
    with pytest.raises(ValueError):
        LocalBackend(split_points=(b"",))
