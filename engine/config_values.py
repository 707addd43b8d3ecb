"""Value types of the node config: addresses and sizes, parsed from TOML text.

Rules
-----
- Parsers raise ``ValueError`` saying what is wrong with the value, without
  the key: ``engine.config`` prefixes the key when it turns the error into a
  ``ConfigError``, so one parser serves every key of its kind.
- A host is an IP address (IPv6 written in brackets: ``[::1]:6401``) or an
  RFC 1123 host name; ports are ASCII decimal (``str.isdigit`` alone would
  accept "²", which ``int`` refuses).
- Sizes are bytes: an integer, or a string with a binary (``KiB``, ``k``) or
  decimal (``KB``) unit.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "WILDCARD_HOSTS",
    "Address",
    "PeerAddress",
    "parse_address",
    "parse_peers",
    "parse_size",
]


@dataclass(frozen=True, slots=True)
class Address:
    """A ``host:port`` (IPv6 hosts written ``[::1]:port``)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """One ``cluster.initial_nodes`` entry: ``id@host:port``."""

    node_id: int
    address: Address

    def __str__(self) -> str:
        return f"{self.node_id}@{self.address}"


#: Hosts that bind every address of the machine.
WILDCARD_HOSTS: Final = frozenset({"0.0.0.0", "::"})
_HOSTNAME_LABEL: Final = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_SIZE_RE: Final = re.compile(r"\s*([0-9]+)\s*([KMGT]i?B|[KMGT]|B)?\s*", re.IGNORECASE)
_UNITS: Final = {
    "": 1, "b": 1,
    "k": 1 << 10, "kib": 1 << 10, "kb": 1000,
    "m": 1 << 20, "mib": 1 << 20, "mb": 1000**2,
    "g": 1 << 30, "gib": 1 << 30, "gb": 1000**3,
    "t": 1 << 40, "tib": 1 << 40, "tb": 1000**4,
}


def _is_decimal(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also accepts "²", which ``int`` refuses)."""
    return text.isascii() and text.isdigit()


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    if len(host) > 253:
        return False
    return all(_HOSTNAME_LABEL.fullmatch(label) for label in host.rstrip(".").split("."))


def parse_address(text: str, *, allow_port_zero: bool = False) -> Address:
    """``"host:port"`` or ``"[v6]:port"`` -> ``Address``; ``ValueError`` says what is wrong.

    Port 0 (let the kernel pick) only makes sense for a listener, so callers
    opt in.
    """
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"expected '[ipv6]:port', got {text!r}")
        try:
            if ipaddress.ip_address(host).version != 6:
                raise ValueError(f"brackets are for IPv6 hosts, got {text!r}")
        except ValueError as e:
            raise ValueError(f"bad IPv6 host in {text!r}: {e}") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"expected 'host:port', got {text!r}")
        if ":" in host:
            raise ValueError(f"write IPv6 hosts in brackets ('[{host}]:port'), got {text!r}")
        if not _valid_host(host):
            raise ValueError(f"bad host {host!r} in {text!r}")
    if not _is_decimal(port_text):
        raise ValueError(f"port must be a number, got {port_text!r} in {text!r}")
    port = int(port_text)
    low = 0 if allow_port_zero else 1
    if not low <= port <= 65535:
        raise ValueError(f"port must be in {low}..65535, got {port}")
    return Address(host, port)


def parse_size(value: object) -> int:
    """Bytes from an int or a string like ``"64MiB"``, ``"512k"``, ``"1GB"``."""
    if type(value) is int:
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value}")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.fullmatch(value)
        if m is not None:
            return int(m.group(1)) * _UNITS[(m.group(2) or "").lower()]
    raise ValueError(f"expected a size (bytes, or a string like '64MiB'), got {value!r}")


def parse_peers(value: object) -> tuple[PeerAddress, ...]:
    """A non-empty list of ``"id@host:port"`` with distinct ids and addresses."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"expected a non-empty array of 'id@host:port', got {value!r}")
    peers: list[PeerAddress] = []
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"entries are strings 'id@host:port', got {type(item).__name__}")
        id_text, sep, addr = item.partition("@")
        if not sep or not _is_decimal(id_text) or int(id_text) < 1:
            raise ValueError(f"expected 'id@host:port' with id >= 1, got {item!r}")
        peers.append(PeerAddress(int(id_text), parse_address(addr)))
    ids = [p.node_id for p in peers]
    if dup := sorted({i for i in ids if ids.count(i) > 1}):
        raise ValueError(f"duplicate node id(s) {dup}")
    addrs = [str(p.address) for p in peers]
    if dup_a := sorted({a for a in addrs if addrs.count(a) > 1}):
        raise ValueError(f"duplicate address(es) {dup_a}")
    return tuple(peers)
