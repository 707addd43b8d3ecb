"""The RESP command table: name -> arity, translation to a KV command, reply.

A request (its arguments, name first) becomes a *plan*:

- ``Immediate(reply, close, protocol)``: answered without the backend (PING, INFO,
  QUIT, and every error found here: unknown command, wrong arity, syntax,
  oversized key or value, bad integer);
- ``Call(cmd, render)``: an ``engine.kv_codec`` command for the backend and
  the function that turns its result into the RESP reply.

Rules
-----
- The command set, arities and reply types are the RESP contract in
  ARCHITECTURE.md ("Client protocol"). Arity follows Redis's convention:
  ``n > 0`` means exactly n arguments (name included), ``n < 0`` at least -n.
- Error replies come in three kinds a client can tell apart: ``-ERR`` (bad
  request), ``-TRYAGAIN`` (nothing applied, retry is safe), ``-TIMEOUT``
  (outcome unknown). ``reply_for`` is the one place backend outcomes become
  error replies.
- Unknown commands (``CLIENT SETINFO``, ``CONFIG GET``, ``COMMAND DOCS``)
  get a normal ``-ERR``: clients probe these at connect time and carry on.
- Key and value sizes are checked here, before anything reaches the log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NamedTuple

from engine.client_errors import BadRequest, ClientError, Timeout, TryAgain
from engine.kv import ERR_NOT_INTEGER, parse_int64
from engine.kv_codec import (
    Cas,
    Command,
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
    Result,
    Scan,
    Value,
    Values,
)
from engine.resp.backend import Outcome
from engine.resp.limits import Limits
from engine.resp.protocol import (
    NIL,
    NULL3,
    OK,
    PONG,
    encode_array,
    encode_bulk,
    encode_error,
    encode_int,
)

__all__ = [
    "COMMANDS",
    "Call",
    "CommandContext",
    "CommandSpec",
    "Immediate",
    "Plan",
    "UnexpectedResult",
    "plan_command",
    "reply_for",
]


class UnexpectedResult(Exception):
    """A backend result of a type the command cannot produce (a backend bug)."""


class Immediate(NamedTuple):
    """A reply known without the backend; ``close``: close after sending it;
    ``protocol``: 2 or 3 switches the connection's reply protocol (HELLO)."""

    reply: bytes
    close: bool = False
    protocol: int = 0


class Call(NamedTuple):
    """A command for the backend, how to render its result, whether the
    connection speaks RESP3 (which changes only how nulls are written), and the
    command's upper-case name from the table (the metrics label: never client text)."""

    cmd: Command
    render: Callable[[Result, bool], bytes]
    resp3: bool = False
    name: str = ""


Plan = Immediate | Call


@dataclass(frozen=True, slots=True)
class CommandContext:
    """What handlers need beyond the arguments: limits, the INFO text, and
    the connection's protocol (``resp3``: it said ``HELLO 3``)."""

    limits: Limits
    info: Callable[[], str]
    resp3: bool = False


Handler = Callable[[list[bytes], CommandContext], Plan]


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    arity: int
    handler: Handler
    #: The upper-case name, computed once (the metrics label of its calls).
    label: str = ""


def _err(message: str) -> Immediate:
    return Immediate(encode_error("ERR", message))


_SYNTAX: Final = _err("syntax error")
_NOT_INTEGER: Final = _err(ERR_NOT_INTEGER)


# --- renderers: result -> RESP ------------------------------------------------------------


def _render_ok_or_nil(res: Result, resp3: bool) -> bytes:
    if type(res) is Ok:
        return OK
    if type(res) is Nil:
        return NULL3 if resp3 else NIL
    raise UnexpectedResult(res)


def _render_value(res: Result, resp3: bool) -> bytes:
    if type(res) is Value:
        return encode_bulk(res.value)
    if type(res) is Nil:
        return NULL3 if resp3 else NIL
    raise UnexpectedResult(res)


def _render_int(res: Result, resp3: bool) -> bytes:
    if type(res) is Int:
        return encode_int(res.value)
    raise UnexpectedResult(res)


def _render_ok(res: Result, resp3: bool) -> bytes:
    if type(res) is Ok:
        return OK
    raise UnexpectedResult(res)


def _render_values(res: Result, resp3: bool) -> bytes:
    if type(res) is Values:
        return encode_array(res.values, NULL3 if resp3 else NIL)
    raise UnexpectedResult(res)


