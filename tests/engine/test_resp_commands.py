"""engine.resp.commands: translation of requests to KV commands and of results to replies."""

from __future__ import annotations

import pytest

from engine.client_errors import BadRequest, ClientError, Timeout, TryAgain
from engine.kv_codec import (
    Cas,
    Count,
    Delete,
    Error,
    ErrorKind,
    Exists,
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
from engine.resp.commands import (
    COMMANDS,
    Call,
    CommandContext,
    Immediate,
    Plan,
    UnexpectedResult,
    plan_command,
    reply_for,
)
from engine.resp.limits import Limits

CTX = CommandContext(Limits(max_key_bytes=8, max_value_bytes=16), lambda: "# Server\r\n")


def plan(*args: bytes) -> Plan:
    return plan_command(list(args), CTX)


def call(*args: bytes) -> Call:
    p = plan(*args)
    assert isinstance(p, Call), p
    return p


def immediate(*args: bytes) -> bytes:
    p = plan(*args)
    assert isinstance(p, Immediate), p
    return p.reply


@pytest.mark.parametrize(
    ("args", "cmd"),
    [
        ((b"GET", b"k"), Get(b"k")),
        ((b"get", b"k"), Get(b"k")),
        ((b"SET", b"k", b"v"), Put(b"k", b"v")),
        ((b"SET", b"k", b"v", b"nx"), Put(b"k", b"v", PutCond.NX)),
        ((b"SET", b"k", b"v", b"XX"), Put(b"k", b"v", PutCond.XX)),
        ((b"DEL", b"a", b"b"), Delete((b"a", b"b"))),
        ((b"EXISTS", b"a"), Exists((b"a",))),
        ((b"MGET", b"a", b"b"), MGet((b"a", b"b"))),
        ((b"MSET", b"a", b"1", b"b", b"2"), MSet(((b"a", b"1"), (b"b", b"2")))),
        ((b"INCR", b"n"), IncrBy(b"n", 1)),
        ((b"INCRBY", b"n", b"-7"), IncrBy(b"n", -7)),
        ((b"CAS", b"k", b"old", b"new"), Cas(b"k", b"old", b"new")),
        ((b"RANGE", b"a", b""), Scan(b"a", b"", None)),
        ((b"RANGE", b"a", b"z", b"limit", b"10"), Scan(b"a", b"z", 10)),
        ((b"DBSIZE",), Count()),
    ],
)
def test_translation_to_kv_commands(args: tuple[bytes, ...], cmd: object) -> None:
    assert call(*args).cmd == cmd


def test_every_contract_command_is_in_the_table() -> None:
    contract = {"hello", "ping", "get", "set", "del", "exists", "mget", "mset", "incr", "incrby",
                "cas", "range", "dbsize", "info", "quit"}
    assert {s.name for s in COMMANDS.values()} == contract


@pytest.mark.parametrize(
    "args",
    [(b"GET",), (b"GET", b"a", b"b"), (b"SET", b"k"), (b"DEL",), (b"INCR",),
     (b"CAS", b"k", b"v"), (b"RANGE", b"a"), (b"DBSIZE", b"x"), (b"QUIT", b"x")],
)
def test_wrong_arity_is_err(args: tuple[bytes, ...]) -> None:
    reply = immediate(*args)
    assert reply.startswith(b"-ERR wrong number of arguments for '")


def test_mset_needs_pairs() -> None:
    assert immediate(b"MSET", b"a", b"1", b"b") == (
        b"-ERR wrong number of arguments for 'mset' command\r\n"
    )


def test_unknown_commands_get_a_normal_err() -> None:
    reply = immediate(b"CLIENT", b"SETINFO", b"LIB-NAME", b"redis-py")
    assert reply.startswith(b"-ERR unknown command 'CLIENT', with args beginning with: 'SETINFO'")
    assert immediate(b"CONFIG", b"GET", b"save").startswith(b"-ERR unknown command 'CONFIG'")


def test_syntax_errors() -> None:
    assert immediate(b"SET", b"k", b"v", b"EX") == b"-ERR syntax error\r\n"
    assert immediate(b"SET", b"k", b"v", b"NX", b"XX") == b"-ERR syntax error\r\n"
    assert immediate(b"RANGE", b"a", b"b", b"LIMIT") == b"-ERR syntax error\r\n"
    assert immediate(b"RANGE", b"a", b"b", b"LIMIT", b"-1").startswith(b"-ERR LIMIT")
    assert immediate(b"INCRBY", b"k", b"1.5") == (
        b"-ERR value is not an integer or out of range\r\n"
    )
    assert immediate(b"INCRBY", b"k", b"99999999999999999999").startswith(b"-ERR value")


def test_key_and_value_limits() -> None:
    assert b"key of 9 bytes exceeds the limit of 8" in immediate(b"GET", b"k" * 9)
    assert b"value of 17 bytes" in immediate(b"SET", b"k", b"v" * 17)
    assert b"value of 17 bytes" in immediate(b"MSET", b"a", b"1", b"b", b"v" * 17)
    assert b"key of 9 bytes" in immediate(b"DEL", b"a", b"k" * 9)
    assert b"value of 17 bytes" in immediate(b"CAS", b"k", b"x", b"v" * 17)
    assert isinstance(plan(b"SET", b"k" * 8, b"v" * 16), Call)


def test_immediate_commands() -> None:
    assert immediate(b"PING") == b"+PONG\r\n"
    assert immediate(b"PING", b"hi") == b"$2\r\nhi\r\n"
    assert immediate(b"INFO") == b"$10\r\n# Server\r\n\r\n"
    q = plan(b"quit")
    assert isinstance(q, Immediate) and q.close and q.reply == b"+OK\r\n"


def test_result_rendering() -> None:
    assert reply_for(call(b"SET", b"k", b"v"), Ok()) == b"+OK\r\n"
    assert reply_for(call(b"SET", b"k", b"v", b"NX"), Nil()) == b"$-1\r\n"
    assert reply_for(call(b"GET", b"k"), Value(b"v")) == b"$1\r\nv\r\n"
    assert reply_for(call(b"GET", b"k"), Nil()) == b"$-1\r\n"
    assert reply_for(call(b"DEL", b"k"), Int(1)) == b":1\r\n"
    assert reply_for(call(b"MGET", b"a", b"b"), Values((b"1", None))) == (
        b"*2\r\n$1\r\n1\r\n$-1\r\n"
    )
    assert reply_for(call(b"RANGE", b"", b""), Pairs(((b"a", b"1"),))) == (
        b"*2\r\n$1\r\na\r\n$1\r\n1\r\n"
    )
    assert reply_for(call(b"MSET", b"a", b"1"), Ok()) == b"+OK\r\n"


def test_the_three_error_kinds() -> None:
    c = call(b"INCR", b"k")
    assert reply_for(c, Error(ErrorKind.ERR, "not an int")) == b"-ERR not an int\r\n"
    assert reply_for(c, Error(ErrorKind.RANGE_KEY_MISMATCH, "moved")).startswith(b"-TRYAGAIN ")
    assert reply_for(c, TryAgain("no leader")) == b"-TRYAGAIN no leader\r\n"
    assert reply_for(c, Timeout("lost")) == b"-TIMEOUT lost\r\n"
    assert reply_for(c, BadRequest("bad")) == b"-ERR bad\r\n"
    assert reply_for(c, ClientError("odd")).startswith(b"-ERR ")


def test_a_result_of_the_wrong_type_is_a_backend_bug() -> None:
    with pytest.raises(UnexpectedResult):
        reply_for(call(b"GET", b"k"), Int(3))


def test_hello_switches_protocol_and_resp3_changes_only_nulls() -> None:
    h3 = plan(b"HELLO", b"3")
    assert isinstance(h3, Immediate) and h3.protocol == 3 and h3.reply.startswith(b"%7\r\n")
    h2 = plan(b"HELLO", b"2")
    assert isinstance(h2, Immediate) and h2.protocol == 2 and h2.reply.startswith(b"*14\r\n")
    assert immediate(b"HELLO", b"4").startswith(b"-NOPROTO")
    assert immediate(b"HELLO", b"3", b"AUTH", b"u", b"p").startswith(b"-ERR AUTH")
    ctx3 = CommandContext(CTX.limits, CTX.info, resp3=True)
    get3 = plan_command([b"GET", b"k"], ctx3)
    assert isinstance(get3, Call) and get3.resp3
    assert reply_for(get3, Nil()) == b"_\r\n"
    assert reply_for(get3, Value(b"v")) == b"$1\r\nv\r\n"
    mget3 = plan_command([b"MGET", b"a", b"b"], ctx3)
    assert isinstance(mget3, Call)
    assert reply_for(mget3, Values((None, b"1"))) == b"*2\r\n_\r\n$1\r\n1\r\n"
