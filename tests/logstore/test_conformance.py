"""The ``LogStore`` protocol, checked on every registered backend.

Each test states one rule of ``logstore/protocol.py`` and runs against every
backend ``logstore.factory.available_backends()`` lists (the segmented
backend joins automatically once its package exists). Reopen tests run on the
durable backends only.
"""

from __future__ import annotations

import random
from concurrent.futures import Future

import pytest

from logstore import (
    Closed,
    Compacted,
    HardState,
    InvalidArgument,
    LogEntry,
    LogStore,
    SnapshotMeta,
    Unavailable,
    WriteBatch,
)
from logstore.memory import MemoryLogStore
from tests.logstore.conftest import StoreHandle, dump, ents, range_state

pytestmark = pytest.mark.timeout(60)


def write(store: LogStore, *ops: tuple[str, int, object]) -> None:
    """Write one batch of ``(op, range, payload)`` triples."""
    store.write(batch(*ops))


def batch(*ops: tuple[str, int, object]) -> WriteBatch:
    b = WriteBatch()
    for name, rid, payload in ops:
        if name == "append":
            b.append(rid, payload)  # type: ignore[arg-type]
        elif name == "hs":
            b.set_hard_state(rid, payload)  # type: ignore[arg-type]
        elif name == "snap":
            b.set_snapshot(rid, payload)  # type: ignore[arg-type]
        elif name == "compact":
            b.compact(rid, payload)  # type: ignore[arg-type]
        else:
            assert name == "remove"
            b.remove_range(rid)
    return b


# -- an empty store -------------------------------------------------------------


def test_never_written_range_is_empty(store_handle: StoreHandle) -> None:
    s = store_handle.store
    assert s.first_index(7) == 1
    assert s.last_index(7) == 0
    assert s.term(7, 0) == 0
    assert s.hard_state(7) is None
    assert s.snapshot_meta(7) is None
    assert list(s.range_ids()) == []
    assert s.entries(7, 1, 1) == []
    with pytest.raises(Unavailable):
        s.entries(7, 1, 2)
    with pytest.raises(Unavailable):
        s.term(7, 1)


# -- appends --------------------------------------------------------------------


def test_append_then_read(store_handle: StoreHandle) -> None:
    s = store_handle.store
    write(s, ("append", 1, ents(1, 5)))
    write(s, ("append", 1, ents(6, 9, term=2)))
    assert s.first_index(1) == 1
    assert s.last_index(1) == 9
    assert s.entries(1, 1, 10) == ents(1, 5) + ents(6, 9, term=2)
    assert s.entries(1, 4, 7) == ents(4, 5) + ents(6, 6, term=2)
    assert [s.term(1, i) for i in range(10)] == [0, 1, 1, 1, 1, 1, 2, 2, 2, 2]
    assert list(s.range_ids()) == [1]


def test_conflicting_suffix_is_replaced(store_handle: StoreHandle) -> None:
    s = store_handle.store
    write(s, ("append", 1, ents(1, 6)))
    write(s, ("append", 1, ents(3, 4, term=2)))
    assert s.last_index(1) == 4
    assert s.entries(1, 1, 5) == ents(1, 2) + ents(3, 4, term=2)
    with pytest.raises(Unavailable):
        s.term(1, 5)
    # Replacing from the very first entry, with a longer suffix.
    write(s, ("append", 1, ents(1, 8, term=3)))
    assert s.entries(1, 1, 9) == ents(1, 8, term=3)


def test_overwrite_within_one_batch(store_handle: StoreHandle) -> None:
    s = store_handle.store
    write(
        s,
        ("append", 1, ents(1, 5)),
        ("append", 1, ents(2, 3, term=2)),
        ("append", 1, ents(4, 4, term=2)),
    )
    assert s.entries(1, 1, 5) == ents(1, 1) + ents(2, 4, term=2)


def test_gap_is_rejected_and_nothing_changes(store_handle: StoreHandle) -> None:
    s = store_handle.store
    write(s, ("append", 1, ents(1, 3)), ("hs", 1, HardState(1, 1, 1)))
    before = dump(s)
    with pytest.raises(InvalidArgument):
        write(
            s,
            ("append", 2, ents(1, 2)),
            ("hs", 1, HardState(2, 2, 2)),
            ("compact", 1, 2),
            ("append", 1, ents(5, 6)),
        )
    assert dump(s) == before
    with pytest.raises(InvalidArgument):
        write(s, ("append", 3, ents(2, 2)))  # a fresh range starts at 1
    assert dump(s) == before