def _render_pairs(res: Result, resp3: bool) -> bytes:
    if type(res) is Pairs:
        return encode_array([item for pair in res.pairs for item in pair])
    raise UnexpectedResult(res)


def reply_for(call: Call, outcome: Outcome) -> bytes:
    """The RESP reply for ``call``'s backend outcome (an error kind or the rendered result)."""
    if isinstance(outcome, ClientError):
        if isinstance(outcome, TryAgain):
            return encode_error("TRYAGAIN", str(outcome) or "no leader, retry")
        if isinstance(outcome, Timeout):
            return encode_error("TIMEOUT", str(outcome) or "outcome unknown")
        if isinstance(outcome, BadRequest):
            return encode_error("ERR", str(outcome))
        return encode_error("ERR", f"{type(outcome).__name__}: {outcome}")
    if type(outcome) is Error:
        if outcome.kind is ErrorKind.RANGE_KEY_MISMATCH:
            # The router retries these; one that escapes it means the range is moving.
            return encode_error("TRYAGAIN", outcome.message)
        return encode_error("ERR", outcome.message)
    return call.render(outcome, call.resp3)


# --- handlers: args -> plan ---------------------------------------------------------------


def _key_too_big(key: bytes, limits: Limits) -> Immediate | None:
    if len(key) > limits.max_key_bytes:
        return _err(f"key of {len(key)} bytes exceeds the limit of {limits.max_key_bytes} bytes")
    return None


def _value_too_big(value: bytes, limits: Limits) -> Immediate | None:
    if len(value) > limits.max_value_bytes:
        return _err(
            f"value of {len(value)} bytes exceeds the limit of {limits.max_value_bytes} bytes"
        )
    return None


def _keys_too_big(keys: list[bytes], limits: Limits) -> Immediate | None:
    for k in keys:
        if (bad := _key_too_big(k, limits)) is not None:
            return bad
    return None


def _ping(args: list[bytes], ctx: CommandContext) -> Plan:
    return Immediate(PONG if len(args) == 1 else encode_bulk(args[1]))


def _quit(args: list[bytes], ctx: CommandContext) -> Plan:
    return Immediate(OK, close=True)


def _info(args: list[bytes], ctx: CommandContext) -> Plan:
    return Immediate(encode_bulk(ctx.info().encode()))


def _hello(args: list[bytes], ctx: CommandContext) -> Plan:
    """``HELLO [protover [AUTH user pass] [SETNAME name]]``: switch protocol.

    Why RESP3 at all: redis-py 5+ defaults to RESP3 and opens every connection
    with ``HELLO 3``, giving up on an error. For this command set RESP3 only
    changes the null and HELLO's reply (a map), so both are cheap to speak.
    There are no users or passwords: ``AUTH`` is refused, ``SETNAME`` ignored.
    """
    if len(args) == 1:
        return Immediate(_HELLO3 if ctx.resp3 else _HELLO2)
    version = parse_int64(args[1])
    if version not in (2, 3):
        return Immediate(encode_error("NOPROTO", "unsupported protocol version"))
    if any(a.upper() == b"AUTH" for a in args[2:]):
        return _err("AUTH is not supported: this server has no users or passwords")
    return Immediate(_HELLO3 if version == 3 else _HELLO2, protocol=version)


_HELLO_FIELDS: Final = (
    b"$6\r\nserver\r\n$9\r\nmultiraft\r\n$7\r\nversion\r\n$5\r\n0.1.0\r\n"
    b"$5\r\nproto\r\n:%d\r\n$2\r\nid\r\n:0\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n"
    b"$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n"
)
#: HELLO's reply: a flat array in RESP2 (which has no map type), a map in RESP3.
_HELLO2: Final = b"*14\r\n" + _HELLO_FIELDS % 2
_HELLO3: Final = b"%7\r\n" + _HELLO_FIELDS % 3


def _get(args: list[bytes], ctx: CommandContext) -> Plan:
    return _key_too_big(args[1], ctx.limits) or Call(Get(args[1]), _render_value)


_SET_CONDS: Final = {b"NX": PutCond.NX, b"XX": PutCond.XX}


def _set(args: list[bytes], ctx: CommandContext) -> Plan:
    key, value = args[1], args[2]
    cond = PutCond.NONE
    if len(args) == 4:
        found = _SET_CONDS.get(args[3].upper())
        if found is None:
            return _SYNTAX
        cond = found
    elif len(args) > 4:
        return _SYNTAX
    bad = _key_too_big(key, ctx.limits) or _value_too_big(value, ctx.limits)
    return bad or Call(Put(key, value, cond), _render_ok_or_nil)


