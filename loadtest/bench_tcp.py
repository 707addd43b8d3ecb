"""TCP benchmark: messages/s and MB/s between two processes over loopback.

Prints ONE JSON line. A receiver process runs a ``PeerTransport`` (uvloop);
the sending process pushes ``--count`` payloads of ``--size`` bytes to it
twice, in the same run:

- ``batched``: through ``PeerTransport.send`` — everything queued in one loop
  iteration leaves as one DATA frame (write coalescing);
- ``unbatched`` (baseline): the same handshake and frame format, but one
  frame and one ``write`` per message, as a transport without coalescing
  would do.

The sender paces itself on ``pending_bytes``/``drain`` so nothing is dropped;
a run ends when the receiver has counted every payload. ``ratio`` =
batched / unbatched messages per second.

    python3 loadtest/bench_tcp.py [--count 200000] [--size 128] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import multiprocessing as mp
import pstats
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transport.frame import (
    FrameKind,
    FrameReader,
    encode_frame,
    frame_header,
    pack_data_body,
)
from transport.tcp import PeerTransport, TcpConfig
from transport.tcp_handshake import Hello, encode_hello

CLUSTER = "bench"
BURST = 1000  # payloads handed to send() per loop iteration (a busy node's tick)


def receiver(conn: Connection) -> None:
    """Count payloads; on each ("expect", n) from the parent, answer once n have arrived."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        state = {"count": 0, "target": -1}
        done: asyncio.Future[None] = loop.create_future()

        def on_payload(_node: int, _payload: memoryview) -> None:
            state["count"] += 1
            if state["count"] == state["target"] and not done.done():
                done.set_result(None)

        transport = PeerTransport(TcpConfig(2, CLUSTER, max_frame_body=8 << 20), on_payload)
        conn.send(await transport.start())
        while True:
            msg = await loop.run_in_executor(None, conn.recv)
            if msg[0] == "stop":
                break
            state["count"], state["target"] = 0, msg[1]
            done = loop.create_future()
            conn.send(("ready",))
            await done
            conn.send(("done", transport.totals().frames_received))
        await transport.close()

    uvloop.run(main())


async def wait_done(conn: Connection) -> None:
    """Wait (without blocking the loop, which must keep flushing) for the receiver's done."""
    await asyncio.get_running_loop().run_in_executor(None, conn.recv)


async def run_batched(conn: Connection, addr: tuple[str, int], payload: bytes,
                      count: int) -> dict[str, Any]:
    transport = PeerTransport(
        TcpConfig(1, CLUSTER, peers={2: addr}, max_queue_bytes=64 << 20), lambda n, p: None
    )
    await transport.start()
    transport.send(2, payload)  # connect + handshake outside the timed part
    while not transport.is_connected(2) or transport.pending_bytes(2):
        await asyncio.sleep(0.001)
    t0 = time.perf_counter()
    sent = 1
    while sent < count:
        for _ in range(min(BURST, count - sent)):
            transport.send(2, payload)
        sent += BURST
        await asyncio.sleep(0)
        while transport.pending_bytes(2) > 32 << 20:
            await asyncio.sleep(0.0005)
    await wait_done(conn)
    elapsed = time.perf_counter() - t0
    stats = transport.stats()[2]
    await transport.close()
    return {"elapsed": elapsed, "frames": stats.frames_sent, "dropped": stats.dropped_payloads}


async def run_unbatched(conn: Connection, addr: tuple[str, int], payload: bytes,
                        count: int) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection(*addr)
    writer.write(encode_frame(FrameKind.HELLO, encode_hello(Hello(1, 2, CLUSTER, 1, 1, 8 << 20))))
    frames = FrameReader()
    while frames.next_frame() is None:
        frames.feed(await reader.read(4096))
    t0 = time.perf_counter()
    for i in range(count):
        body = pack_data_body([payload])
        writer.write(frame_header(FrameKind.DATA, body) + body)
        if i % 256 == 255:
            await writer.drain()
    await writer.drain()
    await wait_done(conn)
    elapsed = time.perf_counter() - t0
    writer.close()
    return {"elapsed": elapsed, "frames": count, "dropped": 0}


def measure(mode: str, conn: Connection, addr: tuple[str, int], payload: bytes,
            count: int) -> dict[str, Any]:
    conn.send(("expect", count))
    conn.recv()  # ("ready",): the receiver counts from zero before anything is sent
    runner = run_batched if mode == "batched" else run_unbatched
    result = uvloop.run(runner(conn, addr, payload, count))
    elapsed = result["elapsed"]
    return {
        f"{mode}_msgs_per_s": round(count / elapsed),
        f"{mode}_mb_per_s": round(count * len(payload) / elapsed / 1e6, 1),
        f"{mode}_frames": result["frames"],
        f"{mode}_dropped": result["dropped"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the batched sender; headline on stderr")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=receiver, args=(child,), daemon=True)
    proc.start()
    host, port = parent.recv()
    addr = (str(host), int(port))
    payload = bytes(range(256)) * (args.size // 256) + bytes(args.size % 256)
    figures: dict[str, Any] = {"bench": "tcp", "count": args.count, "size": args.size,
                               "burst": BURST}
    try:
        prof = cProfile.Profile() if args.profile else None
        if prof:
            prof.enable()
        figures.update(measure("batched", parent, addr, payload, args.count))
        if prof:
            prof.disable()
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(10)
            print(out.getvalue(), file=sys.stderr)
        figures.update(measure("unbatched", parent, addr, payload, args.count))
    finally:
        parent.send(("stop",))
        proc.join(10)
    figures["ratio_msgs"] = round(figures["batched_msgs_per_s"] / figures["unbatched_msgs_per_s"],
                                  2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
