"""The ``KVBackend`` protocol: what the RESP server executes commands against.

The server translates RESP requests into ``engine.kv_codec`` commands and
hands them to a backend; it never knows where the data lives. Two backends:

- the node's router (built with the node): key -> range -> leader, possibly
  on another worker or node, with retries on not-leader and
  ``RANGE_KEY_MISMATCH``;
- ``engine.resp.local_backend.LocalBackend``: one in-process KV state
  machine, no raft (tests, and library users who want a RESP front-end on a
  local store).

Contract
--------
- Results are decoded ``engine.kv_codec.Result`` values. A command the state
  machine refused is a result (``Error(ERR, ...)``), not an exception.
- Multi-key and whole-keyspace commands (``MGet``, ``MSet``, ``Delete``,
  ``Exists``, ``Scan``, ``Count``) are answered for the *whole* key space: a
  router splits them per range and stitches the results together (MGET in
  the requested order, SCAN in key order honouring the limit, counts summed).
  ``MSet`` is atomic per range only.
- ``RANGE_KEY_MISMATCH`` is the router's business (re-route and retry); a
  backend that gives up raises ``TryAgain`` instead of returning it.
- What the state machine never saw, or whose fate is unknown, is raised as an
  ``engine.client_errors.ClientError``: ``TryAgain`` (nothing applied),
  ``Timeout`` (unknown), ``BadRequest``.
- ``execute_many`` serves one connection's pipelined batch. It returns one
  outcome per command, in order, a ``ClientError`` in place of the result of
  a command that failed (so one failure does not fail its neighbours).
  Commands touching the same range must take effect in the order given (a
  client pipelining ``SET k 1`` then ``GET k`` reads its write); commands on
  different ranges are concurrent from the client's point of view (it has
  not seen any of their replies) and may be executed in parallel.
- ``stale=True`` allows reads from a follower or without a ReadIndex round;
  writes ignore it. The default is linearizable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from engine.client_errors import ClientError
from engine.kv_codec import Command, Result

__all__ = ["FastKVBackend", "KVBackend", "Outcome"]

#: What one command of a batch came to: its result, or why it has none.
Outcome = Result | ClientError


class KVBackend(Protocol):
    """Executes decoded KV commands (see the module docstring for the contract)."""

    async def execute(self, cmd: Command, *, stale: bool = False) -> Result:
        """Execute one command; raises ``ClientError`` when it has no result."""
        ...

    async def execute_many(
        self, cmds: Sequence[Command], *, stale: bool = False
    ) -> list[Outcome]:
        """Execute a pipelined batch; one outcome per command, in order."""
        ...


@runtime_checkable
class FastKVBackend(KVBackend, Protocol):
    """A backend that can also run one command as a plain future (the RESP server
    then serves an unpipelined command without a task per request)."""

    def execute_fast(self, cmd: Command) -> asyncio.Future[Result]:
        """``execute(cmd)`` as a future: its result, or its ``ClientError``."""
        ...
