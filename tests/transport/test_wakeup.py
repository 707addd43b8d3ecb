"""Tests for transport.wakeup: the eventfd/pipe doorbell, in one process and across a fork."""

from __future__ import annotations

import os
import select
from collections.abc import Iterator

import pytest

from transport.wakeup import Wakeup

pytestmark = pytest.mark.timeout(10)


def _readable(bell: Wakeup, timeout_ms: int = 0) -> bool:
    poller = select.poll()
    poller.register(bell.fileno(), select.POLLIN)
    return bool(poller.poll(timeout_ms))


@pytest.fixture(params=[True, False], ids=["eventfd", "pipe"])
def bell(request: pytest.FixtureRequest) -> Iterator[Wakeup]:
    made = Wakeup(prefer_eventfd=request.param)
    assert made.uses_eventfd is request.param
    yield made
    made.close()


def test_unrung_bell_is_not_readable_and_drains_to_false(bell: Wakeup) -> None:
    assert not _readable(bell)
    assert bell.drain() is False


def test_signal_makes_readable_and_drain_clears(bell: Wakeup) -> None:
    bell.signal()
    assert _readable(bell)
    assert bell.drain() is True
    assert not _readable(bell)
    assert bell.drain() is False


def test_many_signals_coalesce_into_one_drain(bell: Wakeup) -> None:
    for _ in range(100_000 if not bell.uses_eventfd else 1000):
        bell.signal()  # a full pipe must not raise or block
    assert bell.drain() is True
    assert not _readable(bell)


def test_signal_crosses_fork(bell: Wakeup) -> None:
    pid = os.fork()
    if pid == 0:  # child: ring the bell and leave without running pytest's teardown
        try:
            bell.keep_only_writer()
            bell.signal()
        finally:
            os._exit(0)
    bell.keep_only_reader()
    assert _readable(bell, timeout_ms=5000)
    assert bell.drain() is True
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_pipe_fallback_drops_unused_ends() -> None:
    reader = Wakeup(prefer_eventfd=False)
    reader.keep_only_reader()
    with pytest.raises(OSError):
        reader.signal()  # write end is gone in this process
    reader.close()
    writer = Wakeup(prefer_eventfd=False)
    writer.keep_only_writer()
    with pytest.raises(ValueError):
        writer.fileno()
    writer.close()


def test_close_is_idempotent(bell: Wakeup) -> None:
    fd = bell.fileno()
    bell.close()
    bell.close()
    assert bell.closed
    with pytest.raises(OSError):
        os.fstat(fd)
