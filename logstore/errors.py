"""The log store's errors: one root, subclasses carrying what broke."""

from __future__ import annotations


class LogStoreError(Exception):
    """Root of every error a log store raises."""


class Corruption(LogStoreError):
    """Stored bytes fail verification. Never returned as data."""

    def __init__(
        self, what: str, path: str = "", offset: int = -1, expected: int = 0, got: int = 0
    ) -> None:
        detail = what
        if path:
            detail += f" in {path} at offset {offset}"
        if expected or got:
            detail += f" (expected crc {expected:#010x}, got {got:#010x})"
        super().__init__(detail)
        self.what = what
        self.path = path
        self.offset = offset
        self.expected = expected
        self.got = got


class InvalidArgument(LogStoreError):
    """A request that breaks the protocol's rules (gap in an append, bad config)."""


class Compacted(LogStoreError):
    """The requested index is below the range's first index."""


class Unavailable(LogStoreError):
    """The requested index is above the range's last index."""


class Closed(LogStoreError):
    """The store was closed."""
