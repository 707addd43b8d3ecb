"""The two kinds of peer connection: outbound (we dialled, we send) and inbound (we receive).

Theory of operation
-------------------
Each node sends to a peer only on the one connection it dialled to that
peer, and receives from a peer only on the connection that peer dialled in.
A node pair therefore has two TCP connections, one per direction. This
removes the classic simultaneous-dial race (both ends dialling at once and
having to agree which connection survives) and keeps each connection's
protocol one-way after the handshake: the dialer writes DATA frames, the
acceptor only reads them.

Both classes are ``asyncio.Protocol``s (not streams): ``data_received``
feeds a ``FrameReader`` and frames are handled synchronously, with no task
per connection and no extra copy. Back-pressure on the sending side comes
from the transport's ``pause_writing``/``resume_writing`` callbacks.

Rules
-----
- Any framing or protocol violation (``FrameError``, a DATA frame before the
  handshake, a frame the acceptor should never send) is counted as a bad
  frame and *aborts* the connection: nothing of the offending frame has been
  delivered, and a stream has no resynchronisation point.
- A payload callback that raises is logged and does not stop delivery of
  the rest: a bug in the consumer must not take the peer link down.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import cast

from transport.errors import FrameError, HandshakeError
from transport.frame import (
    HANDSHAKE_MAX_BODY,
    Frame,
    FrameKind,
    FrameReader,
    encode_frame,
    split_data_body,
)
from transport.tcp_handshake import (
    Hello,
    decode_hello,
    decode_refusal,
    encode_hello,
    encode_refusal,
    negotiate,
)
from transport.tcp_stats import PeerStats

log = logging.getLogger("multiraft.transport.tcp")

#: ``on_payload(peer_node_id, payload)``: payload is a read-only view, valid indefinitely.
PayloadCallback = Callable[[int, memoryview], None]


def _tune_socket(transport: asyncio.BaseTransport) -> None:
    """Disable Nagle (we coalesce ourselves) and enable keepalive (half-open links die)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    except OSError:  # not a TCP socket (or already closing): nothing to tune
        pass


class OutboundConnection(asyncio.Protocol):
    """A connection we dialled to ``expected_node``: handshake, then DATA frames out."""

    def __init__(
        self,
        local: Hello,
        expected_node: int,
        stats: PeerStats,
        on_writable: Callable[[], None],
    ) -> None:
        self._local = local
        self._expected_node = expected_node
        self._stats = stats
        # Only HELLO or REFUSE ever arrive on an outbound link.
        self._reader = FrameReader(HANDSHAKE_MAX_BODY)
        self._on_writable = on_writable
        loop = asyncio.get_running_loop()
        #: Resolves to the negotiated codec version, or fails with the reason.
        self.handshake: asyncio.Future[int] = loop.create_future()
        #: Resolves when the connection is gone (never fails).
        self.closed: asyncio.Future[None] = loop.create_future()
        #: Invariant: set between connection_made and connection_lost.
        self.transport: asyncio.WriteTransport | None = None
        #: Invariant: True while the socket's write buffer is above its high-water mark.
        self.paused = False
        #: The largest frame body the peer accepts (known once the handshake is done).
        self.peer_max_body = 0

    # -- asyncio callbacks -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.WriteTransport, transport)
        _tune_socket(transport)
        self.transport.write(encode_frame(FrameKind.HELLO, encode_hello(self._local)))

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (frame := self._reader.next_frame()) is not None:
                self._handle_frame(frame)
        except FrameError as exc:
            self._stats.bad_frames += 1
            log.warning("bad frame from node %d on outbound link: %s", self._expected_node, exc)
            self._fail(exc)
        except HandshakeError as exc:
            self._fail(exc)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._on_writable()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.handshake.done():
            self.handshake.set_exception(
                exc or ConnectionError("connection closed during the handshake")
            )
        if not self.closed.done():
            self.closed.set_result(None)

    # -- protocol ------------------------------------------------------------

    def _handle_frame(self, frame: Frame) -> None:
        if self.handshake.done():
            # The acceptor never writes after its HELLO.
            raise FrameError(f"unexpected frame kind {frame.kind} after the handshake")
        if frame.kind == FrameKind.REFUSE:
            raise HandshakeError(
                f"refused by node {self._expected_node}: {decode_refusal(frame.body)}",
                self._expected_node,
            )
        if frame.kind != FrameKind.HELLO:
            raise FrameError(f"frame kind {frame.kind} before the handshake")
        remote = decode_hello(frame.body)
        version = negotiate(self._local, remote, self._expected_node)
        self.peer_max_body = remote.max_body
        self.handshake.set_result(version)

    def _fail(self, exc: Exception) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def abort(self) -> None:
        """Drop the connection now, discarding anything unsent."""
        if self.transport is not None:
            self.transport.abort()


