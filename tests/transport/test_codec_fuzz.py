"""Fuzzing the decoder with hypothesis: random bytes, mutated and truncated valid records.

Contract under test (codec.py): decoding untrusted bytes yields a valid value
or raises DecodeError, nothing else. The encoding is canonical, so whenever
mutated bytes do decode, re-encoding the value must give those bytes back —
proof that the decoder accepted nothing it cannot represent.

Runs are derandomized (fixed examples per test) so CI is reproducible;
hypothesis prints the failing example and its reproduction blob.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transport.codec import (
    MIRROR_TYPES,
    ClientRequest,
    ClientRequestBatch,
    ClientResponse,
    ClientResponseBatch,
    CoalescedHeartbeats,
    RaftBatch,
    Record,
    WireCodec,
    encode_client_requests,
    encode_client_responses,
    encode_heartbeats,
    encode_raft_batch,
)
from transport.codec_mirror import ConfState, Entry, Message, Snapshot, SnapshotMetadata
from transport.errors import DecodeError

CODEC = WireCodec(MIRROR_TYPES)
FUZZ = settings(
    deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

u64 = st.integers(0, 2**64 - 1)
u32 = st.integers(0, 2**32 - 1)
small_bytes = st.binary(max_size=24)
ids = st.lists(u64, max_size=4).map(tuple)

entries = st.builds(Entry, u64, u64, st.integers(0, 255), small_bytes)
snapshots = st.builds(
    Snapshot,
    st.builds(SnapshotMetadata, u64, u64,
              st.builds(ConfState, ids, ids, ids, ids, st.booleans())),
    small_bytes,
)
messages = st.builds(
    Message, st.integers(0, 255), u64, u64, u64, u64, u64,
    st.lists(entries, max_size=4).map(tuple), u64, st.booleans(), u64, small_bytes,
    st.none() | snapshots,
)
raft_records = st.lists(st.tuples(u64, messages), max_size=4).map(encode_raft_batch)


@st.composite
def heartbeat_records(draw: st.DrawFn) -> bytes:
    n = draw(st.integers(0, 6))
    col = st.lists(u64, min_size=n, max_size=n)
    return encode_heartbeats(CoalescedHeartbeats.build(
        range_ids=draw(col), frm=draw(col), to=draw(col), terms=draw(col), commits=draw(col),
        flags=draw(st.lists(st.integers(0, 255), min_size=n, max_size=n)),
        response=draw(st.booleans()),
    ))


request_records = st.lists(st.builds(ClientRequest, u64, u64, u64, small_bytes),
                           max_size=4).map(encode_client_requests)
response_records = st.lists(st.builds(ClientResponse, u64, u32, small_bytes),
                            max_size=4).map(encode_client_responses)
valid_records = raft_records | heartbeat_records() | request_records | response_records


def reencode(record: Record[Message]) -> bytes:
    if isinstance(record, RaftBatch):
        return encode_raft_batch(record.messages)
    if isinstance(record, CoalescedHeartbeats):
        return encode_heartbeats(record)
    if isinstance(record, ClientRequestBatch):
        return encode_client_requests(record.requests)
    assert isinstance(record, ClientResponseBatch)
    return encode_client_responses(record.responses)


def decode_or_error(data: bytes) -> None:
    try:
        record = CODEC.decode(data)
    except DecodeError:
        return
    assert reencode(record) == data


def fuzz(examples: int) -> settings:
    return settings(FUZZ, max_examples=examples)


@fuzz(200)
@given(
    valid_records,
    st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(0, 2**16),
    small_bytes,
)
def test_valid_records_and_their_mutations(
    data: bytes, flips: list[tuple[int, int]], pos: int, insert: bytes
) -> None:
    # One generated record drives every check: generating nested records is
    # the expensive part of a run, decoding is cheap.
    assert reencode(CODEC.decode(data)) == data
    for cut in range(len(data)):  # every truncation must fail
        try:
            CODEC.decode(data[:cut])
        except DecodeError:
            continue
        raise AssertionError(f"a {cut}-byte prefix of a {len(data)}-byte record decoded")
    mutated = bytearray(data)
    for at, value in flips:
        mutated[at % len(mutated)] = value
    decode_or_error(bytes(mutated))
    cut = pos % (len(data) + 1)
    decode_or_error(data[:cut] + insert + data[cut:])
    decode_or_error(data[:cut] + data[cut + len(insert) :])


@fuzz(1000)
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    decode_or_error(data)


@fuzz(600)
@given(st.binary(max_size=40), st.integers(1, 5), st.integers(0, 6))
def test_random_bodies_behind_a_valid_envelope(tail: bytes, kind: int, count: int) -> None:
    # Random bytes rarely get past the envelope; this drives the body parsers.
    decode_or_error(bytes([1, kind]) + count.to_bytes(4, "little") + tail)
