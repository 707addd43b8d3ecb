"""The ``multiraft`` console script.

Subcommands are added as the pieces they drive land; each one parses its
own arguments and returns a process exit code.
"""

from __future__ import annotations

import argparse
import sys

from logstore import ctl as logstore_ctl


def _cmd_up(args: argparse.Namespace) -> int:
    # The node service (issue: node service) is not built yet: say so plainly
    # rather than pretend to start something.
    print(
        "multiraft up: the node service is not built yet; "
        f"a {args.nodes}-node cluster in {args.dir!r} cannot be started in this version.",
        file=sys.stderr,
    )
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="multiraft", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a local cluster on loopback")
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--dir", default="data")
    up.set_defaults(func=_cmd_up)
    logstore_ctl.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
