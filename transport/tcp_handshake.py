"""The peer handshake: who is on the other end, in which cluster, speaking which codec.

Exchange
--------
The dialer sends HELLO first. The acceptor checks it and answers with its own
HELLO (the codec range narrowed to the version chosen) or with REFUSE and a
reason, then closes. The dialer checks the acceptor's HELLO the same way.
Only after both checks does either side accept a DATA frame.

HELLO body layout (little-endian)
---------------------------------
::

    offset size field
    0      4    magic          b"MRFT"
    4      2    frame_version  u16, FRAME_VERSION
    6      2    codec_min      u16 lowest codec version the sender reads
    8      2    codec_max      u16 highest codec version the sender reads
    10     8    node_id        u64 the sender's node id (>= 1)
    18     8    peer_id        u64 the node id the sender believes it talks to (0: unknown)
    26     4    max_body       u32 largest frame body the sender accepts (>= MIN_MAX_BODY)
    30     1    cluster_len    u8
    31     ...  cluster_id     UTF-8, cluster_len bytes

REFUSE body: the reason as UTF-8 (at most ``MAX_REASON`` bytes).

Each side sends frames no larger than the other's ``max_body``, so nodes
configured with different frame limits still interoperate.

Refusal reasons (each logged by both ends): another cluster, no common
codec version, another frame version, an invalid or duplicate node id, the
dialer reached a different node than it meant to (stale address book).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from transport.errors import HandshakeError

MAGIC: Final = b"MRFT"
#: Version of the framing and handshake themselves (frame.py, this module).
FRAME_VERSION: Final = 1
_FIXED: Final = struct.Struct("<4sHHHQQIB")
assert _FIXED.size == 31
#: Smallest ``max_body`` a peer may announce (room for any handshake frame).
MIN_MAX_BODY: Final = 1024
MAX_CLUSTER_ID: Final = 255
MAX_REASON: Final = 512


@dataclass(frozen=True, slots=True)
class Hello:
    """One side's introduction. Invariant: ``1 <= codec_min <= codec_max``."""

    node_id: int
    peer_id: int
    cluster_id: str
    codec_min: int
    codec_max: int
    max_body: int
    frame_version: int = FRAME_VERSION


def encode_hello(hello: Hello) -> bytes:
    """The HELLO body for ``hello``. Raises ``ValueError`` for an over-long cluster id."""
    cluster = hello.cluster_id.encode()
    if len(cluster) > MAX_CLUSTER_ID:
        raise ValueError(f"cluster id longer than {MAX_CLUSTER_ID} bytes")
    return _FIXED.pack(
        MAGIC, hello.frame_version, hello.codec_min, hello.codec_max,
        hello.node_id, hello.peer_id, hello.max_body, len(cluster),
    ) + cluster


def decode_hello(body: bytes | memoryview) -> Hello:
    """Parse a HELLO body. Raises ``HandshakeError`` for anything malformed."""
    if len(body) < _FIXED.size:
        raise HandshakeError("HELLO too short")
    (magic, frame_version, codec_min, codec_max, node_id, peer_id, max_body,
     n) = _FIXED.unpack_from(body)
    if magic != MAGIC:
        raise HandshakeError(f"bad HELLO magic {bytes(magic)!r}")
    if len(body) != _FIXED.size + n:
        raise HandshakeError("HELLO length does not match its cluster id length")
    try:
        cluster = bytes(body[_FIXED.size :]).decode()
    except UnicodeDecodeError:
        raise HandshakeError("cluster id is not UTF-8") from None
    if not 1 <= codec_min <= codec_max:
        raise HandshakeError(f"bad codec range [{codec_min}, {codec_max}]", node_id)
    if max_body < MIN_MAX_BODY:
        raise HandshakeError(f"announced frame limit {max_body} is below {MIN_MAX_BODY}",
                             node_id)
    return Hello(node_id, peer_id, cluster, codec_min, codec_max, max_body, frame_version)


def negotiate(local: Hello, remote: Hello, expected_node: int = 0) -> int:
    """Check ``remote`` against ``local``; return the codec version both use.

    ``expected_node`` is the node the dialer meant to reach (0 on the
    accepting side, where any cluster member may dial in). Raises
    ``HandshakeError`` with the reason to log and send back.
    """
    who = remote.node_id
    if remote.frame_version != local.frame_version:
        raise HandshakeError(
            f"node {who} speaks frame version {remote.frame_version}, "
            f"we speak {local.frame_version}", who)
    if remote.cluster_id != local.cluster_id:
        raise HandshakeError(
            f"node {who} belongs to cluster {remote.cluster_id!r}, "
            f"this node to {local.cluster_id!r}", who)
    if remote.node_id in (0, local.node_id):
        raise HandshakeError(f"peer claims invalid node id {who}", who)
    if expected_node and remote.node_id != expected_node:
        raise HandshakeError(f"dialled node {expected_node} but reached node {who}", who)
    if remote.peer_id and remote.peer_id != local.node_id:
        raise HandshakeError(
            f"node {who} meant to reach node {remote.peer_id}, this is node {local.node_id}", who)
    version = min(local.codec_max, remote.codec_max)
    if version < max(local.codec_min, remote.codec_min):
        raise HandshakeError(
            f"no common codec version: node {who} reads [{remote.codec_min}, "
            f"{remote.codec_max}], we read [{local.codec_min}, {local.codec_max}]", who)
    return version


def encode_refusal(reason: str) -> bytes:
    """The REFUSE body carrying ``reason`` (truncated to ``MAX_REASON`` bytes)."""
    return reason.encode()[:MAX_REASON]


def decode_refusal(body: bytes | memoryview) -> str:
    """The reason in a REFUSE body (lenient: it is only ever logged)."""
    return bytes(body[:MAX_REASON]).decode(errors="replace")
