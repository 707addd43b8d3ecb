"""``MetaSync``: the node's side of the meta range — load, poll, push, allocate ids.

Theory of operation
-------------------
The meta range (``engine/meta.py``) is the cluster's source of truth for
range descriptors. Every node keeps a routing cache, its ``RangeDirectory``;
``MetaSync`` keeps that cache in step with meta and meta in step with what
actually happened:

- **Load and poll.** ``refresh`` reads meta's version (one small linearizable
  read); only when it moved past the version this node has seen does it read
  the CHANGES pages after that version and feed each descriptor to the
  directory (``update`` keeps generations straight, so descriptors the node
  already learnt fresher from its own workers or a MISMATCH are not undone).
  The first refresh reads everything. An idle cluster costs one read per
  ``poll_interval`` per node, whatever the number of ranges; a change costs
  what changed. The interval (2 s) trades staleness for idle traffic: each
  poll wakes the quiesced meta range for a ReadIndex round, and a stale cache
  is corrected by MISMATCH answers in between anyway.
- **Push.** After an admin split or merge the node pushes the new
  descriptors (``publish``). A crash between a split committing and that push
  would leave meta behind, and so would a split driven elsewhere: the
  *reconciler* (every ``reconcile_every`` polls) pushes every descriptor a
  local worker reports as *leader* whose generation meta does not have yet
  (leaders only, so one node per range pushes). Pushes are idempotent and
  commutative under meta's generation rule, so repeating one, or two nodes
  racing, is harmless.
- **Allocate.** ``allocate_range_id`` reserves a fresh id in meta (one
  write through meta's log): ids are unique cluster-wide and small.

``_view`` mirrors meta as of ``_version`` (fed only by CHANGES pages, never
by guesses), which is what the reconciler compares against. It holds one
descriptor per range: at 10,000 ranges, a few MiB.

Every meta command is safe to retry: reads change nothing, a PUT is
idempotent and an ALLOCATE whose answer was lost only skips ids. So a lost
answer (UNKNOWN, a forward timeout) is simply retried, within a bound;
``MetaUnavailable`` says meta could not be reached, ``MetaRefused`` that it
refused the command.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Final, TypeVar

from engine.client_errors import Timeout
from engine.meta_codec import (
    MAX_PUT,
    META_RANGE_ID,
    AllocateIds,
    Changes,
    Ids,
    MetaCodecError,
    MetaCommand,
    MetaError,
    MetaResult,
    PutApplied,
    PutDescriptors,
    ReadChanges,
    ReadVersion,
    VersionInfo,
    decode_result,
    encode_command,
)
from engine.proposal import Outcome
from engine.range_desc import U64_MAX, InvalidDescriptor, RangeDescriptor
from engine.range_directory import RangeDirectory
from engine.worker_protocol import unpack_status
from transport import ClientResponse

log = logging.getLogger("multiraft.meta")

#: How the node runs one command on one range (``Node.submit``).
Submit = Callable[[RangeDescriptor, bytes], Awaitable[ClientResponse]]

#: Descriptors per CHANGES page asked for.
PAGE: Final = 1024

_R = TypeVar("_R", VersionInfo, Changes, PutApplied, Ids)


class MetaUnavailable(Exception):
    """The meta range did not answer within the retry bound (no leader, partition)."""


class MetaRefused(Exception):
    """The meta range (or its worker) refused the command; the message says why."""


class MetaSync:
    """The node's meta client and cache feeder (see the module docstring)."""

    def __init__(
        self, directory: RangeDirectory, submit: Submit,
        leader_descriptors: Callable[[], Iterable[RangeDescriptor]], *,
        poll_interval: float = 2.0, reconcile_every: int = 5, attempts: int = 30,
        backoff: float = 0.05,
    ) -> None:
        self._dir = directory
        self._submit = submit
        self._leader_descriptors = leader_descriptors
        self._poll_interval = poll_interval
        self._reconcile_every = reconcile_every
        self._attempts = attempts
        self._backoff = backoff
        #: Invariant: meta's directory as of ``_version`` (fed by CHANGES pages only).
        self._view = RangeDirectory([])
        #: Invariant: the meta version ``_view`` reflects; 0 before the first load.
        self._version = 0
        #: Invariant: True once one full load completed (the reconciler waits for it).
        self._loaded = False
        #: Serialises refreshes: two concurrent page walks would race on ``_version``.
        self._refreshing = asyncio.Lock()

    @property
    def version(self) -> int:
        """The meta version this node's cache reflects (0: not loaded yet)."""
        return self._version

    @property
    def loaded(self) -> bool:
        return self._loaded

    def known(self, range_id: int) -> RangeDescriptor | None:
        """Meta's descriptor of ``range_id`` as of the last refresh."""
        return self._view.get(range_id)

    async def run(self) -> None:
        """Poll forever: refresh every ``poll_interval``, reconcile every
        ``reconcile_every`` polls. Meta being unreachable is logged, never fatal."""
        polls = 0
        while True:
            try:
                await self.refresh()
                polls += 1
                if polls % self._reconcile_every == 0:
                    await self.reconcile()
            except (MetaUnavailable, MetaRefused) as e:
                log.warning("meta sync: %s", e)
            except Exception:  # a bug: say so loudly, but keep the cache fed
                log.exception("meta sync failed")
            await asyncio.sleep(self._poll_interval)

    # -- reading meta -------------------------------------------------------------------

    async def refresh(self) -> bool:
        """Bring the directory up to meta's current version; whether anything was read."""
        async with self._refreshing:
            info = await self._expect(ReadVersion(), VersionInfo)
            if info.version == self._version and self._loaded:
                return False
            if info.version < self._version:  # meta was rebuilt under us: start over
                log.warning("meta version went back from %d to %d: reloading",
                            self._version, info.version)
                self._view = RangeDirectory([])
                self._version = 0
            since, after = self._version, U64_MAX
            while True:
                page = await self._expect(
                    ReadChanges(since=since, after_id=after, limit=PAGE), Changes)
                for at, desc in page.entries:
                    self._view.update(desc)
                    self._dir.update(desc)
                    since, after = at, desc.range_id
                if not page.more:
                    self._version = page.version
                    self._loaded = True
                    return True

    # -- writing meta -------------------------------------------------------------------

    async def publish(self, descs: Iterable[RangeDescriptor]) -> int:
        """Push ``descs`` to meta (idempotent), then refresh; how many took effect."""
        todo = [d for d in descs if d.range_id != META_RANGE_ID]
        applied = 0
        for i in range(0, len(todo), MAX_PUT):
            res = await self._expect(PutDescriptors(tuple(todo[i:i + MAX_PUT])), PutApplied)
            applied += res.applied
        if todo:
            await self.refresh()
        return applied

    async def reconcile(self) -> int:
        """Push the descriptors local leaders hold that meta lacks or has older (a
        crash between a split and its push; a split that never pushed); how many."""
        if not self._loaded:
            return 0
        stale = [d for d in self._leader_descriptors()
                 if d.range_id != META_RANGE_ID and self._meta_lacks(d)]
        if not stale:
            return 0
        applied = await self.publish(stale)
        if applied:
            log.info("meta sync: pushed %d descriptor(s) meta lacked", applied)
        return applied

    def _meta_lacks(self, desc: RangeDescriptor) -> bool:
        """Whether meta (as of the last refresh) would take ``desc``: it does not have
        it, and nothing it has over those keys is as new. A replica that still thinks
        it leads a range merged or split away elsewhere reports a descriptor meta
        refuses: pushing it every round would be a raft write for nothing."""
        if self._view.get(desc.range_id) == desc:
            return False
        return all(d.generation < desc.generation
                   for d in self._view.overlapping(desc.start_key, desc.end_key))

    async def allocate_range_id(self) -> int:
        """A range id no other caller anywhere in the cluster ever gets."""
        res = await self._expect(AllocateIds(1), Ids)
        return res.first

    # -- one command ----------------------------------------------------------------------

    async def _expect(self, cmd: MetaCommand, kind: type[_R]) -> _R:
        res = await self._command(cmd)
        if isinstance(res, MetaError):
            raise MetaRefused(f"meta refused {type(cmd).__name__}: {res.message}")
        if not isinstance(res, kind):
            raise MetaRefused(f"meta answered {type(cmd).__name__} with {type(res).__name__}")
        return res

    async def _command(self, cmd: MetaCommand) -> MetaResult:
        """Run ``cmd`` on meta's leader, retrying lost answers (every meta command is
        retry-safe: module docstring) and following MISMATCH/leader hints."""
        raw = encode_command(cmd)
        for attempt in range(self._attempts):
            desc = self._dir.get(META_RANGE_ID)
            if desc is None:
                raise MetaUnavailable("this node does not know the meta range's descriptor")
            try:
                resp = await self._submit(desc, raw)
            except Timeout:
                await self._pause(attempt)
                continue
            outcome, hint = unpack_status(resp.status)
            if outcome == Outcome.OK:
                try:
                    return decode_result(resp.payload)
                except MetaCodecError as e:
                    raise MetaRefused(f"undecodable meta answer: {e}") from e
            if outcome == Outcome.ERROR:
                raise MetaRefused(resp.payload.decode("utf-8", "replace"))
            if outcome == Outcome.MISMATCH and resp.payload:
                try:
                    self._dir.update(RangeDescriptor.decode(resp.payload))
                except InvalidDescriptor:
                    self._dir.set_leader(META_RANGE_ID, None)
            elif outcome == Outcome.TRYAGAIN and hint:
                known = self._dir.leader(META_RANGE_ID)
                self._dir.set_leader(META_RANGE_ID, hint)
                if hint != known:
                    continue  # a new leader to try: no need to wait
            else:
                self._dir.set_leader(META_RANGE_ID, None)
            await self._pause(attempt)
        raise MetaUnavailable(f"meta range unreachable after {self._attempts} attempts")

    async def _pause(self, attempt: int) -> None:
        await asyncio.sleep(self._backoff * (1 + min(attempt, 8)))
