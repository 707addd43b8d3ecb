"""``ByteReader``: the one bounds-checked cursor the engine's decoders share.

Every decoder of untrusted bytes (range descriptors, KV commands and results,
meta commands) walks its input with the same few moves: take ``n`` bytes,
unpack a ``struct``, read a length-prefixed blob, read an item count that the
remaining bytes could actually hold, and insist that nothing trails. Each
move checks before it slices, and a fault raises the decoder's own error
type (a ``ValueError`` subclass), so a caller catches one exception per
format. Subclasses set ``error`` and add the moves of their format.
"""

from __future__ import annotations

import struct
from typing import ClassVar, Final

_U32: Final = struct.Struct("<I")


class ByteReader:
    """A cursor over ``data`` from ``pos``; every read is checked first."""

    __slots__ = ("data", "pos")

    #: What a malformed input raises.
    error: ClassVar[type[ValueError]] = ValueError

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        #: Invariant: 0 <= pos <= len(data).
        self.pos = pos

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise self.error(
                f"truncated: {n} bytes expected, {len(self.data) - self.pos} left")
        out = self.data[self.pos:end]
        self.pos = end
        return out

    def unpack(self, st: struct.Struct) -> tuple[int, ...]:
        return tuple(st.unpack(self.take(st.size)))

    def blob(self) -> bytes:
        """A u32-length-prefixed byte string."""
        (n,) = _U32.unpack(self.take(4))
        return self.take(n)

    def count(self, what: str, min_item_bytes: int, high: int = 1 << 32) -> int:
        """A u32 count of items of at least ``min_item_bytes`` each, refused when above
        ``high`` or when the remaining bytes cannot hold that many (so a hostile count
        never drives a long loop or a huge allocation)."""
        (n,) = _U32.unpack(self.take(4))
        if n > high:
            raise self.error(f"{what} {n} exceeds the limit of {high}")
        if n * min_item_bytes > len(self.data) - self.pos:
            raise self.error(f"{what} {n} exceeds the remaining {len(self.data) - self.pos} "
                             "bytes")
        return int(n)

    def finish(self) -> None:
        if self.pos != len(self.data):
            raise self.error(f"{len(self.data) - self.pos} trailing bytes")
