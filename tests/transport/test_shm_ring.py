"""Tests for transport.shm_ring: layout, wrap-around, full/empty edges, two processes."""

from __future__ import annotations

import os
import random
import signal
import struct
import time
import zlib
from collections import deque
from collections.abc import Iterator
from multiprocessing import resource_tracker, shared_memory

import pytest

from transport.errors import (
    ClosedResourceError,
    RecordTooLarge,
    RingCorrupted,
    UnsupportedPlatform,
)
from transport.shm_ring import FRAME_HEADER_SIZE, HEADER_SIZE, ShmRing, _require_tso

pytestmark = pytest.mark.timeout(30)

SHM_DIR = "/dev/shm"


def _our_segments() -> set[str]:
    return {n for n in os.listdir(SHM_DIR) if n.startswith("mrring_")}


@pytest.fixture(autouse=True)
def no_shm_leak() -> Iterator[None]:
    before = _our_segments()
    yield
    assert _our_segments() - before == set(), "a ring segment leaked in /dev/shm"


@pytest.fixture
def pair() -> Iterator[tuple[ShmRing, ShmRing]]:
    """A small ring and a second mapping of it (producer, consumer) in this process."""
    producer = ShmRing.create(128)
    consumer = ShmRing.attach(producer.name)
    yield producer, consumer
    consumer.close()
    producer.close()


def _drain(ring: ShmRing) -> list[bytes]:
    records, _ = ring.try_read()
    return [bytes(r) for r in records]


def _write_all(producer: ShmRing, records: list[bytes]) -> None:
    done, _ = producer.try_write(records)
    assert done == len(records)


def test_geometry_of_a_small_ring(pair: tuple[ShmRing, ShmRing]) -> None:
    producer, consumer = pair
    assert producer.capacity == consumer.capacity == 128
    assert producer.max_frame == 64
    assert producer.record_limit == LIMIT_128


def test_capacity_is_rounded_up_to_alignment() -> None:
    ring = ShmRing.create(1001)
    try:
        assert ring.capacity == 1008
    finally:
        ring.close()


def test_empty_ring_reads_nothing(pair: tuple[ShmRing, ShmRing]) -> None:
    producer, consumer = pair
    assert consumer.try_read() == ([], False)
    assert consumer.is_empty()
    assert producer.try_write([]) == (0, False)


def test_batch_roundtrip_keeps_order_and_empty_records(pair: tuple[ShmRing, ShmRing]) -> None:
    producer, consumer = pair
    records = [b"", b"a", b"bc", b"", b"defghij", bytearray(b"k"), memoryview(b"lmn")]
    _write_all(producer, records)  # type: ignore[arg-type]
    assert _drain(consumer) == [bytes(r) for r in records]
    assert consumer.is_empty()


def test_records_stay_valid_after_the_space_is_reused(pair: tuple[ShmRing, ShmRing]) -> None:
    producer, consumer = pair
    _write_all(producer, [b"x" * 40])
    first, _ = consumer.try_read()
    for _ in range(10):
        _write_all(producer, [b"y" * 40])
        _drain(consumer)
    assert first[0] == b"x" * 40
    assert type(first[0]) is bytes


@pytest.mark.parametrize("sizes", [[5000, 10], [10, 5000], [4095, 4095, 0], [4096, 1]])
def test_small_and_large_records_share_frames(sizes: list[int]) -> None:
    """Frames of only < 4 KiB records go through one struct call; others slice per record."""
    producer = ShmRing.create(1 << 16)
    consumer = ShmRing.attach(producer.name)
    try:
        records = [bytes([n % 251]) * n for n in sizes]
        _write_all(producer, records)
        assert _drain(consumer) == records
    finally:
        consumer.close()
        producer.close()


def test_record_too_large_is_rejected_before_anything_is_written(
    pair: tuple[ShmRing, ShmRing],
) -> None:
    producer, consumer = pair
    limit = producer.record_limit
    with pytest.raises(RecordTooLarge) as info:
        producer.try_write([b"ok", b"z" * (limit + 1)])
    assert info.value.size == limit + 1 and info.value.limit == limit
    assert consumer.is_empty()
    _write_all(producer, [b"z" * limit])
    assert _drain(consumer) == [b"z" * limit]


