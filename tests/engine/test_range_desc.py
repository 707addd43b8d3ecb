"""Range descriptors: validation, split/merge rules, and the encoding."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.range_desc import (
    U64_MAX,
    InvalidDescriptor,
    MergeRefused,
    RangeDescriptor,
    RangeError,
    RangeKeyMismatch,
    SplitRefused,
)


def desc(rid: int = 1, start: bytes = b"", end: bytes = b"", gen: int = 0,
         voters: tuple[int, ...] = (1, 2, 3), learners: tuple[int, ...] = ()) -> RangeDescriptor:
    return RangeDescriptor(range_id=rid, start_key=start, end_key=end, generation=gen,
                           voters=voters, learners=learners)


def test_contains_is_half_open_and_empty_end_is_unbounded() -> None:
    d = desc(start=b"b", end=b"d")
    assert [d.contains(k) for k in (b"a", b"b", b"c", b"czzz", b"d", b"e")] == [
        False, True, True, True, False, False]
    top = desc(start=b"m")
    assert top.contains(b"m") and top.contains(b"\xff" * 100) and not top.contains(b"l")
    assert desc().contains(b"")


def test_replica_lists_are_normalised_so_equal_sets_compare_equal() -> None:
    assert desc(voters=(3, 1, 2), learners=(5, 4)) == desc(voters=(1, 2, 3), learners=(4, 5))
    assert desc(voters=(3, 1), learners=(4,)).replicas == (1, 3, 4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rid": -1}, "range_id"),
        ({"rid": U64_MAX + 1}, "range_id"),
        ({"gen": -1}, "generation"),
        ({"start": b"b", "end": b"b"}, "empty key span"),
        ({"start": b"c", "end": b"b"}, "empty key span"),
        ({"voters": ()}, "no voters"),
        ({"voters": (1, 1)}, "duplicate"),
        ({"voters": (0,)}, "node ids"),
        ({"voters": (1,), "learners": (1,)}, "both voter and learner"),
        ({"learners": (U64_MAX + 1,)}, "node ids"),
    ],
)
def test_invalid_descriptors_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidDescriptor, match=match):
        desc(**kwargs)  # type: ignore[arg-type]


def test_non_bytes_keys_and_non_int_ids_are_refused() -> None:
    with pytest.raises(InvalidDescriptor):
        RangeDescriptor(range_id=1, start_key="a", end_key=b"", voters=(1,))  # type: ignore[arg-type]
    with pytest.raises(InvalidDescriptor):
        RangeDescriptor(range_id="1", start_key=b"", end_key=b"", voters=(1,))  # type: ignore[arg-type]
    with pytest.raises(InvalidDescriptor):
        desc(voters=(True,))


def test_split_bumps_generations_and_keeps_replicas() -> None:
    d = desc(rid=7, start=b"a", end=b"z", gen=4, voters=(1, 2, 3), learners=(9,))
    left, right = d.split(b"m", 8)
    assert left == desc(rid=7, start=b"a", end=b"m", gen=5, voters=(1, 2, 3), learners=(9,))
    assert right == desc(rid=8, start=b"m", end=b"z", gen=5, voters=(1, 2, 3), learners=(9,))
    assert all(left.contains(k) != right.contains(k) for k in (b"a", b"l", b"m", b"y"))


@pytest.mark.parametrize("key", [b"a", b"", b"0", b"z", b"zz"])
def test_split_key_must_be_strictly_inside(key: bytes) -> None:
    with pytest.raises(SplitRefused, match="not strictly inside"):
        desc(start=b"a", end=b"z").split(key, 2)


def test_split_of_the_last_range_and_id_reuse() -> None:
    left, right = desc(start=b"a").split(b"q", 2)
    assert left.end_key == b"q" and right.end_key == b""
    with pytest.raises(SplitRefused, match="new id"):
        desc(rid=1).split(b"q", 1)


def test_merge_reverses_a_split_with_a_newer_generation() -> None:
    d = desc(rid=1, start=b"a", end=b"z", gen=2)
    left, right = d.split(b"m", 2)
    right = RangeDescriptor(range_id=2, start_key=b"m", end_key=b"z", generation=9,
                            voters=(1, 2, 3))
    merged = left.merge(right)
    assert (merged.range_id, merged.start_key, merged.end_key) == (1, b"a", b"z")
    assert merged.generation == 10 > max(left.generation, right.generation)


def test_merge_refusals_say_why() -> None:
    left = desc(rid=1, end=b"m")
    cases = [
        (desc(rid=2, start=b"n"), "not adjacent"),
        (desc(rid=1, start=b"m"), "itself"),
        (desc(rid=2, start=b"m", voters=(1, 2, 4)), "replica sets differ"),
        (desc(rid=2, start=b"m", learners=(5,)), "replica sets differ"),
    ]
    for right, reason in cases:
        with pytest.raises(MergeRefused, match=reason) as info:
            left.merge(right)
        assert info.value.left is left and info.value.right is right
        assert isinstance(info.value, RangeError)
    with pytest.raises(MergeRefused, match="not adjacent"):
        desc(rid=1).merge(desc(rid=2, start=b"m"))  # nothing lies right of +inf


_ids = st.integers(1, U64_MAX)
descriptors = st.builds(
    lambda rid, a, b, gen, voters, learners: desc(
        rid, min(a, b), max(a, b) if a != b else b"", gen,
        tuple(voters), tuple(learners - voters)),
    st.integers(0, U64_MAX), st.binary(max_size=20), st.binary(max_size=20),
    st.integers(0, U64_MAX), st.sets(_ids, min_size=1, max_size=7), st.sets(_ids, max_size=3),
)


@settings(max_examples=200, deadline=None, print_blob=True)
@given(descriptors)
def test_encoding_round_trips(d: RangeDescriptor) -> None:
    assert RangeDescriptor.decode(d.encode()) == d


def test_encoding_is_pinned() -> None:
    d = desc(rid=2, start=b"a", end=b"b", gen=3, voters=(1,), learners=(2,))
    assert d.encode().hex() == (
        "01" "0200000000000000" "0300000000000000" "01000000" "61" "01000000" "62"
        "0100" "0100000000000000" "0100" "0200000000000000"
    )


def test_decoding_untrusted_bytes_gives_a_descriptor_or_invalid_descriptor() -> None:
    good = desc(rid=5, start=b"k", end=b"q", voters=(1, 2), learners=(3,)).encode()
    rng = random.Random(42)
    bad = [good[:i] for i in range(len(good))] + [good + b"\x00", b"\x02" + good[1:]]
    for _ in range(2000):
        data = bytearray(good)
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        bad.append(bytes(data))
    bad += [rng.randbytes(rng.randrange(60)) for _ in range(500)]
    for data in bad:
        try:
            d = RangeDescriptor.decode(data)
        except InvalidDescriptor:
            continue
        assert d.encode() == data  # whatever decodes is canonical and valid


def test_decode_reports_the_fault() -> None:
    good = desc().encode()
    with pytest.raises(InvalidDescriptor, match="truncated"):
        RangeDescriptor.decode(good[:-1])
    with pytest.raises(InvalidDescriptor, match="trailing"):
        RangeDescriptor.decode(good + b"x")
    with pytest.raises(InvalidDescriptor, match="version 9"):
        RangeDescriptor.decode(b"\x09" + good[1:])


def test_range_key_mismatch_carries_descriptors_and_round_trips() -> None:
    left, right = desc(rid=1, gen=1).split(b"m", 2)
    err = RangeKeyMismatch(b"q", (left, right))
    assert "key b'q'" in str(err) and "r2[b'm', +inf)@g2" in str(err)
    back = RangeKeyMismatch.decode(err.encode())
    assert (back.key, back.descriptors) == (b"q", (left, right))
    anon = RangeKeyMismatch.decode(RangeKeyMismatch(None, ()).encode())
    assert (anon.key, anon.descriptors) == (None, ())
    with pytest.raises(InvalidDescriptor):
        RangeKeyMismatch.decode(err.encode()[:-3])
    with pytest.raises(InvalidDescriptor):
        RangeKeyMismatch.decode(b"\x01\x02")
    with pytest.raises(InvalidDescriptor):
        RangeKeyMismatch.decode(b"")
