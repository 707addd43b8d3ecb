"""engine.resp.server: real sockets on 127.0.0.1, redis-py (asyncio) and raw bytes."""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aredis
from redis.exceptions import ResponseError

from engine.client_errors import Timeout, TryAgain
from engine.kv_codec import Command, Result
from engine.resp.backend import Outcome
from engine.resp.limits import Limits
from engine.resp.local_backend import LocalBackend
from engine.resp.server import RespServer

Body = Callable[[RespServer, int], Awaitable[None]]


def serve(body: Body, *, limits: Limits | None = None, backend: object = None) -> None:
    """Run ``body(server, port)`` against a started server, then close it."""

    async def main() -> None:
        server = RespServer(backend or LocalBackend(), port=0, limits=limits)  # type: ignore[arg-type]
        _, port = await server.start()
        try:
            await body(server, port)
        finally:
            await server.close(grace=1.0)

    asyncio.run(main())


async def raw(port: int, data: bytes, *, expect: int | None = None) -> bytes:
    """Send ``data`` on a fresh socket; read until ``expect`` bytes or EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    out = b""
    while expect is None or len(out) < expect:
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        if not chunk:
            break
        out += chunk
    writer.close()
    return out


@pytest.mark.timeout(20)
@pytest.mark.parametrize("protocol", [2, 3])
def test_every_contract_command_through_redis_py(protocol: int) -> None:
    async def body(server: RespServer, port: int) -> None:
        # redis-py 8 opens with HELLO <protocol> (3 by default) and CLIENT
        # SETINFO (unknown here: -ERR); neither may break the connection.
        r = aredis.Redis(port=port, protocol=protocol)
        assert await r.ping() is True
        assert await r.set("k", "v") is True
        assert await r.get("k") == b"v"
        assert await r.get("missing") is None
        assert await r.set("k", "w", nx=True) is None
        assert await r.set("new", "1", nx=True) is True
        assert await r.set("k", "x", xx=True) is True
        assert await r.set("nope", "x", xx=True) is None
        assert await r.exists("k", "new", "nope") == 2
        assert await r.mset({"a": "1", "b": "2", "c": "3"}) is True
        assert await r.mget("a", "zz", "c") == [b"1", None, b"3"]
        assert await r.incr("counter") == 1
        assert await r.incrby("counter", 41) == 42
        with pytest.raises(ResponseError, match="not an integer"):
            await r.incr("k")
        assert await r.execute_command("CAS", "a", "1", "one") == 1
        assert await r.execute_command("CAS", "a", "1", "uno") == 0
        assert await r.execute_command("CAS", "ghost", "", "x") == 0
        assert await r.get("a") == b"one"
        assert await r.execute_command("RANGE", "a", "c") == [b"a", b"one", b"b", b"2"]
        assert await r.execute_command("RANGE", "b", "", "LIMIT", "2") == [
            b"b", b"2", b"c", b"3"
        ]
        assert await r.dbsize() == 6  # k new a b c counter
        assert await r.delete("a", "b", "zz") == 2
        assert await r.dbsize() == 4
        info = await r.info()
        assert info["connected_clients"] >= 1 and "redis_version" in info
        with pytest.raises(ResponseError, match="unknown command 'CONFIG'"):
            await r.config_get("save")
        with pytest.raises(ResponseError, match="wrong number of arguments for 'get'"):
            await r.execute_command("GET")
        assert await r.get("k") == b"x"  # the connection survived every error
        await r.aclose()

    serve(body)


@pytest.mark.timeout(20)
def test_quit_replies_ok_then_closes() -> None:
    async def body(server: RespServer, port: int) -> None:
        out = await raw(port, b"PING\r\nQUIT\r\nPING\r\n")
        assert out == b"+PONG\r\n+OK\r\n"

    serve(body)


@pytest.mark.timeout(20)
def test_pipeline_of_1000_commands_replies_in_order() -> None:
    async def body(server: RespServer, port: int) -> None:
        r = aredis.Redis(port=port, protocol=2)
        async with r.pipeline(transaction=False) as pipe:
            for i in range(500):
                pipe.set(f"key{i}", str(i))
                pipe.incr(f"n{i % 7}")
            results = await pipe.execute()
        assert len(results) == 1000
        assert results[0::2] == [True] * 500
        counts = [0] * 7
        for i, got in enumerate(results[1::2]):
            counts[i % 7] += 1
            assert got == counts[i % 7]
        assert await r.get("key499") == b"499"
        await r.aclose()

    serve(body)


@pytest.mark.timeout(20)
def test_raw_pipeline_is_answered_in_one_batch_in_order() -> None:
    async def body(server: RespServer, port: int) -> None:
        reqs = b"".join(b"SET k%d %d\r\nGET k%d\r\n" % (i, i, i) for i in range(300))
        expected = b"".join(b"+OK\r\n$%d\r\n%d\r\n" % (len(str(i)), i) for i in range(300))
        assert await raw(port, reqs, expect=len(expected)) == expected

    serve(body)


@pytest.mark.timeout(20)
def test_garbage_gets_an_error_and_never_hurts_other_clients() -> None:
    async def body(server: RespServer, port: int) -> None:
        r = aredis.Redis(port=port, protocol=2)
        await r.set("safe", "1")
        # Binary junk on an inline line: an unknown command, connection stays.
        out = await raw(port, b"\x00\xff\xfe junk\r\nPING\r\n", expect=1)
        assert out.startswith(b"-ERR unknown command") and out.endswith(b"+PONG\r\n")
        # Broken framing: replies to what came before, then a protocol error, then EOF.
        out = await raw(port, b"PING\r\n*2\r\n$3\r\nGET\r\n:1\r\nPING\r\n")
        assert out == b"+PONG\r\n-ERR Protocol error: expected '$', got ':'\r\n"
        out = await raw(port, b"*1\r\n$-5\r\n")
        assert out.startswith(b"-ERR Protocol error")
        assert await r.get("safe") == b"1"
        assert server.stats.protocol_errors == 2
        await r.aclose()

    serve(body)


@pytest.mark.timeout(20)
def test_oversized_value_and_key_get_err_and_connection_survives() -> None:
    limits = Limits(max_key_bytes=64, max_value_bytes=1024)

    async def body(server: RespServer, port: int) -> None:
        r = aredis.Redis(port=port, protocol=2)
        with pytest.raises(ResponseError, match="exceeds the limit of 1024 bytes"):
            await r.set("k", "v" * 200_000)
        with pytest.raises(ResponseError, match="key of 65 bytes"):
            await r.set("k" * 65, "v")
        assert await r.set("k", "v" * 1024) is True
        assert await r.get("k") == b"v" * 1024
        await r.aclose()

    serve(body, limits=limits)


@pytest.mark.timeout(30)
def test_slow_client_that_does_not_read_does_not_block_others() -> None:
    async def body(server: RespServer, port: int) -> None:
        r = aredis.Redis(port=port, protocol=2)
        await r.set("big", "x" * 100_000)
        # The slow client floods GETs of a large value and never reads a reply.
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        flood = b"GET big\r\n" * 2000  # ~200 MB of replies if it were all answered
        writer.write(flood)
        await asyncio.sleep(0.3)
        for i in range(50):
            assert await asyncio.wait_for(r.incr("fast"), 2) == i + 1
        conn = next(iter(c for c in server._connections if c._write_paused))
        assert conn._read_paused  # back-pressure reached the slow client's socket
        writer.transport.abort()
        await r.aclose()

    serve(body)


class _FailingBackend:
    """A backend whose every command ends in the given error."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def execute(self, cmd: Command, *, stale: bool = False) -> Result:
        raise self.error

    async def execute_many(self, cmds: list[Command], *, stale: bool = False) -> list[Outcome]:
        raise self.error