class InboundConnection(asyncio.Protocol):
    """A connection a peer dialled to us: answer its handshake, then deliver its payloads.

    ``on_identified(conn)`` runs once the peer's node id is known (the owner
    replaces an older connection from the same node); ``stats_for(node_id)``
    returns the counters to charge; ``on_closed(conn)`` runs when it ends.
    """

    def __init__(
        self,
        local: Hello,
        *,
        max_body: int,
        handshake_timeout: float,
        on_payload: PayloadCallback,
        stats_for: Callable[[int], PeerStats],
        on_identified: Callable[[InboundConnection], None],
        on_closed: Callable[[InboundConnection], None],
    ) -> None:
        self._local = local
        #: Small until the peer is identified, then ``max_body``.
        self._reader = FrameReader(HANDSHAKE_MAX_BODY)
        self._max_body = max_body
        self._handshake_timeout = handshake_timeout
        self._on_payload = on_payload
        self._stats_for = stats_for
        self._on_identified = on_identified
        self._on_closed = on_closed
        #: Invariant: 0 until the peer's HELLO has been accepted, then its node id.
        self.peer_node = 0
        self._stats = stats_for(0)
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        _tune_socket(transport)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._handshake_timeout, self._on_handshake_timeout)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while self._transport is not None and (frame := self._reader.next_frame()):
                self._handle_frame(frame)
        except FrameError as exc:
            self._stats.bad_frames += 1
            log.warning("bad frame from %s: %s; closing", self._describe(), exc)
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._transport = None
        self._on_closed(self)

    def abort(self) -> None:
        """Drop the connection now."""
        if self._transport is not None:
            self._transport.abort()
            self._transport = None

    def _handle_frame(self, frame: Frame) -> None:
        if frame.kind == FrameKind.DATA and self.peer_node:
            payloads = split_data_body(frame.body)  # validates the whole body first
            stats = self._stats
            stats.frames_received += 1
            stats.bytes_received += len(frame.body) + 12
            stats.payloads_received += len(payloads)
            for payload in payloads:
                try:
                    self._on_payload(self.peer_node, payload)
                except Exception:
                    log.exception("payload callback failed for node %d", self.peer_node)
        elif frame.kind == FrameKind.HELLO and not self.peer_node:
            self._handle_hello(frame.body)
        else:
            raise FrameError(f"unexpected frame kind {frame.kind} from {self._describe()}")

    def _handle_hello(self, body: memoryview) -> None:
        assert self._transport is not None
        try:
            remote = decode_hello(body)
            version = negotiate(self._local, remote)
        except HandshakeError as exc:
            # Charged to node 0: a refused peer's claimed id is not trusted, and
            # keying by it would let a hostile peer grow the stats table.
            self._stats.handshake_refusals += 1
            log.warning("refused connection from %s: %s", self._describe(), exc.reason)
            self._transport.write(encode_frame(FrameKind.REFUSE, encode_refusal(exc.reason)))
            self._transport.close()  # close() still flushes the REFUSE frame
            self._transport = None
            return
        if self._timer is not None:
            self._timer.cancel()
        self.peer_node = remote.node_id
        self._stats = self._stats_for(remote.node_id)
        self._reader.max_body = self._max_body
        reply = Hello(
            self._local.node_id, remote.node_id, self._local.cluster_id, version, version,
            self._max_body,
        )
        self._transport.write(encode_frame(FrameKind.HELLO, encode_hello(reply)))
        self._on_identified(self)

    def _on_handshake_timeout(self) -> None:
        if not self.peer_node and self._transport is not None:
            log.warning("no HELLO from %s in time; closing", self._describe())
            self.abort()

    def _describe(self) -> str:
        if self.peer_node:
            return f"node {self.peer_node}"
        peer = self._transport.get_extra_info("peername") if self._transport else None
        return f"unidentified peer {peer}"
