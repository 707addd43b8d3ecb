"""Round-trip and validation of the ``ConfChange`` byte encoding."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.raft import (
    ConfChange,
    ConfChangeDecodeError,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
    decode_conf_change,
    encode_conf_change,
)

changes = st.lists(
    st.builds(ConfChangeSingle, st.sampled_from(list(ConfChangeType)),
              st.integers(1, (1 << 64) - 1)),
    max_size=8,
).map(tuple)
ccs = st.builds(ConfChange, changes, st.sampled_from(list(ConfChangeTransition)),
                st.binary(max_size=64))


@settings(max_examples=100, deadline=None)
@given(ccs)
def test_round_trip(cc: ConfChange) -> None:
    assert decode_conf_change(encode_conf_change(cc)) == cc


def test_layout_is_versioned_little_endian() -> None:
    data = encode_conf_change(ConfChange((ConfChangeSingle(ConfChangeType.ADD_LEARNER, 7),),
                                         ConfChangeTransition.JOINT_EXPLICIT, b"ctx"))
    assert data == struct.pack("<BBHI", 1, 2, 1, 3) + struct.pack("<BQ", 2, 7) + b"ctx"
    assert encode_conf_change(ConfChange()) == struct.pack("<BBHI", 1, 0, 0, 0)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "shorter"),
        (struct.pack("<BBHI", 2, 0, 0, 0), "version"),
        (struct.pack("<BBHI", 1, 7, 0, 0), "transition"),
        (struct.pack("<BBHI", 1, 0, 1, 0), "length"),
        (struct.pack("<BBHI", 1, 0, 0, 2) + b"x", "length"),
        (struct.pack("<BBHI", 1, 0, 1, 0) + struct.pack("<BQ", 9, 1), "change type"),
    ],
)
def test_bad_input_is_rejected(data: bytes, why: str) -> None:
    with pytest.raises(ConfChangeDecodeError, match=why):
        decode_conf_change(data)
