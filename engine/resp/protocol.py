"""RESP framing, sans-IO: an incremental request parser and reply encoders.

Requests are the same in RESP2 and RESP3. Replies are RESP2 unless a client
switched its connection to RESP3 with ``HELLO 3``; for the reply types this
server uses the two differ only in the null (``$-1`` vs ``_``) and in
HELLO's own map reply, so the encoders take the null to use.

No sockets here: the server feeds received bytes in and takes parsed
commands out, so the parser is tested (and fuzzed) with plain bytes.

Requests
--------
A request is either a *multibulk* (what every client library sends)::

    *<n>\\r\\n  then n times  $<len>\\r\\n<len bytes>\\r\\n

or an *inline* command line (telnet, ``nc``): words separated by spaces or
tabs, ended by ``\\n`` (an optional ``\\r`` before it is dropped). Inline
lines are split on whitespace only; Redis's quoting rules are not supported.
``*0`` and ``*-1`` and empty inline lines are ignored, as Redis does.

Rules
-----
- ``next_command`` returns a complete command (a list of ``bytes``
  arguments), a ``Rejected`` for a well-framed command that broke a limit,
  or ``None`` when more bytes are needed. Any malformed framing raises
  ``ProtocolError``; after that the parser is unusable (``broken``) and the
  server closes the connection after replying, because without framing the
  next command boundary cannot be found.
- Lengths are strict decimal (``0``-``9`` only; no sign, space, ``+`` or
  ``_`` that ``int()`` would accept) and bounded before anything is buffered.
- A command over ``max_args``/``max_arg_bytes``/``max_request_bytes`` is
  consumed in *skip mode*: its remaining bytes are discarded as they arrive,
  never buffered, and it comes out as ``Rejected(message)``. The framing
  stays intact, so the connection survives.

Theory of operation
-------------------
Most reads carry whole commands, so ``_parse_whole`` first tries to parse a
complete, valid multibulk in one pass with nothing saved (about 3x faster
than the general path). When it cannot (incomplete, over a limit,
malformed) it consumes nothing and the general, resumable path takes over:
received bytes are appended to one ``bytearray``; ``_pos`` is where parsing
stands. The parse state of an incomplete multibulk (arguments so far,
arguments left, the length of the bulk being waited for) is kept between
calls, so a large command trickling in costs O(bytes), not a re-parse per
chunk. Consumed bytes are dropped when the buffer is fully parsed (the
common case: ``clear()``), or once they exceed ``_COMPACT_AT``.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from engine.resp.limits import Limits

__all__ = [
    "CRLF",
    "NIL",
    "NULL3",
    "OK",
    "PONG",
    "ProtocolError",
    "Rejected",
    "RespParser",
    "encode_array",
    "encode_bulk",
    "encode_error",
    "encode_int",
    "encode_simple",
]

CRLF: Final = b"\r\n"
_STAR: Final = 0x2A  # '*'
_DOLLAR: Final = 0x24  # '$'
#: A length header longer than this without its CRLF is garbage, not a slow client.
_MAX_HEADER: Final = 32
_COMPACT_AT: Final = 64 * 1024


class ProtocolError(Exception):
    """Malformed RESP framing; the connection cannot be resynchronised."""


class Rejected(NamedTuple):
    """A well-framed command that broke a size limit; its bytes were skipped."""

    message: str


def _parse_length(raw: bytes | bytearray, what: str) -> int:
    """A strict non-negative decimal length, or -1 for the literal ``-1``."""
    if raw.isdigit() and len(raw) <= 18:
        return int(raw)
    if raw == b"-1":
        return -1
    raise ProtocolError(f"invalid {what} length")


class RespParser:
    """Incremental parser of RESP2 requests (see the module docstring)."""

    __slots__ = (
        "_arg_len", "_args", "_buf", "_bytes", "_left", "_limits", "_pos", "_skip", "broken",
    )

    def __init__(self, limits: Limits | None = None) -> None:
        self._limits = limits or Limits()
        # Invariant: 0 <= _pos <= len(_buf); bytes before _pos are consumed.
        self._buf = bytearray()
        self._pos = 0
        # Invariant: _left > 0 iff a multibulk is partly parsed; then _args holds
        # its arguments so far (unless skipping) and _bytes their total size.
        self._args: list[bytes] = []
        self._left = 0
        self._bytes = 0
        # Invariant: _arg_len >= 0 iff the header of the current bulk was read:
        # then it is the payload length awaited or, while skipping, the bytes
        # (CRLF included) still to discard.
        self._arg_len = -1
        # Invariant: _skip is the rejection message while skipping a command.
        self._skip: str | None = None
        self.broken = False

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        self._buf += data

    def next_command(self) -> list[bytes] | Rejected | None:
        """The next complete command, a ``Rejected`` one, or None (need bytes)."""
        if self.broken:
            raise ProtocolError("parser already failed")
        if self._left == 0:
            buf = self._buf
            if self._pos >= len(buf):
                buf.clear()
                self._pos = 0
                return None
            if buf[self._pos] == _STAR and (cmd := self._parse_whole()) is not None:
                return cmd
        try:
            while True:
                if self._left == 0:
                    status = self._start_command()
                    if status is None:
                        self._idle()
                        return None
                    if status:
                        return status  # a whole inline command, or a rejection
                    if self._left == 0:
                        continue  # *0 / *-1 / empty inline: nothing to run
                done = self._read_args()
                if done is None:
                    self._idle()
                    return None
                return done
        except ProtocolError:
            self.broken = True
            raise

    # --- internals ------------------------------------------------------------------------

    def _parse_whole(self) -> list[bytes] | None:
        """The fast path: a multibulk that is entirely in the buffer, well
        formed and within every limit, parsed in one pass with no state
        saved. Anything else returns None *without consuming anything*, and
        the resumable path below parses it (and reports what is wrong)."""
        buf = self._buf
        end = len(buf)
        eol = buf.find(CRLF, self._pos)
        raw = buf[self._pos + 1 : eol]
        if eol < 0 or not raw.isdigit() or len(raw) > 18:
            return None
        n = int(raw)
        limits = self._limits
        if n <= 0 or n > limits.max_args:
            return None
        max_arg = limits.max_arg_bytes
        total = 0
        pos = eol + 2
        args: list[bytes] = []
        for _ in range(n):
            if pos >= end or buf[pos] != _DOLLAR:
                return None
            eol = buf.find(CRLF, pos)
            raw = buf[pos + 1 : eol]
            if eol < 0 or not raw.isdigit() or len(raw) > 18:
                return None
            size = int(raw)
            total += size
            pos = eol + 2
            stop = pos + size
            if size > max_arg or stop + 2 > end or buf[stop] != 0x0D or buf[stop + 1] != 0x0A:
                return None
            args.append(bytes(buf[pos:stop]))
            pos = stop + 2
        if total > limits.max_request_bytes:
            return None
        if pos == end:
            buf.clear()
            pos = 0
        self._pos = pos
        return args

    def _idle(self) -> None:
        """Drop consumed bytes when that is cheap or has become worthwhile."""
        buf = self._buf
        if self._pos == len(buf):
            buf.clear()
            self._pos = 0
        elif self._pos >= _COMPACT_AT:
            del buf[: self._pos]
            self._pos = 0

    def _start_command(self) -> list[bytes] | Rejected | None:
        """Read a multibulk header (returns ``[]``: go on with its arguments,
        or nothing to run) or a whole inline command (returned); None when
        the header is incomplete."""
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            return None
        if buf[pos] != _STAR:
            return self._inline()
        eol = buf.find(CRLF, pos)
        if eol < 0:
            if len(buf) - pos > _MAX_HEADER:
                raise ProtocolError("invalid multibulk length")
            return None
        n = _parse_length(buf[pos + 1 : eol], "multibulk")
        self._pos = eol + 2
        if n <= 0:
            return []
        self._left = n
        self._args = []
        self._bytes = 0
        if n > self._limits.max_args:
            self._skip = f"too many arguments: {n} (limit {self._limits.max_args})"
        return []

    def _inline(self) -> list[bytes] | Rejected | None:
        buf, pos = self._buf, self._pos
        eol = buf.find(b"\n", pos)
        if eol < 0:
            if len(buf) - pos > self._limits.max_inline_bytes:
                raise ProtocolError("too big inline request")
            return None
        if eol - pos > self._limits.max_inline_bytes:
            raise ProtocolError("too big inline request")
        self._pos = eol + 1
        args = bytes(buf[pos:eol]).split()
        if not args:
            return []  # an empty line: ignored
        if len(args) > self._limits.max_args:
            return Rejected(f"too many arguments: {len(args)} (limit {self._limits.max_args})")
        return args

    def _read_args(self) -> list[bytes] | Rejected | None:
        buf = self._buf
        limits = self._limits
        end = len(buf)
        pos = self._pos
        while self._left:
            n = self._arg_len
            if n < 0:
                if pos >= end:
                    break
                if buf[pos] != _DOLLAR:
                    self._pos = pos
                    raise ProtocolError(f"expected '$', got {chr(buf[pos])!r}")
                eol = buf.find(CRLF, pos)
                if eol < 0:
                    if end - pos > _MAX_HEADER:
                        raise ProtocolError("invalid bulk length")
                    break
                n = _parse_length(buf[pos + 1 : eol], "bulk")
                if n < 0:
                    raise ProtocolError("invalid bulk length")
                pos = eol + 2
                self._bytes += n
                if self._skip is None:
                    if n > limits.max_arg_bytes:
                        self._skip = (
                            f"argument of {n} bytes exceeds the limit of "
                            f"{limits.max_arg_bytes} bytes"
                        )
                    elif self._bytes > limits.max_request_bytes:
                        self._skip = (
                            f"request exceeds the limit of {limits.max_request_bytes} bytes"
                        )
                if self._skip is not None:
                    n += 2  # skipping: _arg_len counts the bytes to discard, CRLF included
                self._arg_len = n
            if self._skip is not None:
                # Discard what is here of this payload; remember what is left.
                take = min(n, end - pos)
                pos += take
                if take < n:
                    self._arg_len = n - take
                    break
            else:
                stop = pos + n
                if stop + 2 > end:
                    break
                if buf[stop] != 0x0D or buf[stop + 1] != 0x0A:
                    raise ProtocolError("bulk payload not followed by CRLF")
                self._args.append(bytes(buf[pos:stop]))
                pos = stop + 2
            self._arg_len = -1
            self._left -= 1
        self._pos = pos
        if self._left:
            if self._skip is not None:
                # Skipped bytes are garbage: drop them now rather than hold them.
                del buf[:pos]
                self._pos = 0
            return None
        args, self._args = self._args, []
        if self._skip is not None:
            reason, self._skip = self._skip, None
            return Rejected(reason)
        return args


# --- reply encoders -----------------------------------------------------------------------

OK: Final = b"+OK\r\n"
PONG: Final = b"+PONG\r\n"
#: The RESP2 null (a nil bulk string) and the RESP3 null.
NIL: Final = b"$-1\r\n"
NULL3: Final = b"_\r\n"


def encode_simple(text: str) -> bytes:
    """A status reply (``+text``); CR/LF would break framing and are replaced."""
    return b"+" + _one_line(text) + CRLF


def encode_error(kind: str, message: str) -> bytes:
    """An error reply ``-KIND message`` (kind: ERR, TRYAGAIN, TIMEOUT)."""
    return b"-" + _one_line(f"{kind} {message}") + CRLF


def encode_int(n: int) -> bytes:
    return b":%d\r\n" % n


def encode_bulk(data: bytes | None) -> bytes:
    if data is None:
        return NIL
    return b"$%d\r\n%b\r\n" % (len(data), data)


def encode_array(
    items: list[bytes | None] | tuple[bytes | None, ...], nil: bytes = NIL
) -> bytes:
    """An array of bulk strings (None items are ``nil``: ``NIL`` or ``NULL3``)."""
    parts = [b"*%d\r\n" % len(items)]
    for item in items:
        parts.append(nil if item is None else b"$%d\r\n%b\r\n" % (len(item), item))
    return b"".join(parts)


def _one_line(text: str) -> bytes:
    return text.replace("\r", " ").replace("\n", " ").encode("utf-8", "replace")
