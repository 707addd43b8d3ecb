"""Codec benchmark: encode+decode of a 64-entry APPEND and of a 10,000-range coalesced heartbeat.

Prints ONE JSON line. Baseline in the same run: msgpack encodings of the same
values (``msgpack_*``), decoded back into the same NamedTuples where the codec
builds them, so the comparison is like for like; ``ratio`` = msgpack / ours
(> 1 means the codec is faster). Times are the best of several repeats (µs).

    python3 loadtest/bench_codec.py [--entry-bytes 128] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import time
import timeit
from pathlib import Path
from typing import Any

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.raft import types as rt
from transport.codec import (
    CoalescedHeartbeats,
    RaftTypes,
    WireCodec,
    encode_heartbeats,
    encode_raft_batch,
)

CODEC = WireCodec(RaftTypes(rt.Message, rt.Entry, rt.Snapshot, rt.SnapshotMetadata,
                            rt.ConfState))


def best_us(fn: Any, number: int, repeat: int = 40) -> float:
    """Best of many short runs, in CPU time of this process: the machine is shared,
    and wall time would charge other processes' time slices to whichever side
    happened to be running."""
    timer = timeit.Timer(fn, timer=time.process_time)
    return min(timer.repeat(number=number, repeat=repeat)) / number * 1e6


def append_message(entry_bytes: int) -> tuple[int, rt.Message]:
    entries = tuple(rt.Entry(7, 1000 + i, rt.EntryType.NORMAL, bytes([i]) * entry_bytes)
                    for i in range(64))
    return 42, rt.Message(rt.MessageType.APPEND, 2, 1, 7, 7, 999, entries, 1050)


def msgpack_encode_message(item: tuple[int, rt.Message]) -> bytes:
    r, m = item
    return msgpack.packb([r, m.type, m.to, m.frm, m.term, m.log_term, m.index,
                          [list(e) for e in m.entries], m.commit, m.reject, m.reject_hint,
                          m.context, None])


def msgpack_decode_message(data: bytes) -> tuple[int, rt.Message]:
    r, t, to, frm, term, lt, idx, ents, commit, rej, hint, ctx, _ = msgpack.unpackb(data)
    return r, rt.Message(t, to, frm, term, lt, idx, tuple(rt.Entry(*e) for e in ents), commit,
                         rej, hint, ctx, None)


def bench_append(entry_bytes: int) -> dict[str, float]:
    item = append_message(entry_bytes)
    ours = encode_raft_batch([item])
    assert CODEC.decode_raft_batch(ours) == [item]
    theirs = msgpack_encode_message(item)
    assert msgpack_decode_message(theirs) == item
    n = 40
    enc = best_us(lambda: encode_raft_batch([item]), n)
    dec = best_us(lambda: CODEC.decode_raft_batch(ours), n)
    menc = best_us(lambda: msgpack_encode_message(item), n)
    mdec = best_us(lambda: msgpack_decode_message(theirs), n)
    return {
        "append64_encode_us": round(enc, 2), "append64_decode_us": round(dec, 2),
        "append64_us": round(enc + dec, 2), "append64_bytes": len(ours),
        "msgpack_append64_us": round(menc + mdec, 2), "msgpack_append64_bytes": len(theirs),
        "append64_ratio": round((menc + mdec) / (enc + dec), 2),
    }


def bench_heartbeat(ranges: int) -> dict[str, float]:
    rows = [(r, 1, 2, 5 + r % 3, 10_000 + r, 0) for r in range(ranges)]
    hb = CoalescedHeartbeats.build(
        range_ids=[r[0] for r in rows], frm=[r[1] for r in rows], to=[r[2] for r in rows],
        terms=[r[3] for r in rows], commits=[r[4] for r in rows], flags=[r[5] for r in rows])
    ours = encode_heartbeats(hb)
    assert CODEC.decode(ours) == hb
    # msgpack baseline 1: the natural encoding, one [range, from, to, term, commit, flags] row
    # per range. Baseline 2: msgpack of the same six columns (the best msgpack can do).
    as_rows = msgpack.packb(rows)
    columns = [list(c) for c in zip(*rows, strict=True)]
    as_cols = msgpack.packb(columns)
    n = 5
    ours_us = best_us(lambda: CODEC.decode(encode_heartbeats(hb)), n)
    rows_us = best_us(lambda: msgpack.unpackb(msgpack.packb(rows)), n)
    cols_us = best_us(lambda: msgpack.unpackb(msgpack.packb(columns)), n)
    return {
        "heartbeat10k_us": round(ours_us, 1), "heartbeat10k_bytes": len(ours),
        "msgpack_rows_heartbeat10k_us": round(rows_us, 1),
        "msgpack_rows_heartbeat10k_bytes": len(as_rows),
        "msgpack_cols_heartbeat10k_us": round(cols_us, 1),
        "msgpack_cols_heartbeat10k_bytes": len(as_cols),
        "heartbeat10k_ratio_vs_rows": round(rows_us / ours_us, 2),
        "heartbeat10k_ratio_vs_cols": round(cols_us / ours_us, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entry-bytes", type=int, default=128)
    parser.add_argument("--ranges", type=int, default=10_000)
    parser.add_argument("--profile", action="store_true", help="print a cProfile headline")
    args = parser.parse_args()
    if args.profile:
        item = append_message(args.entry_bytes)
        enc = encode_raft_batch([item])
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(3000):
            CODEC.decode_raft_batch(encode_raft_batch([item]))
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(8)
        print(out.getvalue(), file=sys.stderr)
        del enc
    figures: dict[str, Any] = {"bench": "codec", "entry_bytes": args.entry_bytes,
                               "ranges": args.ranges}
    figures.update(bench_append(args.entry_bytes))
    figures.update(bench_heartbeat(args.ranges))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
