"""Tests for transport.liveness: pidfd and polling detection of a peer's death."""

from __future__ import annotations

import os
import select
import signal
import time

import pytest

from transport.liveness import PeerWatch

pytestmark = pytest.mark.timeout(15)


def _sleeping_child() -> int:
    pid = os.fork()
    if pid == 0:
        try:
            time.sleep(30)
        finally:
            os._exit(0)
    return pid


def _wait_dead(watch: PeerWatch, within: float) -> float:
    start = time.monotonic()
    while watch.poll_alive():
        assert time.monotonic() - start < within, "death not noticed in time"
        time.sleep(0.005)
    return time.monotonic() - start


@pytest.mark.parametrize("use_pidfd", [True, False], ids=["pidfd", "polling"])
def test_child_death_is_noticed_before_reaping(use_pidfd: bool) -> None:
    pid = _sleeping_child()
    watch = PeerWatch(pid, use_pidfd=use_pidfd)
    try:
        assert (watch.fileno() >= 0) is use_pidfd
        assert watch.poll_alive()
        os.kill(pid, signal.SIGKILL)
        _wait_dead(watch, within=5.0)
        assert not watch.poll_alive()  # stays dead
    finally:
        os.waitpid(pid, 0)
        watch.close()


def test_pidfd_becomes_readable_on_exit() -> None:
    pid = _sleeping_child()
    watch = PeerWatch(pid)
    try:
        poller = select.poll()
        poller.register(watch.fileno(), select.POLLIN)
        assert not poller.poll(0)
        os.kill(pid, signal.SIGKILL)
        assert poller.poll(5000)
    finally:
        os.waitpid(pid, 0)
        watch.close()


def test_missing_process_is_dead_at_once() -> None:
    pid = _sleeping_child()
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)  # reaped: the pid names nobody now
    for use_pidfd in (True, False):
        watch = PeerWatch(pid, use_pidfd=use_pidfd)
        assert not watch.poll_alive()
        watch.close()


@pytest.mark.parametrize("use_pidfd", [True, False], ids=["pidfd", "polling"])
def test_orphan_notices_parent_death(use_pidfd: bool) -> None:
    """A grandchild watches its parent (our child); we SIGKILL the parent."""
    report_r, report_w = os.pipe()
    middle = os.fork()
    if middle == 0:
        try:
            os.close(report_r)
            parent = os.getpid()
            if os.fork() == 0:
                watch = PeerWatch(parent, is_parent=True, use_pidfd=use_pidfd)
                alive_at_start = watch.poll_alive()
                os.write(report_w, b"R" if alive_at_start else b"?")
                deadline = time.monotonic() + 10
                while watch.poll_alive() and time.monotonic() < deadline:
                    time.sleep(0.005)
                os.write(report_w, b"D" if not watch.poll_alive() else b"T")
                os._exit(0)
            time.sleep(30)
        finally:
            os._exit(0)
    os.close(report_w)
    try:
        assert os.read(report_r, 1) == b"R"
        os.kill(middle, signal.SIGKILL)
        os.waitpid(middle, 0)
        start = time.monotonic()
        assert os.read(report_r, 1) == b"D"
        assert time.monotonic() - start < 5
    finally:
        os.close(report_r)
