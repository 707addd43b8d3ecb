"""Unit tests of ``Inflights``: the per-follower window bounded by count and bytes."""

from __future__ import annotations

import pytest

from engine.raft.tracker import Inflights


def test_count_limit() -> None:
    inf = Inflights(3)
    for i in (1, 2, 3):
        assert not inf.full()
        inf.add(i, 10)
    assert inf.full() and inf.count == 3


def test_byte_limit() -> None:
    inf = Inflights(100, max_bytes=25)
    inf.add(1, 10)
    assert not inf.full()
    inf.add(2, 15)
    assert inf.full() and inf.bytes == 25


def test_free_le_frees_prefix_and_bytes() -> None:
    inf = Inflights(10, max_bytes=100)
    for i, size in ((2, 10), (5, 20), (9, 30)):
        inf.add(i, size)
    inf.free_le(4)
    assert inf.count == 2 and inf.bytes == 50
    inf.free_le(5)
    assert inf.count == 1 and inf.bytes == 30
    inf.free_le(100)
    assert inf.count == 0 and inf.bytes == 0
    inf.free_le(200)  # nothing to free


def test_free_first_one_and_reset() -> None:
    inf = Inflights(2)
    inf.add(1, 1)
    inf.add(2, 1)
    inf.free_first_one()
    assert inf.count == 1 and not inf.full()
    inf.reset()
    assert inf.count == 0


def test_indexes_must_increase() -> None:
    inf = Inflights(5)
    inf.add(5, 1)
    with pytest.raises(AssertionError):
        inf.add(5, 1)


def test_empty_window_holds_no_queue() -> None:
    """An idle group must not pay for a queue object."""
    inf = Inflights(256)
    inf.add(1, 1)
    inf.free_le(1)
    assert inf._queue is None
