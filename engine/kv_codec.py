"""Binary encoding of the default KV state machine's commands and results.

Commands are what a KV write puts into a raft log entry (and what the read
path hands to ``KVStateMachine.read``); results are what ``apply``/``read``
hand back to the proposer. Both cross process boundaries (shm queues, TCP)
and commands live on disk in the raft log forever, so the format is
versioned and every decoder treats its input as untrusted.

Why struct and not msgpack
--------------------------
``loadtest/bench_kv_codec.py`` measures a 100-byte SET (16-byte key) both
ways in the same run, interleaved: struct encoded in ~0.6x and decoded in
~0.65x the time of the msgpack equivalent (e.g. 770 vs 1258 ns and 1201 vs
1807 ns on the shared 2-core CI box). A SET is one ``Struct.pack`` of a
fixed header carrying both lengths plus two concatenations, and decodes
with one ``unpack_from`` and two slices; msgpack has to build a list and
then validate every field of an untrusted object. (Bulk snapshot records
are the opposite case, and use msgpack: see ``engine/kv_snapshot.py``.)

Byte layout (version 1, all integers little-endian)
---------------------------------------------------
::

    blob    := len:u32 | bytes[len]
    command := version:u8 (=1) | op:u8 | body           (no trailing bytes)

    op  name     body
    1   GET      key:blob
    2   MGET     n:u32 | key:blob * n                     (n >= 1)
    3   EXISTS   n:u32 | key:blob * n                     (n >= 1)
    4   SCAN     limit:u32 | start:blob | end:blob        (limit 0xFFFFFFFF = none,
                                                           end empty = +inf)
    5   COUNT    (empty)
    16  PUT      cond:u8 (0 none, 1 NX, 2 XX) | key_len:u32 | value_len:u32
                 | key:bytes[key_len] | value:bytes[value_len]
    17  DEL      n:u32 | key:blob * n                     (n >= 1)
    18  CAS      key:blob | expected:blob | new:blob
    19  INCRBY   delta:i64 | key:blob
    20  MSET     n:u32 | (key:blob | value:blob) * n      (n >= 1)

    result  := version:u8 (=1) | tag:u8 | body          (no trailing bytes)

    tag name     body
    1   OK       (empty)
    2   NIL      (empty)
    3   INT      value:i64
    4   BYTES    value:blob
    5   VALUES   n:u32 | (present:u8 [value:blob if present=1]) * n
    6   PAIRS    n:u32 | (key:blob | value:blob) * n
    7   ERROR    kind:u8 | message:blob (UTF-8)

Ops below 16 are reads (served by ``read``, never change state); ops from
16 up are writes (they go through the log). ``ERROR`` results carry a kind
so that a client can tell a bad request (``ERR``, answer the client) from a
key outside the replica's range (``RANGE_KEY_MISMATCH``, the store refreshes
the descriptor and the router retries: nothing was applied).

Rules
-----
- ``decode_command``/``decode_result`` either return a well-formed value or
  raise ``KVCodecError``; no other exception escapes for any input bytes.
- A length field is checked against the bytes that remain before anything is
  sliced or allocated, so a hostile length cannot make the decoder allocate.
- Commands and results are ``NamedTuple``s: they are built once per applied
  command on the hot path, where a NamedTuple is cheaper to create than a
  frozen dataclass (frozen dataclasses go through ``object.__setattr__``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from enum import IntEnum
from typing import Any, Final, NamedTuple

from engine.byte_reader import ByteReader

VERSION: Final = 1

#: The maximum of a u32 length/count field; also the "no limit" SCAN sentinel.
U32_MAX: Final = 0xFFFFFFFF
INT64_MIN: Final = -(1 << 63)
INT64_MAX: Final = (1 << 63) - 1

_HEADER = struct.Struct("<BB")  # version, op/tag
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_PUT_HEAD = struct.Struct("<BBBII")  # version, op, cond, key length, value length
_HEADER_U32 = struct.Struct("<BBI")  # version, op/tag, u32 (count, length, limit)
_HEADER_I64 = struct.Struct("<BBq")  # version, op/tag, i64
assert _PUT_HEAD.size == 11 and _HEADER_U32.size == 6 and _HEADER_I64.size == 10


class KVCodecError(ValueError):
    """Bytes that are not a valid version-1 KV command or result."""


class Op:
    """Command op codes (plain ints: an IntEnum costs a Python-level call per
    pack and compare on the hot path)."""

    GET: Final = 1
    MGET: Final = 2
    EXISTS: Final = 3
    SCAN: Final = 4
    COUNT: Final = 5
    PUT: Final = 16
    DEL: Final = 17
    CAS: Final = 18
    INCRBY: Final = 19
    MSET: Final = 20


class Tag:
    """Result tags."""

    OK: Final = 1
    NIL: Final = 2
    INT: Final = 3
    BYTES: Final = 4
    VALUES: Final = 5
    PAIRS: Final = 6
    ERROR: Final = 7


class PutCond(IntEnum):
    """SET's condition: always, only if absent (NX), only if present (XX)."""

    NONE = 0
    NX = 1
    XX = 2


