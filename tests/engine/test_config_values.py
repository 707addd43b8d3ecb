"""engine/config_values.py: addresses (any host, IPv6, port range), peer
lists and sizes."""

from __future__ import annotations

import pytest

from engine.config_values import Address, PeerAddress, parse_address, parse_peers, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0.0:6401", Address("0.0.0.0", 6401)),
        ("[::]:6401", Address("::", 6401)),
        ("[::1]:1", Address("::1", 1)),
        ("node-1.example.internal:7401", Address("node-1.example.internal", 7401)),
        ("localhost:65535", Address("localhost", 65535)),
    ],
)
def test_any_host_address_parses_and_prints_back(text: str, expected: Address) -> None:
    assert parse_address(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize(
    "text", [":80", "host:", "host:-1", "host:\u00b2", "::1:80", "[127.0.0.1]:80", "[::1]80",
             "a..b:1", "-bad:1", "host:0", "host:1x"],
)
def test_bad_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(4096, 4096), ("64MiB", 64 << 20), ("512k", 512 << 10), ("1GB", 10**9),
     ("10 B", 10), ("2tib", 2 << 40)],
)
def test_sizes(value: object, expected: int) -> None:
    assert parse_size(value) == expected


@pytest.mark.parametrize("value", ["", "1.5MiB", "MiB", "-1", 1.5, True, "12 parsecs"])
def test_bad_sizes(value: object) -> None:
    with pytest.raises(ValueError):
        parse_size(value)


def test_peers() -> None:
    assert parse_peers(["2@[::1]:7402", "1@h:7401"]) == (
        PeerAddress(2, Address("::1", 7402)), PeerAddress(1, Address("h", 7401)))
    assert str(PeerAddress(2, Address("::1", 7402))) == "2@[::1]:7402"
    for bad in ([], "1@h:1", [1], ["0@h:1"], ["1@h:1", "1@h:2"], ["1@h:1", "2@h:1"]):
        with pytest.raises(ValueError):
            parse_peers(bad)
