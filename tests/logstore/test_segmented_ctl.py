"""``multiraft logstore check|dump``: exit codes, output, and that nothing is modified."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.cli import main
from logstore.protocol import HardState, LogEntry, WriteBatch
from logstore.segmented import SegmentedLogStore
from logstore.segmented.format import segment_name


def _store(path: Path) -> None:
    store = SegmentedLogStore(path, segment_bytes=4096)
    for i in range(1, 25):
        b = WriteBatch()
        b.append(7, [LogEntry(1, i, 0, os.urandom(200))])
        b.set_hard_state(7, HardState(1, 0, i))
        store.write(b)
    store.close()


def _snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in path.iterdir()}


def test_check_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _store(tmp_path)
    assert main(["logstore", "check", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "24 records" in out and "1 ranges" in out and "24 live entries" in out


def test_check_reports_a_torn_tail_without_cutting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _store(tmp_path)
    last = max(tmp_path.glob("*.seg"))
    os.truncate(last, last.stat().st_size - 5)
    before = _snapshot(tmp_path)
    assert main(["logstore", "check", str(tmp_path)]) == 1
    assert "WOULD CUT" in capsys.readouterr().out
    assert _snapshot(tmp_path) == before


def test_check_reports_corruption(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _store(tmp_path)
    first = tmp_path / segment_name(1)
    data = bytearray(first.read_bytes())
    data[100] ^= 0xFF
    first.write_bytes(bytes(data))
    assert main(["logstore", "check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("CORRUPT:") and str(first) in out
    assert main(["logstore", "check", "--mode", "tolerate_any", str(tmp_path)]) == 1
    assert "WOULD CUT" in capsys.readouterr().out


def test_check_missing_dir(tmp_path: Path) -> None:
    assert main(["logstore", "check", str(tmp_path / "nope")]) == 2


def test_dump_lists_records_and_ops(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _store(tmp_path)
    assert main(["logstore", "dump", "--ops", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("2 ops, 1 entries") == 24
    assert "append range=7 args=[1, 1]" in out and "hard_state range=7 args=[1, 0, 24]" in out
    last = max(tmp_path.glob("*.seg"))
    os.truncate(last, last.stat().st_size - 5)
    assert main(["logstore", "dump", str(tmp_path)]) == 1
    assert "BAD RECORD" in capsys.readouterr().out