#: PutCond by wire value, without the cost of an enum lookup.
_CONDS: Final = (PutCond.NONE, PutCond.NX, PutCond.XX)


class ErrorKind(IntEnum):
    ERR = 1  # bad request: the client gets "-ERR <message>"
    RANGE_KEY_MISMATCH = 2  # a key outside this replica's range: retry after re-routing


# --- commands -----------------------------------------------------------------------------


class Get(NamedTuple):
    key: bytes


class MGet(NamedTuple):
    keys: tuple[bytes, ...]


class Exists(NamedTuple):
    keys: tuple[bytes, ...]


class Scan(NamedTuple):
    """Keys in ``[start, end)`` in order (``end == b""``: no upper bound),
    at most ``limit`` of them (``None``: no limit)."""

    start: bytes
    end: bytes
    limit: int | None


class Count(NamedTuple):
    """The number of keys the replica holds (DBSIZE for one range)."""


class Put(NamedTuple):
    key: bytes
    value: bytes
    cond: PutCond = PutCond.NONE


class Delete(NamedTuple):
    keys: tuple[bytes, ...]


class Cas(NamedTuple):
    key: bytes
    expected: bytes
    new: bytes


class IncrBy(NamedTuple):
    key: bytes
    delta: int


class MSet(NamedTuple):
    pairs: tuple[tuple[bytes, bytes], ...]


ReadCommand = Get | MGet | Exists | Scan | Count
WriteCommand = Put | Delete | Cas | IncrBy | MSet
Command = ReadCommand | WriteCommand


def is_write(cmd: Command) -> bool:
    """Whether ``cmd`` changes state, so it must be proposed through the log
    (reads may be served by ``read`` after ReadIndex or a lease instead)."""
    return isinstance(cmd, Put | Delete | Cas | IncrBy | MSet)


# --- results ------------------------------------------------------------------------------


class Ok(NamedTuple):
    """A write that took effect and has nothing else to say (SET)."""


class Nil(NamedTuple):
    """No value: GET of a missing key, SET NX/XX whose condition failed."""


class Int(NamedTuple):
    value: int


class Value(NamedTuple):
    value: bytes


class Values(NamedTuple):
    """MGET: one entry per requested key, ``None`` where the key is missing."""

    values: tuple[bytes | None, ...]


class Pairs(NamedTuple):
    """SCAN: ``(key, value)`` in key order."""

    pairs: tuple[tuple[bytes, bytes], ...]


class Error(NamedTuple):
    kind: ErrorKind
    message: str


Result = Ok | Nil | Int | Value | Values | Pairs | Error

#: Pre-encoded constant results (the common write replies).
OK_BYTES: Final = _HEADER.pack(VERSION, Tag.OK)
NIL_BYTES: Final = _HEADER.pack(VERSION, Tag.NIL)


# --- encoding -----------------------------------------------------------------------------


