"""engine.router: per-range splitting, stitching and the retry rules.

The ranges are real ``KVStateMachine``s, one per range; ``submit`` plays the
worker's part (MISMATCH when a key is outside the range's *current*
descriptor, answers encoded as the worker encodes them), so the router is
checked against the same results a ``LocalBackend`` over one whole-keyspace
state machine gives.
"""

from __future__ import annotations

import asyncio

import pytest

from engine.client_errors import Timeout, TryAgain
from engine.kv import KVStateMachine
from engine.kv_codec import (
    Count,
    Delete,
    Error,
    ErrorKind,
    Exists,
    Get,
    MGet,
    MSet,
    Put,
    Scan,
    Value,
    decode_command,
    encode_result,
)
from engine.proposal import Outcome
from engine.range_desc import RangeDescriptor
from engine.range_directory import RangeDirectory
from engine.resp.local_backend import LocalBackend
from engine.router import Router
from engine.worker_protocol import command_keys, is_write_command, pack_status
from transport import ClientResponse


def _descs(bounds: list[bytes]) -> list[RangeDescriptor]:
    edges = [b"", *bounds, b""]
    return [RangeDescriptor(range_id=i + 1, start_key=edges[i], end_key=edges[i + 1],
                            voters=(1,)) for i in range(len(edges) - 1)]


class Ranges:
    """The ground truth: current descriptors and one state machine per range."""

    def __init__(self, descs: list[RangeDescriptor]) -> None:
        self.descs = {d.range_id: d for d in descs}
        self.sms = {d.range_id: KVStateMachine(d.start_key, d.end_key) for d in descs}
        #: Answers to give before the real one, per range (a scripted leader election).
        self.script: dict[int, list[int]] = {}
        self.calls = 0

    async def submit(self, desc: RangeDescriptor, command: bytes) -> ClientResponse:
        self.calls += 1
        script = self.script.get(desc.range_id)
        if script:
            return ClientResponse(0, script.pop(0), b"")
        cur = self.descs[desc.range_id]
        if not all(cur.contains(k) for k in command_keys(decode_command(command))):
            return ClientResponse(0, pack_status(Outcome.MISMATCH, 0), cur.encode())
        sm = self.sms[desc.range_id]
        res = sm.apply([command])[0] if is_write_command(command) else sm.read(command)
        return ClientResponse(0, pack_status(Outcome.OK, 1), res)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_multi_range_commands_match_one_state_machine() -> None:
    ranges = Ranges(_descs([b"c", b"m", b"t"]))
    router = Router(RangeDirectory(list(ranges.descs.values())), ranges.submit, backoff=0)
    ref = LocalBackend()
    keys = [b"a", b"b", b"c", b"d", b"m1", b"s", b"t", b"zz"]
    cmds = [
        MSet(tuple((k, k.upper()) for k in keys)),
        MGet((b"zz", b"a", b"nope", b"m1")),
        Exists((b"a", b"t", b"x")),
        Scan(b"b", b"t", None),
        Scan(b"", b"", 5),
        Count(),
        Delete((b"a", b"zz", b"q")),
        Count(),
        Get(b"s"),
    ]
    for cmd in cmds:
        assert run(router.execute(cmd)) == run(ref.execute(cmd)), cmd


def test_stale_directory_is_fixed_by_the_mismatch_descriptor() -> None:
    old = _descs([b"m"])
    ranges = Ranges(old)
    directory = RangeDirectory(old)
    router = Router(directory, ranges.submit, max_attempts=4, backoff=0)
    # [m, +inf) split at t behind the router's back: range 3 holds [t, +inf) now.
    left, right = old[1].split(b"t", 3)
    ranges.descs[2] = left
    ranges.descs[3] = right
    ranges.sms[3] = KVStateMachine(b"t", b"")
    assert run(router.execute(Put(b"n", b"1"))) is not None  # still in range 2
    # A key of the new right half: range 2 answers MISMATCH with its new (left)
    # descriptor; until the right half is learnt the key is in a gap: TryAgain.
    with pytest.raises(TryAgain):
        run(router.execute(Put(b"x", b"1")))
    assert directory.get(2) == left and directory.lookup(b"x") is None
    directory.update(right)
    run(router.execute(Put(b"x", b"1")))
    assert run(router.execute(Get(b"x"))) == Value(b"1")
    assert len(ranges.sms[3]) == 1 and len(ranges.sms[2]) == 1


