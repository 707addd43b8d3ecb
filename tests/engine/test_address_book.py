"""engine.address_book: gossip fills in joiners, never redirects configured nodes, and
drops bad rows without losing the good ones."""

from __future__ import annotations

from engine.address_book import AddressBook
from engine.config_values import Address
from engine.worker import ENGINE_TYPES
from engine.worker_protocol import CONTROL_NODE_ADDRESS, CONTROL_REQ_ID
from transport import ClientRequest, WireCodec
from transport.codec import ClientRequestBatch


def rows(book: AddressBook) -> list[ClientRequest]:
    record = WireCodec(ENGINE_TYPES).decode(book.record())
    assert isinstance(record, ClientRequestBatch)
    return list(record.requests)


def test_a_joiner_becomes_known_to_everyone_through_gossip() -> None:
    one = AddressBook(1, Address("10.0.0.1", 7401), {2: Address("10.0.0.2", 7401)})
    two = AddressBook(2, Address("10.0.0.2", 7401), {1: Address("10.0.0.1", 7401)})
    joiner = AddressBook(4, Address("10.0.0.4", 7401), {1: Address("10.0.0.1", 7401)})
    assert one.learn(4, rows(joiner)) == [(4, Address("10.0.0.4", 7401))]
    assert two.learn(1, rows(one)) == [(4, Address("10.0.0.4", 7401))]  # relayed
    assert joiner.learn(1, rows(one)) == [(2, Address("10.0.0.2", 7401))]
    assert sorted(two.peers()) == [1, 4] and sorted(joiner.peers()) == [1, 2]
    assert one.learn(4, rows(joiner)) == []  # nothing new


def test_configured_addresses_are_never_redirected_and_relays_never_override() -> None:
    book = AddressBook(1, Address("10.0.0.1", 7401), {2: Address("10.0.0.2", 7401)})
    liar = [ClientRequest(CONTROL_REQ_ID, CONTROL_NODE_ADDRESS, 2, b"6.6.6.6:1"),
            ClientRequest(CONTROL_REQ_ID, CONTROL_NODE_ADDRESS, 1, b"6.6.6.6:1"),
            ClientRequest(CONTROL_REQ_ID, CONTROL_NODE_ADDRESS, 5, b"10.0.0.5:7401")]
    assert book.learn(3, liar) == [(5, Address("10.0.0.5", 7401))]
    assert book.address(2) == Address("10.0.0.2", 7401)
    moved = [ClientRequest(CONTROL_REQ_ID, CONTROL_NODE_ADDRESS, 5, b"10.0.0.9:7401")]
    assert book.learn(3, moved) == []  # a relay cannot move node 5
    assert book.learn(5, moved) == [(5, Address("10.0.0.9", 7401))]  # node 5 itself can


def test_bad_rows_are_dropped_and_the_rest_used() -> None:
    book = AddressBook(1, Address("10.0.0.1", 7401), {})
    bad = [ClientRequest(CONTROL_REQ_ID, CONTROL_NODE_ADDRESS, 0, b"10.0.0.7:1"),
           ClientRequest(CONTROL_REQ_ID, CONTROL_NODE_ADDRESS, 7, b"\xff\xfe"),
           ClientRequest(CONTROL_REQ_ID, CONTROL_NODE_ADDRESS, 7, b"no-port"),
           ClientRequest(CONTROL_REQ_ID, CONTROL_NODE_ADDRESS, 7, b"1.2.3.4:99999"),
           ClientRequest(CONTROL_REQ_ID, CONTROL_NODE_ADDRESS, 7, b"x" * 400 + b":1"),
           ClientRequest(CONTROL_REQ_ID, 99, 7, b"10.0.0.7:1"),
           ClientRequest(CONTROL_REQ_ID, CONTROL_NODE_ADDRESS, 8, b"[::1]:7408")]
    assert book.learn(3, bad) == [(8, Address("::1", 7408))]
    assert book.peers() == [8]
