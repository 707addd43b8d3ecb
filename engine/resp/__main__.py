"""``python -m engine.resp [--host H] [--port P]``: a RESP server over a local,
in-memory KV state machine (no raft). For trying clients against the
protocol layer and for ``loadtest/bench_resp.py``. Prints
``listening on HOST:PORT`` once bound (port 0 picks a free port), and serves
until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

import uvloop

from engine.resp.local_backend import LocalBackend
from engine.resp.server import RespServer


async def _serve(host: str, port: int) -> None:
    server = RespServer(LocalBackend(), host=host, port=port)
    bound_host, bound_port = await server.start()
    print(f"listening on {bound_host}:{bound_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m engine.resp", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6379)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
