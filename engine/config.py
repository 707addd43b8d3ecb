"""The node config: a TOML file -> frozen, validated ``NodeConfig``.

Rules
-----
- **Every key has a default** and is declared exactly once, in ``SCHEMA``
  below: name, kind, default, bounds and a one-line doc. The dataclasses,
  the reference file (``multiraft config sample`` renders it; the copy in
  ``ops/config.reference.toml`` is checked against it by a test) and the
  table in this docstring all follow from that one declaration, so a key
  cannot be documented with one default and parsed with another.
- **Unknown sections and keys are errors**, never ignored: a typo such as
  ``eletion_ticks`` would otherwise silently run with the default.
- **Every error names its key**: ``ConfigError("raft.election_ticks: must be
  > heartbeat_ticks (1), got 1")``. A CLI prints it and exits 2; loading
  never touches the data directory, so a bad config writes nothing.
- TOML booleans are not integers here (Python's ``bool`` is an ``int``
  subclass; ``workers = true`` must be refused, not read as 1).
- Value syntax (addresses, peer lists, sizes) is parsed in
  ``engine/config_values.py``; this module owns keys, defaults and the rules
  between keys.
- Bind addresses may be any host (``0.0.0.0``, ``::``, a hostname): nodes
  run in separate network namespaces. Other nodes are dialled only at the
  addresses in ``cluster.initial_nodes`` (or the cluster's directory later).

Keys (sizes accept an integer of bytes or a string like ``"64MiB"``)
--------------------------------------------------------------------
=============================  =====================  ==========================================
key                            default                meaning
=============================  =====================  ==========================================
node.id                        1                      this node's id (>= 1)
node.data_dir                  "data/n1"              where logs and snapshots live
node.listen_client             "127.0.0.1:6401"       RESP (Redis protocol) listener
node.listen_peer               "127.0.0.1:7401"       raft traffic between nodes
node.listen_admin              "127.0.0.1:8401"       HTTP admin API and /metrics
node.workers                   CPU count              worker processes (>= 1)
cluster.initial_nodes          ["1@127.0.0.1:7401"]   "id@host:port" of the bootstrap nodes
cluster.replication            min(3, #initial)       replicas per range (<= #initial nodes)
cluster.initial_ranges         8                      data ranges pre-split at bootstrap
cluster.join                   false                  true: join a running cluster, no bootstrap
raft.tick_ms                   100                    length of one raft tick
raft.election_ticks            10                     election timeout, in ticks
raft.heartbeat_ticks           1                      heartbeat interval, in ticks
raft.pre_vote                  true                   Raft thesis 9.6 pre-vote
raft.check_quorum              true                   leader steps down without a quorum
raft.lease_reads               true                   lease reads (need check_quorum)
raft.coalesce_heartbeats       true                   one heartbeat frame per node pair per tick
raft.quiesce                   true                   idle ranges stop ticking
raft.proposal_timeout_ticks    100                    proposal outcome unknown after this
raft.read_timeout_ticks        50                     read answered TRYAGAIN after this
raft.max_size_per_msg          "1MiB"                 max bytes of one APPEND message
logstore.backend               "segmented"            segmented | sqlite | memory | rocksdb
logstore.segment_bytes         "64MiB"                segmented: size of one segment file
logstore.cache_bytes           "32MiB"                segmented: entry cache
logstore.recovery_mode         "tolerate_tail"        tolerate_tail | absolute | tolerate_any
logstore.sync                  "fdatasync"            fdatasync | fsync
logstore.compression_threshold 512                    segmented: compress batches above (bytes)
logstore.compression_level     1                      segmented: zstd level 1..22
store.snapshot_entries         10000                  snapshot + compact after N applied (0 off)
store.snapshot_bytes_per_round "4MiB"                 snapshot streaming rate limit per round
store.split_bytes              "64MiB"                split a range above this size
store.merge_bytes              "16MiB"                merge small cold neighbours below this
limits.max_key_bytes           "64KiB"                RESP: longest key
limits.max_value_bytes         "8MiB"                 RESP: longest value
limits.max_request_bytes       "64MiB"                RESP: largest request (all arguments)
limits.max_clients             10000                  RESP: concurrent connections
placement.split_by_load        true                   split hot or large ranges led here
placement.split_qps            5000                   split a range above this many ops/s
placement.split_cooldown_s     60                     no second size/load split of it before
placement.interval_ms          2000                   how often the placement loop looks
placement.merge_qps            0                      merge small neighbours colder than this
placement.balance_leaders      false                  hand leaderships to less busy voters
=============================  =====================  ==========================================

Why ``[store]`` and ``[limits]``: split/merge thresholds and snapshot pacing
belong to the multi-raft store, not to one raft group; RESP's size limits
are what keeps one bad client from taking the node's memory (the issue asks
for key/value/request limits) and an operator must be able to tune them.
``[placement]`` is the node's placement loop (``engine/placement.py``): it
splits ranges this node leads by size (``store.split_bytes``) or load.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final, Literal

from engine.config_values import (
    WILDCARD_HOSTS,
    Address,
    PeerAddress,
    parse_address,
    parse_peers,
    parse_size,
)
from engine.store_config import StoreConfig

__all__ = [
    "SCHEMA",
    "Address",
    "ClusterConfig",
    "ConfigError",
    "LimitsConfig",
    "LogStoreConfig",
    "NodeConfig",
    "NodeSection",
    "PeerAddress",
    "PlacementSection",
    "RaftConfig",
    "StoreSection",
    "load_config",
    "local_cluster_configs",
    "parse_address",
    "parse_config",
    "parse_size",
    "render_toml",
    "sample_toml",
]


class ConfigError(ValueError):
    """A config that cannot be used; the message starts with the key (``section.key``)."""


# --- the schema ---------------------------------------------------------------------------

Kind = Literal["int", "bool", "str", "size", "listen", "peers", "choice"]


@dataclass(frozen=True, slots=True)
class _Key:
    """One config key: how to parse it, its default and its doc line."""

    name: str
    kind: Kind
    #: The default as written in TOML; None: computed (see ``doc``).
    default: object
    doc: str
    low: int | None = None
    high: int | None = None
    choices: tuple[str, ...] = ()


SCHEMA: Final[dict[str, tuple[_Key, ...]]] = {
    "node": (
        _Key("id", "int", 1, "this node's id", low=1),
        _Key("data_dir", "str", "data/n1", "logs, snapshots and node state live here"),
        _Key("listen_client", "listen", "127.0.0.1:6401", "RESP (Redis protocol) listener"),
        _Key("listen_peer", "listen", "127.0.0.1:7401", "raft traffic between nodes"),
        _Key("listen_admin", "listen", "127.0.0.1:8401", "HTTP admin API and /metrics"),
        _Key("workers", "int", None, "worker processes; default: the CPU count", low=1),
    ),
    "cluster": (
        _Key("initial_nodes", "peers", ["1@127.0.0.1:7401"],
             "the bootstrap nodes, 'id@host:port' (their listen_peer as others reach it)"),
        _Key("replication", "int", None,
             "replicas per range; default: min(3, number of initial_nodes)", low=1),
        _Key("initial_ranges", "int", 8, "data ranges pre-split on first bootstrap",
             low=1, high=1 << 20),
        _Key("join", "bool", False,
             "true: this node joins a running cluster instead of bootstrapping"),
    ),
    "raft": (
        _Key("tick_ms", "int", 100, "length of one raft tick in milliseconds",
             low=1, high=60_000),
        _Key("election_ticks", "int", 10, "election timeout in ticks (> heartbeat_ticks)",
             low=1),
        _Key("heartbeat_ticks", "int", 1, "heartbeat interval in ticks", low=1),
        _Key("pre_vote", "bool", True, "pre-vote before campaigning (Raft thesis 9.6)"),
        _Key("check_quorum", "bool", True, "a leader without a quorum steps down"),
        _Key("lease_reads", "bool", True,
             "serve linearizable reads from the leader's lease while it holds (needs "
             "check_quorum); false: every read batch takes a ReadIndex round"),
        _Key("coalesce_heartbeats", "bool", True,
             "one heartbeat frame per node pair per tick for all ranges"),
        _Key("quiesce", "bool", True, "idle ranges stop ticking and heartbeating"),
        _Key("proposal_timeout_ticks", "int", 100,
             "a proposal not resolved by then is answered TIMEOUT", low=1),
        _Key("read_timeout_ticks", "int", 50,
             "a read not served by then is answered TRYAGAIN", low=1),
        _Key("max_size_per_msg", "size", "1MiB", "max bytes of one raft APPEND message",
             low=1024),
    ),
    "logstore": (
        _Key("backend", "choice", "segmented", "raft log backend",
             choices=("segmented", "sqlite", "memory", "rocksdb")),
        _Key("segment_bytes", "size", "64MiB", "segmented: size of one segment file",
             low=4096),
        _Key("cache_bytes", "size", "32MiB", "segmented: in-memory entry cache", low=0),
        _Key("recovery_mode", "choice", "tolerate_tail", "what recovery may cut",
             choices=("tolerate_tail", "absolute", "tolerate_any")),
        _Key("sync", "choice", "fdatasync", "how a batch is made durable",
             choices=("fdatasync", "fsync")),
        _Key("compression_threshold", "size", 512,
             "segmented: zstd-compress batches larger than this", low=0),
        _Key("compression_level", "int", 1, "segmented: zstd level", low=1, high=22),
    ),
    "store": (
        _Key("snapshot_entries", "int", 10_000,
             "snapshot and compact a range after this many applied entries (0: never)", low=0),
        _Key("snapshot_bytes_per_round", "size", "4MiB",
             "snapshot bytes streamed per round over all followers", low=1),
        _Key("split_bytes", "size", "64MiB", "split a range larger than this", low=1024),
        _Key("merge_bytes", "size", "16MiB",
             "merge cold neighbours smaller than this together (< split_bytes)", low=0),
    ),
    "limits": (
        _Key("max_key_bytes", "size", "64KiB", "RESP: longest key", low=1),
        _Key("max_value_bytes", "size", "8MiB", "RESP: longest value", low=1),
        _Key("max_request_bytes", "size", "64MiB", "RESP: largest request, all arguments",
             low=1),
        _Key("max_clients", "int", 10_000, "RESP: concurrent client connections", low=1),
    ),
    "placement": (
        _Key("split_by_load", "bool", True,
             "split ranges led here above store.split_bytes or placement.split_qps"),
        _Key("split_qps", "int", 5000,
             "split a range serving more client reads+writes per second than this (0: never)",
             low=0),
        _Key("split_cooldown_s", "int", 60,
             "seconds before the placement loop splits the same range again", low=0),
        _Key("interval_ms", "int", 2000, "how often the placement loop looks at the reports",
             low=10, high=3_600_000),
        _Key("merge_qps", "int", 0,
             "merge neighbours led here, together under store.merge_bytes, each serving "
             "fewer reads+writes per second than this (0: never)", low=0),
        _Key("balance_leaders", "bool", False,
             "hand leaderships of cold ranges to voters leading fewer ranges than this node"),
    ),
}


# --- the parsed config --------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSection:
    id: int
    data_dir: str
    listen_client: Address
    listen_peer: Address
    listen_admin: Address
    workers: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterConfig:
    initial_nodes: tuple[PeerAddress, ...]
    replication: int
    initial_ranges: int
    join: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class RaftConfig:
    tick_ms: int
    election_ticks: int
    heartbeat_ticks: int
    pre_vote: bool
    check_quorum: bool
    lease_reads: bool
    coalesce_heartbeats: bool
    quiesce: bool
    proposal_timeout_ticks: int
    read_timeout_ticks: int
    max_size_per_msg: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LogStoreConfig:
    backend: str
    segment_bytes: int
    cache_bytes: int
    recovery_mode: str
    sync: str
    compression_threshold: int
    compression_level: int

    def options(self) -> dict[str, object]:
        """Keyword options for ``logstore.factory.open_log_store`` (only the
        segmented backend takes tuning options)."""
        if self.backend != "segmented":
            return {}
        return {
            "segment_bytes": self.segment_bytes,
            "cache_bytes": self.cache_bytes,
            "recovery_mode": self.recovery_mode,
            "sync": self.sync,
            "compression_threshold": self.compression_threshold,
            "compression_level": self.compression_level,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreSection:
    snapshot_entries: int
    snapshot_bytes_per_round: int
    split_bytes: int
    merge_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsConfig:
    max_key_bytes: int
    max_value_bytes: int
    max_request_bytes: int
    max_clients: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacementSection:
    split_by_load: bool
    split_qps: int
    split_cooldown_s: int
    interval_ms: int
    merge_qps: int
    balance_leaders: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    """A whole, validated node config (build it with ``parse_config``/``load_config``)."""

    node: NodeSection
    cluster: ClusterConfig
    raft: RaftConfig
    logstore: LogStoreConfig
    store: StoreSection
    limits: LimitsConfig
    placement: PlacementSection

    def store_config(self, seed: int = 0) -> StoreConfig:
        """The ``StoreConfig`` each worker's ``Store`` runs with."""
        r, s = self.raft, self.store
        return StoreConfig(
            election_ticks=r.election_ticks, heartbeat_ticks=r.heartbeat_ticks,
            pre_vote=r.pre_vote, check_quorum=r.check_quorum, lease_reads=r.lease_reads,
            coalesce_heartbeats=r.coalesce_heartbeats, quiesce=r.quiesce,
            proposal_timeout_ticks=r.proposal_timeout_ticks,
            read_timeout_ticks=r.read_timeout_ticks, snapshot_entries=s.snapshot_entries,
            snapshot_bytes_per_round=s.snapshot_bytes_per_round,
            max_size_per_msg=r.max_size_per_msg, seed=seed,
        )

    def peer_address(self, node_id: int) -> Address | None:
        """Where ``node_id`` is dialled, from ``cluster.initial_nodes``."""
        for p in self.cluster.initial_nodes:
            if p.node_id == node_id:
                return p.address
        return None


