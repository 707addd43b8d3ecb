"""loadtest/locustfile.py: it imports (in a subprocess: locust monkey-patches
the interpreter with gevent, which must not leak into this test process),
the HttpUser runs headless against a real admin server, and the RESP user
reports what it sends to Locust's request events."""

from __future__ import annotations

import csv
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine.admin_server_thread import AdminServerThread

REPO = Path(__file__).resolve().parents[2]
LOCUSTFILE = REPO / "loadtest" / "locustfile.py"
pytestmark = pytest.mark.timeout(60)


def locust(tmp_path: Path, *args: str) -> tuple[list[dict[str, str]], str]:
    """Run locust headless for 3 s (2 s left too few requests on a loaded machine);
    the per-request stats rows and stderr."""
    r = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "2",
         "-r", "2", "-t", "3s", "--stop-timeout", "1", "--only-summary",
         "--csv", str(tmp_path / "run"), "--keyspace", "20", *args],
        capture_output=True, text=True, timeout=45, cwd=tmp_path,
    )
    with open(tmp_path / "run_stats.csv", newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["Name"] != "Aggregated"]
    return rows, r.stderr


def test_locustfile_imports_with_the_documented_mix() -> None:
    code = (
        "import importlib.util as u\n"
        f"s = u.spec_from_file_location('lf', {str(LOCUSTFILE)!r})\n"
        "m = u.module_from_spec(s); s.loader.exec_module(m)\n"
        "w = {t.__name__: t.locust_task_weight for t in m.RespUser.tasks}\n"
        "assert set(m.RespUser.tasks) and len(m.RespUser.tasks) == 100, w\n"
        "names = sorted({t.__name__ for t in m.RespUser.tasks})\n"
        "print(names, [m.RespUser.tasks.count(getattr(m.RespUser, n)) for n in names])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['cas', 'get', 'incr', 'set'] [2, 70, 3, 25]"


def test_http_user_runs_headless_against_a_real_admin_server(tmp_path: Path) -> None:
    with AdminServerThread() as srv:
        rows, stderr = locust(tmp_path, "HttpKVUser", "--host", f"http://{srv.address}")
    by_name = {row["Name"]: row for row in rows}
    assert set(by_name) == {"/kv GET", "/kv PUT"}, stderr
    for row in rows:
        assert int(row["Request Count"]) > 0 and row["Failure Count"] == "0", row


def test_resp_user_reports_failures_to_locust_events(tmp_path: Path) -> None:
    with socket.socket() as s:  # nobody listens here: every command fails to connect
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rows, stderr = locust(tmp_path, "RespUser", "--resp-host", f"127.0.0.1:{port}")
    assert rows, stderr
    assert {row["Type"] for row in rows} == {"RESP"}
    assert "GET" in {row["Name"] for row in rows}
    for row in rows:
        assert row["Request Count"] == row["Failure Count"] != "0", row
    failures = (tmp_path / "run_failures.csv").read_text()
    assert "ConnectionError" in failures