def test_tryagain_is_retried_then_given_up() -> None:
    descs = _descs([])
    ranges = Ranges(descs)
    router = Router(RangeDirectory(descs), ranges.submit, max_attempts=5, backoff=0)
    ranges.script[1] = [pack_status(Outcome.TRYAGAIN, 2)] * 3
    assert run(router.execute(Put(b"k", b"v"))) is not None
    assert ranges.calls == 4
    ranges.script[1] = [pack_status(Outcome.TRYAGAIN, 0)] * 10
    with pytest.raises(TryAgain):
        run(router.execute(Get(b"k")))


def test_unknown_outcome_is_a_timeout_never_retried() -> None:
    descs = _descs([])
    ranges = Ranges(descs)
    router = Router(RangeDirectory(descs), ranges.submit, backoff=0)
    ranges.script[1] = [pack_status(Outcome.UNKNOWN, 0)]
    with pytest.raises(Timeout):
        run(router.execute(Put(b"k", b"v")))
    assert ranges.calls == 1


def test_range_key_mismatch_result_is_retried() -> None:
    descs = _descs([])
    ranges = Ranges(descs)
    calls = 0

    async def submit(desc: RangeDescriptor, command: bytes) -> ClientResponse:
        nonlocal calls
        calls += 1
        if calls == 1:
            res = encode_result(Error(ErrorKind.RANGE_KEY_MISMATCH, "moved"))
            return ClientResponse(0, pack_status(Outcome.OK, 1), res)
        return await ranges.submit(desc, command)

    router = Router(RangeDirectory(descs), submit, backoff=0)
    run(router.execute(Put(b"k", b"v")))
    assert calls == 2


def test_fast_path_gives_what_execute_gives_including_retries_and_errors() -> None:
    descs = _descs([b"m"])
    ranges = Ranges(descs)
    router = Router(RangeDirectory(descs), ranges.submit, max_attempts=5, backoff=0)

    async def fast(cmd: Put | Get | MGet) -> object:
        return await router.execute_fast(cmd)

    run(fast(Put(b"a", b"1")))
    assert run(fast(Get(b"a"))) == Value(b"1")
    assert run(fast(MGet((b"a", b"z")))) == run(router.execute(MGet((b"a", b"z"))))
    ranges.script[1] = [pack_status(Outcome.TRYAGAIN, 2)] * 2  # retried in a task
    calls = ranges.calls
    assert run(fast(Get(b"a"))) == Value(b"1")
    assert ranges.calls == calls + 3
    ranges.script[1] = [pack_status(Outcome.UNKNOWN, 0)]
    with pytest.raises(Timeout):
        run(fast(Put(b"a", b"2")))
    ranges.script[1] = [pack_status(Outcome.TRYAGAIN, 0)] * 10
    with pytest.raises(TryAgain):
        run(fast(Get(b"b")))


def test_pipelined_commands_on_one_key_keep_their_order() -> None:
    descs = _descs([b"m"])
    ranges = Ranges(descs)
    router = Router(RangeDirectory(descs), ranges.submit, backoff=0)
    # A retried first SET must still land before the GET of the same key; the
    # command on another key may run concurrently.
    ranges.script[1] = [pack_status(Outcome.TRYAGAIN, 0)]
    got = run(router.execute_many([Put(b"a", b"1"), Get(b"z"), Get(b"a"), Put(b"a", b"2"),
                                   Get(b"a")]))
    assert got[2] == Value(b"1") and got[4] == Value(b"2")