def _park(producer: ShmRing, consumer: ShmRing, offset: int) -> None:
    """Move both counters to data position `offset` with frames of 16..64 bytes."""
    left = offset
    while left:
        frame = left if left <= 64 else min(64, left - 16)
        _write_all(producer, [b"p" * (frame - FRAME_HEADER_SIZE - 4)])
        left -= frame
    _drain(consumer)
    assert producer._tail % producer.capacity == offset


# A frame is at least 16 bytes and never straddles the end, so position 8 is
# unreachable in a 128-byte ring: every other 8-aligned position is a start.
REACHABLE = [0, *range(16, 128, 8)]
LIMIT_128 = 128 // 2 - FRAME_HEADER_SIZE - 4


def test_a_too_large_record_deep_in_a_big_batch_rejects_the_whole_batch(
    pair: tuple[ShmRing, ShmRing],
) -> None:
    producer, consumer = pair
    batch = [b"s"] * 500 + [b"L" * (producer.record_limit + 1)]
    with pytest.raises(RecordTooLarge):
        producer.try_write(batch)
    assert consumer.is_empty()


def test_huge_batch_goes_through_in_windows(pair: tuple[ShmRing, ShmRing]) -> None:
    producer, consumer = pair
    batch = [struct.pack("<I", i) for i in range(5000)]
    got: list[bytes] = []
    done = 0
    while done < len(batch):
        done, _ = producer.try_write(batch, done)
        got += _drain(consumer)
    assert got == batch


def test_a_forked_copy_of_the_creator_never_unlinks() -> None:
    ring = ShmRing.create(64)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            with pytest.raises(PermissionError):
                ring.unlink()
            ring.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert ring.name in _our_segments()
    ring.close()


@pytest.mark.parametrize("offset", REACHABLE)
def test_wrap_around_at_every_offset_and_every_size(offset: int) -> None:
    """From every start position, every legal record size, twice (the second often wraps)."""
    for size in range(LIMIT_128 + 1):
        producer = ShmRing.create(128)
        consumer = ShmRing.attach(producer.name)
        try:
            _park(producer, consumer, offset)
            first = bytes((size + i) % 251 for i in range(size))
            second = first[::-1]
            assert producer.try_write([first])[0] == 1, f"empty ring refused {size} bytes"
            done, _ = producer.try_write([second])
            got = _drain(consumer)
            if not done:  # both do not fit at once from here: the second waits for space
                assert got == [first]
                assert producer.try_write([second])[0] == 1
                got += _drain(consumer)
            assert got == [first, second]
            assert consumer.is_empty()
        finally:
            consumer.close()
            producer.close()


def test_random_sizes_visit_every_reachable_start_position() -> None:
    producer = ShmRing.create(128)
    consumer = ShmRing.attach(producer.name)
    try:
        seen: set[int] = set()
        rnd = random.Random(7)
        for _ in range(400):
            seen.add(producer._tail % producer.capacity)
            size = rnd.randint(0, producer.record_limit)
            _write_all(producer, [bytes([size % 256]) * size])
            assert _drain(consumer) == [bytes([size % 256]) * size]
        assert seen == set(REACHABLE)
    finally:
        consumer.close()
        producer.close()


def test_full_ring_takes_what_fits_and_never_overwrites(pair: tuple[ShmRing, ShmRing]) -> None:
    producer, consumer = pair
    # 4-byte records cost 8 bytes each (length + payload): 7 fill a 64-byte frame
    # (8 + 7 * 8), and two frames fill the 128-byte ring.
    records = [struct.pack("<I", i) for i in range(100)]
    done, _ = producer.try_write(records)
    assert done == 14
    assert producer.try_write(records, done) == (done, False)  # still full
    got = _drain(consumer)
    assert got == records[:done]
    done2, _ = producer.try_write(records, done)
    assert done2 > done
    assert _drain(consumer) == records[done:done2]


