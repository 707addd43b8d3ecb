"""The ``StateMachine`` protocol: what a library user implements to get
replication, snapshots, split and merge for their own data.

Theory of operation
-------------------
A range replica owns one state machine holding the data of its key interval
``[start, end)``. The engine drives it; the state machine never sees raft:

- ``apply(batch)``: committed commands, in log order, in batches (one call
  per replica per loop). Commands are opaque bytes the user's client side
  encoded; results are opaque bytes handed back to whoever proposed the
  command (only on the replica that proposed it). Apply must be
  deterministic: every replica applies the same batches and must end in the
  same state. It must not raise for a bad command: encode the error in the
  result instead (an exception here is a bug and stops the replica).
- ``read(query)``: a read served after the engine established
  linearizability (ReadIndex or lease) or, when the client asked, a stale
  read. Must not change state.
- ``snapshot()`` / ``restore(chunks)``: a point-in-time image as of the
  last applied batch, as a stream of byte chunks, so a large image never has
  to sit in memory as one string; ``restore`` replaces all state.
- ``split(key)``: keep ``[start, key)``, return a new state machine holding
  ``[key, end)`` (the right-hand range's), at the same log position on every
  replica (it is called when the split command applies).
- ``absorb(right)``: take over all data of the adjacent right-hand
  neighbour's state machine (a merge applying on the left-hand range).
- ``approximate_size()``/``split_key()``: inputs to size-based split
  decisions; need not be exact, must be cheap.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol, Self


class StateMachine(Protocol):
    def apply(self, commands: Sequence[bytes]) -> list[bytes]:
        """Apply committed commands in order; one result per command."""
        ...

    def read(self, query: bytes) -> bytes:
        """Answer a read-only query against the applied state."""
        ...

    def snapshot(self) -> Iterator[bytes]:
        """A consistent image of the applied state, as chunks."""
        ...

    def restore(self, chunks: Iterable[bytes]) -> None:
        """Replace all state with the image ``chunks`` encode."""
        ...

    def split(self, key: bytes) -> Self:
        """Move everything at or above ``key`` into a new state machine and return it."""
        ...

    def absorb(self, right: Self) -> None:
        """Take over all of ``right``'s data (its keys are all above ours)."""
        ...

    def approximate_size(self) -> int:
        """Roughly the bytes of user data held (keys + values)."""
        ...

    def split_key(self) -> bytes | None:
        """A key near the middle of the data, or None if too small to split."""
        ...
