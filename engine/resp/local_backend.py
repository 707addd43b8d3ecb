"""``LocalBackend``: a ``KVBackend`` over one in-process KV state machine.

No raft, no replication, no persistence: commands are applied directly to an
``engine.kv.KVStateMachine`` covering the whole key space. It is the real
thing for a single process (tests of the RESP server, library users who want
a Redis-compatible front-end on a local map), not a stand-in: every command
goes through the same ``kv_codec`` encoding and ``apply``/``read`` path a
replica uses, so a command the codec or state machine refuses is refused
here the same way.

Rules
-----
- Writes are encoded and applied with ``apply``; reads with ``read`` (which
  refuses to mutate). A batch is applied as one ``apply`` call per run of
  consecutive writes, as a replica would apply a committed batch, and reads
  are served between runs, so results are exactly those of executing the
  batch in order.
- Everything runs on the calling event loop thread without awaiting: the
  state machine is not thread-safe, and without an ``await`` between
  commands nothing can interleave with a batch.
- An encoding failure (``KVCodecError``, e.g. an INCRBY that does not fit in
  64 bits) is a ``BadRequest`` outcome for that command alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.client_errors import BadRequest, ClientError
from engine.kv import KVStateMachine
from engine.kv_codec import (
    Command,
    KVCodecError,
    Result,
    decode_result,
    encode_command,
    is_write,
)
from engine.resp.backend import Outcome

__all__ = ["LocalBackend"]


class LocalBackend:
    """A ``KVBackend`` over ``state_machine`` (a fresh, whole-keyspace one by default)."""

    __slots__ = ("_sm",)

    def __init__(self, state_machine: KVStateMachine | None = None) -> None:
        self._sm = state_machine if state_machine is not None else KVStateMachine()

    @property
    def state_machine(self) -> KVStateMachine:
        return self._sm

    async def execute(self, cmd: Command, *, stale: bool = False) -> Result:
        outcome = self._run([cmd])[0]
        if isinstance(outcome, ClientError):
            raise outcome
        return outcome

    async def execute_many(
        self, cmds: Sequence[Command], *, stale: bool = False
    ) -> list[Outcome]:
        return self._run(cmds)

    def _run(self, cmds: Sequence[Command]) -> list[Outcome]:
        """Execute ``cmds`` in order, batching consecutive writes into one apply."""
        sm = self._sm
        outcomes: list[Outcome] = []
        writes: list[bytes] = []
        # Invariant: writes holds the encoded run of consecutive writes not yet
        # applied; outcomes has one entry per command before that run.

        def flush() -> None:
            if writes:
                outcomes.extend([decode_result(r) for r in sm.apply(writes)])
                writes.clear()

        for cmd in cmds:
            try:
                raw = encode_command(cmd)
            except KVCodecError as e:
                flush()
                outcomes.append(BadRequest(str(e)))
                continue
            if is_write(cmd):
                writes.append(raw)
            else:
                flush()
                outcomes.append(decode_result(sm.read(raw)))
        flush()
        return outcomes