_SECTION_TYPES: Final[dict[str, type[Any]]] = {
    "node": NodeSection, "cluster": ClusterConfig, "raft": RaftConfig,
    "logstore": LogStoreConfig, "store": StoreSection, "limits": LimitsConfig,
    "placement": PlacementSection,
}


# --- parsing ------------------------------------------------------------------------------


def _type_name(value: object) -> str:
    return {bool: "a boolean", int: "an integer", str: "a string", list: "an array",
            dict: "a table", float: "a float"}.get(type(value), type(value).__name__)


def _parse_value(key: _Key, value: object) -> object:
    """Parse one raw TOML value; ``ValueError`` says what is wrong (without the key)."""
    match key.kind:
        case "int":
            if type(value) is not int:
                raise ValueError(f"expected an integer, got {_type_name(value)} {value!r}")
            parsed: object = value
        case "bool":
            if type(value) is not bool:
                raise ValueError(f"expected true or false, got {_type_name(value)} {value!r}")
            return value
        case "str":
            if not isinstance(value, str) or not value:
                raise ValueError(f"expected a non-empty string, got {value!r}")
            return value
        case "choice":
            if value not in key.choices:
                raise ValueError(f"must be one of {', '.join(key.choices)}; got {value!r}")
            return value
        case "size":
            parsed = parse_size(value)
        case "listen":
            if not isinstance(value, str):
                raise ValueError(f"expected 'host:port', got {_type_name(value)} {value!r}")
            return parse_address(value, allow_port_zero=True)
        case "peers":
            return parse_peers(value)
    assert isinstance(parsed, int)
    if key.low is not None and parsed < key.low:
        raise ValueError(f"must be >= {key.low}, got {value!r}")
    if key.high is not None and parsed > key.high:
        raise ValueError(f"must be <= {key.high}, got {value!r}")
    return parsed