def test_append_after_in_batch_truncation_gap_is_rejected(store_handle: StoreHandle) -> None:
    """Validity follows batch order: after truncating to 2, appending at 4 is a gap."""
    s = store_handle.store
    write(s, ("append", 1, ents(1, 5)))
    with pytest.raises(InvalidArgument):
        write(s, ("append", 1, ents(2, 2, term=2)), ("append", 1, ents(4, 4, term=2)))
    assert s.entries(1, 1, 6) == ents(1, 5)


def test_malformed_input_is_rejected(store_handle: StoreHandle) -> None:
    s = store_handle.store
    bad_batches: list[WriteBatch] = []
    b = WriteBatch()
    b.append(1, [LogEntry(1, 1), LogEntry(1, 3)])  # not consecutive
    bad_batches.append(b)
    b = WriteBatch()
    b.append(1, [LogEntry(1, 2), LogEntry(1, 1)])  # decreasing
    bad_batches.append(b)
    b = WriteBatch()
    b.append(-1, ents(1, 1))  # negative range id
    bad_batches.append(b)
    b = WriteBatch()
    b.append(1, [LogEntry(1, 1, 0, "text")])  # type: ignore[arg-type]  # data not bytes
    bad_batches.append(b)
    b = WriteBatch()
    b.set_hard_state(1, HardState(-1, 0, 0))
    bad_batches.append(b)
    b = WriteBatch()
    b.compact(1, "3")  # type: ignore[arg-type]
    bad_batches.append(b)
    for b in bad_batches:
        with pytest.raises(InvalidArgument):
            s.write(b)
    assert dump(s) == {}


def test_empty_batch_is_accepted(store_handle: StoreHandle) -> None:
    s = store_handle.store
    s.write(WriteBatch())
    s.submit(WriteBatch()).result(timeout=10)
    assert dump(s) == {}


# -- compaction -----------------------------------------------------------------


def test_compaction_keeps_term_of_compaction_point(store_handle: StoreHandle) -> None:
    s = store_handle.store
    write(s, ("append", 1, ents(1, 3) + ents(4, 8, term=2)))
    write(s, ("compact", 1, 4))
    assert s.first_index(1) == 5
    assert s.last_index(1) == 8
    assert s.term(1, 4) == 2
    assert s.entries(1, 5, 9) == ents(5, 8, term=2)
    with pytest.raises(Compacted):
        s.term(1, 3)
    with pytest.raises(Compacted):
        s.entries(1, 4, 6)


def test_compaction_at_or_below_point_is_noop(store_handle: StoreHandle) -> None:
    s = store_handle.store
    write(s, ("append", 1, ents(1, 8)))
    write(s, ("compact", 1, 5))
    before = dump(s)
    write(s, ("compact", 1, 5), ("compact", 1, 2), ("compact", 1, 0))
    assert dump(s) == before


def test_compaction_beyond_last_is_rejected(store_handle: StoreHandle) -> None:
    s = store_handle.store
    write(s, ("append", 1, ents(1, 3)))
    before = dump(s)
    with pytest.raises(InvalidArgument):
        write(s, ("append", 2, ents(1, 1)), ("compact", 1, 4))
    assert dump(s) == before


def test_compaction_to_last_empties_log_and_append_continues(store_handle: StoreHandle) -> None:
    s = store_handle.store
    write(s, ("append", 1, ents(1, 5, term=3)), ("compact", 1, 5))
    assert (s.first_index(1), s.last_index(1), s.term(1, 5)) == (6, 5, 3)
    assert s.entries(1, 6, 6) == []
    assert list(s.range_ids()) == [1]
    write(s, ("append", 1, ents(6, 7, term=4)))
    assert s.entries(1, 6, 8) == ents(6, 7, term=4)


