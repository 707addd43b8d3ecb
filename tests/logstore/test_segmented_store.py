"""``SegmentedLogStore`` behaviour beyond the shared conformance suite:
options, segment rolling, cache misses, group commit, IO failures, fast path."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from engine.raft.types import Entry
from logstore.errors import Corruption, InvalidArgument, LogStoreError
from logstore.protocol import HardState, LogEntry, WriteBatch
from logstore.segmented import SegmentedLogStore, writer
from logstore.segmented.format import SEGMENT_HEADER, segment_name
from logstore.segmented.reader import check_segment_header, list_segments


def _batch(rids: range, index: int, size: int = 100) -> WriteBatch:
    b = WriteBatch()
    for rid in rids:
        b.append(rid, [LogEntry(1, index, 0, b"%08d" % rid + os.urandom(size - 8))])
        b.set_hard_state(rid, HardState(1, 0, index))
    return b


@pytest.mark.parametrize(
    "options",
    [
        {"segment_size": 1},
        {"segment_bytes": "big"},
        {"segment_bytes": 10},
        {"recovery_mode": "lenient"},
        {"sync": "never"},
        {"compression_level": 0},
        {"cache_bytes": -1},
        {"rewrite_lag_segments": 0},
    ],
)
def test_bad_options_are_invalid_argument(tmp_path: Path, options: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument):
        SegmentedLogStore(tmp_path, **options)


def test_segments_roll_with_valid_headers(tmp_path: Path) -> None:
    store = SegmentedLogStore(tmp_path, segment_bytes=8192, sync="fsync")
    for i in range(1, 80):
        store.write(_batch(range(3), i))
    store.close()
    seqs = list_segments(str(tmp_path))
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) > 3
    prev = 0
    for seq in seqs:
        data = (tmp_path / segment_name(seq)).read_bytes()
        assert check_segment_header(data, seq, "x") == prev
        assert len(data) <= 8192
        prev = len(data)


def test_record_larger_than_a_segment_goes_alone(tmp_path: Path) -> None:
    store = SegmentedLogStore(tmp_path, segment_bytes=4096, compression_threshold=1 << 30)
    store.write(_batch(range(3), 1))
    store.write(_batch(range(3), 2, size=5000))
    store.write(_batch(range(3), 3))
    assert len(list_segments(str(tmp_path))) == 3
    store.close()
    store = SegmentedLogStore(tmp_path, segment_bytes=4096)
    assert store.last_index(2) == 3 and len(store.entries(2, 2, 3)[0].data) == 5000
    store.close()


def test_reads_past_the_cache_come_from_disk_verified(tmp_path: Path) -> None:
    store = SegmentedLogStore(tmp_path, cache_bytes=0)
    written = []
    for i in range(1, 6):
        b = _batch(range(2), i)
        written.append(b.ops[2][2])  # range 1's entries
        store.write(b)
    assert store.entries(1, 1, 6) == [e for ents in written for e in ents]  # type: ignore[attr-defined]
    assert len(store.entries(1, 1, 6, max_bytes=150)) == 1
    # damage a record under the open store: the read reports it, never returns it
    seg = tmp_path / segment_name(1)
    data = bytearray(seg.read_bytes())
    data[SEGMENT_HEADER.size + 100] ^= 1
    seg.write_bytes(bytes(data))
    with pytest.raises(Corruption):
        store.entries(1, 1, 2)
    store.close()


@pytest.mark.timeout(30)
def test_group_commit_coalesces_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = writer._sync_fd
    started = threading.Event()

    def slow_sync(fd: int, mode: writer.SyncMode) -> None:
        started.set()
        time.sleep(0.05)
        real(fd, mode)

    monkeypatch.setattr(writer, "_sync_fd", slow_sync)
    store = SegmentedLogStore(tmp_path)
    futures = [store.submit(_batch(range(5), 1))]
    started.wait(5)
    futures += [store.submit(_batch(range(5), i)) for i in range(2, 21)]
    assert store.last_index(4) == 20  # visible before durable
    for f in futures:
        f.result(timeout=10)
    assert store.fsyncs < 10, "one fsync should cover the batches queued behind it"
    store.close()


@pytest.mark.timeout(30)
def test_fsync_failure_fails_the_future_and_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fd: int, mode: writer.SyncMode) -> None:
        raise OSError(errno.EIO, "injected fsync failure")

    store = SegmentedLogStore(tmp_path)
    monkeypatch.setattr(writer, "_sync_fd", broken)
    fut = store.submit(_batch(range(2), 1))
    with pytest.raises(OSError, match="injected"):
        fut.result(timeout=10)
    with pytest.raises(LogStoreError, match="failed"):
        store.write(_batch(range(2), 2))
    monkeypatch.undo()
    with pytest.raises(OSError):
        store.close()


def test_failed_write_is_undone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SegmentedLogStore(tmp_path)
    store.write(_batch(range(2), 1))
    real = os.pwritev

    def short_then_fail(fd: int, parts: list[bytes], offset: int) -> int:
        real(fd, [parts[0][:5]], offset)
        raise OSError(errno.ENOSPC, "injected: no space")

    monkeypatch.setattr(writer.os, "pwritev", short_then_fail)
    with pytest.raises(OSError, match="no space"):
        store.write(_batch(range(2), 2))
    monkeypatch.undo()
    assert store.last_index(1) == 1  # nothing of the failed batch is visible
    store.write(_batch(range(2), 2))
    store.close()
    store = SegmentedLogStore(tmp_path)
    assert store.last_index(1) == 2 and store.recovery.cuts == ()
    store.close()


def test_fast_path_and_replay_agree(tmp_path: Path) -> None:
    """Batches of the hot shape (applied by fastpath) read the same after replay."""
    store = SegmentedLogStore(tmp_path)
    nxt = 1
    for i in range(1, 30):
        b = _batch(range(50), i)
        if i % 7 == 0:
            b.append(51, [LogEntry(2, j) for j in range(nxt, nxt + 3)])  # multi-entry
            nxt += 3
        store.write(b)
    before = {
        r: (store.entries(r, 1, store.last_index(r) + 1), store.hard_state(r))
        for r in store.range_ids()
    }
    store.close()
    store = SegmentedLogStore(tmp_path)
    after = {
        r: (store.entries(r, 1, store.last_index(r) + 1), store.hard_state(r))
        for r in store.range_ids()
    }
    assert before == after and len(after) == 51
    store.close()


def test_entries_of_another_tuple_type_are_accepted(tmp_path: Path) -> None:
    """The engine passes its own Entry NamedTuple (same layout) straight through."""
    store = SegmentedLogStore(tmp_path)
    b = WriteBatch()
    b.append(1, [Entry(1, 1, 0, b"a"), Entry(1, 2, 0, b"b")])  # type: ignore[list-item]
    store.write(b)
    assert store.entries(1, 1, 3) == [LogEntry(1, 1, 0, b"a"), LogEntry(1, 2, 0, b"b")]
    store.close()
