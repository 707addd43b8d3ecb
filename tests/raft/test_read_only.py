"""Unit tests of the ReadIndex queue."""

from __future__ import annotations

from engine.raft.read_only import ReadOnly


def test_ack_and_advance_release_in_order() -> None:
    ro = ReadOnly()
    ro.add_request(5, b"a", 1)
    ro.add_request(6, b"b", 2)
    ro.add_request(6, b"a", 3)  # duplicate context ignored
    assert ro.last_pending_ctx() == b"b"
    assert ro.recv_ack(2, b"b") == {2: True}
    assert ro.recv_ack(2, b"zzz") is None
    released = ro.advance(b"b")
    assert [(r.ctx, r.index, r.frm) for r in released] == [(b"a", 5, 1), (b"b", 6, 2)]
    assert ro.queue == [] and ro.pending == {}
    assert ro.advance(b"b") == []
    assert ro.last_pending_ctx() is None


def test_advance_keeps_later_requests() -> None:
    ro = ReadOnly()
    for i, ctx in enumerate((b"1", b"2", b"3")):
        ro.add_request(i, ctx, 1)
    assert [r.ctx for r in ro.advance(b"2")] == [b"1", b"2"]
    assert ro.queue == [b"3"] and list(ro.pending) == [b"3"]
