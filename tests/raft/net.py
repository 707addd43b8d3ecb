"""A tiny in-test network that runs RawNodes through the full Ready loop.

Not the seeded simulator (``engine/raft/testing``): no virtual time, no
randomized faults. It delivers messages in FIFO order, can cut links and
isolate nodes, and applies every Ready exactly as a real caller must
(messages, persist, persisted messages, apply, advance), so paper-section
tests exercise the same path production code does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from engine.raft import (
    Config,
    ConfState,
    Entry,
    EntryType,
    MemoryStorage,
    Message,
    MessageType,
    RawNode,
    ReadState,
    Ready,
    StateRole,
    decode_conf_change,
)


@dataclass
class Net:
    """Nodes by id, their storages, and the messages in flight."""

    nodes: dict[int, RawNode] = field(default_factory=dict)
    storages: dict[int, MemoryStorage] = field(default_factory=dict)
    #: Every entry each node applied, in order (NORMAL and CONF_CHANGE).
    applied: dict[int, list[Entry]] = field(default_factory=dict)
    read_states: dict[int, list[ReadState]] = field(default_factory=dict)
    in_flight: list[Message] = field(default_factory=list)
    #: Directed links (frm, to) that drop everything.
    cut: set[tuple[int, int]] = field(default_factory=set)
    #: Message types to drop everywhere.
    drop_types: set[int] = field(default_factory=set)
    #: Every message delivered, for assertions.
    delivered: list[Message] = field(default_factory=list)
    cfg: dict[str, Any] = field(default_factory=dict)
    #: Apply CONF_CHANGE entries automatically (tests of pending conf may turn it off).
    auto_apply_conf: bool = True

    @classmethod
    def of(cls, voters: Iterable[int], learners: Iterable[int] = (), **cfg: Any) -> Net:
        net = cls(cfg=cfg)
        cs = ConfState(voters=tuple(sorted(voters)), learners=tuple(sorted(learners)))
        for nid in (*cs.voters, *cs.learners):
            net.add_node(nid, MemoryStorage(cs))
        return net

    def add_node(self, nid: int, storage: MemoryStorage, **override: Any) -> RawNode:
        kw = {**self.cfg, **override}
        node = RawNode(Config(nid, **kw), storage)
        self.nodes[nid] = node
        self.storages[nid] = storage
        self.applied.setdefault(nid, [])
        self.read_states.setdefault(nid, [])
        return node

    def restart(self, nid: int, **override: Any) -> RawNode:
        """Crash-restart: a new RawNode over the same (durable) storage."""
        self.in_flight = [m for m in self.in_flight if m.to != nid]
        applied = self.applied[nid][-1].index if self.applied[nid] else 0
        st = self.storages[nid]
        applied = max(applied, st.snapshot().metadata.index)
        return self.add_node(nid, st, applied=min(applied, st.hard_state.commit), **override)

    # -- the Ready loop -------------------------------------------------------------------

    def handle_ready(self, nid: int) -> Ready | None:
        node = self.nodes[nid]
        if not node.has_ready():
            return None
        rd = node.ready()
        st = self.storages[nid]
        self.in_flight.extend(rd.messages)
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
        st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        self.in_flight.extend(rd.persisted_messages)
        for e in rd.committed_entries:
            self.applied[nid].append(e)
            if e.type == EntryType.CONF_CHANGE and self.auto_apply_conf:
                node.apply_conf_change(decode_conf_change(e.data))
        self.read_states[nid].extend(rd.read_states)
        node.advance(rd)
        return rd

    def outbox(self, nid: int) -> list[Message]:
        """Run ``nid``'s Ready loop and return (and take out of flight) what it sent."""
        before = len(self.in_flight)
        while self.handle_ready(nid) is not None:
            pass
        sent = self.in_flight[before:]
        del self.in_flight[before:]
        return sent

    def deliver(self, msgs: Iterable[Message]) -> None:
        """Step ``msgs`` into their destinations (ignoring cuts), without pumping."""
        for m in msgs:
            self.delivered.append(m)
            self.nodes[m.to].step(m)

    def deliver_all(self) -> int:
        """Deliver what is in flight now (FIFO); returns how many were delivered."""
        batch, self.in_flight = self.in_flight, []
        n = 0
        for m in batch:
            if (m.frm, m.to) in self.cut or m.type in self.drop_types or m.to not in self.nodes:
                continue
            self.delivered.append(m)
            self.nodes[m.to].step(m)
            n += 1
        return n

    def stabilize(self, max_rounds: int = 200) -> None:
        for _ in range(max_rounds):
            busy = False
            for nid in list(self.nodes):
                while self.handle_ready(nid) is not None:
                    busy = True
            if self.in_flight:
                busy = True
                self.deliver_all()
            if not busy:
                return
        raise AssertionError("network did not stabilize")

    # -- helpers ----------------------------------------------------------------------------

    def tick(self, nid: int, n: int = 1) -> None:
        for _ in range(n):
            self.nodes[nid].tick()

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for node in self.nodes.values():
                node.tick()
            self.stabilize()

    def elect(self, nid: int) -> RawNode:
        self.nodes[nid].campaign()
        self.stabilize()
        node = self.nodes[nid]
        assert node.role == StateRole.LEADER, f"{nid} did not win: {node.status()}"
        return node

    def isolate(self, nid: int) -> None:
        for other in self.nodes:
            if other != nid:
                self.cut.add((nid, other))
                self.cut.add((other, nid))

    def heal(self) -> None:
        self.cut.clear()
        self.drop_types.clear()

    def leaders(self) -> list[int]:
        return [i for i, n in self.nodes.items() if n.role == StateRole.LEADER]

    def data_applied(self, nid: int) -> list[bytes]:
        return [e.data for e in self.applied[nid] if e.type == EntryType.NORMAL and e.data]

    def sent(self, typ: MessageType) -> list[Message]:
        return [m for m in self.delivered if m.type == typ]
