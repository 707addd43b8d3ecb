"""engine.meta_sync: the node's meta client against a real MetaStateMachine behind a
faulty ``submit`` (lost answers, leader hints, MISMATCH, timeouts)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from engine.client_errors import Timeout
from engine.meta import MetaStateMachine
from engine.meta_codec import META_RANGE_ID, decode_command
from engine.meta_sync import MetaRefused, MetaSync, MetaUnavailable
from engine.proposal import Outcome
from engine.range_desc import RangeDescriptor
from engine.range_directory import RangeDirectory
from engine.testing.cluster import even_ranges
from engine.worker_protocol import is_write_command, pack_status
from transport import ClientResponse

pytestmark = pytest.mark.timeout(30)

_T = TypeVar("_T")
META = RangeDescriptor(range_id=META_RANGE_ID, start_key=b"", end_key=b"", voters=(1, 2, 3))


def arun(coro: Coroutine[Any, Any, _T]) -> _T:
    return asyncio.run(coro)


class FakeMeta:
    """``Node.submit`` over one MetaStateMachine. With ``faults``, answers are lost
    before or after applying (UNKNOWN / Timeout), or bounced (TRYAGAIN with a hint,
    MISMATCH with meta's descriptor) — what a real node's submit can return."""

    def __init__(self, sm: MetaStateMachine, *, seed: int = 0, faults: float = 0.0) -> None:
        self.sm = sm
        self.rnd = random.Random(seed)
        self.faults = faults
        self.calls: list[str] = []
        #: The node's directory: a leader hint must be where the next call goes.
        self.directory: RangeDirectory | None = None
        self.hint = 0

    async def submit(self, desc: RangeDescriptor, command: bytes) -> ClientResponse:
        assert desc.range_id == META_RANGE_ID
        self.calls.append(type(decode_command(command)).__name__)
        if self.directory is not None and self.hint:
            assert self.directory.leader(META_RANGE_ID) == self.hint
        self.hint = 0
        roll = self.rnd.random()
        if roll < self.faults:
            fault = self.rnd.randrange(5)
            if fault == 0:
                self.hint = self.rnd.choice((0, 2, 3))
                return ClientResponse(0, pack_status(Outcome.TRYAGAIN, self.hint), b"")
            if fault == 1:
                return ClientResponse(0, pack_status(Outcome.MISMATCH, 0), META.encode())
            if fault == 2:
                raise Timeout("forward timed out")  # maybe applied: decide below
            if fault == 3 and is_write_command(command):
                self.sm.apply([command])  # applied, answer lost
                return ClientResponse(0, pack_status(Outcome.UNKNOWN, 0), b"")
        if is_write_command(command):
            result = self.sm.apply([command])[0]
        else:
            result = self.sm.read(command)
        return ClientResponse(0, pack_status(Outcome.OK, 1), result)


def make(sm: MetaStateMachine, **kw: Any) -> tuple[MetaSync, RangeDirectory, FakeMeta]:
    fake = FakeMeta(sm, seed=kw.pop("seed", 0), faults=kw.pop("faults", 0.0))
    directory = RangeDirectory([META])
    fake.directory = directory
    leaders: list[RangeDescriptor] = kw.pop("leaders", [])
    sync = MetaSync(directory, fake.submit, lambda: leaders, backoff=0.0, **kw)
    return sync, directory, fake


def test_first_refresh_loads_everything_then_polls_cost_one_read() -> None:
    layout = even_ranges(2500, (1, 2, 3))
    sm = MetaStateMachine(layout)
    sync, directory, fake = make(sm)
    assert arun(sync.refresh())
    assert directory.all() == layout and sync.version == 1 and sync.loaded
    assert fake.calls.count("ReadChanges") == 3  # 1024 per page
    fake.calls.clear()
    assert not arun(sync.refresh())
    assert fake.calls == ["ReadVersion"]  # nothing changed: one small read


def test_a_split_elsewhere_is_fetched_as_a_delta() -> None:
    layout = even_ranges(2500, (1, 2, 3))
    sm = MetaStateMachine(layout)
    sync, directory, fake = make(sm)
    other, _, _ = make(sm)
    arun(sync.refresh())

    async def split_elsewhere() -> tuple[RangeDescriptor, RangeDescriptor]:
        new_id = await other.allocate_range_id()
        left, right = layout[100].split(layout[100].start_key + b"!", new_id)
        assert await other.publish([left, right]) == 2
        return left, right

    left, right = arun(split_elsewhere())
    assert right.range_id == 2501  # small ids, from meta's allocator
    fake.calls.clear()
    assert arun(sync.refresh())
    assert fake.calls == ["ReadVersion", "ReadChanges"]
    assert directory.get(100 + 1) == left and directory.get(2501) == right
    assert directory.lookup(right.start_key) == right


def test_reconciler_pushes_what_local_leaders_have_and_meta_lacks() -> None:
    layout = even_ranges(8, (1, 2, 3))
    sm = MetaStateMachine(layout)
    left, right = layout[3].split(layout[3].start_key + b"m", 9)  # split; push lost
    leaders = [layout[0], left, right]
    sync, directory, fake = make(sm, leaders=leaders)
    assert arun(sync.reconcile()) == 0  # not loaded yet: no blind pushes
    arun(sync.refresh())
    assert arun(sync.reconcile()) == 2
    assert sm.descriptors()[3:5] == [left, right]
    assert sync.known(9) == right and directory.get(9) == right
    assert arun(sync.reconcile()) == 0  # meta has them now: nothing to push
    # A zombie leader of a range merged away elsewhere: meta would refuse it, so the
    # reconciler does not even send it.
    merged = left.merge(right)
    arun(sync.publish([merged]))
    leaders[:] = [right]
    fake.calls.clear()
    assert arun(sync.reconcile()) == 0 and fake.calls == []


def test_lost_answers_leader_hints_and_mismatches_are_retried() -> None:
    """Under faults, every allocated id is still unique (lost ones are skipped) and
    every push lands exactly as if it were applied once (idempotent)."""
    for seed in range(10):
        sm = MetaStateMachine(even_ranges(8, (1, 2, 3)))
        sync, directory, _ = make(sm, seed=seed, faults=0.4, attempts=200)

        async def work(sync: MetaSync = sync, directory: RangeDirectory = directory) -> list[int]:
            await sync.refresh()
            ids = [await sync.allocate_range_id() for _ in range(30)]
            d = directory.get(5)
            assert d is not None
            left, right = d.split(d.start_key + b"x", ids[-1])
            await sync.publish([left, right])
            await sync.refresh()
            return ids

        ids = arun(work())
        assert len(set(ids)) == 30 and ids == sorted(ids), f"seed {seed}"
        assert directory.get(ids[-1]) is not None, f"seed {seed}"
        assert directory.all() == sm.descriptors(), f"seed {seed}"


def test_unreachable_and_refusing_meta_raise_clear_errors() -> None:
    sm = MetaStateMachine(even_ranges(2, (1, 2, 3)))

    async def never(desc: RangeDescriptor, command: bytes) -> ClientResponse:
        return ClientResponse(0, pack_status(Outcome.TRYAGAIN, 0), b"")

    async def refuse(desc: RangeDescriptor, command: bytes) -> ClientResponse:
        return ClientResponse(0, pack_status(Outcome.ERROR, 0), b"not here")

    for submit, error in ((never, MetaUnavailable), (refuse, MetaRefused)):
        sync = MetaSync(RangeDirectory([META]), submit, list, attempts=3, backoff=0.0)
        with pytest.raises(error):
            arun(sync.allocate_range_id())
    no_meta = MetaSync(RangeDirectory([]), FakeMeta(sm).submit, list)
    with pytest.raises(MetaUnavailable):
        arun(no_meta.refresh())


def test_run_survives_an_unreachable_meta_and_catches_up() -> None:
    layout = even_ranges(4, (1, 2, 3))
    sm = MetaStateMachine(layout)
    fake = FakeMeta(sm)
    down = True

    async def flaky(desc: RangeDescriptor, command: bytes) -> ClientResponse:
        if down:
            return ClientResponse(0, pack_status(Outcome.TRYAGAIN, 0), b"")
        return await fake.submit(desc, command)

    directory = RangeDirectory([META])
    sync = MetaSync(directory, flaky, list, poll_interval=0.01, attempts=2, backoff=0.0)

    async def scenario() -> None:
        nonlocal down
        task = asyncio.get_running_loop().create_task(sync.run())
        await asyncio.sleep(0.1)
        assert not sync.loaded
        down = False
        for _ in range(500):  # generous: the CI machine's CPU is shared
            if sync.loaded:
                break
            await asyncio.sleep(0.01)
        task.cancel()

    arun(scenario())
    assert sync.loaded and directory.all() == layout
