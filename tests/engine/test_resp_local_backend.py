"""engine.resp.local_backend: a KVBackend over one in-process KV state machine."""

from __future__ import annotations

import asyncio

import pytest

from engine.client_errors import BadRequest
from engine.kv import KVStateMachine
from engine.kv_codec import (
    Count,
    Delete,
    Error,
    ErrorKind,
    Get,
    IncrBy,
    Int,
    MGet,
    MSet,
    Nil,
    Ok,
    Pairs,
    Put,
    PutCond,
    Scan,
    Value,
    Values,
)
from engine.resp.local_backend import LocalBackend


def test_execute_reads_and_writes() -> None:
    async def main() -> None:
        b = LocalBackend()
        assert await b.execute(Put(b"k", b"v")) == Ok()
        assert await b.execute(Get(b"k")) == Value(b"v")
        assert await b.execute(Put(b"k", b"w", PutCond.NX)) == Nil()
        assert await b.execute(IncrBy(b"k", 1)) == Error(
            ErrorKind.ERR, "value is not an integer or out of range"
        )
        assert await b.execute(Count()) == Int(1)
        assert len(b.state_machine) == 1

    asyncio.run(main())


def test_execute_many_is_in_order_with_reads_between_write_runs() -> None:
    async def main() -> None:
        b = LocalBackend()
        out = await b.execute_many([
            Put(b"a", b"1"), IncrBy(b"n", 5), Get(b"a"), Delete((b"a",)), Get(b"a"),
            MSet(((b"x", b"1"), (b"y", b"2"))), MGet((b"x", b"q", b"y")),
            Scan(b"", b"", 1), IncrBy(b"n", 1),
        ])
        assert out == [
            Ok(), Int(5), Value(b"1"), Int(1), Nil(), Ok(), Values((b"1", None, b"2")),
            Pairs(((b"n", b"5"),)), Int(6),
        ]

    asyncio.run(main())


def test_unencodable_command_is_a_bad_request_for_that_command_only() -> None:
    async def main() -> None:
        b = LocalBackend()
        out = await b.execute_many([Put(b"a", b"1"), IncrBy(b"a", 1 << 64), Get(b"a")])
        assert out[0] == Ok() and isinstance(out[1], BadRequest) and out[2] == Value(b"1")
        with pytest.raises(BadRequest):
            await b.execute(Delete(()))

    asyncio.run(main())


def test_over_a_given_range_state_machine_keys_outside_are_mismatches() -> None:
    async def main() -> None:
        b = LocalBackend(KVStateMachine(b"a", b"m"))
        res = await b.execute(Put(b"z", b"1"))
        assert isinstance(res, Error) and res.kind is ErrorKind.RANGE_KEY_MISMATCH

    asyncio.run(main())
