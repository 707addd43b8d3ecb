"""A real admin server on 127.0.0.1 in a background thread (tests of the CLI
and the Locust HttpUser): its own event loop, an ephemeral port, clean stop."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

from aiohttp import web

from engine.admin import LocalBackend, NodeMetrics, create_admin_app


class AdminServerThread:
    """``with AdminServerThread() as srv: srv.address`` -> "127.0.0.1:PORT"."""

    def __init__(self, backend: LocalBackend | None = None) -> None:
        self.backend = backend or LocalBackend(node_id=1)
        self.metrics = NodeMetrics(node_id=1)
        self.loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0

    async def _start(self) -> None:
        self._runner = web.AppRunner(create_admin_app(self.backend, self.metrics))
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> AdminServerThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=10)
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()
