"""The TCP peer transport over real loopback sockets (tcp.py, tcp_conn.py, tcp_stats.py).

Covers delivery and write coalescing, frame splitting, lazy dialling,
reconnect after a peer restart, peers that send garbage, a peer that stops
reading (bounded memory, drops counted), a peer from another cluster, and a
silent peer (handshake timeout). Runs on uvloop, plus one test on the stdlib
loop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from engine.raft import types as rt
from transport.codec import (
    CoalescedHeartbeats,
    RaftTypes,
    WireCodec,
    encode_heartbeats,
    encode_raft_batch,
)
from transport.errors import PayloadTooLarge, UnknownPeer
from transport.frame import FrameKind, FrameReader, encode_frame, frame_header, pack_data_body
from transport.tcp import PeerTransport, TcpConfig
from transport.tcp_handshake import Hello, decode_hello, encode_hello

pytestmark = pytest.mark.timeout(20)

FAST = {"backoff_base": 0.01, "backoff_cap": 0.1, "jitter_seed": 1}


def run(coro_fn: Callable[[], Coroutine[Any, Any, None]], *, use_uvloop: bool = True) -> None:
    factory = uvloop.new_event_loop if use_uvloop else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(coro_fn())


async def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


class Node:
    """A PeerTransport plus the payloads it received."""

    def __init__(self, node_id: int, cluster: str = "c1", **cfg: Any) -> None:
        self.got: list[tuple[int, bytes]] = []
        config = TcpConfig(node_id, cluster, **{**FAST, **cfg})
        self.t = PeerTransport(config, lambda n, p: self.got.append((n, bytes(p))))

    async def start(self) -> tuple[str, int]:
        return await self.t.start()


async def pair(**cfg: Any) -> tuple[Node, Node]:
    b = Node(2)
    addr = await b.start()
    a = Node(1, peers={2: addr}, **cfg)
    await a.start()
    return a, b


def test_lazy_dial_delivery_in_order_and_one_frame_per_iteration() -> None:
    async def main() -> None:
        a, b = await pair()
        assert not a.t.is_connected(2) and a.t.totals().connects == 0
        payloads = [b"m%d" % i for i in range(500)]
        for p in payloads:
            assert a.t.send(2, p)
        await wait_until(lambda: len(b.got) == 500)
        assert b.got == [(1, p) for p in payloads]
        sent, received = a.t.stats()[2], b.t.stats()[1]
        assert sent.frames_sent == 1 and sent.payloads_sent == 500  # write coalescing
        assert received.frames_received == 1 and received.bytes_received == sent.bytes_sent
        # Later iterations: one frame each.
        for burst in range(3):
            for i in range(10):
                a.t.send(2, b"%d-%d" % (burst, i))
            await asyncio.sleep(0.01)
        await wait_until(lambda: len(b.got) == 530)
        assert a.t.stats()[2].frames_sent == 4
        assert a.t.pending_bytes(2) == 0
        await a.t.close()
        await b.t.close()

    run(main)


def test_stdlib_event_loop_works_too() -> None:
    async def main() -> None:
        a, b = await pair()
        a.t.send(2, b"hello")
        await wait_until(lambda: b.got == [(1, b"hello")])
        await a.t.close()
        await b.t.close()

    run(main, use_uvloop=False)


def test_frames_split_at_the_maximum_body() -> None:
    async def main() -> None:
        a, b = await pair(max_frame_body=1024)
        payloads = [bytes([i]) * 100 for i in range(100)]
        for p in payloads:
            a.t.send(2, p)
        await wait_until(lambda: len(b.got) == 100)
        assert [p for _, p in b.got] == payloads
        stats = a.t.stats()[2]
        assert stats.frames_sent == 12  # 9 payloads of 4+100 bytes fit in 1024: ceil(100/9)
        with pytest.raises(PayloadTooLarge):
            a.t.send(2, bytes(1021))
        with pytest.raises(UnknownPeer):
            a.t.send(7, b"x")
        await a.t.close()
        await b.t.close()

    run(main)


def test_frames_respect_the_peer_announced_limit() -> None:
    async def main() -> None:
        b = Node(2, max_frame_body=2048)
        addr = await b.start()
        a = Node(1, peers={2: addr}, max_frame_body=1 << 20)
        await a.start()
        a.t.send(2, bytes(100))
        await wait_until(lambda: len(b.got) == 1)
        a.t.send(2, bytes(3000))  # fits our limit, not the peer's: dropped, counted
        for i in range(40):
            a.t.send(2, bytes([i]) * 200)
        await wait_until(lambda: len(b.got) == 41)
        stats = a.t.stats()[2]
        assert stats.dropped_payloads == 1 and stats.dropped_bytes == 3000
        assert stats.frames_sent == 1 + 4  # 10 payloads of 4+200 bytes per 2048-byte frame
        assert b.t.totals().bad_frames == 0
        await a.t.close()
        await b.t.close()

    run(main)


def test_reconnect_after_the_peer_restarts() -> None:
    async def main() -> None:
        a, b = await pair()
        host, port = b.t.bound_address
        a.t.send(2, b"before")
        await wait_until(lambda: b.got == [(1, b"before")])
        await b.t.close()
        await wait_until(lambda: not a.t.is_connected(2))
        a.t.send(2, b"while down")  # queued; dialling fails and backs off
        await wait_until(lambda: a.t.stats()[2].connect_failures >= 2)
        b2 = Node(2, listen_host=host, listen_port=port)
        await b2.start()
        await wait_until(lambda: b2.got == [(1, b"while down")])
        stats = a.t.stats()[2]
        assert stats.connects == 2 and stats.reconnects == 1
        await a.t.close()
        await b2.t.close()

    run(main)


async def raw_connect(addr: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*addr)


async def raw_handshake(addr: tuple[str, int], node_id: int, cluster: str = "c1") -> tuple[
    asyncio.StreamReader, asyncio.StreamWriter
]:
    reader, writer = await raw_connect(addr)
    hello = Hello(node_id, 2, cluster, 1, 1, 1 << 20)
    writer.write(encode_frame(FrameKind.HELLO, encode_hello(hello)))
    frames = FrameReader()
    while (frame := frames.next_frame()) is None:
        frames.feed(await reader.read(4096))
    assert frame.kind == FrameKind.HELLO and decode_hello(frame.body).node_id == 2
    return reader, writer


def test_garbage_closes_only_that_connection_and_is_counted() -> None:
    async def main() -> None:
        a, b = await pair()
        addr = b.t.bound_address
        # 1. Garbage instead of a handshake.
        reader, writer = await raw_connect(addr)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed on us
        assert b.t.stats()[0].bad_frames == 1
        writer.close()
        # 2. A valid handshake, a good frame, then a frame with a bad CRC.
        reader, writer = await raw_handshake(addr, node_id=3)
        body = pack_data_body([b"good"])
        writer.write(frame_header(FrameKind.DATA, body) + body)
        bad = bytearray(frame_header(FrameKind.DATA, body) + pack_data_body([b"evil"]))
        writer.write(bytes(bad))
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert b.got == [(3, b"good")]
        assert b.t.stats()[3].bad_frames == 1
        # 3. Healthy peers are unaffected.
        a.t.send(2, b"still fine")
        await wait_until(lambda: (1, b"still fine") in b.got)
        writer.close()
        await a.t.close()
        await b.t.close()

    run(main)


def test_a_peer_that_stops_reading_costs_bounded_memory_and_drops_are_counted() -> None:
    async def main() -> None:
        stalled: list[asyncio.StreamWriter] = []

        async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # Handshake like a real node, then never read again.
            frames = FrameReader()
            while (frame := frames.next_frame()) is None:
                frames.feed(await reader.read(4096))
            writer.write(encode_frame(FrameKind.HELLO,
                                      encode_hello(Hello(2, decode_hello(frame.body).node_id,
                                                         "c1", 1, 1, 1 << 20))))
            writer.transport.pause_reading()
            stalled.append(writer)

        server = await asyncio.start_server(stall, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        queue_limit, high_water, max_body = 256 * 1024, 64 * 1024, 80 * 1024
        a = Node(1, peers={2: ("127.0.0.1", port)}, max_queue_bytes=queue_limit,
                 write_high_water=high_water, max_frame_body=max_body)
        await a.start()
        payload = bytes(64 * 1024)
        worst_lag = 0.0
        worst_buffer = 0
        for _ in range(400):  # 25 MiB offered: more than loopback socket buffers hold
            for _ in range(4):
                a.t.send(2, payload)
            assert a.t.pending_bytes(2) <= queue_limit
            t0 = time.monotonic()
            await asyncio.sleep(0)
            worst_lag = max(worst_lag, time.monotonic() - t0)
            # White-box: writes stop once the socket buffer passes its mark, so
            # it never holds more than the mark plus one frame.
            conn = a.t._peers[2].conn
            if conn is not None and conn.transport is not None:
                worst_buffer = max(worst_buffer, conn.transport.get_write_buffer_size())
        await wait_until(lambda: a.t.stats()[2].dropped_payloads > 0)
        stats = a.t.stats()[2]
        assert stats.dropped_bytes == stats.dropped_payloads * len(payload)
        assert stats.payloads_sent + stats.dropped_payloads + a.t.pending_bytes(2) // len(
            payload) == 1600
        assert 0 < worst_buffer <= high_water + max_body + 12
        assert worst_lag < 1.0  # the loop never blocked on the stalled peer
        for w in stalled:
            w.close()
        server.close()
        await a.t.close()

    run(main)


def test_a_peer_from_another_cluster_is_refused_with_a_logged_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="multiraft.transport.tcp")

    async def main() -> None:
        b = Node(2, cluster="blue")
        addr = await b.start()
        a = Node(1, cluster="green", peers={2: addr})
        await a.start()
        a.t.send(2, b"hello?")
        await wait_until(lambda: a.t.stats()[2].handshake_refusals >= 2)
        assert b.got == []
        assert not a.t.is_connected(2)
        assert b.t.stats()[0].handshake_refusals >= 2
        await a.t.close()
        await b.t.close()

    run(main)
    reasons = [r.getMessage() for r in caplog.records]
    assert any("refused connection" in m and "cluster 'green'" in m for m in reasons)
    assert any("handshake with node 2" in m and "cluster 'green'" in m for m in reasons)


def test_wrong_node_at_the_address_is_refused() -> None:
    async def main() -> None:
        b = Node(3)
        addr = await b.start()
        a = Node(1, peers={2: addr})  # stale address book: node 3 answers there
        await a.start()
        a.t.send(2, b"x")
        await wait_until(lambda: a.t.stats()[2].handshake_refusals >= 1)
        assert b.got == []
        await a.t.close()
        await b.t.close()

    run(main)


def test_a_silent_peer_is_dropped_after_the_handshake_timeout() -> None:
    async def main() -> None:
        b = Node(2, handshake_timeout=0.2)
        addr = await b.start()
        reader, writer = await raw_connect(addr)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        await b.t.close()

    run(main)


def test_a_restarted_peer_replaces_its_old_inbound_link() -> None:
    async def main() -> None:
        b = Node(2)
        addr = await b.start()
        r1, w1 = await raw_handshake(addr, node_id=4)
        _r2, w2 = await raw_handshake(addr, node_id=4)
        assert await asyncio.wait_for(r1.read(), 5) == b""  # old link aborted
        body = pack_data_body([b"new"])
        w2.write(frame_header(FrameKind.DATA, body) + body)
        await wait_until(lambda: b.got == [(4, b"new")])
        w1.close()
        w2.close()
        await b.t.close()

    run(main)


def test_binds_to_the_configured_host() -> None:
    async def main() -> None:
        b = Node(2, listen_host="0.0.0.0")
        host, port = await b.start()
        assert host == "0.0.0.0"
        a = Node(1, peers={2: ("127.0.0.1", port)})
        await a.start()
        a.t.send(2, b"any address")
        await wait_until(lambda: b.got == [(1, b"any address")])
        await a.t.close()
        await b.t.close()

    run(main)


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")

    async def main() -> None:
        b = Node(2, listen_host="::1")
        _, port = await b.start()
        a = Node(1, peers={2: ("::1", port)})
        await a.start()
        a.t.send(2, b"v6")
        await wait_until(lambda: b.got == [(1, b"v6")])
        await a.t.close()
        await b.t.close()

    run(main)


def test_an_unidentified_peer_cannot_make_us_buffer_a_large_frame() -> None:
    async def main() -> None:
        b = Node(2)
        addr = await b.start()
        reader, writer = await raw_connect(addr)
        # A header announcing a 4 MiB HELLO: refused on the header alone.
        writer.write(struct.pack("<IB3xI", 4 << 20, FrameKind.HELLO, 0))
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert b.t.stats()[0].bad_frames == 1
        writer.close()
        await b.t.close()

    run(main)


def test_backoff_is_exponential_capped_and_jittered() -> None:
    t = PeerTransport(TcpConfig(1, "c1", backoff_base=0.1, backoff_cap=2.0, jitter_seed=3),
                      lambda n, p: None)
    for attempt, full in [(0, 0.1), (1, 0.2), (3, 0.8), (5, 2.0), (60, 2.0)]:
        delays = [t._backoff(attempt) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays), attempt
        assert len(set(delays)) > 100  # jittered, not a fixed schedule


def test_raft_batches_and_heartbeats_end_to_end() -> None:
    codec = WireCodec(RaftTypes(rt.Message, rt.Entry, rt.Snapshot, rt.SnapshotMetadata,
                                rt.ConfState))
    batch = [(r, rt.Message(rt.MessageType.APPEND, 2, 1, 3, 3, 10,
                            (rt.Entry(3, 11, 0, b"v%d" % r),), 10)) for r in range(100)]
    hb = CoalescedHeartbeats.build(range_ids=range(5000), frm=[1] * 5000, to=[2] * 5000,
                                   terms=[3] * 5000, commits=range(5000))

    async def main() -> None:
        a, b = await pair()
        a.t.send(2, encode_raft_batch(batch))
        a.t.send(2, encode_heartbeats(hb))
        await wait_until(lambda: len(b.got) == 2)
        assert codec.decode_raft_batch(b.got[0][1]) == batch
        assert codec.decode(b.got[1][1]) == hb
        assert a.t.stats()[2].frames_sent == 1
        await a.t.close()
        await b.t.close()

    run(main)
