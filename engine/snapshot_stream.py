"""Streaming raft snapshots in chunks, rate-limited per store.

Why
---
The raft core hands a leader's snapshot to the caller as one ``SNAPSHOT``
message. Built naively, that is the whole state-machine image as one byte
string, per lagging follower, sent as one message. Instead the replica gives
raft an *empty* placeholder (metadata only) and keeps the state machine's
lazy chunk iterator (``StateMachine.snapshot()`` captures the state when
called and encodes as it is read); the Store turns the outgoing message into
a stream of chunk messages and sends at most ``budget`` bytes per round
across all streams, so memory on the sender is bounded by a chunk per stream
and the network by the budget.

Wire form: each chunk is itself a raft ``SNAPSHOT`` message (so the existing
codec carries it) whose ``snapshot.data`` is the chunk and whose ``context``
is ``seq:u32 | last:u8``. The first chunk is the encoded descriptor prefix
(``replica.encode_snapshot_data`` layout), the rest the image.

Rules
-----
- Chunks of one stream go in order through one outbox; a receiver that sees
  a sequence gap discards the stream (the leader will retry: the sender
  reports failure when a stream is aborted, success once its last chunk
  left, after which raft's usual probing finds out whether it arrived).
- A new stream to the same ``(range, node)`` replaces an old one.
- The receiver hands the ``SNAPSHOT`` message to raft only when the last
  chunk arrived, and never assembles the image: chunk 0 (the small
  descriptor prefix) becomes the message's data, every later chunk is
  appended to an anonymous temporary file (the *spool*) as it arrives. When
  raft hands the snapshot back in a Ready, the Store ``take``s the spool for
  that ``(range, index, term)`` and the replica restores from it and saves it
  durably by reading it twice in blocks. Receiver memory is therefore bounded
  by one chunk per stream (plus a read block), whatever the image size.
- One spool per range: a new stream, a ``take``, a ``discard`` (the replica
  went away) or ``close`` frees the previous one; a snapshot raft decided not
  to install leaves its spool until one of those.
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Final

from engine.raft.types import Message, MessageType, Snapshot

_CTX: Final = struct.Struct("<IB")
#: Block size when a spool is read back.
_SPOOL_BLOCK: Final = 1 << 16
_SNAPSHOT = MessageType.SNAPSHOT


def is_chunk(msg: Message) -> bool:
    return msg.type == _SNAPSHOT and len(msg.context) == _CTX.size


@dataclass(slots=True)
class _Outgoing:
    template: Message
    chunks: Iterator[bytes]
    #: Invariant: the next chunk's sequence number.
    seq: int = 0
    #: The chunk read ahead (None: not read yet), so the last one can be flagged.
    ahead: bytes | None = None


class SnapshotSender:
    """The Store's outgoing snapshot streams, keyed by ``(range_id, to)``."""

    __slots__ = ("_streams",)

    def __init__(self) -> None:
        self._streams: dict[tuple[int, int], _Outgoing] = {}

    def start(self, range_id: int, msg: Message, chunks: Iterator[bytes]) -> None:
        self._streams[(range_id, msg.to)] = _Outgoing(msg, chunks)

    def __len__(self) -> int:
        return len(self._streams)

    def abort_to(self, node: int) -> list[int]:
        """Drop every stream to ``node``; returns their range ids (to report failure)."""
        gone = [key for key in self._streams if key[1] == node]
        for key in gone:
            del self._streams[key]
        return [rid for rid, _ in gone]

    def pump(self, budget: int) -> tuple[list[tuple[int, Message]], list[tuple[int, int]]]:
        """Up to ``budget`` bytes of chunks (at least one chunk per round if any is
        waiting, so a chunk larger than the budget still moves). Returns the chunk
        messages and the ``(range_id, to)`` streams that finished."""
        out: list[tuple[int, Message]] = []
        finished: list[tuple[int, int]] = []
        sent = 0
        for key, st in list(self._streams.items()):
            while sent < budget or not out:
                chunk = st.ahead if st.ahead is not None else next(st.chunks, None)
                if chunk is None:
                    break  # an empty stream: nothing at all to send
                st.ahead = next(st.chunks, None)
                last = st.ahead is None
                t = st.template
                assert t.snapshot is not None
                out.append((key[0], t._replace(
                    snapshot=Snapshot(t.snapshot.metadata, chunk),
                    context=_CTX.pack(st.seq, last),
                )))
                st.seq += 1
                sent += len(chunk)
                if last:
                    finished.append(key)
                    del self._streams[key]
                    break
            if sent >= budget and out:
                break
        return out, finished


