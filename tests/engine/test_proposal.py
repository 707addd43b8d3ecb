"""The entry envelope."""

from __future__ import annotations

import pytest

from engine.proposal import ENVELOPE_SIZE, EntryKind, unwrap, wrap


def test_envelope_round_trips() -> None:
    data = wrap(EntryKind.USER, 3, 2**40 + 5, b"payload")
    assert len(data) == ENVELOPE_SIZE + 7
    assert unwrap(data) == (EntryKind.USER, 3, 2**40 + 5, b"payload")


def test_a_foreign_entry_is_a_broken_invariant() -> None:
    with pytest.raises(AssertionError):
        unwrap(b"\x01")
