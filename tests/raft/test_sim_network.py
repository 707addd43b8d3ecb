"""The simulator's network faults do what they say (engine/raft/testing/network.py)."""

from __future__ import annotations

import random

from engine.raft.testing.network import NetworkFaults, SimNetwork
from engine.raft.types import Message, MessageType


def msg(frm: int, to: int, n: int = 0) -> Message:
    return Message(MessageType.HEARTBEAT, to=to, frm=frm, term=1, commit=n)


def drain(net: SimNetwork) -> list[tuple[Message, bool]]:
    out = []
    while (p := net.pop()) is not None:
        out.append((p[0].msg, p[1]))
    return out


def test_perfect_network_is_fifo() -> None:
    net = SimNetwork(random.Random(1))
    for i in range(5):
        assert net.send(msg(1, 2, i), incarnation=1)
    assert [m.commit for m, lost in drain(net)] == [0, 1, 2, 3, 4]


def test_reorder_shuffles_but_loses_nothing() -> None:
    net = SimNetwork(random.Random(3), NetworkFaults(reorder=True))
    for i in range(50):
        net.send(msg(1, 2, i), 1)
    got = [m.commit for m, _ in drain(net)]
    assert sorted(got) == list(range(50))
    assert got != list(range(50))


def test_drop_and_duplicate_rates() -> None:
    net = SimNetwork(random.Random(5), NetworkFaults(drop=0.2, duplicate=0.1))
    sent = sum(net.send(msg(1, 2, i), 1) for i in range(5000))
    assert 3800 < sent < 4200
    got = drain(net)
    assert 1.05 * sent < len(got) < 1.15 * sent


def test_delay_holds_messages_until_due() -> None:
    net = SimNetwork(random.Random(7), NetworkFaults(max_delay=3))
    for i in range(100):
        net.send(msg(1, 2, i), 1)
    seen = len(drain(net))
    for now in range(1, 4):
        net.advance(now)
        seen += len(drain(net))
    assert seen == 100 and net.in_flight() == 0


def test_partitions_are_directed_and_cut_messages_in_flight() -> None:
    net = SimNetwork(random.Random(9))
    net.send(msg(1, 2), 1)
    net.send(msg(2, 1), 1)
    net.block(1, 2)  # one-way: 1 -> 2 only
    assert drain(net) == [(msg(1, 2), True), (msg(2, 1), False)]
    net.heal()
    net.partition({1}, {2, 3})
    assert net.is_blocked(1, 3) and net.is_blocked(3, 1) and not net.is_blocked(2, 3)
    net.heal()
    assert not net.partitioned


def test_same_seed_same_schedule() -> None:
    def run(seed: int) -> list[int]:
        net = SimNetwork(random.Random(seed), NetworkFaults(0.1, 0.1, True, 2))
        for i in range(200):
            net.send(msg(1, 2, i), 1)
        out = []
        for now in range(1, 4):
            net.advance(now)
            out += [m.commit for m, _ in drain(net)]
        return out

    assert run(11) == run(11)
    assert run(11) != run(12)
