"""Range descriptors: which keys a raft group owns, and on which nodes.

A range is the half-open key interval ``[start_key, end_key)``
(``end_key == b""`` means no upper bound) served by one raft group with a
64-bit ``range_id``. Its descriptor also names the replica set (voters and
learners, as node ids) and a ``generation`` that every split and merge bumps.

Rules
-----
- A descriptor is a value: immutable, validated when built, replica lists
  kept sorted so that equal replica sets compare equal.
- The generation orders the descriptors of one key span over time: a
  request routed with a descriptor of an older generation is stale and gets
  ``RangeKeyMismatch`` with the current one(s). Split gives *both* halves
  ``generation + 1``; merge gives ``max(left, right) + 1``, so no later
  descriptor ever reuses an earlier generation for an overlapping span.
- Split and merge here only compute and validate the new descriptors; the
  store proposes them through the raft log so every replica switches at the
  same log position. This module is pure: no IO.
- Merge needs two adjacent ranges with identical replica sets (voters and
  learners): the left-hand group subsumes the right-hand one's data, which
  only works if every node that holds the left half also holds the right.

Encoding (version 1, little-endian), for the meta range and for errors that
cross process boundaries::

    descriptor := version:u8 (=1) | range_id:u64 | generation:u64
                  | start_key:blob | end_key:blob
                  | n_voters:u16 | voter:u64 * n_voters
                  | n_learners:u16 | learner:u64 * n_learners
    blob       := len:u32 | bytes[len]

    mismatch   := version:u8 (=1) | has_key:u8 | [key:blob if has_key=1]
                  | n:u16 | (len:u32 | descriptor) * n

Replica ids are written in increasing order and decoding insists on it, so
the encoding is canonical: equal descriptors have equal bytes (the meta
range can compare-and-swap a descriptor by its bytes). Decoding untrusted
bytes returns a valid value or raises ``InvalidDescriptor``; nothing else
escapes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from itertools import pairwise
from typing import Final

from engine.byte_reader import ByteReader

VERSION: Final = 1
U64_MAX: Final = (1 << 64) - 1
MAX_REPLICAS: Final = 0xFFFF

_HEAD = struct.Struct("<BQQ")  # version, range_id, generation
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class RangeError(Exception):
    """Root of the errors about ranges and their descriptors."""


class InvalidDescriptor(RangeError, ValueError):
    """A descriptor (or its encoding) that breaks a rule: bad ids, empty key
    span, overlapping or duplicate replicas, malformed bytes."""


class SplitRefused(RangeError, ValueError):
    """A split whose key is not strictly inside the range, or that reuses the
    range's own id for the right-hand half."""


class MergeRefused(RangeError, ValueError):
    """Two ranges that cannot merge; ``reason`` says why (not adjacent,
    different replica sets, same range)."""

    def __init__(self, left: RangeDescriptor, right: RangeDescriptor, reason: str) -> None:
        super().__init__(f"cannot merge r{left.range_id} with r{right.range_id}: {reason}")
        self.left = left
        self.right = right
        self.reason = reason


class RangeKeyMismatch(RangeError):
    """A request reached a replica whose range does not cover its key, or was
    routed with a stale generation. Carries the descriptor(s) the replica
    knows to be current, so the router fixes its cache and retries."""

    def __init__(self, key: bytes | None, descriptors: tuple[RangeDescriptor, ...]) -> None:
        spans = ", ".join(d.describe() for d in descriptors) or "no descriptor"
        where = "request" if key is None else f"key {key!r}"
        super().__init__(f"range key mismatch: {where}; current: {spans}")
        self.key = key
        self.descriptors = descriptors

    def encode(self) -> bytes:
        parts = [bytes((VERSION,))]
        if self.key is None:
            parts.append(b"\x00")
        else:
            parts.append(b"\x01" + _U32.pack(len(self.key)) + self.key)
        parts.append(_U16.pack(len(self.descriptors)))
        for d in self.descriptors:
            raw = d.encode()
            parts.append(_U32.pack(len(raw)) + raw)
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> RangeKeyMismatch:
        r = _Reader(data)
        if r.take(1)[0] != VERSION:
            raise InvalidDescriptor(f"unsupported mismatch encoding version {data[0]}")
        has_key = r.take(1)[0]
        if has_key > 1:
            raise InvalidDescriptor(f"bad has_key flag {has_key}")
        key = r.blob() if has_key else None
        (n,) = _U16.unpack(r.take(2))
        descriptors = tuple(RangeDescriptor.decode(r.blob()) for _ in range(n))
        r.finish()
        return cls(key, descriptors)


def _check_u64(name: str, value: int) -> None:
    if type(value) is not int or not 0 <= value <= U64_MAX:
        raise InvalidDescriptor(f"{name} {value} is not a 64-bit unsigned integer")


