"""Tests for transport.channel: a real forked worker talking to an asyncio (uvloop) node."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import struct
import sys
import time
import traceback
import zlib
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import uvloop

from transport.channel import ChannelPair, NodeChannel, WorkerChannel
from transport.errors import (
    ClosedResourceError,
    PeerClosed,
    PeerDead,
    RecordTooLarge,
)

pytestmark = pytest.mark.timeout(30)


def _our_segments() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith("mrring_")}


@pytest.fixture(autouse=True)
def no_shm_leak() -> Iterator[None]:
    before = _our_segments()
    yield
    assert _our_segments() - before == set(), "a ring segment leaked in /dev/shm"


def _fork(body: Callable[[], int]) -> int:
    """Run `body` in a forked child that exits with its return code (70 on an exception)."""
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            code = body()
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def _spawn_worker(
    pair: ChannelPair, body: Callable[[WorkerChannel], int]
) -> tuple[int, NodeChannel]:
    pid = _fork(lambda: body(pair.worker_end()))
    return pid, pair.node_end(pid)


def _exit_code(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _run(coro: Coroutine[Any, Any, None], loop: str = "uvloop") -> None:
    if loop == "uvloop":
        uvloop.run(coro)
    else:
        asyncio.run(coro)


def _record(rnd: random.Random, seq: int, limit: int) -> bytes:
    size = rnd.choice([0, 1, 8, rnd.randint(0, 200), rnd.randint(0, limit - 12)])
    payload = rnd.randbytes(size)
    return struct.pack("<QI", seq, zlib.crc32(payload)) + payload


def _check(rec: bytes, seq: int, seed: int) -> None:
    got_seq, crc = struct.unpack_from("<QI", rec)
    assert got_seq == seq, f"seed={seed}: got record {got_seq}, wanted {seq}"
    assert zlib.crc32(rec[12:]) == crc, f"seed={seed}: record {seq} corrupted"


def _echo(ch: WorkerChannel) -> int:
    """Worker body: send back every record until the node ends the stream."""
    while True:
        try:
            records = ch.recv(timeout=1.0)
        except PeerClosed:
            ch.close()
            return 0
        if records:
            assert ch.send(records) == len(records)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("prefer_eventfd", [True, False], ids=["eventfd", "pipe"])
def test_echo_random_batches_with_checksums(prefer_eventfd: bool, loop: str) -> None:
    """Small rings force back-pressure and wrap-around in both directions."""
    seed = random.randrange(1 << 30)
    rnd = random.Random(seed)
    total = 6000
    pair = ChannelPair(4096, prefer_eventfd=prefer_eventfd)
    assert _our_segments() == set(), "channel rings must be unlinked before the fork"
    pid, node = _spawn_worker(pair, _echo)

    async def main() -> None:
        async def receive() -> None:
            seq = 0
            while seq < total:
                for rec in await node.recv():
                    _check(rec, seq, seed)
                    seq += 1

        reader = asyncio.create_task(receive())
        seq = 0
        while seq < total:
            count = min(rnd.randint(1, 40), total - seq)
            batch = [_record(rnd, seq + i, node.record_limit) for i in range(count)]
            await node.send(batch)
            seq += len(batch)
        await asyncio.wait_for(reader, 20)
        node.close()

    _run(main(), loop)
    assert _exit_code(pid) == 0, f"seed={seed}: worker failed"


def test_back_pressure_blocks_the_sender_and_loses_nothing() -> None:
    pair = ChannelPair(1024)
    records = [struct.pack("<I", i) * 25 for i in range(400)]  # ~40 KB through a 1 KB ring

    def slow_reader(ch: WorkerChannel) -> int:
        time.sleep(0.3)
        got: list[bytes] = []
        while len(got) < len(records):
            got += [bytes(r) for r in ch.recv(timeout=5)]
        ch.send([struct.pack("<I", zlib.crc32(b"".join(got)))])
        ch.close()
        return 0

    pid, node = _spawn_worker(pair, slow_reader)

    async def main() -> None:
        start = time.monotonic()
        await node.send(records)
        assert time.monotonic() - start >= 0.2, "send did not wait for the slow reader"
        (summary,) = await node.recv()
        assert struct.unpack("<I", summary)[0] == zlib.crc32(b"".join(records))
        with pytest.raises(PeerClosed):
            await node.recv()
        node.close()

    _run(main())
    assert _exit_code(pid) == 0


def test_worker_recv_times_out_with_nothing() -> None:
    pair = ChannelPair(1024)

    def waits(ch: WorkerChannel) -> int:
        start = time.monotonic()
        got = ch.recv(timeout=0.2)
        elapsed = time.monotonic() - start
        ch.close()
        return 0 if got == [] and 0.15 <= elapsed < 2.0 else 1

    pid, node = _spawn_worker(pair, waits)
    assert _exit_code(pid) == 0
    node.close()


def test_worker_send_times_out_on_a_full_ring() -> None:
    pair = ChannelPair(1024)

    def floods(ch: WorkerChannel) -> int:
        start = time.monotonic()
        sent = ch.send([b"x" * 100] * 100, timeout=0.2)
        elapsed = time.monotonic() - start
        ch.release()
        return 0 if 0 < sent < 100 and 0.15 <= elapsed < 2.0 else 1

    pid, node = _spawn_worker(pair, floods)
    assert _exit_code(pid) == 0
    node.close()


@pytest.mark.parametrize("blocked_in", ["recv", "send"])
def test_node_notices_a_killed_worker(blocked_in: str) -> None:
    pair = ChannelPair(1024)

    def idles(ch: WorkerChannel) -> int:
        time.sleep(30)
        return 0

    pid, node = _spawn_worker(pair, idles)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(0.1, os.kill, pid, signal.SIGKILL)
        start = time.monotonic()
        with pytest.raises(PeerDead) as info:
            if blocked_in == "recv":
                await node.recv()
            else:
                await node.send([b"y" * 100] * 1000)
        assert info.value.pid == pid
        assert time.monotonic() - start < 2.0
        node.close()

    _run(main())
    assert _exit_code(pid) == -signal.SIGKILL


@pytest.mark.parametrize("blocked_in", ["recv", "send"])
def test_worker_notices_a_killed_node_after_draining(blocked_in: str) -> None:
    """A node process forks a worker; we SIGKILL the node and hear from the orphan."""
    report_r, report_w = os.pipe()

    def worker(ch: WorkerChannel) -> int:
        os.write(report_w, b"R")
        received = 0
        if blocked_in == "send":
            with pytest.raises(PeerDead):
                ch.send([b"z" * 100] * 1000)  # the node never reads: blocks until it dies
        else:
            received = len(ch.recv())  # the node's three records, then sleep in recv
        try:
            while True:
                received += len(ch.recv())
        except PeerDead:
            os.write(report_w, struct.pack("<BI", ord("D"), received))
        return 0

    def node_process() -> int:
        pair = ChannelPair(1024)
        _, node = _spawn_worker(pair, worker)
        node.send_nowait([b"a", b"b", b"c"])
        time.sleep(30)
        return 0

    node_pid = _fork(node_process)
    os.close(report_w)
    try:
        assert os.read(report_r, 1) == b"R"
        time.sleep(0.1)
        killed_at = time.monotonic()
        os.kill(node_pid, signal.SIGKILL)
        assert _exit_code(node_pid) == -signal.SIGKILL
        report = os.read(report_r, 5)
        assert time.monotonic() - killed_at < 3.0
        tag, received = struct.unpack("<BI", report)
        assert tag == ord("D")
        assert received == 3, "records published before the node died were lost"
    finally:
        os.close(report_r)


def test_graceful_close_in_both_directions_delivers_everything_first() -> None:
    pair = ChannelPair(1024)

    def worker(ch: WorkerChannel) -> int:
        got: list[bytes] = []
        try:
            while True:
                got += [bytes(r) for r in ch.recv(timeout=5)]
        except PeerClosed:
            pass
        if got != [b"%d" % i for i in range(50)]:
            return 1
        with pytest.raises(PeerClosed):
            ch.send([b"late"])
        ch.release()
        return 0

    pid, node = _spawn_worker(pair, worker)
    assert node.send_nowait([b"%d" % i for i in range(50)]) == 50
    node.close()
    assert _exit_code(pid) == 0

    pair = ChannelPair(1024)

    def closer(ch: WorkerChannel) -> int:
        ch.send([b"one", b"two"])
        ch.close()
        return 0

    pid, node = _spawn_worker(pair, closer)
    assert _exit_code(pid) == 0

    async def main() -> None:
        assert [bytes(r) for r in await node.recv()] == [b"one", b"two"]
        with pytest.raises(PeerClosed):
            await node.recv()
        node.close()

    _run(main())


def test_misuse_gets_clear_errors() -> None:
    pair = ChannelPair(1024)
    pid, node = _spawn_worker(pair, lambda ch: (time.sleep(30), 0)[1])
    try:
        with pytest.raises(RecordTooLarge):
            node.send_nowait([b"x" * (node.record_limit + 1)])
        with pytest.raises(ClosedResourceError):
            pair.node_end(pid)

        async def two_readers() -> None:
            first = asyncio.create_task(node.recv())
            await asyncio.sleep(0.01)
            with pytest.raises(RuntimeError):
                await node.recv()
            node.close()
            with pytest.raises(ClosedResourceError):
                await first

        _run(two_readers())
        with pytest.raises(ClosedResourceError):
            node.send_nowait([b"x"])
        with pytest.raises(ClosedResourceError):
            node.recv_nowait()
    finally:
        os.kill(pid, signal.SIGKILL)
        _exit_code(pid)


def test_release_drops_local_resources_without_ending_the_stream() -> None:
    """A child that inherited a channel it does not own releases it; the owner is unaffected."""
    pair = ChannelPair(1024)

    def echo_one(ch: WorkerChannel) -> int:
        records = ch.recv(timeout=5)
        ch.send(records)
        ch.close()
        return 0

    pid, node = _spawn_worker(pair, echo_one)
    bystander = _fork(lambda: (node.release(), 0)[1])
    assert _exit_code(bystander) == 0

    async def main() -> None:
        await node.send([b"still open"])
        assert await node.recv() == [b"still open"]
        node.close()
        node.close()  # idempotent

    _run(main())
    assert _exit_code(pid) == 0


def test_an_unused_pair_can_be_released_once() -> None:
    pair = ChannelPair(1024)
    pair.release()
    with pytest.raises(ClosedResourceError):
        pair.worker_end()