def _del(args: list[bytes], ctx: CommandContext) -> Plan:
    keys = args[1:]
    return _keys_too_big(keys, ctx.limits) or Call(Delete(tuple(keys)), _render_int)


def _exists(args: list[bytes], ctx: CommandContext) -> Plan:
    keys = args[1:]
    return _keys_too_big(keys, ctx.limits) or Call(Exists(tuple(keys)), _render_int)


def _mget(args: list[bytes], ctx: CommandContext) -> Plan:
    keys = args[1:]
    return _keys_too_big(keys, ctx.limits) or Call(MGet(tuple(keys)), _render_values)


def _mset(args: list[bytes], ctx: CommandContext) -> Plan:
    if len(args) % 2 == 0:
        return _err("wrong number of arguments for 'mset' command")
    limits = ctx.limits
    pairs = tuple(zip(args[1::2], args[2::2], strict=True))
    for k, v in pairs:
        if (bad := _key_too_big(k, limits) or _value_too_big(v, limits)) is not None:
            return bad
    return Call(MSet(pairs), _render_ok)


def _incr(args: list[bytes], ctx: CommandContext) -> Plan:
    return _key_too_big(args[1], ctx.limits) or Call(IncrBy(args[1], 1), _render_int)


def _incrby(args: list[bytes], ctx: CommandContext) -> Plan:
    delta = parse_int64(args[2])
    if delta is None:
        return _NOT_INTEGER
    return _key_too_big(args[1], ctx.limits) or Call(IncrBy(args[1], delta), _render_int)


def _cas(args: list[bytes], ctx: CommandContext) -> Plan:
    key, expected, new = args[1], args[2], args[3]
    bad = _key_too_big(key, ctx.limits) or _value_too_big(new, ctx.limits)
    return bad or Call(Cas(key, expected, new), _render_int)


def _range(args: list[bytes], ctx: CommandContext) -> Plan:
    start, end = args[1], args[2]
    limit: int | None = None
    if len(args) == 5 and args[3].upper() == b"LIMIT":
        limit = parse_int64(args[4])
        if limit is None or limit < 0 or limit >= 0xFFFFFFFF:
            return _err("LIMIT must be a non-negative integer below 4294967295")
    elif len(args) != 3:
        return _SYNTAX
    bad = _key_too_big(start, ctx.limits) or _key_too_big(end, ctx.limits)
    return bad or Call(Scan(start, end, limit), _render_pairs)


def _dbsize(args: list[bytes], ctx: CommandContext) -> Plan:
    return Call(Count(), _render_int)


def _spec(name: str, arity: int, handler: Handler) -> tuple[bytes, CommandSpec]:
    return name.upper().encode(), CommandSpec(name, arity, handler, name.upper())


#: The command table, keyed by upper-case name.
COMMANDS: Final[dict[bytes, CommandSpec]] = dict(
    [
        _spec("ping", -1, _ping),
        _spec("quit", 1, _quit),
        _spec("hello", -1, _hello),
        _spec("info", -1, _info),
        _spec("get", 2, _get),
        _spec("set", -3, _set),
        _spec("del", -2, _del),
        _spec("exists", -2, _exists),
        _spec("mget", -2, _mget),
        _spec("mset", -3, _mset),
        _spec("incr", 2, _incr),
        _spec("incrby", 3, _incrby),
        _spec("cas", 4, _cas),
        _spec("range", -3, _range),
        _spec("dbsize", 1, _dbsize),
    ]
)


def plan_command(args: list[bytes], ctx: CommandContext) -> Plan:
    """Translate one request (name first, non-empty) into a plan."""
    spec = COMMANDS.get(args[0].upper())
    if spec is None:
        return _unknown(args)
    arity = spec.arity
    if (arity > 0 and len(args) != arity) or len(args) < -arity:
        return _err(f"wrong number of arguments for '{spec.name}' command")
    plan = spec.handler(args, ctx)
    if type(plan) is Call:  # the constructor: several times cheaper than _replace
        return Call(plan.cmd, plan.render, ctx.resp3, spec.label)
    return plan


def _unknown(args: list[bytes]) -> Immediate:
    """Redis's wording, so clients that log it read familiar text."""
    def show(b: bytes) -> str:
        return b[:128].decode("utf-8", "replace")

    rest = " ".join(f"'{show(a)}'" for a in args[1:9])
    return _err(f"unknown command '{show(args[0])}', with args beginning with: {rest}")