def _blob(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


def _blobs(items: tuple[bytes, ...]) -> bytes:
    return b"".join([_U32.pack(len(k)) + k for k in items])


def encode_command(cmd: Command) -> bytes:
    """The version-1 bytes of ``cmd``. Raises ``KVCodecError`` for a command
    that cannot be represented (an empty multi-key list, an out-of-range
    integer), so a bad request is refused before it reaches the log."""
    encoder = _COMMAND_ENCODERS.get(type(cmd))
    if encoder is None:
        raise KVCodecError(f"not a KV command: {cmd!r}")
    return encoder(cmd)


def _encode_put(cmd: Put) -> bytes:
    key, value, cond = cmd
    wire_cond = 0 if cond is PutCond.NONE else int(cond)
    return _PUT_HEAD.pack(VERSION, Op.PUT, wire_cond, len(key), len(value)) + key + value


def _encode_get(cmd: Get) -> bytes:
    return _HEADER_U32.pack(VERSION, Op.GET, len(cmd.key)) + cmd.key


def _encode_delete(cmd: Delete) -> bytes:
    return _HEADER_U32.pack(VERSION, Op.DEL, _count(cmd.keys)) + _blobs(cmd.keys)


def _encode_mget(cmd: MGet) -> bytes:
    return _HEADER_U32.pack(VERSION, Op.MGET, _count(cmd.keys)) + _blobs(cmd.keys)


def _encode_exists(cmd: Exists) -> bytes:
    return _HEADER_U32.pack(VERSION, Op.EXISTS, _count(cmd.keys)) + _blobs(cmd.keys)


def _encode_cas(cmd: Cas) -> bytes:
    return _HEADER.pack(VERSION, Op.CAS) + _blob(cmd.key) + _blob(cmd.expected) + _blob(cmd.new)


def _encode_incrby(cmd: IncrBy) -> bytes:
    if not INT64_MIN <= cmd.delta <= INT64_MAX:
        raise KVCodecError(f"increment {cmd.delta} does not fit in 64 bits")
    return _HEADER_I64.pack(VERSION, Op.INCRBY, cmd.delta) + _blob(cmd.key)


def _encode_mset(cmd: MSet) -> bytes:
    body = b"".join([_blob(k) + _blob(v) for k, v in cmd.pairs])
    return _HEADER_U32.pack(VERSION, Op.MSET, _count(cmd.pairs)) + body


def _encode_scan(cmd: Scan) -> bytes:
    limit = cmd.limit
    if limit is not None and not 0 <= limit < U32_MAX:
        raise KVCodecError(f"scan limit {limit} out of range")
    wire_limit = U32_MAX if limit is None else limit
    return _HEADER_U32.pack(VERSION, Op.SCAN, wire_limit) + _blob(cmd.start) + _blob(cmd.end)


def _encode_count(cmd: Count) -> bytes:
    return _HEADER.pack(VERSION, Op.COUNT)


_COMMAND_ENCODERS: Final[dict[type, Callable[[Any], bytes]]] = {
    Put: _encode_put, Get: _encode_get, Delete: _encode_delete, MGet: _encode_mget,
    Exists: _encode_exists, Cas: _encode_cas, IncrBy: _encode_incrby, MSet: _encode_mset,
    Scan: _encode_scan, Count: _encode_count,
}


def _count(items: tuple[object, ...]) -> int:
    if not items:
        raise KVCodecError("a multi-key command needs at least one key")
    return len(items)


def encode_result(res: Result) -> bytes:
    """The version-1 bytes of ``res``."""
    match res:
        case Ok():
            return OK_BYTES
        case Nil():
            return NIL_BYTES
        case Int(value):
            return _HEADER_I64.pack(VERSION, Tag.INT, value)
        case Value(value):
            return _HEADER_U32.pack(VERSION, Tag.BYTES, len(value)) + value
        case Values(values):
            parts = [_HEADER_U32.pack(VERSION, Tag.VALUES, len(values))]
            for v in values:
                parts.append(b"\x00" if v is None else b"\x01" + _blob(v))
            return b"".join(parts)
        case Pairs(pairs):
            body = b"".join([_blob(k) + _blob(v) for k, v in pairs])
            return _HEADER_U32.pack(VERSION, Tag.PAIRS, len(pairs)) + body
        case Error(kind, message):
            return _HEADER.pack(VERSION, Tag.ERROR) + bytes((kind,)) + _blob(message.encode())
    raise KVCodecError(f"not a KV result: {res!r}")


# --- decoding -----------------------------------------------------------------------------


class _Reader(ByteReader):
    """The KV format's cursor: adds fixed-width integers and key lists."""

    __slots__ = ()
    error = KVCodecError

    def u8(self) -> int:
        if self.pos >= len(self.data):
            raise KVCodecError("truncated: expected a byte")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def u32(self) -> int:
        end = self.pos + 4
        if end > len(self.data):
            raise KVCodecError("truncated: expected a u32")
        (n,) = _U32.unpack_from(self.data, self.pos)
        self.pos = end
        return int(n)

    def i64(self) -> int:
        end = self.pos + 8
        if end > len(self.data):
            raise KVCodecError("truncated: expected an i64")
        (n,) = _I64.unpack_from(self.data, self.pos)
        self.pos = end
        return int(n)

    def blobs(self) -> tuple[bytes, ...]:
        n = self.count("key count", 4)
        if n == 0:
            raise KVCodecError("a multi-key command needs at least one key")
        return tuple([self.blob() for _ in range(n)])


def _as_bytes(data: object) -> bytes:
    """A copy of a bytes-like ``data`` (a memoryview from a transport buffer, a
    bytearray) as bytes: keys must be hashable and must not change under us."""
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise KVCodecError(f"expected bytes, got {type(data).__name__}")


def _check_version(data: bytes) -> None:
    if len(data) < 2:
        raise KVCodecError(f"truncated: {len(data)} bytes, need at least 2")
    if data[0] != VERSION:
        raise KVCodecError(f"unsupported KV codec version {data[0]}")


def decode_command(data: bytes) -> Command:
    """Parse untrusted ``data`` into a command, or raise ``KVCodecError``."""
    if type(data) is not bytes:
        data = _as_bytes(data)
    n = len(data)
    if n >= _PUT_HEAD.size and data[1] == Op.PUT and data[0] == VERSION:
        # The hot path: a well-formed SET takes one unpack and two slices;
        # anything irregular falls through to the careful path for its error.
        _, _, cond, klen, vlen = _PUT_HEAD.unpack_from(data)
        kend = _PUT_HEAD.size + klen
        if kend + vlen == n and cond < 3:
            return Put(data[_PUT_HEAD.size : kend], data[kend:], _CONDS[cond])
    _check_version(data)
    op = data[1]
    if op == Op.PUT:
        return _decode_put_carefully(data)
    r = _Reader(data, 2)
    cmd: Command
    if op == Op.GET:
        cmd = Get(r.blob())
    elif op == Op.DEL:
        cmd = Delete(r.blobs())
    elif op == Op.CAS:
        cmd = Cas(r.blob(), r.blob(), r.blob())
    elif op == Op.INCRBY:
        delta = r.i64()
        cmd = IncrBy(r.blob(), delta)
    elif op == Op.MSET:
        n_pairs = r.count("pair count", 8)
        if n_pairs == 0:
            raise KVCodecError("MSET needs at least one pair")
        cmd = MSet(tuple([(r.blob(), r.blob()) for _ in range(n_pairs)]))
    elif op == Op.MGET:
        cmd = MGet(r.blobs())
    elif op == Op.EXISTS:
        cmd = Exists(r.blobs())
    elif op == Op.SCAN:
        limit = r.u32()
        cmd = Scan(r.blob(), r.blob(), None if limit == U32_MAX else limit)
    elif op == Op.COUNT:
        cmd = Count()
    else:
        raise KVCodecError(f"unknown KV op {op}")
    r.finish()
    return cmd


def decode_result(data: bytes) -> Result:
    """Parse untrusted ``data`` into a result, or raise ``KVCodecError``."""
    if type(data) is not bytes:
        data = _as_bytes(data)
    _check_version(data)
    tag = data[1]
    r = _Reader(data, 2)
    res: Result
    if tag == Tag.OK:
        res = Ok()
    elif tag == Tag.NIL:
        res = Nil()
    elif tag == Tag.INT:
        res = Int(r.i64())
    elif tag == Tag.BYTES:
        res = Value(r.blob())
    elif tag == Tag.VALUES:
        n = r.count("value count", 1)
        values: list[bytes | None] = []
        for _ in range(n):
            present = r.u8()
            if present > 1:
                raise KVCodecError(f"bad presence flag {present}")
            values.append(r.blob() if present else None)
        res = Values(tuple(values))
    elif tag == Tag.PAIRS:
        n = r.count("pair count", 8)
        res = Pairs(tuple([(r.blob(), r.blob()) for _ in range(n)]))
    elif tag == Tag.ERROR:
        kind = r.u8()
        if kind not in (ErrorKind.ERR, ErrorKind.RANGE_KEY_MISMATCH):
            raise KVCodecError(f"unknown error kind {kind}")
        raw = r.blob()
        try:
            message = raw.decode()
        except UnicodeDecodeError as e:
            raise KVCodecError(f"error message is not UTF-8: {e}") from None
        res = Error(ErrorKind(kind), message)
    else:
        raise KVCodecError(f"unknown KV result tag {tag}")
    r.finish()
    return res



def _decode_put_carefully(data: bytes) -> Put:
    """A PUT the fast path refused: find and report what is wrong with it."""
    r = _Reader(data, 2)
    cond = r.u8()
    klen = r.u32()
    vlen = r.u32()
    key = r.take(klen)
    value = r.take(vlen)
    r.finish()
    if cond > PutCond.XX:
        raise KVCodecError(f"unknown SET condition {cond}")
    return Put(key, value, PutCond(cond))