_COMPUTED: Final[dict[tuple[str, str], Callable[[dict[str, dict[str, object]]], object]]] = {
    ("node", "workers"): lambda _: os.cpu_count() or 1,
    ("cluster", "replication"): lambda v: min(
        3, len(v["cluster"]["initial_nodes"])  # type: ignore[arg-type]
    ),
}


def parse_config(raw: Mapping[str, object]) -> NodeConfig:
    """Validate a parsed TOML document (missing keys take their defaults)."""
    if unknown := sorted(set(raw) - set(SCHEMA)):
        raise ConfigError(
            f"{unknown[0]}: unknown section (known: {', '.join(SCHEMA)})"
        )
    values: dict[str, dict[str, object]] = {}
    for section, keys in SCHEMA.items():
        table = raw.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{section}: expected a table, got {_type_name(table)}")
        names = {k.name for k in keys}
        if unknown := sorted(set(table) - names):
            raise ConfigError(
                f"{section}.{unknown[0]}: unknown key (known: {', '.join(sorted(names))})"
            )
        out: dict[str, object] = {}
        for key in keys:
            if key.name not in table and key.default is None:
                continue  # computed below, once the keys it depends on are parsed
            try:
                out[key.name] = _parse_value(key, table.get(key.name, key.default))
            except ValueError as e:
                raise ConfigError(f"{section}.{key.name}: {e}") from None
        values[section] = out
    for (section, name), compute in _COMPUTED.items():
        values[section].setdefault(name, compute(values))
    config = NodeConfig(**{s: _SECTION_TYPES[s](**v) for s, v in values.items()})
    _check_consistency(config)
    return config


