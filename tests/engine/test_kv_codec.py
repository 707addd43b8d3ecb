"""The KV command/result codec: round trips, the pinned byte layout, and
untrusted input (every byte string decodes to a valid value or KVCodecError)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kv_codec import (
    INT64_MAX,
    INT64_MIN,
    NIL_BYTES,
    OK_BYTES,
    U32_MAX,
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
    KVCodecError,
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
    decode_command,
    decode_result,
    encode_command,
    encode_result,
    is_write,
)

_bytes = st.binary(max_size=40)
_keys = st.lists(_bytes, min_size=1, max_size=5).map(tuple)
_int64 = st.integers(INT64_MIN, INT64_MAX)

commands: st.SearchStrategy[Command] = st.one_of(
    st.builds(Get, _bytes),
    st.builds(MGet, _keys),
    st.builds(Exists, _keys),
    st.builds(Scan, _bytes, _bytes, st.none() | st.integers(0, U32_MAX - 1)),
    st.just(Count()),
    st.builds(Put, _bytes, _bytes, st.sampled_from(PutCond)),
    st.builds(Delete, _keys),
    st.builds(Cas, _bytes, _bytes, _bytes),
    st.builds(IncrBy, _bytes, _int64),
    st.builds(MSet, st.lists(st.tuples(_bytes, _bytes), min_size=1, max_size=5).map(tuple)),
)

results: st.SearchStrategy[Result] = st.one_of(
    st.just(Ok()),
    st.just(Nil()),
    st.builds(Int, _int64),
    st.builds(Value, _bytes),
    st.builds(Values, st.lists(st.none() | _bytes, max_size=5).map(tuple)),
    st.builds(Pairs, st.lists(st.tuples(_bytes, _bytes), max_size=5).map(tuple)),
    st.builds(Error, st.sampled_from(ErrorKind), st.text(max_size=30)),
)


@settings(max_examples=300, deadline=None, print_blob=True)
@given(commands)
def test_every_command_round_trips(cmd: Command) -> None:
    raw = encode_command(cmd)
    assert decode_command(raw) == cmd
    assert type(decode_command(raw)) is type(cmd)


@settings(max_examples=300, deadline=None, print_blob=True)
@given(results)
def test_every_result_round_trips(res: Result) -> None:
    raw = encode_result(res)
    assert decode_result(raw) == res
    assert type(decode_result(raw)) is type(res)


def test_the_byte_layout_is_pinned() -> None:
    # Log entries live forever: a change to these bytes needs a new version.
    assert encode_command(Put(b"k", b"vv", PutCond.NX)).hex() == (
        "01" "10" "01" "01000000" "02000000" "6b" "7676"
    )
    assert encode_command(Get(b"k")).hex() == "01" "01" "01000000" "6b"
    assert encode_command(IncrBy(b"k", -2)).hex() == (
        "01" "13" "feffffffffffffff" "01000000" "6b"
    )
    assert encode_command(Scan(b"a", b"", None)).hex() == (
        "01" "04" "ffffffff" "01000000" "61" "00000000"
    )
    assert encode_result(Error(ErrorKind.ERR, "no")).hex() == "01" "07" "01" "02000000" "6e6f"
    assert encode_result(Ok()) == OK_BYTES == b"\x01\x01"
    assert encode_result(Nil()) == NIL_BYTES == b"\x01\x02"


def test_writes_are_told_from_reads() -> None:
    writes = [Put(b"k", b"v"), Delete((b"k",)), Cas(b"k", b"a", b"b"), IncrBy(b"k", 1),
              MSet(((b"k", b"v"),))]
    reads = [Get(b"k"), MGet((b"k",)), Exists((b"k",)), Scan(b"", b"", None), Count()]
    assert all(is_write(c) for c in writes)
    assert not any(is_write(c) for c in reads)


def test_errors_stay_distinct_from_values() -> None:
    err = decode_result(encode_result(Error(ErrorKind.ERR, "value is not an integer")))
    mismatch = decode_result(encode_result(Error(ErrorKind.RANGE_KEY_MISMATCH, "moved")))
    assert err == Error(ErrorKind.ERR, "value is not an integer")
    assert isinstance(mismatch, Error) and mismatch.kind is ErrorKind.RANGE_KEY_MISMATCH
    assert decode_result(encode_result(Value(b"ERR x"))) == Value(b"ERR x")


@pytest.mark.parametrize(
    "cmd",
    [MGet(()), Exists(()), Delete(()), MSet(()), IncrBy(b"k", INT64_MAX + 1),
     IncrBy(b"k", INT64_MIN - 1), Scan(b"", b"", U32_MAX), Scan(b"", b"", -1)],
)
def test_unrepresentable_commands_are_refused_at_encode(cmd: Command) -> None:
    with pytest.raises(KVCodecError):
        encode_command(cmd)


def test_encoders_refuse_foreign_objects() -> None:
    with pytest.raises(KVCodecError, match="not a KV command"):
        encode_command(Ok())  # type: ignore[arg-type]
    with pytest.raises(KVCodecError, match="not a KV result"):
        encode_result(Get(b"k"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"", "truncated"),
        (b"\x01", "truncated"),
        (b"\x02\x01", "version 2"),
        (b"\x01\x63", "unknown KV op 99"),
        (encode_command(Get(b"k")) + b"\x00", "trailing"),
        (b"\x01\x10\x03" + bytes(8), "condition 3"),
        (b"\x01\x11\xff\xff\xff\xff", "count 4294967295 exceeds"),
        (b"\x01\x11\x00\x00\x00\x00", "at least one key"),
        (b"\x01\x14\x00\x00\x00\x00", "at least one pair"),
        (b"\x01\x01\xff\xff\xff\x7f", "truncated: 2147483647 bytes expected"),
        (b"\x01\x10\x00\xff\xff\xff\x7f\x00\x00\x00\x00", "truncated: 2147483647"),
        (b"\x01\x10\x00\x00\x00\x00", "truncated: expected a u32"),
    ],
)
def test_bad_command_bytes_get_one_clear_error(raw: bytes, match: str) -> None:
    with pytest.raises(KVCodecError, match=match):
        decode_command(raw)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"\x01\x09", "unknown KV result tag 9"),
        (b"\x01\x05\x01\x00\x00\x00\x02", "presence flag"),
        (b"\x01\x07\x09\x00\x00\x00\x00", "error kind 9"),
        (b"\x01\x07\x01\x01\x00\x00\x00\xff", "not UTF-8"),
        (b"\x01\x03\x00", "truncated: expected an i64"),
        (b"\x01\x06\xff\xff\xff\x00", "exceeds"),
    ],
)
def test_bad_result_bytes_get_one_clear_error(raw: bytes, match: str) -> None:
    with pytest.raises(KVCodecError, match=match):
        decode_result(raw)


def test_bytes_like_input_is_accepted_and_other_types_refused() -> None:
    raw = encode_command(Put(b"k", b"v"))
    for view in (bytearray(raw), memoryview(raw)):
        cmd = decode_command(view)  # type: ignore[arg-type]
        assert cmd == Put(b"k", b"v") and type(cmd.key) is bytes  # type: ignore[union-attr]
        assert decode_result(type(view)(encode_result(Ok()))) == Ok()  # type: ignore[arg-type]
    for bad in ("text", None, 5):
        with pytest.raises(KVCodecError, match="expected bytes"):
            decode_command(bad)  # type: ignore[arg-type]
        with pytest.raises(KVCodecError, match="expected bytes"):
            decode_result(bad)  # type: ignore[arg-type]


def test_every_truncation_of_a_valid_encoding_is_refused() -> None:
    samples: list[Command] = [
        Put(b"key", b"value", PutCond.XX), Delete((b"a", b"bb")), Cas(b"k", b"e", b"n"),
        IncrBy(b"k", 5), MSet(((b"a", b"1"), (b"b", b"2"))), Scan(b"a", b"z", 10),
        MGet((b"a",)), Get(b"k"),
    ]
    for cmd in samples:
        raw = encode_command(cmd)
        for cut in range(len(raw)):
            with pytest.raises(KVCodecError):
                decode_command(raw[:cut])


def _decodes_cleanly(raw: bytes) -> None:
    """Either a value that re-encodes to the same bytes, or KVCodecError."""
    try:
        cmd = decode_command(raw)
    except KVCodecError:
        pass
    else:
        assert encode_command(cmd) == raw
    try:
        res = decode_result(raw)
    except KVCodecError:
        pass
    else:
        assert encode_result(res) == raw


@settings(max_examples=500, deadline=None, print_blob=True)
@given(st.binary(max_size=64))
def test_fuzz_random_bytes(raw: bytes) -> None:
    _decodes_cleanly(raw)
    _decodes_cleanly(b"\x01" + raw)


@settings(max_examples=300, deadline=None, print_blob=True)
@given(commands, results, st.integers(0, 2**32 - 1))
def test_fuzz_mutated_valid_encodings(cmd: Command, res: Result, seed: int) -> None:
    rng = random.Random(seed)
    for raw in (encode_command(cmd), encode_result(res)):
        for _ in range(10):
            data = bytearray(raw)
            for _ in range(rng.randrange(1, 4)):
                action = rng.randrange(3)
                pos = rng.randrange(len(data) + 1)
                if action == 0 and pos < len(data):
                    data[pos] = rng.randrange(256)
                elif action == 1:
                    data.insert(pos, rng.randrange(256))
                elif data:
                    del data[min(pos, len(data) - 1)]
            _decodes_cleanly(bytes(data))