def test_exactly_full_ring_then_one_more_byte_waits(pair: tuple[ShmRing, ShmRing]) -> None:
    producer, consumer = pair
    frame_payload = producer.max_frame - FRAME_HEADER_SIZE - 4
    _write_all(producer, [b"a" * frame_payload, b"b" * frame_payload])  # two 64-byte frames
    assert producer.try_write([b""]) == (0, False)
    assert _drain(consumer) == [b"a" * frame_payload, b"b" * frame_payload]
    assert producer.try_write([b""]) == (1, False)


def test_sleep_handshake_flags(pair: tuple[ShmRing, ShmRing]) -> None:
    producer, consumer = pair
    assert consumer.consumer_prepare_sleep() is True
    # A write while the consumer sleeps asks for a wake-up.
    assert producer.try_write([b"x"]) == (1, True)
    consumer.consumer_end_sleep()
    # Data present: the consumer must not go to sleep.
    assert consumer.consumer_prepare_sleep() is False
    assert producer.try_write([b"y"]) == (1, False)
    assert _drain(consumer) == [b"x", b"y"]
    # Producer sleeps on a full ring; a read asks for its wake-up.
    while producer.try_write([b"z" * 20])[0]:
        pass
    assert producer.producer_prepare_sleep() is True
    records, wake = consumer.try_read()
    assert records and wake is True
    producer.producer_end_sleep()
    # Space freed since the last try_write: the producer must retry, not sleep.
    producer.try_write([b"z" * 50] * 2)
    _drain(consumer)
    assert producer.producer_prepare_sleep() is False


def test_close_flags_are_visible_to_the_peer(pair: tuple[ShmRing, ShmRing]) -> None:
    producer, consumer = pair
    assert not consumer.producer_closed and not producer.consumer_closed
    assert consumer.consumer_prepare_sleep()
    assert producer.close_producer() is True  # the sleeping consumer must be woken
    consumer.consumer_end_sleep()
    assert consumer.producer_closed
    assert consumer.consumer_prepare_sleep() is False
    consumer.close_consumer()
    assert producer.consumer_closed


def test_closed_ring_refuses_use() -> None:
    ring = ShmRing.create(64)
    ring.close()
    ring.close()
    with pytest.raises(ClosedResourceError):
        ring.try_write([b"x"])
    with pytest.raises(ClosedResourceError):
        ring.try_read()


def test_creator_unlinks_attacher_never_does() -> None:
    producer = ShmRing.create(64)
    attacher = ShmRing.attach(producer.name)
    with pytest.raises(PermissionError):
        attacher.unlink()
    attacher.close()
    assert producer.name in _our_segments()
    producer.close()
    assert producer.name not in _our_segments()


def test_attach_refuses_a_foreign_segment() -> None:
    name = f"mrring_foreign_{os.getpid()}"
    foreign = shared_memory.SharedMemory(name=name, create=True, size=512)
    try:
        with pytest.raises(RingCorrupted):
            ShmRing.attach(foreign.name)
    finally:
        foreign.close()
        foreign.unlink()


@pytest.mark.parametrize(
    ("offset", "fmt", "values"),
    [
        (0, "=II", (9999, 2)),  # body_len overruns what was published
        (0, "=II", (8, 3)),  # the lengths table is longer than the body
        (8, "=I", (1,)),  # a record length disagrees with the body
    ],
)
def test_garbled_frame_is_reported_not_returned(
    pair: tuple[ShmRing, ShmRing], offset: int, fmt: str, values: tuple[int, ...]
) -> None:
    producer, consumer = pair
    _write_all(producer, [b"abc", b"de"])
    struct.pack_into(fmt, producer._buf, offset, *values)
    with pytest.raises(RingCorrupted):
        consumer.try_read()


def test_random_operations_match_a_queue_model() -> None:
    seed = random.randrange(1 << 30)
    rnd = random.Random(seed)
    producer = ShmRing.create(rnd.choice([64, 128, 248, 1024]))
    consumer = ShmRing.attach(producer.name)
    model: deque[bytes] = deque()
    try:
        for step in range(3000):
            if rnd.random() < 0.6:
                batch = [
                    rnd.randbytes(rnd.randint(0, producer.record_limit))
                    for _ in range(rnd.randint(1, 6))
                ]
                done, _ = producer.try_write(batch, 0)
                model.extend(batch[:done])
            else:
                got = _drain(consumer)
                expected = [model.popleft() for _ in range(len(got))]
                assert got == expected, f"seed={seed} step={step}"
                assert not model, f"seed={seed} step={step}: published records left behind"
    finally:
        consumer.close()
        producer.close()


