"""HELLO encoding and the acceptance rules of the handshake."""

from __future__ import annotations

import pytest

from transport.errors import HandshakeError
from transport.tcp_handshake import (
    MAX_REASON,
    Hello,
    decode_hello,
    decode_refusal,
    encode_hello,
    encode_refusal,
    negotiate,
)

LOCAL = Hello(
    node_id=1, peer_id=0, cluster_id="prod", codec_min=1, codec_max=3, max_body=4096
)


def remote(**changes: object) -> Hello:
    fields = {"node_id": 2, "peer_id": 1, "cluster_id": "prod", "codec_min": 1, "codec_max": 2,
              "max_body": 1 << 20}
    fields.update(changes)
    return Hello(**fields)  # type: ignore[arg-type]


def test_hello_round_trip() -> None:
    hello = remote(cluster_id="ünïcode")
    assert decode_hello(encode_hello(hello)) == hello


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"", "too short"),
        (b"XXXX" + encode_hello(remote())[4:], "magic"),
        (encode_hello(remote()) + b"!", "length"),
        (encode_hello(remote(cluster_id="ab"))[:-2] + b"\xff\xfe", "UTF-8"),
        (encode_hello(remote(codec_min=3, codec_max=2)), "codec range"),
        (encode_hello(remote(codec_min=0, codec_max=0)), "codec range"),
        (encode_hello(remote(max_body=1023)), "frame limit"),
    ],
)
def test_malformed_hello(body: bytes, match: str) -> None:
    with pytest.raises(HandshakeError, match=match):
        decode_hello(body)


def test_negotiation_picks_the_highest_common_version() -> None:
    assert negotiate(LOCAL, remote()) == 2
    assert negotiate(LOCAL, remote(codec_min=3, codec_max=9)) == 3


@pytest.mark.parametrize(
    ("peer", "expected", "match"),
    [
        (remote(cluster_id="staging"), 0, "cluster 'staging'"),
        (remote(codec_min=4, codec_max=5), 0, "no common codec version"),
        (remote(frame_version=2), 0, "frame version"),
        (remote(node_id=0), 0, "invalid node id"),
        (remote(node_id=1), 0, "invalid node id"),
        (remote(node_id=3), 2, "dialled node 2 but reached node 3"),
        (remote(peer_id=5), 0, "meant to reach node 5"),
    ],
)
def test_refusals_carry_a_reason(peer: Hello, expected: int, match: str) -> None:
    with pytest.raises(HandshakeError, match=match):
        negotiate(LOCAL, peer, expected)


def test_refusal_reason_is_bounded() -> None:
    body = encode_refusal("x" * 10_000)
    assert len(body) == MAX_REASON
    assert decode_refusal(b"\xffok") == "\ufffdok"


def test_over_long_cluster_id_is_refused_at_encode() -> None:
    with pytest.raises(ValueError, match="cluster id"):
        encode_hello(remote(cluster_id="c" * 256))
