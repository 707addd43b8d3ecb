"""``multiraft logstore check|dump DIR``: inspect a segmented log store offline.

Both commands reuse the store's own reader (``logstore.segmented.reader``)
and recovery (``logstore.segmented.recovery``), so what they report is what
an open would see. Neither modifies anything: ``check`` runs recovery with
``dry_run`` and reports the cuts an open would make; ``dump`` prints every
record (and, with ``--ops``, every op). Exit status: 0 clean, 1 corruption
(or, for ``check``, cuts an open would make), 2 usage or IO error.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TextIO

from logstore.errors import Corruption
from logstore.segmented.batch import PayloadError, decode_payload
from logstore.segmented.format import OP_ARGS, OP_NAMES, SEGMENT_HEADER, Columns, segment_name
from logstore.segmented.index import RangeIndex
from logstore.segmented.reader import check_segment_header, list_segments, scan_segment
from logstore.segmented.recovery import RECOVERY_MODES, RecoveryMode, recover
from logstore.segmented.replay import Replayer


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``logstore check|dump`` on the ``multiraft`` command line."""
    p = subparsers.add_parser("logstore", help="inspect a segmented log store directory")
    sub = p.add_subparsers(dest="logstore_command", required=True)
    check = sub.add_parser("check", help="verify every record; report what an open would cut")
    check.add_argument("dir")
    check.add_argument("--mode", choices=RECOVERY_MODES, default="tolerate_tail")
    check.set_defaults(func=_cmd_check)
    dump = sub.add_parser("dump", help="print segments and records")
    dump.add_argument("dir")
    dump.add_argument("--ops", action="store_true", help="print every op of every record")
    dump.set_defaults(func=_cmd_dump)


def _cmd_check(args: argparse.Namespace) -> int:
    mode: RecoveryMode = args.mode  # argparse restricted it to RECOVERY_MODES
    return check(args.dir, mode, sys.stdout)


def _cmd_dump(args: argparse.Namespace) -> int:
    return dump(args.dir, args.ops, sys.stdout)


def check(path: str, mode: RecoveryMode, out: TextIO) -> int:
    """Recover ``path`` without modifying it and print a summary."""
    if not os.path.isdir(path):
        print(f"{path}: not a directory", file=out)
        return 2
    ranges: dict[int, RangeIndex] = {}
    replayer = Replayer(ranges)
    n = 0

    def on_record(seq: int, offset: int, cols: Columns) -> None:
        nonlocal n
        replayer.add(n, cols)
        n += 1

    try:
        rep = recover(path, mode, on_record, dry_run=True)
        replayer.flush()
    except Corruption as exc:
        print(f"CORRUPT: {exc}", file=out)
        return 1
    except OSError as exc:
        print(f"IO error: {exc}", file=out)
        return 2
    entries = sum(len(r.terms) for r in ranges.values())
    print(
        f"{path}: {rep.segments} segments, {rep.records} records, {rep.bytes_read} bytes, "
        f"{len(ranges)} ranges, {entries} live entries, scanned in {rep.seconds:.3f} s",
        file=out,
    )
    for cut in rep.cuts:
        print(
            f"WOULD CUT {cut.path} at offset {cut.offset}: {cut.length} bytes ({cut.reason})",
            file=out,
        )
    return 1 if rep.cuts else 0


def dump(path: str, ops: bool, out: TextIO) -> int:
    """Print every segment and record of ``path``; 1 if any is bad."""
    status = 0
    try:
        seqs = list_segments(path)
    except OSError as exc:
        print(f"IO error: {exc}", file=out)
        return 2
    for seq in seqs:
        seg_path = os.path.join(path, segment_name(seq))
        with open(seg_path, "rb") as f:
            buf = f.read()
        print(f"segment {seq} ({seg_path}, {len(buf)} bytes)", file=out)
        try:
            check_segment_header(buf, seq, seg_path)
        except Corruption as exc:
            print(f"  BAD HEADER: {exc}", file=out)
            status = 1
            continue
        scan = scan_segment(buf, SEGMENT_HEADER.size)
        for offset, payload in scan.records:
            try:
                cols = decode_payload(payload)
            except PayloadError as exc:
                print(f"  @{offset}: BAD PAYLOAD: {exc}", file=out)
                status = 1
                break
            print(
                f"  @{offset}: {len(cols.kinds)} ops, {len(cols.terms)} entries, "
                f"{len(payload)} payload bytes",
                file=out,
            )
            if ops:
                _print_ops(cols, out)
        if scan.bad is not None:
            bad = scan.bad
            print(f"  @{bad.offset}: BAD RECORD: {bad.what}", file=out)
            status = 1
    return status


def _print_ops(cols: Columns, out: TextIO) -> None:
    a = 0
    for kind, rid in zip(cols.kinds, cols.range_ids, strict=True):
        k = OP_ARGS[kind]
        print(f"    {OP_NAMES[kind]} range={rid} args={list(cols.args[a : a + k])}", file=out)
        a += k
