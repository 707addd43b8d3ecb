"""Size limits of the RESP front-end, shared by the parser and the command table.

Why these limits exist: every byte a client sends before its command is
complete has to be buffered, and every key and value ends up in a raft log
entry replicated to (usually) three nodes and kept in memory by the state
machine. Without limits one client can make a node buffer gigabytes or
write raft entries that stall every other range of its worker.

Where each is enforced:

- ``max_args``, ``max_arg_bytes`` and ``max_request_bytes`` by the parser
  (``engine.resp.protocol``): a command over a limit is *skipped* without
  buffering its bytes and answered with ``-ERR``; the connection stays open
  because the RESP framing is still intact.
- ``max_key_bytes`` and ``max_value_bytes`` by the command table
  (``engine.resp.commands``), which knows which argument is a key and which a
  value.
- ``max_inline_bytes`` bounds a telnet-style inline command line; a longer
  line has no trustworthy framing and closes the connection.
- ``max_pending_bytes``: unparsed input buffered while the connection's
  previous batch is still executing; above it the server stops reading from
  that socket (TCP back-pressure reaches the client).
- ``max_clients`` by the server: a connection beyond it is answered
  ``-ERR max number of clients reached`` (as Redis does) and closed, so a
  connection flood costs the node a bounded number of buffers.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Configurable limits; the defaults suit a replicated KV store."""

    max_key_bytes: int = 8 * 1024
    max_value_bytes: int = 4 * 1024 * 1024
    max_args: int = 64 * 1024
    max_request_bytes: int = 16 * 1024 * 1024
    max_inline_bytes: int = 64 * 1024
    max_pending_bytes: int = 1024 * 1024
    #: Commands parsed from one connection and handed to the backend at once.
    max_batch: int = 1024
    max_clients: int = 10_000

    def __post_init__(self) -> None:
        for name in (
            "max_key_bytes", "max_value_bytes", "max_args", "max_request_bytes",
            "max_inline_bytes", "max_pending_bytes", "max_batch", "max_clients",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_key_bytes > self.max_request_bytes:
            raise ValueError("max_key_bytes cannot exceed max_request_bytes")

    @property
    def max_arg_bytes(self) -> int:
        """The largest single argument worth buffering: a value (or a key)."""
        return max(self.max_key_bytes, self.max_value_bytes)
