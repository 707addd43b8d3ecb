"""Value types of the raft core: entries, messages, hard state, configurations.

Theory of operation
-------------------
Everything that crosses the raft core's boundary is an immutable value defined
here. The core is stepped with ``Message`` values and emits them in a
``Ready``; the caller persists ``Entry`` and ``HardState`` values, applies
committed entries and installs ``Snapshot`` values. Nothing here does IO.

Hot-path values (``Entry``, ``Message``, ``HardState``) are ``NamedTuple``s:
constructing and reading them is measurably cheaper than a frozen slotted
dataclass in CPython 3.11 (attribute reads are C-level tuple indexing), and
they compare and hash by value, which the simulator's invariant checks rely
on. Rarer values (``ConfState``, ``Snapshot``, ``ConfChange``) are the same
for uniformity.

Rules
-----
- Index 0 / term 0 mean "none": the first real entry has index 1.
- ``Message.frm`` is the sender (``from`` is a Python keyword).
- A message carries no group id: the multi-raft layer wraps it with the
  range id on the wire (``transport`` codec), as CockroachDB's
  ``RaftMessageRequest`` wraps etcd's ``raftpb.Message``.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple, NewType

Index = NewType("Index", int)
Term = NewType("Term", int)
NodeId = NewType("NodeId", int)

#: The "nobody" node id (no leader, no vote). Real node ids are >= 1.
NONE = 0


class EntryType(IntEnum):
    """What an entry's ``data`` holds."""

    NORMAL = 0
    #: ``data`` is an encoded ``ConfChange`` (see ``confchange_codec``).
    CONF_CHANGE = 1


class Entry(NamedTuple):
    """One log entry. Invariant: ``index >= 1`` and ``term >= 1`` for real entries."""

    term: int
    index: int  # type: ignore[assignment]  # shadows tuple.index by design
    #: A plain int (an ``EntryType`` value): cheaper to compare than the enum member.
    type: int = int(EntryType.NORMAL)
    data: bytes = b""


class MessageType(IntEnum):
    """Raft messages that travel between peers (all of them can be on the wire).

    Local inputs (tick, propose, campaign, report_*) are method calls on
    ``RawNode``, not messages, except ``PROPOSE``/``READ_INDEX``/
    ``TRANSFER_LEADER`` which a follower forwards to its leader.
    """

    APPEND = 1
    APPEND_RESP = 2
    VOTE = 3
    VOTE_RESP = 4
    PRE_VOTE = 5
    PRE_VOTE_RESP = 6
    SNAPSHOT = 7
    HEARTBEAT = 8
    HEARTBEAT_RESP = 9
    TIMEOUT_NOW = 10
    #: A follower forwards a client proposal to the leader (entries carry the data).
    PROPOSE = 11
    #: A follower forwards a read-index request to the leader (``context`` is the request id).
    READ_INDEX = 12
    READ_INDEX_RESP = 13
    #: A follower forwards a leadership-transfer request (``frm`` is the transferee).
    TRANSFER_LEADER = 14


class ConfState(NamedTuple):
    """The membership configuration as of some log position.

    ``voters_outgoing`` is non-empty only in a joint configuration
    (thesis 4.3 / etcd ``ConfChangeV2``); ``learners_next`` holds voters that
    become learners when the joint configuration is left; ``auto_leave`` says
    the leader leaves the joint configuration by itself.
    """

    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()
    voters_outgoing: tuple[int, ...] = ()
    learners_next: tuple[int, ...] = ()
    auto_leave: bool = False


class SnapshotMetadata(NamedTuple):
    index: int = 0  # type: ignore[assignment]  # shadows tuple.index by design
    term: int = 0
    conf_state: ConfState = ConfState()


class Snapshot(NamedTuple):
    """A state-machine image as of ``metadata.index``. ``data`` is opaque to raft."""

    metadata: SnapshotMetadata = SnapshotMetadata()
    data: bytes = b""

    @property
    def is_empty(self) -> bool:
        return self.metadata.index == 0


