"""The linearizability checker against hand-made histories with a known
answer, a brute-force oracle on small random histories, and histories
produced by really executing operations one at a time."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kv import KVStateMachine
from engine.kv_codec import (
    Cas,
    Delete,
    Get,
    IncrBy,
    Int,
    Ok,
    Put,
    PutCond,
    Value,
    decode_result,
    encode_command,
)
from engine.testing import (
    HistoryRecorder,
    Operation,
    OpKind,
    Outcome,
    check_history,
    check_key,
)
from engine.testing.linearizability import step

K = b"k"


def get(result: bytes | None, t0: float, t1: float | None, key: bytes = K) -> Operation:
    return Operation(kind=OpKind.GET, key=key, invoke=t0, complete=t1, result=result)


def put(value: bytes, t0: float, t1: float | None, *, result: bool = True,
        cond: PutCond = PutCond.NONE, key: bytes = K) -> Operation:
    return Operation(kind=OpKind.PUT, key=key, invoke=t0, complete=t1, value=value,
                     result=result, cond=cond)


def cas(expected: bytes, new: bytes, result: bool, t0: float, t1: float | None) -> Operation:
    return Operation(kind=OpKind.CAS, key=K, invoke=t0, complete=t1, expected=expected,
                     value=new, result=result)


def incr(delta: int, result: int | None, t0: float, t1: float | None) -> Operation:
    return Operation(kind=OpKind.INCR, key=K, invoke=t0, complete=t1, delta=delta, result=result)


def delete(result: int, t0: float, t1: float | None) -> Operation:
    return Operation(kind=OpKind.DELETE, key=K, invoke=t0, complete=t1, result=result)


def outcome(*ops: Operation) -> Outcome:
    return check_history(ops).outcome


# --- known answers ------------------------------------------------------------------------


def test_empty_history_is_linearizable() -> None:
    assert check_history([]).ok
    assert check_key([]).outcome is Outcome.OK


def test_sequential_history_is_linearizable() -> None:
    assert outcome(
        get(None, 0, 1), put(b"1", 2, 3), get(b"1", 4, 5), cas(b"1", b"2", True, 6, 7),
        get(b"2", 8, 9), delete(1, 10, 11), get(None, 12, 13), incr(5, 5, 14, 15),
        get(b"5", 16, 17),
    ) is Outcome.OK


def test_stale_read_after_a_completed_write_fails() -> None:
    v = check_history([put(b"1", 0, 1), put(b"2", 2, 3), get(b"1", 4, 5)])
    assert v.outcome is Outcome.FAIL
    assert [k.key for k in v.failures()] == [K]
    assert "longest linearizable prefix" in v.explain()


def test_read_concurrent_with_a_write_may_see_either_value() -> None:
    assert outcome(put(b"1", 0, 1), put(b"2", 2, 5), get(b"1", 3, 4)) is Outcome.OK
    assert outcome(put(b"1", 0, 1), put(b"2", 2, 5), get(b"2", 3, 4)) is Outcome.OK


def test_reads_cannot_flip_back_once_a_newer_value_was_seen() -> None:
    # Both reads overlap the write, but the first already saw the new value.
    assert outcome(put(b"1", 0, 1), put(b"2", 2, 9), get(b"2", 3, 4), get(b"1", 5, 6)) \
        is Outcome.FAIL


def test_read_of_a_value_never_written_fails() -> None:
    assert outcome(put(b"1", 0, 1), get(b"3", 2, 3)) is Outcome.FAIL


def test_read_before_the_write_started_fails() -> None:
    assert outcome(get(b"1", 0, 1), put(b"1", 2, 3)) is Outcome.FAIL


def test_lost_write_fails() -> None:
    # Two increments both acknowledged, but the later read sees only one.
    assert outcome(incr(1, 1, 0, 2), incr(1, 2, 1, 3), get(b"1", 4, 5)) is Outcome.FAIL
    # Two concurrent increments that both report 1: one was lost.
    assert outcome(incr(1, 1, 0, 2), incr(1, 1, 1, 3)) is Outcome.FAIL
    assert outcome(incr(1, 1, 0, 2), incr(1, 2, 1, 3), get(b"2", 4, 5)) is Outcome.OK


def test_cas_anomalies() -> None:
    # Both swaps from the same value succeeded: impossible.
    assert outcome(put(b"0", 0, 1), cas(b"0", b"1", True, 2, 4), cas(b"0", b"2", True, 2, 4)) \
        is Outcome.FAIL
    # One wins, one loses: fine, and the read decides which.
    assert outcome(put(b"0", 0, 1), cas(b"0", b"1", True, 2, 4), cas(b"0", b"2", False, 2, 4),
                   get(b"1", 5, 6)) is Outcome.OK
    assert outcome(put(b"0", 0, 1), cas(b"0", b"1", True, 2, 4), cas(b"0", b"2", False, 2, 4),
                   get(b"2", 5, 6)) is Outcome.FAIL
    # A failed CAS although the value matched, with nothing concurrent.
    assert outcome(put(b"0", 0, 1), cas(b"0", b"1", False, 2, 3)) is Outcome.FAIL
    # A missing key never matches, not even an empty expected value.
    assert outcome(cas(b"", b"1", True, 0, 1)) is Outcome.FAIL
    assert outcome(cas(b"", b"1", False, 0, 1)) is Outcome.OK


def test_put_conditions() -> None:
    assert outcome(put(b"1", 0, 2, cond=PutCond.NX), put(b"2", 1, 3, cond=PutCond.NX)) \
        is Outcome.FAIL
    assert outcome(put(b"1", 0, 2, cond=PutCond.NX),
                   put(b"2", 1, 3, cond=PutCond.NX, result=False), get(b"1", 4, 5)) is Outcome.OK
    assert outcome(put(b"1", 0, 1, cond=PutCond.XX)) is Outcome.FAIL
    assert outcome(put(b"1", 0, 1, cond=PutCond.XX, result=False), get(None, 2, 3)) is Outcome.OK


def test_incr_on_a_non_integer_is_an_error_and_changes_nothing() -> None:
    assert outcome(put(b"x", 0, 1), incr(1, None, 2, 3), get(b"x", 4, 5)) is Outcome.OK
    assert outcome(put(b"x", 0, 1), incr(1, 1, 2, 3)) is Outcome.FAIL
    assert outcome(put(b"9223372036854775807", 0, 1), incr(1, None, 2, 3)) is Outcome.OK


def test_delete_reports_whether_the_key_existed() -> None:
    assert outcome(delete(0, 0, 1), put(b"1", 2, 3), delete(1, 4, 5), get(None, 6, 7)) \
        is Outcome.OK
    assert outcome(put(b"1", 0, 1), delete(0, 2, 3)) is Outcome.FAIL


def test_operation_with_unknown_outcome_may_or_may_not_have_happened() -> None:
    maybe = put(b"1", 0, None)
    assert outcome(maybe, get(b"1", 5, 6)) is Outcome.OK
    assert outcome(maybe, get(None, 5, 6)) is Outcome.OK
    # ... but it happens at most once, at one instant:
    assert outcome(maybe, get(b"1", 5, 6), get(None, 7, 8)) is Outcome.FAIL
    # ... possibly long after it was invoked:
    assert outcome(maybe, get(None, 1, 2), get(b"1", 3, 4)) is Outcome.OK
    # ... and never before it was invoked.
    assert outcome(get(b"1", 0, 1), put(b"1", 2, None)) is Outcome.FAIL


def test_unknown_outcome_results_are_ignored() -> None:
    # The recorded result of an unknown-outcome CAS constrains nothing.
    assert outcome(put(b"0", 0, 1), cas(b"0", b"1", False, 2, None), get(b"1", 5, 6)) \
        is Outcome.OK


def test_touching_operations_count_as_concurrent() -> None:
    # The write completes at t=1 exactly when the read starts: either order is allowed.
    assert outcome(put(b"1", 0, 1), get(None, 1, 2)) is Outcome.OK
    assert outcome(put(b"1", 0, 1), get(None, 1.5, 2)) is Outcome.FAIL


def test_keys_are_checked_independently_and_failures_name_the_key() -> None:
    ops = [put(b"1", 0, 1, key=b"a"), get(b"1", 2, 3, key=b"a"),
           put(b"1", 0, 1, key=b"b"), get(None, 2, 3, key=b"b")]
    v = check_history(ops)
    assert v.outcome is Outcome.FAIL
    assert [(k.key, k.outcome) for k in v.keys] == [(b"a", Outcome.OK), (b"b", Outcome.FAIL)]
    with pytest.raises(ValueError, match="one key"):
        check_key(ops)


def test_initial_values() -> None:
    assert check_history([get(b"0", 0, 1)], initial={K: b"0"}).ok
    assert not check_history([get(None, 0, 1)], initial={K: b"0"}).ok


def test_step_bound_reports_unknown_rather_than_running_on() -> None:
    # Many fully concurrent writes then a read of a value nobody wrote: a search
    # that needs far more than 50 steps to refute.
    ops = [put(str(i).encode(), 0, 10) for i in range(12)] + [get(b"x", 11, 12)]
    v = check_history(ops, max_steps=50)
    assert v.outcome is Outcome.UNKNOWN
    assert v.keys[0].steps == 51
    assert check_history(ops).outcome is Outcome.FAIL


def test_invalid_operations_are_refused() -> None:
    with pytest.raises(ValueError, match="before it starts"):
        get(None, 2, 1)
    with pytest.raises(ValueError, match="needs a value"):
        Operation(kind=OpKind.PUT, key=K, invoke=0, complete=1)
    with pytest.raises(ValueError, match="expected"):
        Operation(kind=OpKind.CAS, key=K, invoke=0, complete=1, value=b"1")


@pytest.mark.timeout(20)
def test_memoization_keeps_heavily_concurrent_histories_fast() -> None:
    # 8 clients x 40 rounds; within a round every op overlaps every other, and
    # the results come from executing them in client order.
    rng = random.Random(7)
    ops: list[Operation] = []
    value: bytes | None = None
    for rnd in range(40):
        lo, hi = 10.0 * rnd, 10.0 * rnd + 9
        for c in range(8):
            if rng.random() < 0.5:
                value = f"{rnd}-{c}".encode()
                ops.append(put(value, lo, hi))
            else:
                ops.append(get(value, lo, hi))
    v = check_key(ops)
    assert v.outcome is Outcome.OK, v


# --- the witness ----------------------------------------------------------------------------


def _assert_valid_linearization(ops: list[Operation], order: tuple[Operation, ...]) -> None:
    completed = {id(op) for op in ops if op.complete is not None}
    assert completed <= {id(op) for op in order}
    state: bytes | None = None
    for op in order:
        ok, state = step(state, op)
        assert ok, op
    for i, a in enumerate(order):  # real-time order is respected
        for b in order[i + 1 :]:
            assert not (b.complete is not None and b.complete < a.invoke), (a, b)


# --- brute force oracle -----------------------------------------------------------------


def _brute_force(ops: list[Operation]) -> bool:
    """Try every subset of the unknown-outcome ops and every order."""
    known = [op for op in ops if op.complete is not None]
    unknown = [op for op in ops if op.complete is None]
    for r in range(len(unknown) + 1):
        for extra in itertools.combinations(unknown, r):
            for order in itertools.permutations(known + list(extra)):
                if _legal(order):
                    return True
    return False


def _legal(order: tuple[Operation, ...]) -> bool:
    for i, a in enumerate(order):
        for b in order[i + 1 :]:
            if b.complete is not None and b.complete < a.invoke:
                return False
    state: bytes | None = None
    for op in order:
        ok, state = step(state, op)
        if not ok:
            return False
    return True


def _random_op(rng: random.Random) -> Operation:
    t0 = rng.randrange(10)
    t1: int | None = t0 + rng.randrange(4)
    if rng.random() < 0.15:
        t1 = None
    vals = [b"1", b"2", b"x"]
    kind = rng.choice(list(OpKind))
    if kind is OpKind.GET:
        return get(rng.choice([None, *vals]), t0, t1)
    if kind is OpKind.PUT:
        return put(rng.choice(vals), t0, t1, cond=rng.choice(list(PutCond)),
                   result=rng.random() < 0.7)
    if kind is OpKind.CAS:
        return cas(rng.choice(vals), rng.choice(vals), rng.random() < 0.5, t0, t1)
    if kind is OpKind.INCR:
        return incr(1, rng.choice([None, 1, 2, 3]), t0, t1)
    return delete(rng.randrange(2), t0, t1)


def test_agrees_with_brute_force_on_small_random_histories() -> None:
    seed = 20261122
    rng = random.Random(seed)
    verdicts = {True: 0, False: 0}
    for case in range(400):
        ops = [_random_op(rng) for _ in range(rng.randrange(1, 7))]
        expected = _brute_force(ops)
        got = check_key(ops)
        assert got.outcome is (Outcome.OK if expected else Outcome.FAIL), (
            f"seed {seed} case {case}: brute force says {expected}\n"
            + "\n".join(map(str, ops))
        )
        if expected:
            _assert_valid_linearization(ops, got.order)
        verdicts[expected] += 1
    # The generator must exercise both answers, or the comparison proves little.
    assert verdicts[True] > 40 and verdicts[False] > 40, verdicts


# --- histories from a real sequential execution -------------------------------------------


_command = st.one_of(
    st.builds(Get, st.just(K)),
    st.builds(Put, st.just(K), st.sampled_from([b"1", b"2", b"a"]), st.sampled_from(PutCond)),
    st.builds(lambda: Delete((K,))),
    st.builds(Cas, st.just(K), st.sampled_from([b"1", b"2", b"a"]),
              st.sampled_from([b"1", b"2", b"3"])),
    st.builds(IncrBy, st.just(K), st.integers(-2, 2)),
)


def _as_operation(cmd: object, raw_result: bytes, t0: float, t1: float | None) -> Operation:
    res = decode_result(raw_result)
    match cmd:
        case Get():
            return get(res.value if isinstance(res, Value) else None, t0, t1)
        case Put(_, value, cond):
            return put(value, t0, t1, cond=cond, result=isinstance(res, Ok))
        case Delete():
            assert isinstance(res, Int)
            return delete(res.value, t0, t1)
        case Cas(_, expected, new):
            assert isinstance(res, Int)
            return cas(expected, new, res.value == 1, t0, t1)
        case IncrBy(_, delta):
            return incr(delta, res.value if isinstance(res, Int) else None, t0, t1)
    raise AssertionError(cmd)


@settings(max_examples=60, deadline=None, print_blob=True)
@given(
    script=st.lists(
        st.tuples(_command, st.floats(0, 3), st.floats(0, 3), st.integers(0, 9)),
        min_size=1, max_size=30,
    )
)
def test_sequential_executions_with_random_overlaps_are_linearizable(
    script: list[tuple[object, float, float, int]],
) -> None:
    """Execute each command on the real state machine at instant 10*i, then
    widen it to [10*i - before, 10*i + after]: any such history is
    linearizable. Some ops turn into unknown outcomes (applied or not), and
    unknown ops that never executed are added too."""
    sm = KVStateMachine()
    ops: list[Operation] = []
    for i, (cmd, before, after, fate) in enumerate(script):
        at = 10.0 * i
        if fate == 0:  # timed out and never applied: its result is unknowable
            assert isinstance(cmd, (Get, Put, Delete, Cas, IncrBy))
            probe = KVStateMachine()
            [raw] = probe.apply([encode_command(cmd)])
            ops.append(_as_operation(cmd, raw, at - before, None))
            continue
        [raw] = sm.apply([encode_command(cmd)])  # type: ignore[arg-type]
        ops.append(_as_operation(cmd, raw, at - before, None if fate == 1 else at + after))
    v = check_key(ops)
    assert v.outcome is Outcome.OK, "\n".join(map(str, ops))
    _assert_valid_linearization(ops, v.order)


def test_a_corrupted_sequential_history_fails() -> None:
    ops = [put(b"1", 0, 1), get(b"1", 2, 3), put(b"2", 4, 5), get(b"2", 6, 7)]
    assert check_key(ops).outcome is Outcome.OK
    ops[3] = get(b"1", 6, 7)
    assert check_key(ops).outcome is Outcome.FAIL


def test_recorder_builds_a_history() -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 1
        return now[0]

    rec = HistoryRecorder(clock)
    a = rec.invoke(OpKind.PUT, K, value=b"1", client=1)
    b = rec.invoke(OpKind.GET, K, client=2)
    c = rec.invoke(OpKind.PUT, K, value=b"2", client=3)
    d = rec.invoke(OpKind.PUT, K, value=b"3", client=4)
    rec.invoke(OpKind.PUT, K, value=b"4", client=5)  # never resolved: unknown
    rec.ok(a, True)
    rec.ok(b, b"1")
    rec.failed(c)  # definitely not applied: leaves the history
    rec.unknown(d)
    hist = rec.history()
    assert [op.client for op in hist] == [1, 2, 4, 5]
    assert [op.complete for op in hist] == [6.0, 7.0, None, None]
    assert check_history(hist).ok
