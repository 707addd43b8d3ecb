"""Proposals: the entry envelope, pending client requests and their outcomes.

Theory of operation
-------------------
Every entry the Store proposes is wrapped in an envelope that names its kind
(a user command, a split, a merge...) and who proposed it (node id and a
per-store proposal id). Only the replica that proposed an entry completes
its client request: when it *applies* the entry at the index the proposal
was appended at, it compares the envelope's ``(node, id)`` with its own
record.

Outcomes (the distinction ARCHITECTURE.md requires of the client protocol):

- ``OK``: committed and applied; ``result`` is the state machine's answer.
- ``TRYAGAIN``: definitely not applied, safe to retry: the proposal was
  dropped before it was appended (no leader, not the leader), or a
  *different* entry was applied at its index (an entry lives at exactly one
  index, so ours can never apply later), or a read could not be confirmed.
- ``UNKNOWN``: may or may not have applied (deadline passed, the replica
  installed a snapshot past the index, the replica went away).
- ``MISMATCH``: the key is outside the range or the generation is stale;
  ``descriptor`` is the current one (nothing was proposed).
- ``ERROR``: an admin command (split, merge, replica change) was refused;
  ``result`` is the reason (UTF-8). Nothing changed.

Envelope layout (little-endian)::

    kind:u8 | node:u32 | proposal_id:u64 | payload
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from engine.range_desc import RangeDescriptor

_ENVELOPE: Final = struct.Struct("<BIQ")
ENVELOPE_SIZE: Final = _ENVELOPE.size


class EntryKind(IntEnum):
    """What an envelope's payload is. The apply loop dispatches on it."""

    USER = 1
    SPLIT = 2
    MERGE = 3
    FREEZE = 4
    UNFREEZE = 5
    #: A conf change's ``context`` (the entry data is the encoded ConfChange).
    CONF_CHANGE = 6


def wrap(kind: EntryKind, node: int, proposal_id: int, payload: bytes) -> bytes:
    return _ENVELOPE.pack(kind, node, proposal_id) + payload


def unwrap(data: bytes) -> tuple[int, int, int, bytes]:
    """``(kind, node, proposal_id, payload)``; an AssertionError on a foreign entry,
    because every non-empty normal entry in a Store's log was wrapped by a Store."""
    assert len(data) >= ENVELOPE_SIZE, "entry shorter than an envelope"
    kind, node, pid = _ENVELOPE.unpack_from(data)
    return kind, node, pid, data[ENVELOPE_SIZE:]


class Outcome(IntEnum):
    OK = 0
    TRYAGAIN = 1
    UNKNOWN = 2
    MISMATCH = 3
    ERROR = 4


@dataclass(frozen=True, slots=True)
class Completion:
    """The end of one client request (a proposal or a read) handed back by a round."""

    request_id: int
    outcome: Outcome
    result: bytes = b""
    #: Node id of the leader as this replica knows it (0: unknown); a routing hint.
    leader_hint: int = 0
    #: For MISMATCH: the range's current descriptor.
    descriptor: RangeDescriptor | None = None


@dataclass(slots=True)
class PendingProposal:
    """A proposal appended to the leader's log at ``index`` in ``term``."""

    request_id: int
    proposal_id: int
    index: int
    term: int
    #: Store tick after which the client is told UNKNOWN.
    deadline: int


@dataclass(slots=True)
class PendingRead:
    """A read waiting for its ReadIndex round and then for apply to reach ``index``."""

    request_id: int
    query: bytes
    deadline: int
    #: The keys the read touches: re-checked against the descriptor when it is served
    #: (a split or merge may have moved them since it was accepted).
    keys: tuple[bytes, ...] = ()
    #: 0 until the read-index round confirmed; then the index apply must reach.
    index: int = 0
