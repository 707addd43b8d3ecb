"""Split and merge commands: their log payloads and the checks every replica makes
when one applies.

Rules
-----
- A split or merge is proposed through a range's own raft log, so every
  replica switches at the same log position. Each command names the
  generation of the descriptor it was planned against; a replica applying
  it re-checks against its *current* descriptor (which every replica has in
  the same state at that log position), and refuses it deterministically if
  the range changed in between. A refused command changes nothing.
- **Split** ``(new_range_id, generation, key)``: at apply every replica keeps
  ``[start, key)`` and creates the right-hand range with the same replicas
  at the same log position (``engine/store.py``).
- **Merge** in two steps. ``FREEZE (generation)`` through the right-hand
  range's log: from its index on, that range applies no user command and
  accepts no proposal. The initiator then reads the frozen right-hand
  image on its own replica and proposes ``MERGE (left generation,
  right descriptor, image)`` through the left-hand log: each left replica
  absorbs the carried image and drops its local right-hand replica. Carrying
  the image makes the merge independent of how far each right-hand replica
  got (the image is final: nothing applies after the freeze: no user command,
  split or merge applies to a frozen range). Whether and when the right-hand
  range is ever unfrozen is decided by ``engine/merge_resolver.py``, never by
  the initiator alone.
- A FREEZE records the merge **intent** ``(left_id, left_generation)``; a
  second FREEZE on a frozen range is refused, so the intent of a frozen range
  never changes. An UNFREEZE names the intent it undoes and applies only if it
  is still the current one.
- A MERGE that reaches the left-hand range at its planned generation but is
  refused (the replica sets differ) bumps the left-hand generation: from then
  on no MERGE of that intent can ever apply, so every intent is decided by
  the first MERGE of it that reaches the left-hand log at its generation.

Payload layouts (little-endian; inside the ``engine/proposal`` envelope)::

    SPLIT    new_range_id:u64 | generation:u64 | key_len:u32 | key
    FREEZE   generation:u64 | left_id:u64 | left_generation:u64
    UNFREEZE generation:u64 | left_id:u64 | left_generation:u64
    (an 8-byte FREEZE/UNFREEZE, generation only, is the version-1 form: no intent)
    MERGE    left_generation:u64 | desc_len:u32 | right descriptor | image
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from engine.range_desc import RangeDescriptor

_SPLIT: Final = struct.Struct("<QQI")
_GEN: Final = struct.Struct("<Q")
_MERGE: Final = struct.Struct("<QI")
_FREEZE: Final = struct.Struct("<QQQ")


class SplitCommand(NamedTuple):
    new_range_id: int
    generation: int
    key: bytes


class MergeCommand(NamedTuple):
    left_generation: int
    right: RangeDescriptor
    image: bytes


def encode_split(cmd: SplitCommand) -> bytes:
    return _SPLIT.pack(cmd.new_range_id, cmd.generation, len(cmd.key)) + cmd.key


def decode_split(data: bytes) -> SplitCommand:
    new_id, gen, n = _SPLIT.unpack_from(data)
    key = data[_SPLIT.size:]
    assert len(key) == n, "split payload length mismatch"
    return SplitCommand(new_id, gen, key)


def decode_generation(data: bytes) -> int:
    (gen,) = _GEN.unpack(data)
    return int(gen)


class MergeIntent(NamedTuple):
    """Which left-hand range, at which generation, a frozen range is to merge into."""

    left_id: int
    left_generation: int


class FreezeCommand(NamedTuple):
    """A FREEZE or UNFREEZE: the right-hand generation it was planned at and the
    merge intent (None only in the version-1 form)."""

    generation: int
    intent: MergeIntent | None


def encode_freeze(cmd: FreezeCommand) -> bytes:
    assert cmd.intent is not None, "new FREEZE/UNFREEZE entries always carry their intent"
    return _FREEZE.pack(cmd.generation, cmd.intent.left_id, cmd.intent.left_generation)


def decode_freeze(data: bytes) -> FreezeCommand:
    if len(data) == _GEN.size:
        return FreezeCommand(decode_generation(data), None)
    gen, left_id, left_gen = _FREEZE.unpack(data)
    return FreezeCommand(gen, MergeIntent(left_id, left_gen))


def encode_merge(cmd: MergeCommand) -> bytes:
    raw = cmd.right.encode()
    return _MERGE.pack(cmd.left_generation, len(raw)) + raw + cmd.image


def decode_merge(data: bytes) -> MergeCommand:
    gen, n = _MERGE.unpack_from(data)
    start = _MERGE.size
    right = RangeDescriptor.decode(data[start:start + n])
    return MergeCommand(gen, right, data[start + n:])


def split_refusal(desc: RangeDescriptor, cmd: SplitCommand) -> str | None:
    """Why ``cmd`` cannot apply to ``desc`` (None: it can)."""
    if cmd.generation != desc.generation:
        return f"range changed (generation {desc.generation}, split planned at {cmd.generation})"
    if not (desc.start_key < cmd.key and (not desc.end_key or cmd.key < desc.end_key)):
        return f"split key {cmd.key!r} not strictly inside {desc.describe()}"
    return None


def merge_refusal(left: RangeDescriptor, cmd: MergeCommand) -> str | None:
    """Why the merge cannot apply to the left-hand ``left`` (None: it can)."""
    if cmd.right.range_id == left.range_id:
        return "a range cannot merge with itself"
    if cmd.left_generation != left.generation:
        return f"left range changed (generation {left.generation}, planned {cmd.left_generation})"
    if not left.end_key or left.end_key != cmd.right.start_key:
        return f"not adjacent: {left.describe()} and {cmd.right.describe()}"
    if (left.voters, left.learners) != (cmd.right.voters, cmd.right.learners):
        return "replica sets differ"
    return None
