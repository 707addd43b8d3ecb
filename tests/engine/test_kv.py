"""The default KV state machine: command semantics, range bounds, snapshots,
split/absorb, and a model-based check against a plain dict."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kv import (
    _EMPTY,
    ERR_NOT_INTEGER,
    ERR_OVERFLOW,
    KVStateMachine,
    SnapshotCorrupt,
    parse_int64,
)
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
    decode_result,
    encode_command,
)
from engine.statemachine import StateMachine


def run(sm: KVStateMachine, *cmds: Command) -> list[Result]:
    return [decode_result(r) for r in sm.apply([encode_command(c) for c in cmds])]


def one(sm: KVStateMachine, cmd: Command) -> Result:
    return run(sm, cmd)[0]


def query(sm: KVStateMachine, cmd: Command) -> Result:
    return decode_result(sm.read(encode_command(cmd)))


def filled(*pairs: tuple[bytes, bytes], start: bytes = b"", end: bytes = b"") -> KVStateMachine:
    sm = KVStateMachine(start, end)
    if pairs:
        assert one(sm, MSet(pairs)) == Ok()
    return sm


def test_it_implements_the_protocol() -> None:
    sm: StateMachine = KVStateMachine()
    assert sm.approximate_size() == 0


# --- commands -----------------------------------------------------------------------------


def test_put_and_get() -> None:
    sm = KVStateMachine()
    assert run(sm, Put(b"a", b"1"), Get(b"a"), Get(b"b"), Put(b"a", b"")) == [
        Ok(), Value(b"1"), Nil(), Ok()]
    assert query(sm, Get(b"a")) == Value(b"")  # an empty value is still a value


def test_put_conditions() -> None:
    sm = KVStateMachine()
    assert run(sm, Put(b"a", b"1", PutCond.XX), Put(b"a", b"1", PutCond.NX),
               Put(b"a", b"2", PutCond.NX), Put(b"a", b"3", PutCond.XX)) == [
        Nil(), Ok(), Nil(), Ok()]
    assert query(sm, Get(b"a")) == Value(b"3")


def test_delete_counts_keys_that_existed() -> None:
    sm = filled((b"a", b"1"), (b"b", b"2"))
    assert one(sm, Delete((b"a", b"a", b"zz"))) == Int(1)
    assert one(sm, Delete((b"a",))) == Int(0)
    assert query(sm, MGet((b"a", b"b"))) == Values((None, b"2"))


def test_cas() -> None:
    sm = filled((b"a", b"1"))
    assert run(sm, Cas(b"a", b"2", b"x"), Cas(b"a", b"1", b"x"), Get(b"a")) == [
        Int(0), Int(1), Value(b"x")]
    # A missing key never matches, not even an empty expected value.
    assert run(sm, Cas(b"m", b"", b"x"), Get(b"m")) == [Int(0), Nil()]


def test_incrby() -> None:
    sm = KVStateMachine()
    assert run(sm, IncrBy(b"n", 1), IncrBy(b"n", 41), IncrBy(b"n", -50), Get(b"n")) == [
        Int(1), Int(42), Int(-8), Value(b"-8")]


@pytest.mark.parametrize("raw", [b"", b"x", b"01", b"+1", b" 1", b"1 ", b"-0", b"1.0",
                                 b"9223372036854775808", b"-9223372036854775809", b"1e3"])
def test_incr_of_a_non_integer_is_an_error_result(raw: bytes) -> None:
    sm = filled((b"n", raw))
    assert one(sm, IncrBy(b"n", 1)) == Error(ErrorKind.ERR, ERR_NOT_INTEGER)
    assert query(sm, Get(b"n")) == Value(raw)
    assert parse_int64(raw) is None


def test_incr_overflow_is_an_error_result() -> None:
    sm = filled((b"n", b"9223372036854775807"), (b"m", b"-9223372036854775808"))
    assert run(sm, IncrBy(b"n", 1), IncrBy(b"m", -1), IncrBy(b"n", -1)) == [
        Error(ErrorKind.ERR, ERR_OVERFLOW), Error(ErrorKind.ERR, ERR_OVERFLOW),
        Int(9223372036854775806)]


def test_mget_exists_count() -> None:
    sm = filled((b"a", b"1"), (b"c", b"3"))
    assert query(sm, MGet((b"a", b"b", b"c"))) == Values((b"1", None, b"3"))
    assert query(sm, Exists((b"a", b"a", b"b"))) == Int(2)  # Redis counts repeats
    assert query(sm, Count()) == Int(2)


def test_scan_is_ordered_half_open_and_limited() -> None:
    sm = filled(*[(bytes([c]), bytes([c]) * 2) for c in b"fdbeac"])
    assert query(sm, Scan(b"b", b"e", None)) == Pairs(
        ((b"b", b"bb"), (b"c", b"cc"), (b"d", b"dd")))
    assert query(sm, Scan(b"b", b"", 2)) == Pairs(((b"b", b"bb"), (b"c", b"cc")))
    assert query(sm, Scan(b"", b"", None)) == Pairs(
        tuple((bytes([c]), bytes([c]) * 2) for c in b"abcdef"))
    assert query(sm, Scan(b"e", b"b", None)) == Pairs(())
    assert query(sm, Scan(b"a", b"z", 0)) == Pairs(())


def test_apply_never_raises_for_a_bad_command() -> None:
    sm = filled((b"a", b"1"))
    results = [decode_result(r) for r in sm.apply([b"", b"\x07\x01", b"\x01\x10\x00"])]
    assert all(isinstance(r, Error) and r.kind is ErrorKind.ERR for r in results)
    assert "bad command" in str(results[0])
    assert query(sm, Scan(b"", b"", None)) == Pairs(((b"a", b"1"),))


def test_reads_go_through_apply_too_but_read_refuses_writes() -> None:
    sm = filled((b"a", b"1"))
    assert one(sm, Get(b"a")) == Value(b"1")
    assert query(sm, Put(b"a", b"2")) == Error(ErrorKind.ERR, "write command on the read path")
    assert decode_result(sm.read(b"junk")) == Error(
        ErrorKind.ERR, "bad command: unsupported KV codec version 106")
    assert query(sm, Get(b"a")) == Value(b"1")


# --- range bounds ---------------------------------------------------------------------------


def test_keys_outside_the_range_are_refused_and_nothing_changes() -> None:
    sm = filled((b"d", b"1"), start=b"c", end=b"m")
    before = list(sm.items())
    for cmd in [Put(b"m", b"x"), Put(b"b", b"x"), Get(b"z"), Delete((b"d", b"n")),
                Cas(b"a", b"1", b"2"), IncrBy(b"zz", 1), MSet(((b"e", b"1"), (b"m", b"2"))),
                MGet((b"d", b"a")), Exists((b"q",))]:
        res = one(sm, cmd)
        assert isinstance(res, Error) and res.kind is ErrorKind.RANGE_KEY_MISMATCH, cmd
    assert list(sm.items()) == before
    assert sm.approximate_size() == 2


def test_scans_are_clipped_to_the_range() -> None:
    sm = filled((b"c", b"1"), (b"f", b"2"), start=b"c", end=b"m")
    assert query(sm, Scan(b"", b"", None)) == Pairs(((b"c", b"1"), (b"f", b"2")))
    assert query(sm, Scan(b"m", b"", None)) == Pairs(())
    assert query(sm, Scan(b"a", b"c", None)) == Pairs(())


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="empty key range"):
        KVStateMachine(b"m", b"c")
    with pytest.raises(ValueError, match="chunk_bytes"):
        KVStateMachine(chunk_bytes=0)


# --- model-based --------------------------------------------------------------------------


def _model_apply(model: dict[bytes, bytes], cmd: Command) -> Result:
    """A deliberately naive reference implementation (no bounds)."""
    match cmd:
        case Put(k, v, cond):
            if (cond is PutCond.NX and k in model) or (cond is PutCond.XX and k not in model):
                return Nil()
            model[k] = v
            return Ok()
        case Get(k):
            return Value(model[k]) if k in model else Nil()
        case Delete(keys):
            return Int(sum(1 for k in set(keys) if model.pop(k, None) is not None))
        case Cas(k, e, n):
            if k in model and model[k] == e:
                model[k] = n
                return Int(1)
            return Int(0)
        case IncrBy(k, d):
            try:
                cur = int(model.get(k, b"0"))
            except ValueError:
                return Error(ErrorKind.ERR, ERR_NOT_INTEGER)
            model[k] = str(cur + d).encode()
            return Int(cur + d)
        case MSet(pairs):
            model.update(pairs)
            return Ok()
        case Scan(s, e, limit):
            keys = sorted(k for k in model if k >= s and (not e or k < e))[:limit]
            return Pairs(tuple((k, model[k]) for k in keys))
    raise AssertionError(cmd)


_key = st.sampled_from([b"", b"a", b"b", b"ba", b"c", b"d"])
_val = st.sampled_from([b"", b"1", b"22", b"-3", b"x"])
_cmd = st.one_of(
    st.builds(Put, _key, _val, st.sampled_from(PutCond)),
    st.builds(Get, _key),
    st.builds(Delete, st.lists(_key, min_size=1, max_size=3).map(tuple)),
    st.builds(Cas, _key, _val, _val),
    st.builds(IncrBy, _key, st.integers(-5, 5)),
    st.builds(MSet, st.lists(st.tuples(_key, _val), min_size=1, max_size=3).map(tuple)),
    st.builds(Scan, _key, _key, st.none() | st.integers(0, 4)),
)


@settings(max_examples=150, deadline=None, print_blob=True)
@given(st.lists(_cmd, max_size=40))
def test_matches_a_naive_model_and_keeps_its_size_exact(cmds: list[Command]) -> None:
    sm = KVStateMachine()
    model: dict[bytes, bytes] = {}
    for cmd in cmds:
        assert one(sm, cmd) == _model_apply(model, cmd), cmd
        assert sm.approximate_size() == sum(len(k) + len(v) for k, v in model.items())
    assert list(sm.items()) == sorted(model.items())
    assert len(sm) == len(model)


# --- snapshots ----------------------------------------------------------------------------


def _random_sm(seed: int, n: int, chunk_bytes: int = 64) -> KVStateMachine:
    rng = random.Random(seed)
    sm = KVStateMachine(chunk_bytes=chunk_bytes)
    run(sm, *[Put(rng.randbytes(rng.randrange(1, 12)), rng.randbytes(rng.randrange(0, 150)))
              for _ in range(n)])
    return sm


def test_snapshot_round_trips_with_bounded_chunks() -> None:
    sm = _random_sm(1, 300, chunk_bytes=100)
    chunks = list(sm.snapshot())
    assert len(chunks) > 100
    assert all(0 < len(c) <= 100 for c in chunks)
    copy = KVStateMachine(b"q", b"r")
    copy.restore(chunks)
    assert list(copy.items()) == list(sm.items())
    assert copy.approximate_size() == sm.approximate_size()
    assert copy.bounds == sm.bounds == (b"", b"")


def test_restore_accepts_any_re_cutting_of_the_stream() -> None:
    sm = filled((b"a", b"1"), (b"b", b"2" * 500), start=b"a", end=b"c")
    stream = b"".join(sm.snapshot())
    for pieces in ([stream], [bytes([x]) for x in stream], [stream[:7], b"", stream[7:]]):
        copy = KVStateMachine()
        copy.restore(iter(pieces))
        assert list(copy.items()) == list(sm.items())
        assert copy.bounds == (b"a", b"c")


def test_empty_snapshot_round_trips() -> None:
    copy = filled((b"x", b"1"))
    copy.restore(KVStateMachine(b"k").snapshot())
    assert len(copy) == 0 and copy.approximate_size() == 0 and copy.bounds == (b"k", b"")


def test_snapshot_describes_the_moment_it_was_taken() -> None:
    sm = filled((b"a", b"1"), (b"b", b"2"))
    snap = sm.snapshot()
    run(sm, Put(b"a", b"changed"), Put(b"c", b"3"), Delete((b"b",)))
    copy = KVStateMachine()
    copy.restore(snap)
    assert list(copy.items()) == [(b"a", b"1"), (b"b", b"2")]


def test_replicas_applying_the_same_commands_snapshot_identically() -> None:
    a, b = _random_sm(5, 50), _random_sm(5, 50)
    assert b"".join(a.snapshot()) == b"".join(b.snapshot())


def test_corrupt_snapshots_are_refused_and_state_is_kept() -> None:
    good = b"".join(filled((b"a", b"1"), (b"b", b"22")).snapshot())
    target = filled((b"keep", b"me"))
    rng = random.Random(3)
    bad_streams = [good[:cut] for cut in range(len(good))]
    bad_streams += [good + b"\x00", b"NOTASNAP" + good[8:], good[:8] + b"\x02" + good[9:]]
    for pos in range(len(good)):  # every single-byte flip is caught
        flipped = bytearray(good)
        flipped[pos] ^= 1 << rng.randrange(8)
        bad_streams.append(bytes(flipped))
    for bad in bad_streams:
        with pytest.raises(SnapshotCorrupt):
            target.restore([bad])
        assert list(target.items()) == [(b"keep", b"me")]
        assert target.bounds == (b"", b"")


# --- split / absorb -----------------------------------------------------------------------


def test_split_moves_the_upper_keys_to_a_new_machine() -> None:
    sm = filled((b"a", b"1"), (b"c", b"33"), (b"e", b"5"), start=b"a", end=b"z")
    right = sm.split(b"c")
    assert list(sm.items()) == [(b"a", b"1")]
    assert list(right.items()) == [(b"c", b"33"), (b"e", b"5")]
    assert sm.bounds == (b"a", b"c") and right.bounds == (b"c", b"z")
    assert (sm.approximate_size(), right.approximate_size()) == (2, 5)
    # Each half now refuses the other's keys.
    assert isinstance(one(sm, Put(b"d", b"x")), Error)
    assert one(right, Put(b"d", b"x")) == Ok()


@pytest.mark.parametrize("key", [b"a", b"", b"z", b"zz"])
def test_split_key_must_be_strictly_inside(key: bytes) -> None:
    sm = filled((b"b", b"1"), start=b"a", end=b"z")
    with pytest.raises(ValueError, match="not strictly inside"):
        sm.split(key)


def test_absorb_takes_the_right_neighbour() -> None:
    sm = _random_sm(9, 200)
    whole = list(sm.items())
    size = sm.approximate_size()
    key = sm.split_key()
    assert key is not None
    right = sm.split(key)
    assert len(sm) == 100 and len(right) == 100
    sm.absorb(right)
    assert list(sm.items()) == whole
    assert sm.approximate_size() == size and sm.bounds == (b"", b"")
    assert len(right) == 0 and right.approximate_size() == 0


def test_absorb_refuses_a_range_that_is_not_adjacent() -> None:
    left = KVStateMachine(b"a", b"c")
    with pytest.raises(ValueError, match="not the adjacent"):
        left.absorb(KVStateMachine(b"d", b"f"))
    with pytest.raises(ValueError, match="not the adjacent"):
        KVStateMachine(b"a").absorb(KVStateMachine(b"d"))


def test_split_key_is_the_median_or_none() -> None:
    assert KVStateMachine().split_key() is None
    assert filled((b"a", b"1")).split_key() is None
    assert filled((b"a", b"1"), (b"b", b"1"), (b"c", b"1")).split_key() == b"b"


def test_split_then_snapshot_each_half() -> None:
    sm = _random_sm(11, 120)
    key = sm.split_key()
    assert key is not None
    right = sm.split(key)
    for part in (sm, right):
        copy = KVStateMachine()
        copy.restore(part.snapshot())
        assert list(copy.items()) == list(part.items()) and copy.bounds == part.bounds


def test_empty_replicas_share_one_map_that_no_operation_writes() -> None:
    a = KVStateMachine(b"", b"m")
    run(a, Get(b"x"), Delete((b"x",)), Scan(b"", b"", None), Cas(b"x", b"1", b"2"))
    a.absorb(a.split(b"k"))  # split off and merge back an empty right half
    a.restore(KVStateMachine(b"", b"m").snapshot())
    assert len(_EMPTY) == 0 and len(a) == 0
    a.absorb(filled((b"n", b"1"), start=b"m"))  # an empty left takes the right's map over
    assert list(a.items()) == [(b"n", b"1")] and a.bounds == (b"", b"")
    run(a, Put(b"a", b"1"))
    b = KVStateMachine()
    run(b, Put(b"z", b"2"))
    assert len(_EMPTY) == 0
    assert list(a.items()) == [(b"a", b"1"), (b"n", b"1")]
    assert list(b.items()) == [(b"z", b"2")]


@settings(max_examples=80, deadline=None, print_blob=True)
@given(
    st.dictionaries(st.binary(min_size=1, max_size=4), st.binary(max_size=8), max_size=30),
    st.binary(min_size=1, max_size=4),
)
def test_split_at_any_key_partitions_exactly_and_absorb_undoes_it(
    data: dict[bytes, bytes], key: bytes,
) -> None:
    sm = filled(*data.items()) if data else KVStateMachine()
    size = sm.approximate_size()
    right = sm.split(key)
    assert list(sm.items()) == sorted((k, v) for k, v in data.items() if k < key)
    assert list(right.items()) == sorted((k, v) for k, v in data.items() if k >= key)
    assert sm.approximate_size() + right.approximate_size() == size
    assert sm.approximate_size() == sum(len(k) + len(v) for k, v in sm.items())
    sm.absorb(right)
    assert list(sm.items()) == sorted(data.items()) and sm.approximate_size() == size
