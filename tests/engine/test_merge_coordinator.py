"""The initiator's merge sequence, against a recording host."""

from __future__ import annotations

from engine.kv import KVStateMachine
from engine.merge_coordinator import MergeCoordinator
from engine.proposal import Completion, EntryKind, Outcome
from engine.range_desc import RangeDescriptor
from engine.replica import Replica
from engine.snapshot_store import MemorySnapshotStore
from engine.split_merge import FreezeCommand, MergeIntent, decode_freeze, decode_merge
from engine.store import Store
from logstore.factory import open_log_store


class Host:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.queued: list[tuple[int, int, EntryKind, bytes]] = []
        self.stalled: list[int] = []
        self.next = 1000

    def replica(self, range_id: int) -> Replica | None:
        return self.store.replica(range_id)

    def new_request_id(self) -> int:
        self.next += 1
        return self.next

    def queue_command(self, rep: Replica, request_id: int, kind: EntryKind,
                      payload: bytes) -> None:
        self.queued.append((rep.range_id, request_id, kind, payload))

    def merge_stalled(self, right_id: int) -> None:
        self.stalled.append(right_id)


def freeze(rep: Replica, payload: bytes) -> None:
    """What applying the FREEZE does to the replica (the coordinator checks it)."""
    rep.frozen = True
    rep.merge_intent = decode_freeze(payload).intent


def setup() -> tuple[MergeCoordinator, Host, Replica, Replica]:
    s = Store(1, open_log_store("memory"), MemorySnapshotStore(),
              lambda d: KVStateMachine(d.start_key, d.end_key))
    s.bootstrap([
        RangeDescriptor(range_id=1, start_key=b"", end_key=b"m", voters=(1,)),
        RangeDescriptor(range_id=2, start_key=b"m", end_key=b"", voters=(1,), generation=4),
    ])
    lhs, rhs = s.replica(1), s.replica(2)
    assert lhs is not None and rhs is not None
    return MergeCoordinator(), Host(s), lhs, rhs


def test_freeze_then_merge_carrying_the_image_then_client_answered() -> None:
    mc, host, lhs, rhs = setup()
    mc.begin(host, 7, lhs, rhs)
    assert mc.in_progress(2)
    (rid, freeze_req, kind, payload), = host.queued
    assert (rid, kind) == (2, EntryKind.FREEZE)
    assert decode_freeze(payload) == FreezeCommand(4, MergeIntent(1, 0))
    mc.freeze_applied(host, rhs)
    assert len(host.queued) == 1, "no MERGE before the FREEZE of this intent applied"
    freeze(rhs, payload)
    mc.freeze_applied(host, rhs)
    rid, req, kind, payload = host.queued[-1]
    assert (rid, req, kind) == (1, 7, EntryKind.MERGE)
    assert decode_merge(payload).right == rhs.desc
    out = mc.settle(host, [Completion(freeze_req, Outcome.OK), Completion(7, Outcome.OK)])
    assert out == [Completion(7, Outcome.OK)] and not mc.in_progress(2)


def test_failed_merge_never_unfreezes_but_asks_the_resolver() -> None:
    """A refused or lost MERGE leaves the range frozen (a MERGE of the same intent
    may still be in flight): the resolver decides, and a lost one is UNKNOWN."""
    for outcome, told in ((Outcome.ERROR, Outcome.ERROR), (Outcome.TRYAGAIN, Outcome.UNKNOWN),
                          (Outcome.UNKNOWN, Outcome.UNKNOWN)):
        mc, host, lhs, rhs = setup()
        mc.begin(host, 7, lhs, rhs)
        freeze_req, payload = host.queued[0][1], host.queued[0][3]
        freeze(rhs, payload)
        mc.freeze_applied(host, rhs)
        out = mc.settle(host, [Completion(freeze_req, Outcome.OK), Completion(7, outcome, b"x")])
        assert out == [Completion(7, told, b"x")]
        assert [q[2] for q in host.queued] == [EntryKind.FREEZE, EntryKind.MERGE]
        assert host.stalled == [2] and not mc.in_progress(2)


def test_failed_freeze_fails_the_client() -> None:
    mc2, host2, _, _ = setup()
    lhs2, rhs2 = host2.replica(1), host2.replica(2)
    assert lhs2 is not None and rhs2 is not None
    mc2.begin(host2, 8, lhs2, rhs2)
    out = mc2.settle(host2, [Completion(host2.queued[0][1], Outcome.TRYAGAIN)])
    assert out == [Completion(8, Outcome.TRYAGAIN)] and not mc2.in_progress(2)
