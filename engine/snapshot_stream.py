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
- The receiver hands the assembled ``SNAPSHOT`` message to raft only when
  the last chunk arrived.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from engine.raft.types import Message, MessageType, Snapshot

_CTX: Final = struct.Struct("<IB")
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
class _Incoming:
    frm: int
    term: int
    index: int
    chunks: list[bytes]


class SnapshotReceiver:
    """Assembles incoming chunk streams, keyed by range id (one leader at a time)."""

    __slots__ = ("_streams",)

    def __init__(self) -> None:
        self._streams: dict[int, _Incoming] = {}

    def add(self, range_id: int, msg: Message) -> Message | None:
        """Take one chunk; returns the whole ``SNAPSHOT`` message after the last one."""
        seq, last = _CTX.unpack(msg.context)
        snap = msg.snapshot
        assert snap is not None
        st = self._streams.get(range_id)
        if seq == 0:
            st = self._streams[range_id] = _Incoming(msg.frm, msg.term, snap.metadata.index, [])
        elif st is None or (st.frm, st.term, st.index) != (
            msg.frm, msg.term, snap.metadata.index
        ) or len(st.chunks) != seq:
            self._streams.pop(range_id, None)  # a gap or a foreign chunk: start over
            return None
        st.chunks.append(snap.data)
        if not last:
            return None
        del self._streams[range_id]
        return msg._replace(snapshot=Snapshot(snap.metadata, b"".join(st.chunks)), context=b"")

    def abort_from(self, node: int) -> None:
        """Forget partial streams from ``node`` (declared dead: they will not finish)."""
        for rid in [r for r, st in self._streams.items() if st.frm == node]:
            del self._streams[rid]

    def __len__(self) -> int:
        return len(self._streams)
