"""``Router``: the node's ``KVBackend`` — key -> range -> leader, with bounded retries.

Theory of operation
-------------------
A command is cut per range (``MGET``/``DEL``/``EXISTS``/``MSET`` by key,
``RANGE`` over the ranges it spans in key order, ``DBSIZE`` over all), each
piece is encoded once and handed to ``submit(desc, command)``, which the node
implements: run it on the local worker holding the leader, or forward it to
the leader's node. The answer is one of the ``Outcome``s of
``engine.proposal``:

- ``OK``: decode the result; a ``RANGE_KEY_MISMATCH`` error result means the
  directory is stale: retry;
- ``MISMATCH``: learn the descriptor it carries, retry (nothing applied);
- ``TRYAGAIN``: remember the leader hint, back off briefly, retry;
- ``UNKNOWN``: ``Timeout`` at once — retrying could apply a write twice;
- ``ERROR``: ``BadRequest``.

A key in a gap of the directory (the left half of a split is known, the right
half not yet) waits for the directory to be filled, within the same bound.

After ``max_attempts`` the client gets ``TryAgain`` (nothing was applied by
any attempt, or we would have stopped with ``Timeout``).

Pipelined batches: commands that share a key run one after the other, in
the order given (a ``SET k`` then ``GET k`` reads its write, even across a
retry of the ``SET``); a command without keys (``RANGE``, ``DBSIZE``) is
ordered against everything. Every other command runs concurrently, so a
pipeline of N independent commands costs one round through the worker, not
N. The backend contract allows it: the client has seen none of their
replies, and commands on distinct keys commute (a retry of one cannot
reorder it against a command it shares no key with).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

from engine.client_errors import BadRequest, ClientError, Timeout, TryAgain
from engine.kv_codec import (
    Cas,
    Command,
    Count,
    Delete,
    Error,
    ErrorKind,
    Exists,
    Get,
    IncrBy,
    Int,
    KVCodecError,
    MGet,
    MSet,
    Ok,
    Pairs,
    Put,
    Result,
    Scan,
    Values,
    decode_result,
    encode_command,
)
from engine.proposal import Outcome as ReqOutcome
from engine.range_desc import RangeDescriptor
from engine.range_directory import RangeDirectory
from engine.resp.backend import Outcome
from engine.worker_protocol import command_keys, unpack_status
from transport import ClientResponse

#: How the node runs one encoded command on one range.
Submit = Callable[[RangeDescriptor, bytes], Awaitable[ClientResponse]]


class Router:
    """A ``KVBackend`` over the node's directory and ``submit`` (module docstring)."""

    def __init__(
        self, directory: RangeDirectory, submit: Submit, *, max_attempts: int = 20,
        backoff: float = 0.025,
    ) -> None:
        self._dir = directory
        self._submit = submit
        self._max_attempts = max_attempts
        self._backoff = float(backoff)  # _judge tells a pause from a result by its type

    async def execute(self, cmd: Command, *, stale: bool = False) -> Result:
        return await self._execute(cmd)

    async def execute_many(
        self, cmds: Sequence[Command], *, stale: bool = False
    ) -> list[Outcome]:
        """One outcome per command: chains of commands sharing a key run in order,
        independent chains concurrently (see the module docstring)."""
        if len(cmds) == 1:
            return [await self._outcome(cmds[0])]
        chains = _conflict_chains(cmds)
        if len(chains) == 1:
            return [await self._outcome(c) for c in cmds]
        out: list[Outcome | None] = [None] * len(cmds)

        async def run_chain(chain: list[int]) -> None:
            for i in chain:
                out[i] = await self._outcome(cmds[i])

        # A lone command runs as execute_fast's future (no task); a chain as one task.
        parts: list[asyncio.Future[Result] | asyncio.Future[None]] = [
            self.execute_fast(cmds[chain[0]]) if len(chain) == 1
            else asyncio.ensure_future(run_chain(chain)) for chain in chains]
        results = await asyncio.gather(*parts, return_exceptions=True)
        for chain, res in zip(chains, results, strict=True):
            if isinstance(res, ClientError):
                out[chain[0]] = res
            elif isinstance(res, BaseException):
                raise res  # a bug: the server answers the whole batch "internal error"
            elif len(chain) == 1:
                out[chain[0]] = res
        return cast("list[Outcome]", out)

    async def _outcome(self, cmd: Command) -> Outcome:
        try:
            return await self._execute(cmd)
        except ClientError as e:
            return e

    async def _execute(self, cmd: Command) -> Result:
        if isinstance(cmd, (Get, Put, Cas, IncrBy)):
            return await self._on_key(cmd.key, cmd)
        if isinstance(cmd, MGet):
            return await self._mget(cmd.keys)
        if isinstance(cmd, (Exists, Delete)):
            return await self._count_keys(cmd)
        if isinstance(cmd, MSet):
            return await self._mset(cmd)
        if isinstance(cmd, Scan):
            return await self._scan(cmd)
        assert isinstance(cmd, Count)
        return await self._count_all()

    # -- multi-range commands -------------------------------------------------------------

    def _group(self, keys: Sequence[bytes]) -> dict[bytes, list[int]]:
        """Positions of ``keys`` grouped by their range's first key (a stand-in group
        key: the pieces are re-routed one by one anyway)."""
        groups: dict[bytes, list[int]] = {}
        for i, k in enumerate(keys):
            d = self._dir.lookup(k)
            groups.setdefault(d.start_key if d is not None else k, []).append(i)
        return groups

    async def _mget(self, keys: tuple[bytes, ...]) -> Result:
        values: list[bytes | None] = [None] * len(keys)
        groups = list(self._group(keys).values())
        results = await asyncio.gather(*(
            self._on_key(keys[idx[0]], MGet(tuple(keys[i] for i in idx))) for idx in groups))
        for idx, res in zip(groups, results, strict=True):
            if isinstance(res, Error):
                return res
            assert isinstance(res, Values)
            for i, v in zip(idx, res.values, strict=True):
                values[i] = v
        return Values(tuple(values))

    async def _count_keys(self, cmd: Exists | Delete) -> Result:
        groups = list(self._group(cmd.keys).values())
        kind = type(cmd)
        return _sum_counts(await asyncio.gather(*(
            self._on_key(cmd.keys[idx[0]], kind(tuple(cmd.keys[i] for i in idx)))
            for idx in groups)))

    async def _mset(self, cmd: MSet) -> Result:
        keys = tuple(k for k, _ in cmd.pairs)
        groups = list(self._group(keys).values())
        results = await asyncio.gather(*(
            self._on_key(keys[idx[0]], MSet(tuple(cmd.pairs[i] for i in idx)))
            for idx in groups))
        for res in results:
            if isinstance(res, Error):
                return res
        return Ok()

    async def _scan(self, cmd: Scan) -> Result:
        pairs: list[tuple[bytes, bytes]] = []
        start = cmd.start
        while cmd.limit is None or len(pairs) < cmd.limit:
            d = self._dir.lookup(start)
            if d is None:
                raise TryAgain(f"no range known for key {start!r}")
            end = d.end_key if not cmd.end or (d.end_key and d.end_key < cmd.end) else cmd.end
            limit = None if cmd.limit is None else cmd.limit - len(pairs)
            res = await self._on_key(start, Scan(start, end, limit))
            if isinstance(res, Error):
                return res
            assert isinstance(res, Pairs)
            pairs.extend(res.pairs)
            if not d.end_key or (cmd.end and d.end_key >= cmd.end):
                break
            start = d.end_key
        return Pairs(tuple(pairs))

    async def _count_all(self) -> Result:
        descs = self._dir.all()
        return _sum_counts(await asyncio.gather(
            *(self._on_key(d.start_key, Count()) for d in descs)))

    # -- one range ------------------------------------------------------------------------

    async def _on_key(
        self, key: bytes, cmd: Command, raw: bytes | None = None, *, attempt: int = 0,
        pause: float = 0.0,
    ) -> Result:
        """Run ``cmd`` (whose keys all lie in ``key``'s range) with bounded retries;
        ``attempt``/``pause``: go on after attempts already made (``execute_fast``)."""
        if raw is None:
            try:
                raw = encode_command(cmd)
            except KVCodecError as e:
                raise BadRequest(str(e)) from e
        if pause:
            await asyncio.sleep(pause)
        for n in range(attempt, self._max_attempts):
            desc = self._dir.lookup(key)
            if desc is None:
                # A gap: a split's left half was learnt before its right half (the
                # workers' reports fill it in); nothing was sent, so waiting is safe.
                await asyncio.sleep(self._backoff * (1 + min(n, 8)))
                continue
            verdict = self._judge(desc, await self._submit(desc, raw), n)
            if not isinstance(verdict, float):
                return verdict
            if verdict:
                await asyncio.sleep(verdict)
        raise TryAgain("no leader found for the range; retry")

    def _judge(self, desc: RangeDescriptor, resp: ClientResponse, attempt: int) -> Result | float:
        """The result of one attempt, or the pause before the next one (0.0: retry at
        once). Learns from the answer (descriptor, leader hint); raises ``Timeout``
        (unknown outcome: never retried) or ``BadRequest``."""
        outcome, hint = unpack_status(resp.status)
        if outcome == ReqOutcome.OK:
            res = decode_result(resp.payload)
            if isinstance(res, Error) and res.kind == ErrorKind.RANGE_KEY_MISMATCH:
                self._dir.set_leader(desc.range_id, None)
                return self._backoff
            return res
        if outcome == ReqOutcome.MISMATCH:
            if resp.payload:
                self._dir.update(RangeDescriptor.decode(resp.payload))
            else:
                self._dir.set_leader(desc.range_id, None)
            return self._backoff * min(attempt, 4)
        if outcome == ReqOutcome.TRYAGAIN:
            known = self._dir.leader(desc.range_id)
            self._dir.set_leader(desc.range_id, hint or None)
            if not hint or hint == known:
                return self._backoff * (1 + min(attempt, 8))
            return 0.0
        if outcome == ReqOutcome.UNKNOWN:
            raise Timeout("the outcome of the command is unknown")
        raise BadRequest(resp.payload.decode("utf-8", "replace"))

    # -- the unpipelined fast path --------------------------------------------------------

    def execute_fast(self, cmd: Command) -> asyncio.Future[Result]:
        """``execute`` as a future, for the RESP server's one-command batches.

        A single-key command's first attempt runs without a task or coroutine: it
        is submitted at once and judged in the answer's done callback; only a
        retry (or a multi-range command) becomes a task running ``_on_key``. The
        future fails with a ``ClientError`` as ``execute`` raises one."""
        loop = asyncio.get_running_loop()
        if isinstance(cmd, (Get, Put, Cas, IncrBy)):
            out: asyncio.Future[Result] = loop.create_future()
            try:
                raw = encode_command(cmd)
            except KVCodecError as e:
                out.set_exception(BadRequest(str(e)))
                return out
            desc = self._dir.lookup(cmd.key)
            if desc is not None:
                sub = asyncio.ensure_future(self._submit(desc, raw))
                sub.add_done_callback(functools.partial(self._first_answer, out, cmd, raw,
                                                        desc))
                return out
        return asyncio.ensure_future(self._execute(cmd))

    def _first_answer(self, out: asyncio.Future[Result], cmd: Get | Put | Cas | IncrBy,
                      raw: bytes, desc: RangeDescriptor,
                      sub: asyncio.Future[ClientResponse]) -> None:
        if out.done():
            return
        if sub.cancelled():
            out.cancel()
            return
        try:
            verdict = self._judge(desc, sub.result(), 0)
        except Exception as e:  # a ClientError, or a bug: the awaiting caller reports it
            out.set_exception(e)
            return
        if not isinstance(verdict, float):
            out.set_result(verdict)
            return
        retry = asyncio.ensure_future(self._on_key(cmd.key, cmd, raw, attempt=1,
                                                   pause=verdict))
        retry.add_done_callback(functools.partial(_settle, out))


