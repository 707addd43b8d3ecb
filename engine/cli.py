"""The ``multiraft`` console script.

Subcommands are added as the pieces they drive land; each one parses its
own arguments and returns a process exit code.

Exit codes: 0 done; 1 failed or not available; 2 bad usage or a bad config
(argparse's convention; a config error names its key and nothing is
written); 3 an admin command could not reach its node.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine.admin import commands as admin_commands
from engine.config import (
    ConfigError,
    load_config,
    local_cluster_configs,
    render_toml,
    sample_toml,
)
from engine.node import run_node
from logstore import ctl as logstore_ctl

EXIT_BAD_CONFIG = 2


def _cmd_up(args: argparse.Namespace) -> int:
    """Start ``--nodes`` node processes (``multiraft node``) on loopback, print where to
    connect, wait for Ctrl-C/SIGTERM, then stop them all (SIGTERM, then SIGKILL)."""
    try:
        configs = local_cluster_configs(args.nodes, args.dir)
    except ConfigError as e:
        print(f"multiraft up: {e}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    base = Path(args.dir)
    base.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    stop = False

    def _on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for c in configs:
            path = base / f"n{c.node.id}.toml"
            path.write_text(render_toml(c))
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "engine.cli", "node", "--config", str(path)],
                start_new_session=True))
        print(f"multiraft: {len(configs)}-node cluster in {str(base)!r}")
        for c in configs:
            print(f"  node {c.node.id}: resp {c.node.listen_client}  admin "
                  f"http://{c.node.listen_admin}  peer {c.node.listen_peer}")
        first = configs[0].node.listen_client
        print(f"connect: redis-cli -h {first.host} -p {first.port}")
        print("Ctrl-C stops the cluster.", flush=True)
        while not stop:
            if any(p.poll() is not None for p in procs):
                print("multiraft up: a node exited; stopping the cluster", file=sys.stderr)
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for s, h in old.items():
            signal.signal(s, h)
    return 0 if stop and all(p.returncode == 0 for p in procs) else 1


def _cmd_node(args: argparse.Namespace) -> int:
    # Validate first, before anything touches the data directory: a bad
    # config must exit 2 having written nothing.
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"multiraft node: bad config: {e}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    return run_node(config)


def _cmd_config_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as e:
        print(f"multiraft config check: {e}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    n = config.node
    print(
        f"{args.file}: ok (node {n.id}, client {n.listen_client}, peer {n.listen_peer}, "
        f"admin {n.listen_admin}, {n.workers} workers, "
        f"{len(config.cluster.initial_nodes)} initial nodes)"
    )
    return 0


def _cmd_config_sample(args: argparse.Namespace) -> int:
    sys.stdout.write(sample_toml())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="multiraft", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a local cluster on loopback")
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--dir", default="data")
    up.set_defaults(func=_cmd_up)
    node = sub.add_parser("node", help="run one node in the foreground")
    node.add_argument("--config", required=True, metavar="FILE")
    node.set_defaults(func=_cmd_node)
    config = sub.add_parser("config", help="check or print node configs")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a config file")
    check.add_argument("file")
    check.set_defaults(func=_cmd_config_check)
    config_sub.add_parser(
        "sample", help="print the reference config (every key, its default)"
    ).set_defaults(func=_cmd_config_sample)
    admin_commands.add_parsers(sub)
    logstore_ctl.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
