"""Durable state-machine images: memory and directory backends."""

from __future__ import annotations

from pathlib import Path

import crc32c
import pytest

from engine.raft.types import ConfState
from engine.range_desc import RangeDescriptor
from engine.snapshot_store import (
    MERGED,
    DirSnapshotStore,
    MemorySnapshotStore,
    SnapshotCorrupt,
    SnapshotRecord,
    SnapshotStore,
    Tombstone,
)
from engine.split_merge import MergeIntent

DESC = RangeDescriptor(range_id=7, start_key=b"a", end_key=b"m", voters=(1, 2, 3), generation=2)
CONF = ConfState(voters=(1, 2, 3), learners=(4,))


def rec(index: int) -> SnapshotRecord:
    return SnapshotRecord(7, index, 3, DESC, CONF)


@pytest.fixture(params=["memory", "dir"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> SnapshotStore:
    if request.param == "memory":
        return MemorySnapshotStore()
    return DirSnapshotStore(tmp_path)


def test_save_load_replace_remove(store: SnapshotStore) -> None:
    assert store.load(7) is None and store.saved_index(7) == 0
    store.save(rec(10), [b"abc", b"", b"def"])
    store.save(rec(20), iter([b"new"]))
    got = store.load(7)
    assert got is not None
    assert got[0] == rec(20) and b"".join(got[1]) == b"new"
    assert store.saved_index(7) == 20 and store.range_ids() == [7]
    store.remove(7)
    assert store.load(7) is None and store.range_ids() == []


def test_dir_store_survives_reopen_and_streams_large_images(tmp_path: Path) -> None:
    big = [bytes([i]) * 50_000 for i in range(10)]
    DirSnapshotStore(tmp_path).save(rec(5), big)
    again = DirSnapshotStore(tmp_path)
    assert again.saved_index(7) == 5
    got = again.load(7)
    assert got is not None
    chunks = list(got[1])
    assert b"".join(chunks) == b"".join(big)
    assert max(len(c) for c in chunks) <= 1 << 16, "read back in bounded chunks"


@pytest.mark.parametrize("where", [0, 30, -3])
def test_dir_store_detects_corruption(tmp_path: Path, where: int) -> None:
    s = DirSnapshotStore(tmp_path)
    s.save(rec(5), [b"x" * 100])
    p = tmp_path / "r7.snap"
    raw = bytearray(p.read_bytes())
    raw[where] ^= 0xFF
    p.write_bytes(bytes(raw))
    with pytest.raises(SnapshotCorrupt):
        s.load(7)


def test_dir_store_ignores_a_leftover_temporary_file(tmp_path: Path) -> None:
    s = DirSnapshotStore(tmp_path)
    s.save(rec(5), [b"old"])
    (tmp_path / "r7.tmp").write_bytes(b"half-written")
    again = DirSnapshotStore(tmp_path)
    got = again.load(7)
    assert got is not None and b"".join(got[1]) == b"old"


def test_frozen_image_keeps_its_merge_intent(store: SnapshotStore, tmp_path: Path) -> None:
    frozen = rec(9)._replace(frozen=True, merge_intent=MergeIntent(3, 11))
    store.save(frozen, [b"img"])
    got = store.load(7)
    assert got is not None and got[0] == frozen
    if isinstance(store, DirSnapshotStore):
        again = DirSnapshotStore(tmp_path).load(7)
        assert again is not None and again[0] == frozen and b"".join(again[1]) == b"img"


def test_tombstones_are_durable_last_one_wins(store: SnapshotStore, tmp_path: Path) -> None:
    assert store.tombstones() == {}
    store.save_tombstone(7, Tombstone(2, 40))
    store.save_tombstone(8, Tombstone(1, MERGED))
    store.save_tombstone(7, Tombstone(3, 90))
    want = {7: Tombstone(3, 90), 8: Tombstone(1, MERGED)}
    assert store.tombstones() == want
    assert want[8].gone_for_good and not want[7].gone_for_good
    assert want[7].covers(3, 90) and want[7].covers(2, 500) and not want[7].covers(3, 91)
    assert not want[7].covers(4, 1)
    if isinstance(store, DirSnapshotStore):
        assert DirSnapshotStore(tmp_path).tombstones() == want
        with open(tmp_path / "tombstones", "ab") as f:
            f.write(b"\x01\x02\x03")  # a torn append
        assert DirSnapshotStore(tmp_path).tombstones() == want


def test_dir_store_reads_version_1_images(tmp_path: Path) -> None:
    """Files written before merge intents existed (version 1) still load."""
    s = DirSnapshotStore(tmp_path)
    s.save(rec(5), [b"old"])
    p = tmp_path / "r7.snap"
    raw = bytearray(p.read_bytes())
    raw[8] = 1  # the version byte; no intent flag, so the layout is version 1's
    raw[-4:] = crc32c.crc32c(bytes(raw[:-4])).to_bytes(4, "little")
    p.write_bytes(bytes(raw))
    got = DirSnapshotStore(tmp_path).load(7)
    assert got is not None and got[0] == rec(5) and b"".join(got[1]) == b"old"


def test_save_many_replaces_every_image_and_survives_reopen(tmp_path: Path) -> None:
    store = DirSnapshotStore(tmp_path)
    store.save(rec(4), [b"old"])
    descs = [RangeDescriptor(range_id=r, start_key=bytes([r]), end_key=bytes([r + 1]),
                             voters=(1,)) for r in range(7, 57)]
    store.save_many([(SnapshotRecord(d.range_id, 9, 2, d, CONF), [b"img%d" % d.range_id])
                     for d in descs])
    store.save_many([])
    reopened = DirSnapshotStore(tmp_path)
    assert reopened.range_ids() == list(range(7, 57))
    assert not list(tmp_path.glob("*.tmp"))
    for d in descs:
        got = reopened.load(d.range_id)
        assert got is not None
        record, chunks = got
        assert record.descriptor == d and record.index == 9
        assert b"".join(chunks) == b"img%d" % d.range_id
