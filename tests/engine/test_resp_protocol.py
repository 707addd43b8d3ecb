"""engine.resp.protocol: incremental RESP2 parsing, limits, reply encoding."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.resp.limits import Limits
from engine.resp.protocol import (
    NIL,
    ProtocolError,
    Rejected,
    RespParser,
    encode_array,
    encode_bulk,
    encode_error,
    encode_int,
    encode_simple,
)


def mb(*args: bytes) -> bytes:
    """A multibulk request, as clients send it."""
    out = [b"*%d\r\n" % len(args)]
    out += [b"$%d\r\n%b\r\n" % (len(a), a) for a in args]
    return b"".join(out)


def drain(p: RespParser) -> list[list[bytes] | Rejected]:
    out: list[list[bytes] | Rejected] = []
    while (c := p.next_command()) is not None:
        out.append(c)
    return out


def test_pipelined_multibulk_commands_come_out_in_order() -> None:
    p = RespParser()
    p.feed(mb(b"SET", b"k", b"v") + mb(b"GET", b"k") + mb(b"PING"))
    assert drain(p) == [[b"SET", b"k", b"v"], [b"GET", b"k"], [b"PING"]]
    assert p.buffered == 0


@pytest.mark.parametrize("step", [1, 2, 3, 7])
def test_commands_split_at_every_byte_boundary(step: int) -> None:
    data = mb(b"SET", b"key", b"a\r\nbinary\x00value") + b"PING\r\n" + mb(b"GET", b"")
    p = RespParser()
    out: list[list[bytes] | Rejected] = []
    for i in range(0, len(data), step):
        p.feed(data[i : i + step])
        out += drain(p)
    assert out == [[b"SET", b"key", b"a\r\nbinary\x00value"], [b"PING"], [b"GET", b""]]


def test_inline_commands_split_on_whitespace_and_accept_bare_lf() -> None:
    p = RespParser()
    p.feed(b"SET  k\tv\r\nPING\n\r\n\n")
    assert drain(p) == [[b"SET", b"k", b"v"], [b"PING"]]


def test_empty_multibulks_are_ignored() -> None:
    p = RespParser()
    p.feed(b"*0\r\n*-1\r\n" + mb(b"PING"))
    assert drain(p) == [[b"PING"]]


@pytest.mark.parametrize(
    "bad",
    [
        b"*2\r\n+3\r\nGET\r\n",  # not a bulk
        b"*1\r\n$-1\r\n",  # null bulk in a request
        b"*x\r\n",
        b"* 1\r\n",
        b"*+1\r\n",
        b"*1\r\n$1_0\r\n",
        b"*1\r\n$3\r\nGETXX",  # payload not followed by CRLF
        b"*1\r\n$" + b"9" * 40,  # endless length header
    ],
)
def test_malformed_framing_is_a_protocol_error_and_breaks_the_parser(bad: bytes) -> None:
    p = RespParser()
    p.feed(bad)
    with pytest.raises(ProtocolError):
        drain(p)
    assert p.broken
    with pytest.raises(ProtocolError):
        p.next_command()


def test_endless_inline_line_is_a_protocol_error() -> None:
    p = RespParser(Limits(max_inline_bytes=100))
    p.feed(b"a" * 101)
    with pytest.raises(ProtocolError, match="inline"):
        p.next_command()


def test_oversized_argument_is_skipped_without_buffering_and_parsing_goes_on() -> None:
    p = RespParser(Limits(max_value_bytes=1000, max_key_bytes=10))
    big = b"x" * 100_000
    data = mb(b"SET", b"k", big) + mb(b"GET", b"k")
    out: list[list[bytes] | Rejected] = []
    peak = 0
    for i in range(0, len(data), 4096):
        p.feed(data[i : i + 4096])
        out += drain(p)
        peak = max(peak, p.buffered)
    assert len(out) == 2
    assert isinstance(out[0], Rejected) and "100000 bytes" in out[0].message
    assert out[1] == [b"GET", b"k"]
    assert peak <= 4096 + 64  # the big value was never held


def test_too_many_arguments_and_too_big_request_are_rejected() -> None:
    p = RespParser(Limits(max_args=3, max_request_bytes=20, max_key_bytes=10, max_value_bytes=15))
    p.feed(mb(b"DEL", b"a", b"b", b"c") + mb(b"SET", b"kkk", b"v" * 15) + mb(b"PING"))
    out = drain(p)
    assert isinstance(out[0], Rejected) and "too many arguments" in out[0].message
    assert isinstance(out[1], Rejected) and "request exceeds" in out[1].message
    assert out[2] == [b"PING"]


def test_large_command_trickling_in_is_parsed_incrementally() -> None:
    keys = [b"k%d" % i for i in range(5000)]
    data = mb(b"DEL", *keys)
    p = RespParser()
    out: list[list[bytes] | Rejected] = []
    for i in range(0, len(data), 100):
        p.feed(data[i : i + 100])
        out += drain(p)
    assert out == [[b"DEL", *keys]]


def test_reply_encoders() -> None:
    assert encode_simple("OK") == b"+OK\r\n"
    assert encode_error("TRYAGAIN", "no\r\nleader") == b"-TRYAGAIN no  leader\r\n"
    assert encode_int(-5) == b":-5\r\n"
    assert encode_bulk(b"a\r\n") == b"$3\r\na\r\n\r\n"
    assert encode_bulk(None) == NIL
    assert encode_array([b"a", None]) == b"*2\r\n$1\r\na\r\n$-1\r\n"
    assert encode_array([]) == b"*0\r\n"


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.binary(max_size=64), max_size=20))
def test_fuzz_arbitrary_bytes_only_ever_raise_protocol_error(chunks: list[bytes]) -> None:
    p = RespParser(Limits(max_key_bytes=8, max_value_bytes=16, max_args=4, max_inline_bytes=32))
    for chunk in chunks:
        p.feed(chunk)
        try:
            for c in drain(p):
                assert isinstance(c, Rejected) or (c and all(type(a) is bytes for a in c))
        except ProtocolError:
            return
        assert p.buffered <= len(b"".join(chunks))


@settings(max_examples=200, deadline=None)
@given(
    cmds=st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=5), max_size=8),
    cut=st.integers(min_value=1, max_value=50),
)
def test_fuzz_valid_pipelines_roundtrip_under_any_chunking(
    cmds: list[list[bytes]], cut: int
) -> None:
    data = b"".join(mb(*c) for c in cmds)
    p = RespParser()
    out: list[list[bytes] | Rejected] = []
    for i in range(0, len(data), cut):
        p.feed(data[i : i + cut])
        out += drain(p)
    assert out == cmds
