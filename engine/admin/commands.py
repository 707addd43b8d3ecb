"""The ``multiraft`` admin subcommands: ``status``, ``ranges``, ``split``,
``merge``, ``transfer-leader`` and ``replicas``, over the HTTP admin API.

Each prints a rich table (or, with ``--json``, the API's JSON answer as is,
for scripts) and returns an exit code: 0 done, 1 the node refused or failed
the request (its message is printed), 3 the node could not be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any, Final

from rich.console import Console
from rich.table import Table

from engine.admin.client import AdminClient, AdminRequestFailed, AdminUnreachable

__all__ = ["add_parsers"]

EXIT_REFUSED: Final = 1
EXIT_UNREACHABLE: Final = 3

JSON = dict[str, Any]


def _console() -> Console:
    # Not a terminal (a pipe, a test): a fixed wide width so tables never truncate.
    return Console(width=None if sys.stdout.isatty() else 160, highlight=False)


def _bound(text: str, unbounded: str) -> str:
    return text if text else unbounded


def _ranges_table(ranges: list[JSON], title: str) -> Table:
    table = Table(title=title)
    for col in ("range", "start", "end", "gen", "voters", "learners", "leader", "term",
                "applied", "keys", "bytes", "quiesced"):
        table.add_column(col, justify="right" if col in {"gen", "keys", "bytes"} else "left")
    for r in ranges:
        table.add_row(
            f"r{r['range_id']}", _bound(r["start"], "-inf"), _bound(r["end"], "+inf"),
            str(r["generation"]), ",".join(map(str, r["voters"])),
            ",".join(map(str, r["learners"])) or "-",
            "-" if r["leader"] is None else str(r["leader"]),
            "-" if r["term"] is None else str(r["term"]),
            "-" if r["applied_index"] is None else str(r["applied_index"]),
            str(r["keys"]), str(r["size_bytes"]), "yes" if r["quiesced"] else "no",
        )
    return table


def _print_status(status: JSON) -> Table:
    table = Table(title=f"node {status['node_id']}", show_header=False)
    table.add_column("field")
    table.add_column("value")
    for k, v in status.items():
        table.add_row(k, str(v))
    return table


def _run(args: argparse.Namespace, call: Callable[[AdminClient], JSON | list[JSON]],
         render: Callable[[Any], Table]) -> int:
    client = AdminClient(args.admin, timeout=args.timeout)
    try:
        answer = call(client)
    except AdminRequestFailed as e:
        print(f"multiraft {args.command}: {e}", file=sys.stderr)
        return EXIT_REFUSED
    except AdminUnreachable as e:
        print(f"multiraft {args.command}: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
    else:
        _console().print(render(answer))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    return _run(args, lambda c: c.status(), _print_status)


def _cmd_ranges(args: argparse.Namespace) -> int:
    return _run(args, lambda c: c.ranges(), lambda rs: _ranges_table(rs, "ranges"))


def _cmd_split(args: argparse.Namespace) -> int:
    return _run(args, lambda c: c.split(args.range_id, args.key),
                lambda a: _ranges_table([a["left"], a["right"]], f"split r{args.range_id}"))


def _cmd_merge(args: argparse.Namespace) -> int:
    return _run(args, lambda c: c.merge(args.range_id),
                lambda a: _ranges_table([a["range"]], f"merged into r{args.range_id}"))


def _cmd_transfer(args: argparse.Namespace) -> int:
    return _run(args, lambda c: c.transfer_leader(args.range_id, args.to),
                lambda a: _ranges_table([a["range"]], f"r{args.range_id} leadership"))


def _cmd_replicas(args: argparse.Namespace) -> int:
    return _run(args, lambda c: c.change_replicas(args.range_id, add=args.add, remove=args.remove),
                lambda a: _ranges_table([a["range"]], f"r{args.range_id} replicas"))


def _positive(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return int(text)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the admin subcommands on the ``multiraft`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--admin", default="127.0.0.1:8401", metavar="HOST:PORT",
                        help="the node's admin listener (default %(default)s)")
    common.add_argument("--json", action="store_true", help="print the API's JSON answer")
    common.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")

    sub.add_parser("status", parents=[common], help="a node's summary").set_defaults(
        func=_cmd_status)
    sub.add_parser("ranges", parents=[common], help="the ranges a node knows").set_defaults(
        func=_cmd_ranges)

    p = sub.add_parser("split", parents=[common], help="split a range")
    p.add_argument("range_id", type=_positive)
    p.add_argument("--key", help="split key (default: the range's middle key)")
    p.set_defaults(func=_cmd_split)

    p = sub.add_parser("merge", parents=[common], help="merge a range with its right neighbour")
    p.add_argument("range_id", type=_positive)
    p.set_defaults(func=_cmd_merge)

    p = sub.add_parser("transfer-leader", parents=[common], help="move a range's leadership")
    p.add_argument("range_id", type=_positive)
    p.add_argument("--to", type=_positive, required=True, metavar="NODE")
    p.set_defaults(func=_cmd_transfer)

    p = sub.add_parser("replicas", parents=[common], help="add or remove a range replica")
    p.add_argument("range_id", type=_positive)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--add", type=_positive, metavar="NODE")
    group.add_argument("--remove", type=_positive, metavar="NODE")
    p.set_defaults(func=_cmd_replicas)
