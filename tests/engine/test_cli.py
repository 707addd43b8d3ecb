"""engine/cli.py as a real process: config errors exit 2 naming the key and
writing nothing, ``node --config``, ``config check|sample``, and the admin
commands against a real admin server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from engine.admin import LocalBackend
from engine.cli import main
from engine.config import sample_toml
from engine.kv_codec import Put, encode_command
from tests.engine.admin_server_thread import AdminServerThread

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(60)


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True,
        cwd=cwd, timeout=30, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )


def test_bad_config_exits_2_names_the_key_and_writes_nothing(tmp_path: Path) -> None:
    conf = tmp_path / "n1.toml"
    data = tmp_path / "data"
    conf.write_text(
        f'[node]\ndata_dir = "{data}"\n[raft]\nelection_ticks = 1\nheartbeat_ticks = 1\n'
    )
    for args in (("node", "--config", str(conf)), ("config", "check", str(conf))):
        r = cli(*args, cwd=tmp_path)
        assert r.returncode == 2, r
        assert "raft.election_ticks: must be > heartbeat_ticks (1), got 1" in r.stderr
    conf.write_text('[node]\nlisten_peer = "127.0.0.1:99999"\n')
    r = cli("node", "--config", str(conf), cwd=tmp_path)
    assert r.returncode == 2 and "node.listen_peer: port must be in 0..65535" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n1.toml"]


def test_config_check_and_sample(tmp_path: Path) -> None:
    r = cli("config", "sample")
    assert r.returncode == 0 and r.stdout == sample_toml()
    sample = tmp_path / "sample.toml"
    sample.write_text(r.stdout)
    r = cli("config", "check", str(sample))
    assert r.returncode == 0 and "ok (node 1" in r.stdout
    r = cli("config", "check", str(tmp_path / "missing.toml"))
    assert r.returncode == 2 and "no such config file" in r.stderr


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The CLI in-process (each subprocess costs ~1 s of the shared CPU)."""
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse usage errors
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_admin_commands_against_a_real_admin_server(capsys: pytest.CaptureFixture[str]) -> None:
    with AdminServerThread(LocalBackend(split_points=(b"m",))) as srv:
        for k in (b"a", b"c", b"e", b"n"):
            srv.loop.call_soon_threadsafe(
                srv.backend._write, k, encode_command(Put(k, b"v-" + k))
            )
        admin = ("--admin", srv.address)

        r = cli("ranges", *admin)  # once through a real process and the console entry
        assert r.returncode == 0, r.stderr
        assert "r1" in r.stdout and "r2" in r.stdout and "+inf" in r.stdout

        code, out, _ = run_main(capsys, "ranges", *admin, "--json")
        assert code == 0 and [x["keys"] for x in json.loads(out)] == [3, 1]

        code, out, err = run_main(capsys, "split", "1", "--key", "c", *admin, "--json")
        assert code == 0, err
        split = json.loads(out)
        assert (split["left"]["keys"], split["right"]["keys"]) == (1, 2)
        assert split["right"]["range_id"] == 3

        code, out, _ = run_main(capsys, "split", "3", *admin)
        assert code == 0 and "split r3" in out
        code, out, _ = run_main(capsys, "merge", "1", *admin)
        assert code == 0 and "merged into r1" in out
        code, out, _ = run_main(capsys, "status", *admin, "--json")
        assert json.loads(out)["ranges"] == 3
        code, out, _ = run_main(capsys, "status", *admin)
        assert code == 0 and "node_id" in out

        code, _, err = run_main(capsys, "transfer-leader", "1", "--to", "2", *admin)
        assert code == 1 and "HTTP 409: single-node local backend" in err
        code, _, err = run_main(capsys, "replicas", "1", "--remove", "1", *admin)
        assert code == 1 and "HTTP 409" in err
        code, _, err = run_main(capsys, "merge", "77", *admin)
        assert code == 1 and "HTTP 404: unknown range r77" in err
        code, _, err = run_main(capsys, "split", "0", *admin)
        assert code == 2 and "expected an integer >= 1" in err
        code, _, err = run_main(capsys, "replicas", "1", *admin)
        assert code == 2 and "one of the arguments --add --remove is required" in err


def test_unreachable_admin_exits_3() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = cli("status", "--admin", f"127.0.0.1:{port}", "--timeout", "2")
    assert r.returncode == 3 and "cannot reach" in r.stderr



def test_up_validates_its_layout(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "up", "--nodes", "0")
    assert code == 2 and "nodes: must be >= 1, got 0" in err
