"""The example state machine through the whole ``StateMachine`` protocol, and
a protocol driver written only against ``StateMachine`` that both the
example and the built-in KV machine pass: what the engine does with a user's
machine (replicate batches, ship a snapshot to a new replica, split, merge)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import pytest

from engine.kv import KVStateMachine
from engine.kv_codec import Get, IncrBy, Put, Scan, encode_command
from engine.statemachine import StateMachine
from tests.engine.example_sm import CHUNK_BYTES, CounterMap


def cmd(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def res(raw: bytes) -> Any:
    return json.loads(raw)


def test_apply_and_read() -> None:
    sm = CounterMap()
    out = sm.apply([cmd(op="add", name="a", by=2), cmd(op="add", name="a", by=3),
                    cmd(op="add", name="b", by=1), cmd(op="reset", name="b")])
    assert [res(r) for r in out] == [{"value": 2}, {"value": 5}, {"value": 1}, {"value": 0}]
    assert res(sm.read(cmd(op="get", name="a"))) == {"value": 5}
    assert res(sm.read(cmd(op="get", name="never"))) == {"value": 0}
    assert res(sm.read(cmd(op="top", n=1))) == {"top": [["a", 5]]}


@pytest.mark.parametrize("raw", [b"", b"\xff", b"[]", b"{}", b'{"op": "add", "name": 1}',
                                 b'{"op": "add", "name": "a", "by": "1"}',
                                 b'{"op": "fly", "name": "a"}', b"[" * 100_000])
def test_bad_commands_become_error_results(raw: bytes) -> None:
    sm = CounterMap()
    [out] = sm.apply([raw])
    assert "error" in res(out)
    assert "error" in res(sm.read(raw))
    assert sm.approximate_size() == 0


def test_names_outside_the_range_are_refused() -> None:
    sm = CounterMap(b"m", b"t")
    [out] = sm.apply([cmd(op="add", name="z", by=1)])
    assert "outside" in res(out)["error"]


def test_snapshot_restore_split_absorb() -> None:
    sm = CounterMap()
    sm.apply([cmd(op="add", name=f"n{i:04}", by=i) for i in range(1000)])
    chunks = list(sm.snapshot())
    assert len(chunks) > 1 and all(len(c) <= CHUNK_BYTES for c in chunks)
    copy = CounterMap()
    copy.restore(chunks)
    assert copy.read(cmd(op="top", n=5)) == sm.read(cmd(op="top", n=5))
    assert copy.approximate_size() == sm.approximate_size()

    key = sm.split_key()
    assert key == b"n0500"
    right = sm.split(key)
    assert res(sm.read(cmd(op="top", n=1))) == {"top": [["n0499", 499]]}
    assert res(right.read(cmd(op="top", n=1))) == {"top": [["n0999", 999]]}
    assert "error" in res(sm.read(cmd(op="get", name="n0700")))
    sm.absorb(right)
    assert sm.read(cmd(op="top", n=5)) == copy.read(cmd(op="top", n=5))
    assert sm.approximate_size() == copy.approximate_size()


def test_truncated_snapshot_is_refused() -> None:
    sm = CounterMap()
    sm.apply([cmd(op="add", name="a", by=1)])
    stream = b"".join(sm.snapshot())
    with pytest.raises(ValueError, match="truncated"):
        CounterMap().restore([stream[:-1]])


# --- a driver that knows only the protocol -------------------------------------------------


def exercise_protocol(
    make: Callable[[], StateMachine], batches: list[list[bytes]], queries: list[bytes],
) -> None:
    """What the engine does with any state machine, checked for consistency."""
    replicas = [make() for _ in range(3)]
    for batch in batches:  # every replica applies the same batches...
        results = [r.apply(batch) for r in replicas]
        assert all(len(out) == len(batch) for out in results)
        assert results[0] == results[1] == results[2]  # ...deterministically

    def answers(sm: StateMachine) -> list[bytes]:
        return [sm.read(q) for q in queries]

    expected = answers(replicas[0])
    # A new replica catches up from a snapshot streamed chunk by chunk.
    fresh = make()
    fresh.restore(replicas[0].snapshot())
    assert answers(fresh) == expected
    assert fresh.approximate_size() == replicas[0].approximate_size()
    # Split at the suggested key on every replica, then merge back.
    key = replicas[0].split_key()
    assert key is not None
    size = replicas[0].approximate_size()
    for r in replicas:
        right = r.split(key)
        assert 0 < r.approximate_size() < size
        assert r.approximate_size() + right.approximate_size() == size
        # The right half can be snapshotted and restored on its own.
        moved = make()
        moved.restore(right.snapshot())
        assert moved.approximate_size() == right.approximate_size()
        r.absorb(moved)
        assert answers(r) == expected


def test_the_example_passes_the_protocol_driver() -> None:
    rng = random.Random(1)
    batches = [[cmd(op="add", name=f"c{rng.randrange(50)}", by=rng.randrange(-5, 10))
                for _ in range(20)] for _ in range(10)]
    queries = [cmd(op="top", n=100), cmd(op="get", name="c1"), cmd(op="get", name="c49")]
    exercise_protocol(CounterMap, batches, queries)


def test_the_kv_machine_passes_the_protocol_driver() -> None:
    rng = random.Random(2)
    batches = [
        [encode_command(Put(f"k{rng.randrange(50)}".encode(), rng.randbytes(8))
                        if rng.random() < 0.7 else IncrBy(f"n{rng.randrange(5)}".encode(), 1))
         for _ in range(20)]
        for _ in range(10)
    ]
    queries = [encode_command(Scan(b"", b"", None)), encode_command(Get(b"k1"))]
    exercise_protocol(KVStateMachine, batches, queries)
