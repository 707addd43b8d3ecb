"""Moving bytes: shared-memory rings between a node and its workers, the
binary wire codec, and batched TCP between nodes.

This package imports nothing from ``engine``: the codec builds the raft
core's values through constructors the composition root passes in
(``RaftTypes``). Everything not named here is private.
"""

from transport.channel import ChannelPair, NodeChannel, WorkerChannel
from transport.codec import (
    ClientRequestBatch,
    ClientResponseBatch,
    RaftBatch,
    WireCodec,
    encode_raft_batch,
)
from transport.codec_client import ClientRequest, ClientResponse
from transport.codec_heartbeat import CoalescedHeartbeats
from transport.codec_raft import RaftTypes
from transport.errors import (
    BrokenResourceError,
    ClosedResourceError,
    DecodeError,
    FrameError,
    HandshakeError,
    PayloadTooLarge,
    PeerClosed,
    PeerDead,
    RecordTooLarge,
    RingCorrupted,
    TransportError,
    UnknownPeer,
    UnsupportedPlatform,
)
from transport.liveness import PeerWatch
from transport.shm_ring import ShmRing
from transport.tcp import PeerTransport, TcpConfig
from transport.tcp_stats import PeerStats
from transport.wakeup import Wakeup

__all__ = [
    "BrokenResourceError",
    "ChannelPair",
    "ClientRequest",
    "ClientRequestBatch",
    "ClientResponse",
    "ClientResponseBatch",
    "ClosedResourceError",
    "CoalescedHeartbeats",
    "DecodeError",
    "FrameError",
    "HandshakeError",
    "NodeChannel",
    "PayloadTooLarge",
    "PeerClosed",
    "PeerDead",
    "PeerStats",
    "PeerTransport",
    "PeerWatch",
    "RaftBatch",
    "RaftTypes",
    "RecordTooLarge",
    "RingCorrupted",
    "ShmRing",
    "TcpConfig",
    "TransportError",
    "UnknownPeer",
    "UnsupportedPlatform",
    "Wakeup",
    "WireCodec",
    "WorkerChannel",
    "encode_raft_batch",
]