@dataclass(slots=True)
class Spool:
    """A received image on disk (an anonymous temporary file), readable many times."""

    index: int
    term: int
    file: IO[bytes] = field(default_factory=tempfile.TemporaryFile)
    #: Invariant: the bytes written to ``file``.
    size: int = 0

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        self.size += len(chunk)

    def chunks(self) -> Iterator[bytes]:
        """A fresh pass over the image, in blocks of ``_SPOOL_BLOCK`` bytes."""
        self.file.flush()
        self.file.seek(0)
        while block := self.file.read(_SPOOL_BLOCK):
            yield block

    def close(self) -> None:
        self.file.close()


@dataclass(slots=True)
class _Incoming:
    frm: int
    term: int
    spool: Spool
    #: Chunk 0: the descriptor prefix (small; becomes the SNAPSHOT message's data).
    prefix: bytes = b""
    #: Invariant: the number of chunks received (the next expected sequence number).
    received: int = 0


class SnapshotReceiver:
    """Spools incoming chunk streams, keyed by range id (one leader at a time)."""

    __slots__ = ("_done", "_streams")

    def __init__(self) -> None:
        self._streams: dict[int, _Incoming] = {}
        #: Complete streams raft has not installed yet. Invariant: one per range.
        self._done: dict[int, Spool] = {}

    def add(self, range_id: int, msg: Message) -> Message | None:
        """Take one chunk; after the last one returns the ``SNAPSHOT`` message whose
        data is the descriptor prefix only (the image waits in the spool: ``take``)."""
        seq, last = _CTX.unpack(msg.context)
        snap = msg.snapshot
        assert snap is not None
        st = self._streams.get(range_id)
        if seq == 0:
            self._drop_stream(range_id)
            st = _Incoming(msg.frm, msg.term, Spool(snap.metadata.index, snap.metadata.term))
            st.prefix = snap.data
            self._streams[range_id] = st
        elif st is None or (st.frm, st.term, st.spool.index) != (
            msg.frm, msg.term, snap.metadata.index
        ) or st.received != seq:
            self._drop_stream(range_id)  # a gap or a foreign chunk: start over
            return None
        else:
            st.spool.write(snap.data)
        st.received += 1
        if not last:
            return None
        del self._streams[range_id]
        old = self._done.pop(range_id, None)
        if old is not None:
            old.close()
        self._done[range_id] = st.spool
        return msg._replace(snapshot=Snapshot(snap.metadata, st.prefix), context=b"")

    def take(self, range_id: int, index: int, term: int) -> Spool | None:
        """The spooled image of the complete stream for ``range_id`` at ``(index,
        term)``; the caller closes it. None if the snapshot did not come as a stream."""
        sp = self._done.get(range_id)
        if sp is None or (sp.index, sp.term) != (index, term):
            return None
        del self._done[range_id]
        return sp

    def discard(self, range_id: int) -> None:
        """The replica went away: free whatever was received for it."""
        self._drop_stream(range_id)
        sp = self._done.pop(range_id, None)
        if sp is not None:
            sp.close()

    def _drop_stream(self, range_id: int) -> None:
        st = self._streams.pop(range_id, None)
        if st is not None:
            st.spool.close()

    def abort_from(self, node: int) -> None:
        """Forget partial streams from ``node`` (declared dead: they will not finish)."""
        for rid in [r for r, st in self._streams.items() if st.frm == node]:
            self._drop_stream(rid)

    def close(self) -> None:
        for rid in list(self._streams):
            self._drop_stream(rid)
        for sp in self._done.values():
            sp.close()
        self._done = {}

    def __len__(self) -> int:
        return len(self._streams)