def _check_replicas(name: str, ids: tuple[int, ...]) -> None:
    if len(ids) > MAX_REPLICAS:
        raise InvalidDescriptor(f"{len(ids)} {name}, at most {MAX_REPLICAS}")
    for n in ids:
        if type(n) is not int or not 0 < n <= U64_MAX:
            raise InvalidDescriptor(f"{name} contain {n!r}: node ids are 1..2**64-1")
    if len(set(ids)) != len(ids):
        raise InvalidDescriptor(f"duplicate node in {name} {ids}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RangeDescriptor:
    """One range's key span, identity, generation and replica set."""

    range_id: int
    start_key: bytes
    end_key: bytes  # b"" = +inf
    voters: tuple[int, ...]
    generation: int = 0
    learners: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _check_u64("range_id", self.range_id)
        _check_u64("generation", self.generation)
        if not isinstance(self.start_key, bytes) or not isinstance(self.end_key, bytes):
            raise InvalidDescriptor("start_key and end_key must be bytes")
        if self.end_key and self.end_key <= self.start_key:
            raise InvalidDescriptor(
                f"empty key span [{self.start_key!r}, {self.end_key!r}) in r{self.range_id}"
            )
        voters, learners = tuple(self.voters), tuple(self.learners)
        if not voters:
            raise InvalidDescriptor(f"r{self.range_id} has no voters")
        _check_replicas("voters", voters)
        _check_replicas("learners", learners)
        if both := set(voters) & set(learners):
            raise InvalidDescriptor(f"nodes {sorted(both)} are both voter and learner")
        # Sorted so that descriptors with the same replica set compare equal.
        object.__setattr__(self, "voters", tuple(sorted(voters)))
        object.__setattr__(self, "learners", tuple(sorted(learners)))

    def contains(self, key: bytes) -> bool:
        """Whether ``key`` falls in ``[start_key, end_key)``."""
        return self.start_key <= key and (not self.end_key or key < self.end_key)

    @property
    def replicas(self) -> tuple[int, ...]:
        """Every node holding a replica, voters first."""
        return self.voters + self.learners

    def describe(self) -> str:
        """A short human form: ``r7[b'a', b'm')@g3``."""
        end = "+inf" if not self.end_key else repr(self.end_key)
        return f"r{self.range_id}[{self.start_key!r}, {end})@g{self.generation}"

    def split(self, at_key: bytes, new_range_id: int) -> tuple[RangeDescriptor, RangeDescriptor]:
        """The two halves of a split at ``at_key``: ``[start, at_key)`` keeps
        our id, ``[at_key, end)`` gets ``new_range_id``; both bump the generation
        and keep our replica set."""
        if not (self.start_key < at_key and (not self.end_key or at_key < self.end_key)):
            raise SplitRefused(f"split key {at_key!r} not strictly inside {self.describe()}")
        if new_range_id == self.range_id:
            raise SplitRefused(f"right-hand range needs a new id, got r{new_range_id} again")
        generation = self.generation + 1
        left = RangeDescriptor(
            range_id=self.range_id, start_key=self.start_key, end_key=at_key,
            generation=generation, voters=self.voters, learners=self.learners,
        )
        right = RangeDescriptor(
            range_id=new_range_id, start_key=at_key, end_key=self.end_key,
            generation=generation, voters=self.voters, learners=self.learners,
        )
        return left, right

    def merge(self, right: RangeDescriptor) -> RangeDescriptor:
        """The descriptor after we (the left-hand range) subsume ``right``.
        Raises ``MergeRefused`` unless ``right`` starts where we end and has
        exactly our voters and learners."""
        if right.range_id == self.range_id:
            raise MergeRefused(self, right, "a range cannot merge with itself")
        if not self.end_key or self.end_key != right.start_key:
            raise MergeRefused(
                self, right, f"not adjacent ({self.describe()} then {right.describe()})"
            )
        if (self.voters, self.learners) != (right.voters, right.learners):
            raise MergeRefused(
                self, right,
                f"replica sets differ (voters {self.voters} vs {right.voters}, "
                f"learners {self.learners} vs {right.learners})",
            )
        return RangeDescriptor(
            range_id=self.range_id, start_key=self.start_key, end_key=right.end_key,
            generation=max(self.generation, right.generation) + 1,
            voters=self.voters, learners=self.learners,
        )

    def encode(self) -> bytes:
        """The version-1 bytes of this descriptor."""
        parts = [
            _HEAD.pack(VERSION, self.range_id, self.generation),
            _U32.pack(len(self.start_key)), self.start_key,
            _U32.pack(len(self.end_key)), self.end_key,
            _U16.pack(len(self.voters)), *[_U64.pack(n) for n in self.voters],
            _U16.pack(len(self.learners)), *[_U64.pack(n) for n in self.learners],
        ]
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> RangeDescriptor:
        """Parse untrusted ``data``; raises ``InvalidDescriptor`` on any fault."""
        r = _Reader(data)
        version, range_id, generation = _HEAD.unpack(r.take(_HEAD.size))
        if version != VERSION:
            raise InvalidDescriptor(f"unsupported descriptor version {version}")
        start_key = r.blob()
        end_key = r.blob()
        voters = r.node_ids()
        learners = r.node_ids()
        r.finish()
        return cls(
            range_id=range_id, start_key=start_key, end_key=end_key,
            generation=generation, voters=voters, learners=learners,
        )


class _Reader(ByteReader):
    """The descriptor format's cursor: adds sorted node-id lists."""

    __slots__ = ()
    error = InvalidDescriptor

    def node_ids(self) -> tuple[int, ...]:
        (n,) = _U16.unpack(self.take(2))
        ids = tuple(int(x) for x in struct.unpack(f"<{n}Q", self.take(8 * n)))
        if any(a >= b for a, b in pairwise(ids)):
            raise InvalidDescriptor(f"node ids not strictly increasing: {ids}")
        return ids