def _settle(out: asyncio.Future[Result], task: asyncio.Future[Result]) -> None:
    """Copy ``task``'s outcome into ``out``."""
    if out.done():
        return
    if task.cancelled():
        out.cancel()
    elif (exc := task.exception()) is not None:
        out.set_exception(exc)
    else:
        out.set_result(task.result())


def _sum_counts(results: Sequence[Result]) -> Result:
    """The per-range counts of a command cut over ranges, added up (the first error
    instead, if any range answered one)."""
    total = 0
    for res in results:
        if isinstance(res, Error):
            return res
        assert isinstance(res, Int)
        total += res.value
    return Int(total)


def _keys_of(cmd: Command) -> tuple[bytes, ...] | None:
    """The keys ``cmd`` touches; None for a command over a key span (ordered against
    every other command of its batch)."""
    return None if isinstance(cmd, (Scan, Count)) else command_keys(cmd)


def _conflict_chains(cmds: Sequence[Command]) -> list[list[int]]:
    """Partition the positions of ``cmds`` into chains, each in order: two commands
    sharing a key (transitively) are in the same chain. A keyless command puts the
    whole batch in one chain."""
    parent = list(range(len(cmds)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[bytes, int] = {}
    for i, cmd in enumerate(cmds):
        keys = _keys_of(cmd)
        if keys is None:
            return [list(range(len(cmds)))]
        for k in keys:
            j = owner.setdefault(k, i)
            if j != i:
                parent[root(i)] = root(j)
    chains: dict[int, list[int]] = {}
    for i in range(len(cmds)):
        chains.setdefault(root(i), []).append(i)
    return list(chains.values())
