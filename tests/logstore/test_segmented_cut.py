"""Damaged files: cut at random offsets and random bit flips (seeded, many cases).

The rule under test: recovery either reports ``Corruption`` or opens the
store in the exact state after some prefix of the written batches; it never
returns wrong data. Where the outcome is determined, it is checked exactly:

- a cut of the last segment is a torn tail: the store opens with every batch
  whose record ends before the cut, and the partial record is saved aside;
- a cut or a flipped bit in a sealed segment is corruption;
- a flipped bit in the last record of the last segment is a torn tail, in an
  earlier record (valid data follows) it is corruption.

Half the cases hit the last segment, where the outcomes differ most. The
records cover every framing: raw, whole-payload zstd, and compressed head
with a raw blob.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from logstore.errors import Corruption
from logstore.memory import MemoryLogStore
from logstore.protocol import HardState, LogEntry, SnapshotMeta, WriteBatch
from logstore.segmented import SegmentedLogStore
from logstore.segmented.format import SEGMENT_HEADER, segment_name

SEG = 4096
N_BATCHES = 60
RIDS = range(1, 5)

State = dict[int, tuple[int, int, int, list[LogEntry], HardState | None, SnapshotMeta | None]]


def _state(store: SegmentedLogStore | MemoryLogStore) -> State:
    out: State = {}
    for rid in store.range_ids():
        first, last = store.first_index(rid), store.last_index(rid)
        out[rid] = (
            first,
            last,
            store.term(rid, first - 1),
            store.entries(rid, first, last + 1),
            store.hard_state(rid),
            store.snapshot_meta(rid),
        )
    return out


class Written(NamedTuple):
    files: dict[str, bytes]  # segment name -> contents
    records: list[tuple[int, int, int]]  # per batch: (seq, start, end)
    states: list[State]  # states[k]: after the first k batches


def _batch(rng: random.Random, model: MemoryLogStore, k: int) -> WriteBatch:
    b = WriteBatch()
    rid = rng.choice(RIDS)
    first, last = model.first_index(rid), model.last_index(rid)
    roll = rng.random()
    if roll < 0.7:
        lo = rng.randint(max(first, last - 2), last + 1)
        # 1500: compressible (whole-payload zstd); 5000 random: raw blob behind
        # a compressed head; the rest too small to compress
        size = rng.choice((10, 200, 1500, 5000) if k < N_BATCHES - 10 else (10, 200))
        data = bytes([k]) * size if size == 1500 else rng.randbytes(size)
        b.append(
            rid, [LogEntry(1 + k // 10, i, 0, data) for i in range(lo, lo + rng.randint(1, 3))]
        )
    elif roll < 0.85 and last >= first:
        b.compact(rid, rng.randint(first, last))
    else:
        b.set_snapshot(rid, SnapshotMeta(last + rng.randint(0, 2), 9, b"snap%d" % k))
    b.set_hard_state(rid, HardState(1 + k // 10, 0, k))  # every batch writes a record
    return b


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Written:
    path = tmp_path_factory.mktemp("written")
    rng = random.Random(1234)
    model = MemoryLogStore()
    store = SegmentedLogStore(path, segment_bytes=SEG)
    records: list[tuple[int, int, int]] = []
    states: list[State] = [{}]
    for k in range(N_BATCHES):
        b = _batch(rng, model, k)
        model.write(b)
        seq, start = store._writer.seq, store._writer.offset
        store.write(b)
        if store._writer.seq != seq:
            seq, start = store._writer.seq, SEGMENT_HEADER.size
        records.append((seq, start, store._writer.offset))
        states.append(_state(model))
    assert _state(store) == states[-1]
    store.close()
    files = {n: (path / n).read_bytes() for n in os.listdir(path) if n.endswith(".seg")}
    assert len(files) >= 3, "the test needs sealed segments and a last one"
    return Written(files, records, states)


def _materialise(w: Written, path: Path) -> None:
    path.mkdir()
    for name, data in w.files.items():
        (path / name).write_bytes(data)


def _cases(n: int, seed: int) -> Iterator[random.Random]:
    for i in range(n):
        yield random.Random(seed * 100_003 + i)


def _open(path: Path) -> SegmentedLogStore:
    return SegmentedLogStore(path, segment_bytes=SEG)


@pytest.mark.timeout(60)
def test_random_cuts(written: Written, tmp_path: Path) -> None:
    last_seq = max(seq for seq, _, _ in written.records)
    for case, rng in enumerate(_cases(120, 1)):
        seq = last_seq if rng.random() < 0.5 else rng.randint(1, last_seq)
        name = segment_name(seq)
        x = rng.randrange(len(written.files[name]))
        path = tmp_path / f"cut{case}"
        _materialise(written, path)
        os.truncate(path / name, x)
        where = f"case {case}: cut {name} at {x}"
        if seq != last_seq:
            with pytest.raises(Corruption):
                _open(path)
            continue
        store = _open(path)
        try:
            kept = sum(1 for s, _, end in written.records if s < seq or (s == seq and end <= x))
            assert _state(store) == written.states[kept], where
            torn = [s for s, start, end in written.records if s == seq and start < x < end]
            saved = [n for n in os.listdir(path) if n.endswith(".torn")]
            assert bool(saved) == bool(torn) or x < SEGMENT_HEADER.size, where
        finally:
            store.close()


@pytest.mark.timeout(60)
def test_random_bit_flips(written: Written, tmp_path: Path) -> None:
    last_seq = max(seq for seq, _, _ in written.records)
    last_record = max(written.records)
    for case, rng in enumerate(_cases(150, 2)):
        seq = last_seq if rng.random() < 0.5 else rng.randint(1, last_seq)
        name = segment_name(seq)
        data = bytearray(written.files[name])
        y = rng.randrange(len(data))
        data[y] ^= 1 << rng.randrange(8)
        path = tmp_path / f"flip{case}"
        _materialise(written, path)
        (path / name).write_bytes(bytes(data))
        where = f"case {case}: bit flip in {name} at {y}"
        hit = [
            k for k, (s, start, end) in enumerate(written.records) if s == seq and start <= y < end
        ]
        try:
            store = _open(path)
        except Corruption as exc:
            assert exc.path.endswith(name) or seq != last_seq, where
            assert not (hit and written.records[hit[0]] == last_record), where
            continue
        try:
            assert seq == last_seq, f"{where}: damage in a sealed segment was not reported"
            before = hit[0] if hit else sum(1 for s, _, _ in written.records if s < seq)
            assert _state(store) == written.states[before], where
        finally:
            store.close()


@pytest.mark.timeout(30)
def test_store_keeps_working_after_a_torn_tail(written: Written, tmp_path: Path) -> None:
    """Cut mid-record, reopen, write more, reopen: the new batch follows the kept prefix."""
    seq, start, end = max(written.records)
    path = tmp_path / "again"
    _materialise(written, path)
    os.truncate(path / segment_name(seq), (start + end) // 2)
    store = _open(path)
    kept = len(written.records) - 1
    assert _state(store) == written.states[kept]
    b = WriteBatch()
    b.set_hard_state(99, HardState(5, 5, 5))
    store.write(b)
    store.close()
    store = _open(path)
    expected = dict(written.states[kept])
    assert _state(store)[99][4] == HardState(5, 5, 5)
    assert {r: v for r, v in _state(store).items() if r != 99} == expected
    store.close()