def _unspecified(host: str) -> bool:
    """Whether ``host`` is a wildcard address (0.0.0.0, ::): fine to bind, never to dial."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False  # a host name


def _check_consistency(c: NodeConfig) -> None:
    """The rules that relate keys to each other."""
    r, cl, n = c.raft, c.cluster, c.node
    if r.election_ticks <= r.heartbeat_ticks:
        raise ConfigError(
            f"raft.election_ticks: must be > heartbeat_ticks ({r.heartbeat_ticks}), "
            f"got {r.election_ticks}"
        )
    if r.lease_reads and not r.check_quorum:
        raise ConfigError(
            "raft.lease_reads: a lease is only safe with raft.check_quorum = true; "
            "set lease_reads = false or check_quorum = true"
        )
    if cl.replication > len(cl.initial_nodes):
        raise ConfigError(
            f"cluster.replication: must be <= the number of initial_nodes "
            f"({len(cl.initial_nodes)}), got {cl.replication}"
        )
    member = c.peer_address(n.id) is not None
    if not cl.join and not member:
        raise ConfigError(
            f"node.id: node {n.id} is not in cluster.initial_nodes "
            f"({', '.join(str(p.node_id) for p in cl.initial_nodes)}); "
            "list it there to bootstrap, or set cluster.join = true"
        )
    if cl.join and _unspecified(n.listen_peer.host):
        raise ConfigError(
            f"node.listen_peer: a joining node advertises this address to the cluster, so it "
            f"must be one the others can dial, got {n.listen_peer}"
        )
    if cl.join and member:
        raise ConfigError(
            f"cluster.join: node {n.id} is listed in initial_nodes and bootstraps with them; "
            "join is for nodes added later"
        )
    listeners = {"listen_client": n.listen_client, "listen_peer": n.listen_peer,
                 "listen_admin": n.listen_admin}
    bound: list[tuple[str, Address]] = []
    for name, addr in listeners.items():
        for other_name, other in bound:
            # A wildcard host binds the port on every address, so it clashes
            # with any other listener on that port.
            same_host = addr.host == other.host or {addr.host, other.host} & WILDCARD_HOSTS
            if addr.port and addr.port == other.port and same_host:
                raise ConfigError(
                    f"node.{name}: {addr} clashes with node.{other_name} ({other})"
                )
        bound.append((name, addr))
    s = c.store
    if s.merge_bytes >= s.split_bytes:
        raise ConfigError(
            f"store.merge_bytes: must be < split_bytes ({s.split_bytes}), got {s.merge_bytes}"
        )
    lim = c.limits
    if lim.max_key_bytes + lim.max_value_bytes > lim.max_request_bytes:
        raise ConfigError(
            f"limits.max_request_bytes: must hold one max key plus one max value "
            f"({lim.max_key_bytes + lim.max_value_bytes}), got {lim.max_request_bytes}"
        )


def load_config(path: str | os.PathLike[str]) -> NodeConfig:
    """Read and validate the TOML file at ``path``. Reads only; writes nothing."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    return parse_config(raw)