def test_append_below_compaction_point_is_ignored(store_handle: StoreHandle) -> None:
    s = store_handle.store
    write(s, ("append", 1, ents(1, 6)), ("compact", 1, 4))
    write(s, ("append", 1, ents(2, 3, term=9)))  # entirely compacted: ignored
    assert range_state(s, 1)[:4] == (5, 6, 1, ents(5, 6))
    write(s, ("append", 1, ents(3, 7, term=2)))  # straddles: 5..7 replace
    assert range_state(s, 1)[:4] == (5, 7, 1, ents(5, 7, term=2))


def test_ops_apply_in_batch_order(store_handle: StoreHandle) -> None:
    s = store_handle.store
    write(
        s,
        ("append", 1, ents(1, 5)),
        ("compact", 1, 3),
        ("append", 1, ents(6, 7, term=2)),
        ("append", 1, ents(2, 4, term=7)),  # 2..3 ignored, 4 replaces 4..7
    )
    assert range_state(s, 1)[:4] == (4, 4, 1, ents(4, 4, term=7))


# -- hard state and snapshots ---------------------------------------------------


def test_hard_state_last_write_wins(store_handle: StoreHandle) -> None:
    s = store_handle.store
    write(s, ("hs", 1, HardState(1, 2, 0)), ("hs", 1, HardState(2, 0, 0)))
    assert s.hard_state(1) == HardState(2, 0, 0)
    write(s, ("hs", 1, HardState(2, 3, 5)))
    assert s.hard_state(1) == HardState(2, 3, 5)
    assert list(s.range_ids()) == [1]
    assert (s.first_index(1), s.last_index(1)) == (1, 0)


def test_snapshot_matching_log_keeps_the_rest(store_handle: StoreHandle) -> None:
    s = store_handle.store
    write(s, ("append", 1, ents(1, 4) + ents(5, 9, term=2)))
    meta = SnapshotMeta(6, 2, b"membership")
    write(s, ("snap", 1, meta))
    assert s.snapshot_meta(1) == meta
    assert range_state(s, 1)[:4] == (7, 9, 2, ents(7, 9, term=2))


def test_snapshot_not_in_log_drops_everything(store_handle: StoreHandle) -> None:
    s = store_handle.store
    write(s, ("append", 1, ents(1, 9)))
    write(s, ("snap", 1, SnapshotMeta(6, 5, b"a")))  # term differs
    assert range_state(s, 1)[:4] == (7, 6, 5, [])
    write(s, ("snap", 1, SnapshotMeta(20, 6, b"b")))  # beyond the log
    assert range_state(s, 1)[:4] == (21, 20, 6, [])
    assert s.snapshot_meta(1) == SnapshotMeta(20, 6, b"b")
    write(s, ("append", 1, ents(21, 22, term=6)))
    assert s.entries(1, 21, 23) == ents(21, 22, term=6)


def test_snapshot_on_fresh_range_then_append(store_handle: StoreHandle) -> None:
    s = store_handle.store
    write(s, ("snap", 5, SnapshotMeta(100, 4, b"")), ("append", 5, ents(101, 102, term=4)))
    assert range_state(s, 5) == (
        101,
        102,
        4,
        ents(101, 102, term=4),
        None,
        SnapshotMeta(100, 4, b""),
    )
    with pytest.raises(InvalidArgument):
        write(s, ("snap", 6, SnapshotMeta(10, 1, b"")), ("append", 6, ents(12, 12)))
    assert 6 not in list(s.range_ids())


# -- removal --------------------------------------------------------------------


def test_remove_range_forgets_everything(store_handle: StoreHandle) -> None:
    s = store_handle.store
    write(
        s,
        ("append", 1, ents(1, 5)),
        ("hs", 1, HardState(1, 1, 3)),
        ("snap", 1, SnapshotMeta(2, 1, b"m")),
        ("append", 2, ents(1, 2)),
    )
    other = range_state(s, 2)
    write(s, ("remove", 1, None))
    assert list(s.range_ids()) == [2]
    assert range_state(s, 1) == (1, 0, 0, [], None, None)
    assert range_state(s, 2) == other
    write(s, ("remove", 99, None))  # removing an unknown range is harmless
    assert list(s.range_ids()) == [2]


