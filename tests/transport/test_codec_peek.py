"""transport.codec_peek: range ids read without decoding agree with the full decode,
and a malformed record is refused (DecodeError), never misread."""

from __future__ import annotations

import random

import pytest

from transport.codec import MIRROR_TYPES, WireCodec, encode_raft_batch
from transport.codec_client import ClientRequest, encode_client_requests
from transport.codec_heartbeat import CoalescedHeartbeats, encode_heartbeats
from transport.codec_mirror import ConfState, Entry, Message, Snapshot, SnapshotMetadata
from transport.codec_peek import range_ids
from transport.errors import DecodeError

CODEC = WireCodec(MIRROR_TYPES)


def _random_batch(rng: random.Random) -> list[tuple[int, Message]]:
    out = []
    for _ in range(rng.randrange(0, 6)):
        entries = tuple(Entry(rng.randrange(9), rng.randrange(99), rng.randrange(2),
                              rng.randbytes(rng.randrange(0, 40)))
                        for _ in range(rng.randrange(0, 4)))
        snap = None
        if rng.random() < 0.3:
            snap = Snapshot(SnapshotMetadata(5, 2, ConfState((1, 2), (3,), (), (), False)),
                            rng.randbytes(rng.randrange(0, 30)))
        msg = Message(rng.randrange(1, 20), 2, 1, 3, 3, 7, entries, 6, rng.random() < 0.5, 0,
                      rng.randbytes(rng.randrange(0, 9)), snap)
        out.append((rng.randrange(1, 1 << 40), msg))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_raft_batch_ids_match_the_full_decode(seed: int) -> None:
    rng = random.Random(seed)
    items = _random_batch(rng)
    record = encode_raft_batch(items)
    assert list(range_ids(record)) == [rid for rid, _ in items], f"seed {seed}"
    assert list(range_ids(memoryview(record))) == [rid for rid, _ in CODEC.decode_raft_batch(
        record)]


@pytest.mark.parametrize("response", [False, True])
def test_heartbeat_ids(response: bool) -> None:
    hb = CoalescedHeartbeats.build(range_ids=[5, 9, 1], frm=[1, 1, 1], to=[2, 2, 2],
                                   terms=[3, 3, 3], commits=[4, 4, 4], flags=[0, 1, 0],
                                   response=response)
    assert list(range_ids(encode_heartbeats(hb))) == [5, 9, 1]


@pytest.mark.parametrize("seed", range(20))
def test_every_truncation_or_extension_is_refused(seed: int) -> None:
    rng = random.Random(1000 + seed)
    items = _random_batch(rng) or [(1, Message(1, 2, 1, 3))]
    record = encode_raft_batch(items)
    for cut in range(len(record)):
        with pytest.raises(DecodeError):
            range_ids(record[:cut])
    with pytest.raises(DecodeError):
        range_ids(record + b"\x00")


def test_client_records_are_not_raft_records() -> None:
    with pytest.raises(DecodeError, match="no raft messages"):
        range_ids(encode_client_requests([ClientRequest(1, 2, 0, b"x")]))