# --- rendering ----------------------------------------------------------------------------


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}"
    if isinstance(value, Address | PeerAddress | str):
        text = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{text}"'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise AssertionError(f"no TOML form for {value!r}")


def sample_toml() -> str:
    """The reference config: every key, its default and what it is for."""
    lines = [
        "# multiraft node config: every key with its default.",
        "# Generated by `multiraft config sample`; unknown keys are an error.",
        "# Sizes take bytes or a string such as \"64MiB\".",
    ]
    for section, keys in SCHEMA.items():
        lines += ["", f"[{section}]"]
        for key in keys:
            lines.append(f"# {key.doc}")
            if key.choices:
                lines.append(f"# one of: {', '.join(key.choices)}")
            if key.default is None:
                lines.append(f"# {key.name} = (computed, see above)")
            else:
                lines.append(f"{key.name} = {_toml_value(key.default)}")
    return "\n".join(lines) + "\n"


def render_toml(config: NodeConfig) -> str:
    """A TOML document that ``parse_config`` turns back into ``config``."""
    lines: list[str] = []
    for section in SCHEMA:
        obj = getattr(config, section)
        lines.append(f"[{section}]")
        lines += [f"{f.name} = {_toml_value(getattr(obj, f.name))}" for f in fields(obj)]
        lines.append("")
    return "\n".join(lines)


