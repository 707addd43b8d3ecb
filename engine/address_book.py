"""``AddressBook``: where each node of the cluster is dialled, and how nodes share it.

Why
---
The initial nodes know each other from their configs. A node that joins later
(``cluster.join = true``) knows the initial nodes, but they do not know it, and
two joiners do not know each other: without an exchange, nobody could send a
joiner its raft traffic or its forwarded answers. The contract allows dialling
"addresses from its own config or from the cluster's node directory"; this is
that directory.

Theory of operation
-------------------
- Every node advertises its own ``listen_peer`` and relays every address it
  knows, to every peer it knows, every few seconds (one small record: a few
  rows per node). News spreads in a couple of rounds; the cost is constant in
  the number of ranges.
- Addresses from this node's own config are authoritative: gossip never
  changes them (a misbehaving peer cannot redirect traffic meant for an
  initial node). A learnt address may change (a joiner restarted elsewhere):
  the newest report from the node itself wins over relayed ones.
- Gossip is untrusted input: rows with a bad node id or an unparsable
  address are dropped and logged, the rest of the record is used.

Wire form: a CLIENT_REQUESTS record of control rows (``req_id`` 0,
``range_id`` ``CONTROL_NODE_ADDRESS``), ``generation`` = the node id, and
``command`` = its address as UTF-8 ``host:port`` (``[v6]:port``).
"""

from __future__ import annotations

import logging

from engine.config_values import Address, parse_address
from engine.worker_protocol import CONTROL_NODE_ADDRESS, CONTROL_REQ_ID
from transport import ClientRequest
from transport.codec import encode_client_requests

log = logging.getLogger("multiraft.address_book")

#: The largest node id a row may carry (node ids are u64 on the wire, >= 1).
_MAX_NODE_ID = (1 << 64) - 1
#: The longest address text accepted (a bracketed IPv6 address with a port fits).
_MAX_ADDRESS_TEXT = 300


class AddressBook:
    """This node's view of every node's peer address (see the module docstring)."""

    def __init__(self, own_id: int, own: Address, configured: dict[int, Address]) -> None:
        self.own_id = own_id
        #: Invariant: node id -> address; includes this node; configured entries are
        #: never replaced.
        self._book: dict[int, Address] = {**configured, own_id: own}
        self._configured = frozenset(configured) | {own_id}

    def peers(self) -> list[int]:
        """Every other node this node knows an address for."""
        return [n for n in self._book if n != self.own_id]

    def address(self, node_id: int) -> Address | None:
        return self._book.get(node_id)

    def record(self) -> bytes:
        """The gossip record: every known address, this node's own included."""
        return encode_client_requests([
            ClientRequest(CONTROL_REQ_ID, CONTROL_NODE_ADDRESS, nid, str(addr).encode())
            for nid, addr in sorted(self._book.items())])

    def learn(self, sender: int, rows: list[ClientRequest]) -> list[tuple[int, Address]]:
        """Fold a gossip record from ``sender`` in; the (node, address) pairs that are
        new or changed (the caller tells its transport)."""
        changed: list[tuple[int, Address]] = []
        for row in rows:
            nid = row.generation
            if row.range_id != CONTROL_NODE_ADDRESS or not 1 <= nid <= _MAX_NODE_ID:
                log.warning("node %d: bad address row from node %d", self.own_id, sender)
                continue
            if nid in self._configured:
                continue
            try:
                if len(row.command) > _MAX_ADDRESS_TEXT:
                    raise ValueError("address too long")
                addr = parse_address(row.command.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                log.warning("node %d: bad address for node %d from node %d: %s",
                            self.own_id, nid, sender, e)
                continue
            known = self._book.get(nid)
            # A relayed address never overrides what the node itself said last.
            if known == addr or (known is not None and sender != nid):
                continue
            self._book[nid] = addr
            changed.append((nid, addr))
        return changed