# --- two real processes ----------------------------------------------------------


def _make_record(rnd: random.Random, seq: int, limit: int) -> bytes:
    size = rnd.choice([0, 1, 7, 8, 9, rnd.randint(0, 64), rnd.randint(0, limit - 12)])
    payload = rnd.randbytes(size)
    return struct.pack("<QI", seq, zlib.crc32(payload)) + payload


def _produce(name: str, seed: int, total: int) -> None:
    """Child: write `total` checksummed records in random batches, spinning on a full ring."""
    ring = ShmRing.attach(name)
    rnd = random.Random(seed)
    seq = 0
    while seq < total:
        batch = [
            _make_record(rnd, seq + i, ring.record_limit)
            for i in range(min(rnd.randint(1, 50), total - seq))
        ]
        done = 0
        while done < len(batch):
            done, _ = ring.try_write(batch, done)
            if done < len(batch):
                time.sleep(0)
        seq += len(batch)
    ring.close()


@pytest.mark.timeout(60)
def test_two_processes_random_batches_with_checksums() -> None:
    seed = random.randrange(1 << 30)
    total = 30_000
    consumer = ShmRing.create(4096)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _produce(consumer.name, seed, total)
            code = 0
        finally:
            os._exit(code)
    try:
        expected_seq = 0
        deadline = time.monotonic() + 45
        while expected_seq < total:
            assert time.monotonic() < deadline, f"seed={seed}: stalled at {expected_seq}"
            records, _ = consumer.try_read()
            if not records:
                time.sleep(0)
            for rec in records:
                seq, crc = struct.unpack_from("<QI", rec)
                assert seq == expected_seq, f"seed={seed}: got {seq}, wanted {expected_seq}"
                assert zlib.crc32(rec[12:]) == crc, f"seed={seed}: record {seq} corrupted"
                expected_seq += 1
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, f"seed={seed}: producer failed"
        assert consumer.try_read() == ([], False)
    finally:
        consumer.close()


def test_killed_attacher_leaves_no_segment_behind() -> None:
    ring = ShmRing.create(256)
    pid = os.fork()
    if pid == 0:
        try:
            ShmRing.attach(ring.name)
            time.sleep(30)
        finally:
            os._exit(0)
    time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert ring.name in _our_segments()  # the attacher's death did not unlink it
    ring.close()
    assert ring.name not in _our_segments()


def test_header_is_256_bytes_and_data_follows() -> None:
    ring = ShmRing.create(64)
    try:
        assert HEADER_SIZE == 256
        assert ring._shm.size >= HEADER_SIZE + ring.capacity
    finally:
        ring.close()


@pytest.mark.parametrize("machine", ["aarch64", "arm64", "ppc64le", "riscv64"])
def test_weakly_ordered_cpus_are_refused(machine: str) -> None:
    with pytest.raises(UnsupportedPlatform) as info:
        _require_tso(machine)
    assert info.value.machine == machine


@pytest.mark.parametrize("machine", ["x86_64", "AMD64"])
def test_x86_64_is_accepted(machine: str) -> None:
    _require_tso(machine)


def test_attach_does_not_register_with_the_resource_tracker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only the creator is tracked: a tracked attacher would unlink the creator's segment."""
    registered: list[str] = []
    unregistered: list[str] = []

    def spy(name: str, rtype: str) -> None:
        registered.append(name)

    monkeypatch.setattr(resource_tracker, "register", spy)
    monkeypatch.setattr(
        resource_tracker, "unregister", lambda name, rtype: unregistered.append(name)
    )
    ring = ShmRing.create(64)
    assert len(registered) == 1
    attacher = ShmRing.attach(ring.name)
    assert len(registered) == 1, "attaching registered the segment with the tracker"
    assert resource_tracker.register is spy, "the tracker hook was not restored"
    attacher.close()
    assert unregistered == []
    ring.close()
    assert unregistered == registered  # the creator's unlink balances its registration