def local_cluster_configs(
    n: int, base_dir: str | os.PathLike[str], base_ports: tuple[int, int, int] = (6401, 7401, 8401),
    *, host: str = "127.0.0.1", workers: int | None = None,
) -> list[NodeConfig]:
    """Configs for an ``n``-node cluster on ``host``: node i (1-based) gets
    ``base_dir/n<i>`` and ports ``base + i - 1`` for (client, peer, admin)."""
    if n < 1:
        raise ConfigError(f"nodes: must be >= 1, got {n}")
    client, peer, admin = base_ports
    if max(base_ports) + n - 1 > 65535 or min(base_ports) < 1:
        raise ConfigError(f"base_ports: {base_ports} + {n} nodes leaves the port range")
    peers = [f"{i}@{Address(host, peer + i - 1)}" for i in range(1, n + 1)]
    configs = []
    for i in range(1, n + 1):
        node: dict[str, object] = {
            "id": i, "data_dir": str(Path(base_dir) / f"n{i}"),
            "listen_client": str(Address(host, client + i - 1)),
            "listen_peer": str(Address(host, peer + i - 1)),
            "listen_admin": str(Address(host, admin + i - 1)),
        }
        if workers is not None:
            node["workers"] = workers
        configs.append(parse_config({"node": node, "cluster": {"initial_nodes": peers}}))
    return configs