#: A backend error and the reply line a client must see for it.
BACKEND_ERRORS = [
    (TryAgain("no leader for range 3"), b"-TRYAGAIN no leader for range 3\r\n"),
    (Timeout("commit not observed"), b"-TIMEOUT commit not observed\r\n"),
    (RuntimeError("bug"), b"-ERR internal error\r\n"),
]


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("error", "reply"), BACKEND_ERRORS)
def test_backend_errors_become_their_error_kind(error: Exception, reply: bytes) -> None:
    async def body(server: RespServer, port: int) -> None:
        out = await raw(port, b"GET k\r\n", expect=len(reply))
        assert out == reply
        out = await raw(port, b"GET k\r\nSET k v\r\nPING\r\n", expect=2 * len(reply) + 7)
        assert out == reply * 2 + b"+PONG\r\n"

    serve(body, backend=_FailingBackend(error))


@pytest.mark.timeout(20)
def test_idle_connections_hold_no_tasks() -> None:
    async def body(server: RespServer, port: int) -> None:
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(50)]
        await asyncio.sleep(0.05)
        assert server.stats.connections == 50
        assert all(c.task is None for c in server._connections)
        for _, w in conns:
            w.close()

    serve(body)


@pytest.mark.timeout(60)
@pytest.mark.skipif(shutil.which("redis-benchmark") is None, reason="redis-tools not installed")
def test_redis_benchmark_and_redis_cli_work_against_it() -> None:
    async def body(server: RespServer, port: int) -> None:
        cli = await asyncio.create_subprocess_exec(
            "redis-cli", "-p", str(port), "SET", "hello", "world",
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await cli.communicate()
        assert out.strip() == b"OK"
        bench = await asyncio.create_subprocess_exec(
            "redis-benchmark", "-p", str(port), "-t", "set,get", "-n", "2000", "-q",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(bench.communicate(), 50)
        text = out.decode(errors="replace")
        assert bench.returncode == 0, text
        assert "SET:" in text and "GET:" in text and "requests per second" in text, text
        assert "Error" not in text.replace("WARNING: Could not fetch server CONFIG", ""), text

    serve(body)


@pytest.mark.timeout(20)
def test_connection_lost_mid_batch_is_harmless() -> None:
    async def body(server: RespServer, port: int) -> None:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"SET a 1\r\n" * 500)
        writer.transport.abort()
        await asyncio.sleep(0.1)
        r = aredis.Redis(port=port, protocol=2)
        assert await r.ping()
        assert server.stats.connections == 1
        await r.aclose()

    serve(body)


@pytest.mark.timeout(20)
def test_hello_switches_between_resp2_and_resp3_nulls() -> None:
    async def body(server: RespServer, port: int) -> None:
        req = b"GET nope\r\nHELLO 3\r\nGET nope\r\nMGET nope\r\nHELLO 2\r\nGET nope\r\n"
        out = await raw(port, req + b"QUIT\r\n")
        assert out.startswith(b"$-1\r\n%7\r\n$6\r\nserver\r\n")
        assert b"proto\r\n:3\r\n" in out and b"proto\r\n:2\r\n" in out
        marker = b"modules\r\n*0\r\n"
        after3 = out[out.index(marker) + len(marker) :]
        assert after3.startswith(b"_\r\n*1\r\n_\r\n*14\r\n")
        assert out.endswith(b"$-1\r\n+OK\r\n")
        want = b"-NOPROTO unsupported protocol version\r\n+PONG\r\n"
        assert await raw(port, b"HELLO 4\r\nPING\r\n", expect=len(want)) == want

    serve(body)


@pytest.mark.timeout(20)
def test_half_closed_client_gets_every_reply_then_eof() -> None:
    async def body(server: RespServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PING\r\nSET a 1\r\nGET a\r\n")
        writer.write_eof()
        out = await asyncio.wait_for(reader.read(), 5)  # until EOF: the server closed
        assert out == b"+PONG\r\n+OK\r\n$1\r\n1\r\n"
        writer.close()

    serve(body)


class _GatedBackend(LocalBackend):
    """A LocalBackend whose batches wait for ``gate``: a slow leader."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def execute(self, cmd: Command, *, stale: bool = False) -> Result:
        await self.gate.wait()
        return await super().execute(cmd, stale=stale)

    async def execute_many(self, cmds: list[Command], *, stale: bool = False) -> list[Outcome]:
        await self.gate.wait()
        return await super().execute_many(cmds, stale=stale)


@pytest.mark.timeout(20)
def test_input_piling_up_behind_a_slow_batch_pauses_reading_then_all_is_answered() -> None:
    backend = _GatedBackend()

    async def body(server: RespServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"INCR n\r\n")
        await asyncio.sleep(0.05)  # the first batch is now waiting on the gate
        writer.write(b"INCR n\r\n" * 20_000)  # 160 kB > max_pending_bytes
        await asyncio.sleep(0.2)
        (conn,) = server._connections
        assert conn.task is not None and conn._read_paused
        other = aredis.Redis(port=port, protocol=2)
        assert await other.ping()  # PING needs no backend: not blocked by the gate
        backend.gate.set()
        want = b"".join(b":%d\r\n" % i for i in range(1, 20_002))
        got = await asyncio.wait_for(reader.readexactly(len(want)), 10)
        assert got == want
        writer.close()
        await other.aclose()

    serve(body, backend=backend, limits=Limits(max_pending_bytes=64 * 1024))


class _MixedBackend(LocalBackend):
    """Refuses every command on key ``busy`` with TryAgain, per command."""

    async def execute_many(self, cmds: list[Command], *, stale: bool = False) -> list[Outcome]:
        out = await super().execute_many(cmds, stale=stale)
        return [
            TryAgain("range moving") if getattr(c, "key", None) == b"busy" else o
            for c, o in zip(cmds, out, strict=True)
        ]


@pytest.mark.timeout(20)
def test_one_failing_command_does_not_fail_its_pipeline_neighbours() -> None:
    async def body(server: RespServer, port: int) -> None:
        want = b"+OK\r\n-TRYAGAIN range moving\r\n$1\r\n1\r\n"
        got = await raw(port, b"SET a 1\r\nGET busy\r\nGET a\r\n", expect=len(want))
        assert got == want

    serve(body, backend=_MixedBackend())


@pytest.mark.timeout(20)
def test_close_lets_a_batch_in_flight_answer_first() -> None:
    backend = _GatedBackend()

    async def main() -> None:
        server = RespServer(backend, port=0)
        _, port = await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"SET a 1\r\n")
        await asyncio.sleep(0.05)
        closing = asyncio.ensure_future(server.close(grace=5.0))
        await asyncio.sleep(0.05)
        backend.gate.set()
        await asyncio.wait_for(closing, 5)
        assert await asyncio.wait_for(reader.read(), 5) == b"+OK\r\n"
        writer.close()

    asyncio.run(main())


@pytest.mark.timeout(30)
def test_python_m_engine_resp_serves_until_sigterm() -> None:
    async def main() -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "engine.resp", "--port", "0",
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        port = int(line.decode().rsplit(":", 1)[1])
        r = aredis.Redis(port=port)  # redis-py's default: HELLO 3
        assert await r.set("k", "v") and await r.get("k") == b"v"
        assert await r.get("missing") is None
        await r.aclose()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0

    asyncio.run(main())


class _FastLocal(LocalBackend):
    """A LocalBackend with the future-returning path the router has."""

    def execute_fast(self, cmd: Command) -> asyncio.Future[Result]:
        return asyncio.ensure_future(self.execute(cmd))


class _FastFailing(_FailingBackend):
    def execute_fast(self, cmd: Command) -> asyncio.Future[Result]:
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        fut.set_exception(self.error)
        return fut


@pytest.mark.timeout(20)
def test_fast_path_backend_serves_single_commands_and_pipelines_alike() -> None:
    async def body(server: RespServer, port: int) -> None:
        assert server._fast is not None
        r = aredis.Redis(port=port, protocol=2)
        assert await r.set("k", "v") is True
        assert await r.get("k") == b"v"
        assert await r.incr("n") == 1
        async with r.pipeline(transaction=False) as p:
            p.set("a", "1").get("a").incr("n").get("missing")
            assert await p.execute() == [True, b"1", 2, None]
        await r.aclose()

    serve(body, backend=_FastLocal())


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("error", "reply"), BACKEND_ERRORS)
def test_fast_path_errors_become_their_error_kind(error: Exception, reply: bytes) -> None:
    async def body(server: RespServer, port: int) -> None:
        assert await raw(port, b"GET k\r\n", expect=len(reply)) == reply
        out = await raw(port, b"GET k\r\nGET k\r\nPING\r\n", expect=2 * len(reply) + 7)
        assert out == reply * 2 + b"+PONG\r\n"

    serve(body, backend=_FastFailing(error))


class _Observer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []

    def observe_requests(self, command: str, outcome: str, count: int, seconds: float) -> None:
        assert seconds >= 0
        self.calls.append((command, outcome, count))


@pytest.mark.timeout(20)
def test_requests_are_observed_once_per_batch_and_outcome() -> None:
    observer = _Observer()

    async def main() -> None:
        server = RespServer(_FastLocal(), port=0, observer=observer)
        _, port = await server.start()
        try:
            await raw(port, b"SET a 1\r\n", expect=5)
            await raw(port, b"GET a\r\nGET b\r\nSET c 2\r\nINCR a\r\nINCR c\r\nPING\r\n",
                      expect=7 + 5 + 5 + 4 + 4 + 7)
        finally:
            await server.close(grace=1.0)

    asyncio.run(main())
    assert observer.calls[0] == ("SET", "ok", 1)
    assert sorted(observer.calls[1:]) == [("GET", "ok", 2), ("INCR", "ok", 2), ("SET", "ok", 1)]


@pytest.mark.timeout(20)
def test_connections_beyond_max_clients_are_refused_with_an_error() -> None:
    async def body(server: RespServer, port: int) -> None:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await asyncio.sleep(0.05)
        assert await raw(port, b"PING\r\n") == b"-ERR max number of clients reached\r\n"
        assert server.stats.rejected_connections == 1
        held.pop()[1].close()  # one leaves: a newcomer gets in again
        await asyncio.sleep(0.05)
        assert await raw(port, b"PING\r\n", expect=7) == b"+PONG\r\n"
        for _, w in held:
            w.close()

    serve(body, limits=Limits(max_clients=2))
