"""engine/config.py: defaults, every validation rule naming its key, the
reference file, ops/ configs and local cluster configs."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from engine import config as cfgmod
from engine.config import (
    SCHEMA,
    Address,
    ConfigError,
    load_config,
    local_cluster_configs,
    parse_config,
    render_toml,
    sample_toml,
)
from engine.store_config import StoreConfig
from logstore.factory import open_log_store

REPO = Path(__file__).resolve().parents[2]
THREE = ["1@127.0.0.1:7401", "2@127.0.0.1:7402", "3@127.0.0.1:7403"]


def test_empty_config_is_the_documented_defaults() -> None:
    c = parse_config({})
    assert c.node.id == 1 and c.node.data_dir == "data/n1"
    assert c.node.listen_client == Address("127.0.0.1", 6401)
    assert c.node.workers >= 1
    assert c.cluster.replication == 1  # min(3, one initial node)
    assert c.raft.election_ticks == 10 and c.raft.heartbeat_ticks == 1
    assert c.logstore.backend == "segmented"
    assert c.logstore.segment_bytes == 64 << 20
    assert c.limits.max_value_bytes == 8 << 20


def test_schema_dataclasses_and_docstring_table_agree() -> None:
    c = parse_config({})
    doc = cfgmod.__doc__ or ""
    for section, keys in SCHEMA.items():
        names = [k.name for k in keys]
        assert [f.name for f in dataclasses.fields(getattr(c, section))] == names
        for name in names:
            assert f"{section}.{name} " in doc, f"{section}.{name} missing from the docstring"


def test_render_round_trips() -> None:
    raw = {"node": {"id": 2, "workers": 3},
           "cluster": {"initial_nodes": THREE, "replication": 3}}
    c = parse_config(raw)
    assert parse_config(tomllib.loads(render_toml(c))) == c


def test_reference_file_is_the_sample_and_loads_to_defaults(tmp_path: Path) -> None:
    ref = REPO / "ops" / "config.reference.toml"
    assert ref.read_text() == sample_toml(), "regenerate: multiraft config sample > " + str(ref)
    assert load_config(ref) == parse_config({})


def test_every_ops_config_loads() -> None:
    files = sorted((REPO / "ops").rglob("*.toml"))
    assert len(files) >= 4
    configs = {f.name: load_config(f) for f in files}
    cluster = [configs[f"n{i}.toml"] for i in (1, 2, 3)]
    assert [c.node.id for c in cluster] == [1, 2, 3]
    assert len({c.cluster.initial_nodes for c in cluster}) == 1
    for c in cluster:
        assert c.peer_address(c.node.id) == c.node.listen_peer
        assert c.node.workers == 2 and c.cluster.replication == 3


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"nodes": {}}, "nodes: unknown section"),
        ({"raft": {"eletion_ticks": 5}}, "raft.eletion_ticks: unknown key"),
        ({"raft": {"election_ticks": 0}}, "raft.election_ticks: must be >= 1"),
        ({"raft": {"election_ticks": 1}},
         "raft.election_ticks: must be > heartbeat_ticks (1), got 1"),
        ({"raft": {"election_ticks": 3, "heartbeat_ticks": 3}},
         "raft.election_ticks: must be > heartbeat_ticks (3), got 3"),
        ({"raft": {"tick_ms": "100"}}, "raft.tick_ms: expected an integer, got a string"),
        ({"raft": {"check_quorum": False}},
         "raft.lease_reads: a lease is only safe with raft.check_quorum = true"),
        ({"node": {"workers": 0}}, "node.workers: must be >= 1"),
        ({"node": {"workers": True}}, "node.workers: expected an integer, got a boolean"),
        ({"raft": {"quiesce": 1}}, "raft.quiesce: expected true or false"),
        ({"node": {"listen_client": "localhost"}}, "node.listen_client: expected 'host:port'"),
        ({"node": {"listen_client": "127.0.0.1:70000"}}, "node.listen_client: port must be in"),
        ({"node": {"listen_client": "bad_host!:1"}}, "node.listen_client: bad host"),
        ({"node": {"listen_client": 6401}}, "node.listen_client: expected 'host:port'"),
        ({"node": {"listen_admin": "127.0.0.1:6401"}},
         "node.listen_admin: 127.0.0.1:6401 clashes with node.listen_client"),
        ({"node": {"listen_client": "0.0.0.0:7401"}},
         "node.listen_peer: 127.0.0.1:7401 clashes with node.listen_client (0.0.0.0:7401)"),
        ({"node": {"id": 1}, "cluster": {"initial_nodes": ["\u00b2@127.0.0.1:7401"]}},
         "cluster.initial_nodes: expected 'id@host:port'"),
        ({"logstore": {"backend": "leveldb"}}, "logstore.backend: must be one of"),
        ({"logstore": {"segment_bytes": "lots"}}, "logstore.segment_bytes: expected a size"),
        ({"logstore": {"segment_bytes": "1KiB"}}, "logstore.segment_bytes: must be >= 4096"),
        ({"logstore": {"cache_bytes": -1}}, "logstore.cache_bytes: a size cannot be negative"),
        ({"cluster": {"replication": 2}},
         "cluster.replication: must be <= the number of initial_nodes (1), got 2"),
        ({"cluster": {"initial_nodes": []}}, "cluster.initial_nodes: expected a non-empty"),
        ({"cluster": {"initial_nodes": ["1@127.0.0.1:7401", "1@127.0.0.1:7402"]}},
         "cluster.initial_nodes: duplicate node id(s) [1]"),
        ({"cluster": {"initial_nodes": ["1@127.0.0.1:7401", "2@127.0.0.1:7401"]}},
         "cluster.initial_nodes: duplicate address(es)"),
        ({"cluster": {"initial_nodes": ["x@127.0.0.1:7401"]}}, "cluster.initial_nodes: expected"),
        ({"cluster": {"initial_nodes": ["1@127.0.0.1:0"]}}, "cluster.initial_nodes: port must"),
        ({"node": {"id": 4}, "cluster": {"initial_nodes": THREE}},
         "node.id: node 4 is not in cluster.initial_nodes"),
        ({"cluster": {"join": True}}, "cluster.join: node 1 is listed in initial_nodes"),
        ({"store": {"merge_bytes": "64MiB"}}, "store.merge_bytes: must be < split_bytes"),
        ({"limits": {"max_request_bytes": "1MiB"}}, "limits.max_request_bytes: must hold"),
        ({"raft": []}, "raft: expected a table"),
    ],
)
def test_bad_config_names_the_key(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert str(info.value).startswith(message), str(info.value)


def test_joining_node_need_not_be_listed() -> None:
    c = parse_config({"node": {"id": 9}, "cluster": {"initial_nodes": THREE, "join": True}})
    assert c.cluster.join and c.peer_address(9) is None
    assert c.cluster.replication == 3


def test_listeners_may_use_port_zero() -> None:
    c = parse_config({"node": {"listen_client": "127.0.0.1:0", "listen_admin": "127.0.0.1:0"}})
    assert c.node.listen_client.port == 0 == c.node.listen_admin.port


def test_load_config_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[node\nid = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_local_cluster_configs_are_consistent(tmp_path: Path) -> None:
    configs = local_cluster_configs(3, tmp_path, (16401, 17401, 18401), workers=2)
    assert [c.node.id for c in configs] == [1, 2, 3]
    ports = {a.port for c in configs
             for a in (c.node.listen_client, c.node.listen_peer, c.node.listen_admin)}
    assert len(ports) == 9
    for c in configs:
        assert c.peer_address(c.node.id) == c.node.listen_peer
        assert c.cluster.replication == 3 and c.node.workers == 2
        assert Path(c.node.data_dir).parent == tmp_path
        assert parse_config(tomllib.loads(render_toml(c))) == c
    with pytest.raises(ConfigError, match="nodes"):
        local_cluster_configs(0, tmp_path)
    with pytest.raises(ConfigError, match="base_ports"):
        local_cluster_configs(3, tmp_path, (65534, 1, 2))


def test_store_and_logstore_views() -> None:
    c = parse_config({"raft": {"election_ticks": 20, "heartbeat_ticks": 2},
                      "store": {"snapshot_entries": 0}})
    sc = c.store_config(seed=7)
    assert isinstance(sc, StoreConfig)
    assert (sc.election_ticks, sc.heartbeat_ticks, sc.snapshot_entries, sc.seed) == (20, 2, 0, 7)
    assert c.logstore.options()["segment_bytes"] == 64 << 20
    assert parse_config({"logstore": {"backend": "sqlite"}}).logstore.options() == {}


def test_logstore_options_open_a_real_segmented_store(tmp_path: Path) -> None:
    c = parse_config({"logstore": {"segment_bytes": "1MiB", "sync": "fsync"}})
    store = open_log_store(c.logstore.backend, tmp_path / "log", **c.logstore.options())
    store.close()


def test_prometheus_scrapes_the_cluster_admin_ports() -> None:
    text = (REPO / "ops" / "prometheus.yml").read_text()
    for i in (1, 2, 3):
        admin = load_config(REPO / "ops" / "cluster-3" / f"n{i}.toml").node.listen_admin
        assert f'"{admin}"' in text
