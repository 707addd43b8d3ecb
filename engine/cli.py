"""The ``multiraft`` console script.

Subcommands are added as the pieces they drive land; each one parses its
own arguments and returns a process exit code.

Exit codes: 0 done; 1 failed or not available; 2 bad usage or a bad config
(argparse's convention; a config error names its key and nothing is
written); 3 an admin command could not reach its node.
"""

from __future__ import annotations

import argparse
import sys

from engine.admin import commands as admin_commands
from engine.config import ConfigError, load_config, local_cluster_configs, sample_toml
from logstore import ctl as logstore_ctl

EXIT_BAD_CONFIG = 2


def _cmd_up(args: argparse.Namespace) -> int:
    try:
        configs = local_cluster_configs(args.nodes, args.dir)
    except ConfigError as e:
        print(f"multiraft up: {e}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    # The node service (issue: node service) is not built yet: say so plainly
    # rather than pretend to start something.
    nodes = ", ".join(f"n{c.node.id} resp {c.node.listen_client}" for c in configs)
    print(
        f"multiraft up: the node service is not built yet; the {args.nodes}-node cluster "
        f"in {args.dir!r} ({nodes}) cannot be started in this version.",
        file=sys.stderr,
    )
    return 1


def _cmd_node(args: argparse.Namespace) -> int:
    # Validate first, before anything touches the data directory: a bad
    # config must exit 2 having written nothing.
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"multiraft node: bad config: {e}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    print(
        f"multiraft node: config {args.config!r} is valid (node {config.node.id}, "
        f"{config.node.workers} workers), but the node service is not built yet; "
        "nothing was started.",
        file=sys.stderr,
    )
    return 1


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
