"""The raft Storage view over a log store, and the membership record codec."""

from __future__ import annotations

import pytest

from engine.raft.errors import Compacted, Unavailable
from engine.raft.types import ConfState, Entry, HardState
from engine.raft_log import RaftLogView, decode_conf_state, encode_conf_state
from logstore.factory import open_log_store
from logstore.protocol import HardState as LogHardState
from logstore.protocol import LogEntry, SnapshotMeta, WriteBatch


@pytest.mark.parametrize("cs", [
    ConfState(),
    ConfState(voters=(1, 2, 3)),
    ConfState(voters=(1, 2), learners=(5,), voters_outgoing=(1, 2, 3), learners_next=(3,),
              auto_leave=True),
])
def test_conf_state_round_trips(cs: ConfState) -> None:
    assert decode_conf_state(encode_conf_state(cs)) == cs


@pytest.mark.parametrize("bad", [b"\x01", b"\x02\x00" + b"\x00" * 8, encode_conf_state(
    ConfState(voters=(1,)))[:-1], encode_conf_state(ConfState()) + b"x"])
def test_conf_state_rejects_garbage(bad: bytes) -> None:
    with pytest.raises(ValueError):
        decode_conf_state(bad)


def test_view_reads_the_range_and_translates_errors() -> None:
    log = open_log_store("memory")
    wb = WriteBatch()
    wb.set_snapshot(4, SnapshotMeta(5, 5, encode_conf_state(ConfState(voters=(1, 2)))))
    wb.append(4, [LogEntry(5, 6), LogEntry(6, 7, 0, b"x")])
    wb.set_hard_state(4, LogHardState(6, 1, 7))
    log.write(wb)
    view = RaftLogView(log, 4)
    assert view.initial_state() == (HardState(6, 1, 7), ConfState(voters=(1, 2)))
    assert (view.first_index(), view.last_index(), view.term(5)) == (6, 7, 5)
    assert view.entries(6, 8) == [Entry(5, 6), Entry(6, 7, 0, b"x")]
    with pytest.raises(Compacted):
        view.entries(5, 7)
    with pytest.raises(Unavailable):
        view.term(8)
    assert view.snapshot().metadata.index == 5


def test_conf_override_wins_at_start() -> None:
    log = open_log_store("memory")
    view = RaftLogView(log, 1, conf_state=ConfState(voters=(3,)))
    assert view.initial_state() == (HardState(), ConfState(voters=(3,)))