def test_remove_then_recreate_in_one_batch(store_handle: StoreHandle) -> None:
    s = store_handle.store
    write(s, ("append", 1, ents(1, 5)))
    write(s, ("remove", 1, None), ("append", 1, ents(1, 2, term=3)))
    assert range_state(s, 1)[:4] == (1, 2, 0, ents(1, 2, term=3))


# -- reads ----------------------------------------------------------------------


def test_read_bounds(store_handle: StoreHandle) -> None:
    s = store_handle.store
    write(s, ("append", 1, ents(1, 10)), ("compact", 1, 3))
    with pytest.raises(Compacted):
        s.entries(1, 3, 5)
    with pytest.raises(Unavailable):
        s.entries(1, 4, 12)
    with pytest.raises(Compacted):
        s.term(1, 2)
    with pytest.raises(Unavailable):
        s.term(1, 11)
    assert s.entries(1, 4, 4) == []
    assert s.entries(1, 10, 11) == ents(10, 10)


def test_byte_budget(store_handle: StoreHandle) -> None:
    s = store_handle.store
    data = ents(1, 20, size=100)
    write(s, ("append", 1, data))
    assert s.entries(1, 1, 21, max_bytes=None) == data
    assert s.entries(1, 1, 21, max_bytes=1 << 30) == data
    assert s.entries(1, 1, 21, max_bytes=0) == data[:1]  # at least one entry
    assert s.entries(1, 5, 21, max_bytes=1) == data[4:5]
    sizes = []
    for budget in (150, 250, 450, 1000, 1500):
        got = s.entries(1, 1, 21, max_bytes=budget)
        assert got == data[: len(got)], "budgeted read must be a prefix"
        assert sum(len(e.data) for e in got) <= budget
        sizes.append(len(got))
    assert sizes == sorted(sizes), "a bigger budget never returns fewer entries"
    assert sizes[0] >= 1
    assert sizes[-1] >= 10  # 10 entries of 100 bytes fit 1500 bytes with <= 50 bytes overhead


def test_many_ranges_interleaved(store_handle: StoreHandle) -> None:
    rng = random.Random(1234)
    s = store_handle.store
    model = MemoryLogStore()
    for _ in range(30):
        b = WriteBatch()
        for rid in rng.sample(range(1, 301), 60):
            last = model.last_index(rid)
            n = rng.randint(1, 3)
            lo = max(1, last + 1 - rng.choice([0, 0, 0, 1, 2]))
            b.append(rid, ents(lo, lo + n - 1, term=rng.randint(1, 3), size=rng.randint(0, 200)))
            if rng.random() < 0.3:
                b.set_hard_state(rid, HardState(rng.randint(1, 9), rng.randint(0, 5), lo))
        model.write(b)
        s.write(b)
    assert dump(s) == dump(model)
    assert len(list(s.range_ids())) == 300


# -- submit / durability --------------------------------------------------------


def test_submit_is_read_your_writes_and_completes(store_handle: StoreHandle) -> None:
    s = store_handle.store
    futures: list[Future[None]] = []
    for i in range(1, 41):
        b = WriteBatch()
        b.append(1, ents(i, i, size=32))
        b.set_hard_state(1, HardState(1, 0, i))
        if i % 10 == 0:
            b.compact(1, i - 5)
        futures.append(s.submit(b))
        assert s.last_index(1) == i
        assert s.entries(1, i, i + 1) == ents(i, i, size=32)
        assert s.hard_state(1) == HardState(1, 0, i)
    for f in futures:
        assert f.result(timeout=30) is None
    s.sync()
    assert range_state(s, 1)[:4] == (36, 40, 1, ents(36, 40, size=32))


