"""``RocksdbLogStore`` specifics (optional backend: needs the rocksdict wheel).
Its protocol behaviour is in test_conformance / test_model / test_crash."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("rocksdict", reason="optional rocksdb backend: rocksdict not installed")

from logstore import HardState, InvalidArgument, LogStoreError, SnapshotMeta, WriteBatch
from logstore.rocksdb import RocksdbLogStore, _Meta
from tests.logstore.conftest import dump, ents

pytestmark = pytest.mark.timeout(30)


def test_takes_no_options(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="takes no options"):
        RocksdbLogStore(tmp_path, cache_kib=1)


def test_directory_is_locked_while_open(tmp_path: Path) -> None:
    s = RocksdbLogStore(tmp_path)
    with pytest.raises(LogStoreError, match="cannot open"):
        RocksdbLogStore(tmp_path)
    s.close()
    RocksdbLogStore(tmp_path).close()


def test_meta_record_round_trips() -> None:
    m = _Meta(8, 12, 3)
    m.hard_state = HardState(4, 2, 9)
    m.snapshot = SnapshotMeta(7, 3, b"\x00conf\xff")
    back = _Meta.decode(m.encode())
    assert (back.first, back.prev_term, back.hard_state, back.snapshot) == (
        8, 3, HardState(4, 2, 9), SnapshotMeta(7, 3, b"\x00conf\xff"))
    bare = _Meta.decode(_Meta().encode())
    assert (bare.first, bare.last, bare.hard_state, bare.snapshot) == (1, 0, None, None)


def test_last_index_is_rebuilt_per_range_on_open(tmp_path: Path) -> None:
    """Neighbouring ranges must not leak into each other's last index."""
    s = RocksdbLogStore(tmp_path)
    b = WriteBatch()
    b.append(1, ents(1, 3))
    b.append(2, ents(1, 9))
    b.set_hard_state(3, HardState(1, 0, 0))
    b.append(4, ents(1, 2))
    b.compact(4, 2)
    s.write(b)
    before = dump(s)
    s.close()
    s = RocksdbLogStore(tmp_path)
    assert dump(s) == before
    assert [s.last_index(r) for r in (1, 2, 3, 4)] == [3, 9, 0, 2]
    s.close()
