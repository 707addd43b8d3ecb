"""engine.meta_codec: round trips, the read/write op convention, hostile bytes."""

from __future__ import annotations

import contextlib
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.meta_codec import (
    MAGIC,
    MAX_PAGE,
    AllocateIds,
    Changes,
    Ids,
    MetaCodecError,
    MetaCommand,
    MetaError,
    MetaResult,
    PutApplied,
    PutDescriptors,
    ReadChanges,
    ReadVersion,
    VersionInfo,
    decode_command,
    decode_result,
    encode_command,
    encode_result,
    is_meta_command,
)
from engine.range_desc import RangeDescriptor
from engine.worker_protocol import ADMIN_MAGIC, is_write_command

A = RangeDescriptor(range_id=1, start_key=b"", end_key=b"m", voters=(1, 2, 3), generation=4)
B = RangeDescriptor(range_id=9, start_key=b"m", end_key=b"", voters=(2,), learners=(5,))

COMMANDS: list[MetaCommand] = [
    ReadVersion(),
    ReadChanges(since=0),
    ReadChanges(since=7, after_id=2**64 - 1, limit=MAX_PAGE),
    PutDescriptors((A,)),
    PutDescriptors((A, B)),
    AllocateIds(1),
    AllocateIds(1 << 20),
]
RESULTS: list[MetaResult] = [
    VersionInfo(version=3, next_id=17, ranges=8),
    Changes(version=5, more=False, entries=()),
    Changes(version=5, more=True, entries=((1, A), (5, B))),
    PutApplied(version=9, applied=2),
    Ids(first=12, count=3),
    MetaError("nope: ünïcode"),
]


@pytest.mark.parametrize("cmd", COMMANDS)
def test_commands_round_trip(cmd: MetaCommand) -> None:
    raw = encode_command(cmd)
    assert raw[0] == MAGIC and is_meta_command(raw)
    assert decode_command(raw) == cmd


@pytest.mark.parametrize("res", RESULTS)
def test_results_round_trip(res: MetaResult) -> None:
    assert decode_result(encode_result(res)) == res


def test_writes_and_reads_follow_the_ring_convention() -> None:
    """Ops >= 16 are writes: ``is_write_command`` must tell them apart unchanged."""
    for cmd in COMMANDS:
        write = isinstance(cmd, (PutDescriptors, AllocateIds))
        assert is_write_command(encode_command(cmd)) == write, cmd
    assert MAGIC not in (1, ADMIN_MAGIC)  # kv_codec commands start with version 1


def test_values_validate_when_built() -> None:
    for bad in (lambda: AllocateIds(0), lambda: AllocateIds((1 << 20) + 1),
                lambda: ReadChanges(since=-1), lambda: ReadChanges(since=0, limit=0),
                lambda: ReadChanges(since=0, limit=MAX_PAGE + 1), lambda: PutDescriptors(()),
                lambda: Ids(first=2**64 - 1, count=2)):
        with pytest.raises(MetaCodecError):
            bad()


def test_hostile_counts_and_lengths_are_refused_without_allocating() -> None:
    huge_put = bytes((MAGIC, 16)) + struct.pack("<I", 4096)  # 4096 descriptors, no bytes
    with pytest.raises(MetaCodecError):
        decode_command(huge_put)
    huge_blob = bytes((MAGIC, 16)) + struct.pack("<II", 1, 0xFFFFFFF0)
    with pytest.raises(MetaCodecError):
        decode_command(huge_blob)
    huge_changes = bytes((MAGIC, 2)) + struct.pack("<QBI", 1, 0, 0xFFFFFFFF)
    with pytest.raises(MetaCodecError):
        decode_result(huge_changes)
    with pytest.raises(MetaCodecError):
        decode_command(encode_command(ReadVersion()) + b"\x00")  # trailing byte
    with pytest.raises(MetaCodecError):
        decode_command(bytes((ADMIN_MAGIC, 1)))  # not ours
    with pytest.raises(MetaCodecError):
        decode_result(bytes((MAGIC, 5)) + struct.pack("<I", 2) + b"\xff\xfe")  # not UTF-8


def test_mutated_encodings_decode_or_raise_codec_error_only() -> None:
    """Bit flips, truncations and splices of valid encodings: never another exception."""
    seed = 20261122
    rnd = random.Random(seed)
    valid = [encode_command(c) for c in COMMANDS] + [encode_result(r) for r in RESULTS]
    for _ in range(3000):
        raw = bytearray(rnd.choice(valid))
        for _ in range(rnd.randint(1, 4)):
            how = rnd.randrange(3)
            if how == 0 and raw:
                raw[rnd.randrange(len(raw))] = rnd.randrange(256)
            elif how == 1:
                del raw[rnd.randrange(len(raw) + 1):]
            else:
                raw[rnd.randrange(len(raw) + 1):0] = rnd.randbytes(rnd.randint(1, 8))
        for decode in (decode_command, decode_result):
            try:
                decode(bytes(raw))
            except MetaCodecError:
                pass
            except Exception as e:  # pragma: no cover - the failure being tested for
                raise AssertionError(f"seed {seed}: {bytes(raw)!r} raised {e!r}") from e


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_garbage_decodes_or_raises_codec_error_only(raw: bytes) -> None:
    for decode in (decode_command, decode_result):
        with contextlib.suppress(MetaCodecError):
            decode(raw)
    if raw[:1] == bytes((MAGIC,)):
        assert is_meta_command(raw)
