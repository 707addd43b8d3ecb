"""The asyncio RESP2 server: connections, pipelining, back-pressure.

Theory of operation
-------------------
Each connection is an ``asyncio.Protocol`` (no task per connection, so an
idle client costs a socket and a parser, nothing on the loop). On every
read the received bytes go into the connection's ``RespParser``; if no batch
is executing, all complete commands are parsed at once (up to
``max_batch``) and become *plans* (``engine.resp.commands``):

- if none needs the backend (PING, errors, INFO...), the replies are written
  right away, synchronously;
- otherwise one task runs the batch: one ``execute_many`` call for all of
  its backend commands, then all replies of the batch, immediate ones in
  their places, go out **in request order in one write**.

While a batch executes, further bytes only accumulate in the parser; they
are parsed when the batch is done. So replies are always in order, and one
slow command delays only its own connection.

Back-pressure, both directions:

- *writing*: when the transport's write buffer passes its high-water mark
  (a client that does not read its replies), ``pause_writing`` makes the
  connection stop reading and stop starting batches until
  ``resume_writing``. The kernel's receive buffer then fills and TCP flow
  control stops the client; other connections never wait on it.
- *reading*: while a batch executes, more than ``max_pending_bytes`` of
  unparsed input pauses reading.

Protocol version: every connection starts in RESP2; ``HELLO 3`` switches
it to RESP3 for the commands after it (even within the same pipeline),
``HELLO 2`` back. The per-connection ``CommandContext`` carries the choice.

Errors: a command the parser rejects for size, or that the command table
refuses, gets ``-ERR`` and the connection goes on. Broken framing
(``ProtocolError``) gets ``-ERR Protocol error: ...`` after the replies of
the commands before it, and the connection is closed: the next command
boundary cannot be found. ``QUIT`` replies ``+OK`` and closes. A backend
exception that is not a ``ClientError`` is a bug: it is logged, the batch's
commands get ``-ERR internal error``, and the connection survives.
A connection lost mid-batch lets its batch finish (the commands may already
be proposed; cancelling would not un-propose them) and drops the replies.

Metrics: backend commands are reported to the optional ``RequestObserver``
once per batch and (command, outcome) — count and the batch's latency, from
parsing to the reply write — never per command on the hot path.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, cast

from engine.client_errors import ClientError, Timeout, TryAgain
from engine.kv_codec import Error, Result
from engine.resp.backend import FastKVBackend, KVBackend, Outcome
from engine.resp.commands import (
    Call,
    CommandContext,
    Immediate,
    Plan,
    UnexpectedResult,
    plan_command,
    reply_for,
)
from engine.resp.limits import Limits
from engine.resp.protocol import ProtocolError, Rejected, RespParser, encode_error

__all__ = ["RequestObserver", "RespServer", "ServerStats"]

log = logging.getLogger(__name__)

_INTERNAL = encode_error("ERR", "internal error")


class RequestObserver(Protocol):
    """Where the server reports its backend commands (``NodeMetrics`` is one)."""

    def observe_requests(self, command: str, outcome: str, count: int, seconds: float) -> None:
        """``count`` commands named ``command`` of one batch ended in ``outcome``
        (ok, err, tryagain, timeout) ``seconds`` after the batch was parsed."""
        ...


@dataclass(slots=True)
class ServerStats:
    """Counters shown by INFO (and, later, exported as metrics)."""

    connections: int = 0
    total_connections: int = 0
    rejected_connections: int = 0
    commands: int = 0
    protocol_errors: int = 0
    started: float = field(default_factory=time.monotonic)


class RespServer:
    """A RESP2 server over ``backend``; ``start`` binds, ``close`` stops."""

    def __init__(
        self,
        backend: KVBackend,
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        limits: Limits | None = None,
        observer: RequestObserver | None = None,
    ) -> None:
        self._backend = backend
        #: The backend's future-returning single-command path, if it has one.
        self._fast = backend.execute_fast if isinstance(backend, FastKVBackend) else None
        self.observer = observer
        self._host = host
        self._port = port
        self.limits = limits or Limits()
        self.stats = ServerStats()
        self._ctx = CommandContext(self.limits, self._info)
        # Invariant: _server is set between start() and close().
        self._server: asyncio.Server | None = None
        # Invariant: holds exactly the connections made and not yet lost.
        self._connections: set[_Connection] = set()

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); after ``start`` a port of 0 is the real one."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("server not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self._host, self._port, reuse_address=True
        )
        return self.address

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting, let batches in flight finish (up to ``grace`` s), close all."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        pending = [c.task for c in self._connections if c.task is not None]
        if pending:
            await asyncio.wait(pending, timeout=grace)
        for conn in list(self._connections):
            conn.close()
        await server.wait_closed()

    # --- connection callbacks ------------------------------------------------------------

    def _connected(self, conn: _Connection) -> bool:
        """Admit ``conn``; False (refused) once ``max_clients`` are connected."""
        if len(self._connections) >= self.limits.max_clients:
            self.stats.rejected_connections += 1
            return False
        self._connections.add(conn)
        self.stats.connections += 1
        self.stats.total_connections += 1
        return True

    def _disconnected(self, conn: _Connection) -> None:
        if conn in self._connections:
            self._connections.remove(conn)
            self.stats.connections -= 1

    def _info(self) -> str:
        s = self.stats
        lines = [
            "# Server",
            "redis_version:7.0.0",
            "multiraft_version:0.1.0",
            "redis_mode:standalone",
            f"uptime_in_seconds:{int(time.monotonic() - s.started)}",
            "# Clients",
            f"connected_clients:{s.connections}",
            "# Stats",
            f"total_connections_received:{s.total_connections}",
            f"rejected_connections:{s.rejected_connections}",
            f"total_commands_processed:{s.commands}",
            f"protocol_errors:{s.protocol_errors}",
            "# Limits",
            f"max_key_bytes:{self.limits.max_key_bytes}",
            f"max_value_bytes:{self.limits.max_value_bytes}",
            f"max_request_bytes:{self.limits.max_request_bytes}",
            f"max_args:{self.limits.max_args}",
        ]
        return "\r\n".join(lines) + "\r\n"


class _Connection(asyncio.Protocol):
    """One client connection (see the module docstring)."""

    def __init__(self, server: RespServer) -> None:
        self._server = server
        self._limits = server.limits
        self._parser = RespParser(server.limits)
        # Invariant: _ctx.resp3 iff the client's last successful HELLO asked for 3.
        self._ctx = server._ctx
        self._transport: asyncio.Transport | None = None
        # Invariant: task is the running batch, or None; at most one per connection.
        self.task: asyncio.Future[Any] | None = None
        # Invariant: _write_paused between pause_writing and resume_writing.
        self._write_paused = False
        # Invariant: _read_paused iff transport.pause_reading() is in effect (set by
        # pause_writing or too much pending input; cleared when a batch ends or writing resumes).
        self._read_paused = False
        # Invariant: once _closing, nothing more is parsed or written.
        self._closing = False
        # Invariant: _eof once the client half-closed; we close after the last reply.
        self._eof = False

    # --- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        if not self._server._connected(self):
            self._closing = True
            self._transport.write(b"-ERR max number of clients reached\r\n")
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._server._disconnected(self)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._parser.feed(data)
        if self.task is None and not self._write_paused:
            self._serve()
        elif not self._read_paused and self._parser.buffered > self._limits.max_pending_bytes:
            self._pause_reading()

    def eof_received(self) -> bool | None:
        # Half-close: what the client sent must still be answered, so keep the
        # transport open (True); _serve closes it once nothing is left to do.
        self._eof = True
        if self.task is None and not self._write_paused:
            self._serve()
        return True

    def pause_writing(self) -> None:
        self._write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.task is None and not self._closing:
            self._resume_reading()
            self._serve()

    # --- serving --------------------------------------------------------------------------

    def close(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def _pause_reading(self) -> None:
        if not self._read_paused and self._transport is not None:
            self._read_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._read_paused and self._transport is not None and not self._closing:
            self._read_paused = False
            self._transport.resume_reading()

    def _serve(self) -> None:
        """Answer complete commands until a batch needs the backend, the input
        runs out, or the client stops reading."""
        while not self._closing and not self._write_paused:
            plans, fatal = self._parse_batch()
            if not plans and fatal is None:
                break
            if any(type(p) is Call for p in plans):
                fast = self._server._fast
                if fast is not None and len(plans) == 1:
                    # One command (the unpipelined client): a future and a callback,
                    # no task or coroutine chain per request.
                    call = cast(Call, plans[0])
                    self.task = fut = fast(call.cmd)
                    fut.add_done_callback(functools.partial(
                        self._one_done, call, plans, fatal, time.perf_counter()))
                    return
                self.task = asyncio.get_running_loop().create_task(
                    self._run(plans, fatal, time.perf_counter()))
                return
            self._send([p.reply for p in plans if type(p) is Immediate], plans, fatal)
        if self._eof and self.task is None and not self._write_paused:
            self.close()  # the client half-closed and everything it sent is answered

    def _parse_batch(self) -> tuple[list[Plan], ProtocolError | None]:
        parser, ctx = self._parser, self._ctx
        plans: list[Plan] = []
        for _ in range(self._limits.max_batch):
            try:
                args = parser.next_command()
            except ProtocolError as e:
                return plans, e
            if args is None:
                break
            if type(args) is Rejected:
                plans.append(Immediate(encode_error("ERR", args.message)))
                continue
            assert isinstance(args, list)
            plan = plan_command(args, ctx)
            plans.append(plan)
            if type(plan) is Immediate:
                if plan.close:
                    break  # QUIT: whatever follows it is never answered
                if plan.protocol:  # HELLO: the commands after it use its protocol
                    ctx = self._ctx = replace(ctx, resp3=plan.protocol == 3)
        self._server.stats.commands += len(plans)
        return plans, None

    async def _run(self, plans: list[Plan], fatal: ProtocolError | None,
                   started: float) -> None:
        try:
            calls = [p for p in plans if type(p) is Call]
            outcomes = await self._execute(calls)
            self._finish(plans, calls, outcomes, fatal, started)
        finally:
            self.task = None
        self._next()

    def _one_done(self, call: Call, plans: list[Plan], fatal: ProtocolError | None,
                  started: float, fut: asyncio.Future[Result]) -> None:
        """The fast path's batch of one command ended."""
        self.task = None
        outcome: Outcome | None = None
        if not fut.cancelled():
            exc = fut.exception()
            if exc is None:
                outcome = fut.result()
            elif isinstance(exc, ClientError):
                outcome = exc
            else:
                log.error("backend failed on %r", call.cmd, exc_info=exc)
        self._finish(plans, [call], [outcome], fatal, started)
        self._next()

    def _finish(self, plans: list[Plan], calls: list[Call], outcomes: list[Outcome | None],
                fatal: ProtocolError | None, started: float) -> None:
        """Report the batch, then write all its replies in request order."""
        self._observe(calls, outcomes, started)
        replies: list[bytes] = []
        it = iter(zip(calls, outcomes, strict=True))
        for plan in plans:
            if type(plan) is Immediate:
                replies.append(plan.reply)
                continue
            call, outcome = next(it)
            if outcome is None:
                replies.append(_INTERNAL)
                continue
            try:
                replies.append(reply_for(call, outcome))
            except UnexpectedResult as e:
                log.error("backend returned %r for %r", e.args[0], call.cmd)
                replies.append(_INTERNAL)
        self._send(replies, plans, fatal)

    def _next(self) -> None:
        """A batch ended: go on with what the client sent meanwhile."""
        if not self._closing and not self._write_paused:
            self._resume_reading()
            self._serve()

    async def _execute(self, calls: list[Call]) -> list[Outcome | None]:
        """One outcome per call; None where the backend failed with a bug."""
        backend = self._server._backend
        try:
            if len(calls) == 1:  # the common unpipelined case skips the batch lists
                return [await backend.execute(calls[0].cmd)]
            outcomes: list[Outcome | None] = list(
                await backend.execute_many([c.cmd for c in calls])
            )
        except ClientError as e:
            return [e] * len(calls)
        except Exception:
            log.exception("backend failed on a batch of %d commands", len(calls))
            return [None] * len(calls)
        if len(outcomes) != len(calls):
            log.error("backend returned %d outcomes for %d commands", len(outcomes), len(calls))
            return [None] * len(calls)
        return outcomes

    def _observe(self, calls: list[Call], outcomes: list[Outcome | None],
                 started: float) -> None:
        """Report the batch: one observation per (command, outcome) it contains."""
        observer = self._server.observer
        if observer is None:
            return
        seconds = time.perf_counter() - started
        if len(calls) == 1:
            observer.observe_requests(calls[0].name, _outcome_label(outcomes[0]), 1, seconds)
            return
        counts: dict[tuple[str, str], int] = {}
        for call, outcome in zip(calls, outcomes, strict=True):
            key = (call.name, _outcome_label(outcome))
            counts[key] = counts.get(key, 0) + 1
        for (name, label), n in counts.items():
            observer.observe_requests(name, label, n, seconds)

    def _send(self, replies: list[bytes], plans: list[Plan], fatal: ProtocolError | None) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        last = plans[-1] if plans else None
        close = type(last) is Immediate and last.close
        if fatal is not None:
            self._server.stats.protocol_errors += 1
            replies.append(encode_error("ERR", f"Protocol error: {fatal}"))
            close = True
        if replies:
            transport.write(b"".join(replies))
        if close:
            self.close()



def _outcome_label(outcome: Outcome | None) -> str:
    """The metrics outcome of one command: ok, err (refused, bad request, or a
    backend bug), tryagain, timeout."""
    if isinstance(outcome, TryAgain):
        return "tryagain"
    if isinstance(outcome, Timeout):
        return "timeout"
    if outcome is None or isinstance(outcome, (ClientError, Error)):
        return "err"
    return "ok"