EMPTY_SNAPSHOT = Snapshot()


class Message(NamedTuple):
    """One raft message, flat like etcd's ``raftpb.Message``.

    Field use by type:
    - APPEND: ``log_term``/``index`` = the entry preceding ``entries``; ``commit``.
    - APPEND_RESP: ``index`` = last matching index (accept) or the rejected
      index (reject); ``reject``; ``reject_hint`` = follower's hint index,
      ``log_term`` = the follower's term at the hint (fast backtracking).
    - VOTE / PRE_VOTE: ``log_term``/``index`` = candidate's last entry;
      ``context`` = ``CAMPAIGN_TRANSFER`` when forced by a leadership transfer.
    - VOTE_RESP / PRE_VOTE_RESP: ``reject``.
    - SNAPSHOT: ``snapshot``.
    - HEARTBEAT: ``commit`` (min of follower's match and leader commit);
      ``context`` = read-index request ids being confirmed, if any;
      ``index`` = the leader's tick count when sent (lease timing).
    - HEARTBEAT_RESP: ``context`` and ``index`` echoed. A carrier that drops
      ``index`` (the coalesced heartbeat) is still safe: lease reads then
      fall back to a heartbeat round.
    - READ_INDEX / READ_INDEX_RESP: ``context`` = request id; resp ``index``.
    """

    type: int
    to: int
    frm: int
    term: int
    log_term: int = 0
    index: int = 0  # type: ignore[assignment]  # shadows tuple.index by design
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""
    snapshot: Snapshot | None = None


#: ``Message.context`` of a VOTE sent because of a leadership transfer: voters
#: grant it even inside their leader lease (thesis 3.10 / 4.2.3).
CAMPAIGN_TRANSFER = b"transfer"


class HardState(NamedTuple):
    """What must be durable before messages that depend on it are sent (paper fig. 2)."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


EMPTY_HARD_STATE = HardState()


class ConfChangeType(IntEnum):
    ADD_VOTER = 0
    REMOVE_NODE = 1
    ADD_LEARNER = 2


class ConfChangeTransition(IntEnum):
    """How a multi-change ``ConfChange`` is carried out (etcd ConfChangeTransition)."""

    #: Single change: applied directly. Several: joint, left automatically.
    AUTO = 0
    #: Always joint, left automatically by the leader.
    JOINT_IMPLICIT = 1
    #: Always joint, left only by an explicit empty ``ConfChange``.
    JOINT_EXPLICIT = 2


class ConfChangeSingle(NamedTuple):
    type: int
    node_id: int


class ConfChange(NamedTuple):
    """A membership change. An empty ``changes`` tuple means "leave the joint config"."""

    changes: tuple[ConfChangeSingle, ...] = ()
    transition: int = ConfChangeTransition.AUTO
    context: bytes = b""

    @property
    def leaves_joint(self) -> bool:
        return not self.changes


class StateRole(IntEnum):
    FOLLOWER = 0
    CANDIDATE = 1
    LEADER = 2
    PRE_CANDIDATE = 3


class SoftState(NamedTuple):
    """Volatile state worth telling the caller about; need not be persisted."""

    leader: int = NONE
    role: int = StateRole.FOLLOWER


class ReadState(NamedTuple):
    """A linearizable read is safe once the state machine has applied ``index``.

    ``request_ctx`` is the caller's id passed to ``RawNode.read_index``.
    """

    index: int  # type: ignore[assignment]  # shadows tuple.index by design
    request_ctx: bytes


def entry_size(e: Entry) -> int:
    """Bytes an entry counts for against byte budgets (payload plus a fixed overhead)."""
    return len(e.data) + ENTRY_OVERHEAD


#: Fixed per-entry cost used by every byte budget (max message size, uncommitted
#: size, committed-entries paging), so that empty entries are not free.
ENTRY_OVERHEAD = 16