def test_pipelined_submits_with_overwrites_match_model(store_handle: StoreHandle) -> None:
    """Reads between un-awaited submits see every earlier batch, including
    truncations, removals and snapshots not yet durable."""
    rng = random.Random(99)
    s = store_handle.store
    model = MemoryLogStore()
    futures = []
    for step in range(150):
        rid = rng.randint(1, 4)
        last, first = model.last_index(rid), model.first_index(rid)
        b = WriteBatch()
        roll = rng.random()
        if roll < 0.6:
            lo = max(first, last + 1 - rng.randint(0, 3))
            b.append(rid, ents(lo, lo + rng.randint(0, 3), term=step, size=rng.randint(0, 64)))
        elif roll < 0.75 and last >= first:
            b.compact(rid, rng.randint(first, last))
        elif roll < 0.85:
            idx = rng.randint(max(0, first - 1), last + 2)
            term = model.term(rid, idx) if first - 1 <= idx <= last and rng.random() < 0.7 else step
            b.set_snapshot(rid, SnapshotMeta(idx, term, b"s%d" % step))
        elif roll < 0.9:
            b.remove_range(rid)
        else:
            b.set_hard_state(rid, HardState(step, rid, 0))
        model.write(b)
        futures.append(s.submit(b))
        probe = rng.randint(1, 4)
        assert range_state(s, probe) == range_state(model, probe), f"step {step}"
    for f in futures:
        f.result(timeout=30)
    assert dump(s) == dump(model)


def test_write_without_sync_then_sync(store_handle: StoreHandle) -> None:
    s = store_handle.store
    for i in range(1, 11):
        s.write(batch(("append", 3, ents(i, i))), sync=False)
    s.sync()
    assert s.entries(3, 1, 11) == ents(1, 10)


def test_purge_reports_a_result(store_handle: StoreHandle) -> None:
    s = store_handle.store
    write(s, ("append", 1, ents(1, 50, size=100)), ("compact", 1, 50))
    result = s.purge()
    assert result.removed_files >= 0 and result.removed_bytes >= 0
    assert range_state(s, 1)[:3] == (51, 50, 1)


def test_closed_store_refuses_use(store_handle: StoreHandle) -> None:
    s = store_handle.store
    write(s, ("append", 1, ents(1, 2)))
    s.close()
    with pytest.raises(Closed):
        s.last_index(1)
    with pytest.raises(Closed):
        write(s, ("append", 1, ents(3, 3)))
    with pytest.raises(Closed):
        s.entries(1, 1, 2)
    s.close()  # idempotent


# -- reopen (durable backends) --------------------------------------------------


def test_reopen_restores_everything(durable_store_handle: StoreHandle) -> None:
    h = durable_store_handle
    s = h.store
    rid_big = (1 << 64) - 5  # range ids are unsigned 64-bit
    write(
        s,
        ("append", 1, ents(1, 10) + ents(11, 12, term=2)),
        ("hs", 1, HardState(2, 3, 11)),
        ("append", rid_big, ents(1, 3, size=2000)),
        ("snap", 2, SnapshotMeta(40, 3, b"conf")),
        ("append", 2, ents(41, 45, term=3)),
        ("append", 4, ents(1, 3)),
        ("hs", 5, HardState(1, 1, 0)),
    )
    write(s, ("compact", 1, 4), ("append", 1, ents(12, 13, term=3)), ("remove", 4, None))
    write(s, ("snap", 2, SnapshotMeta(43, 3, b"conf2")), ("compact", rid_big, 3))
    before = dump(s)
    assert sorted(before) == [1, 2, 5, rid_big]
    s = h.reopen()
    assert dump(s) == before
    # The reopened store keeps working: append, truncate, reopen again.
    write(s, ("append", 1, ents(13, 15, term=4)), ("append", rid_big, ents(4, 4)))
    after = dump(s)
    s = h.reopen()
    assert dump(s) == after


def test_reopen_after_unawaited_submits_and_sync(durable_store_handle: StoreHandle) -> None:
    h = durable_store_handle
    s = h.store
    model = MemoryLogStore()
    for i in range(1, 101):
        b = batch(("append", i % 7, ents(model.last_index(i % 7) + 1, model.last_index(i % 7) + 2)))
        model.write(b)
        s.submit(b)
    s.sync()
    s = h.reopen()
    assert dump(s) == dump(model)


def test_empty_range_state_survives_reopen(durable_store_handle: StoreHandle) -> None:
    h = durable_store_handle
    s = h.store
    write(
        s,
        ("append", 1, ents(1, 3, term=2)),
        ("compact", 1, 3),
        ("snap", 9, SnapshotMeta(7, 2, b"")),
    )
    before = dump(s)
    s = h.reopen()
    assert dump(s) == before
    assert range_state(s, 1)[:3] == (4, 3, 2)
