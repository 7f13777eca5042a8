"""Configuration: valid files load; every invalid one is refused with the key that is wrong."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import pytest

from veil_server.query.catalog import ColumnControl
from veil_server.config import ConfigError, Role, load_config, parse_config
from veil_server.cli.demo import init_node_folder

DIGEST = hashlib.sha256(b"t").hexdigest()
BASE = {
    "node": {"listen": "127.0.0.1:0", "min_group_size": 5},
    "principals": [{"name": "alice", "role": "analyst", "token_sha256": DIGEST}],
    "datasets": [{
        "name": "d", "source": "d.csv", "purposes": ["research"],
        "columns": [
            {"name": "id", "type": "integer", "controls": ["hidden"]},
            {"name": "g", "type": "text", "controls": ["group"], "categories": ["a", "b"]},
            {"name": "x", "type": "decimal", "controls": ["aggregate", "filter"], "range": [0, 10], "scale": 2},
        ],
    }],
}


def with_change(path: str, value):
    raw = copy.deepcopy(BASE)
    target = raw
    keys = path.split(".")
    for k in keys[:-1]:
        target = target[int(k)] if k.isdigit() else target[k]
    last = keys[-1]
    if value is KeyError:
        del target[int(last) if last.isdigit() else last]
    elif last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    return raw


def test_valid_config(tmp_path):
    cfg = parse_config(BASE, base_dir=tmp_path)
    assert cfg.min_group_size == 5 and cfg.principals[0].role is Role.ANALYST
    ds = cfg.datasets[0]
    assert ds.source == str(tmp_path / "d.csv") and ds.min_group_size == 5
    assert ds.column("X").allows(ColumnControl.AGGREGATE) and not ds.column("id").allows(ColumnControl.FILTER)


def test_env_overrides(tmp_path):
    cfg = parse_config(BASE, base_dir=tmp_path, env={"VEIL_LISTEN": "0.0.0.0:9", "VEIL_MIN_GROUP_SIZE": "7",
                                                      "VEIL_STATE_DIR": "/tmp/veil-state"})
    assert cfg.listen == "0.0.0.0:9" and cfg.min_group_size == 7 and cfg.state_dir == Path("/tmp/veil-state")
    assert cfg.datasets[0].min_group_size == 7


@pytest.mark.parametrize("path,value,fragment", [
    ("node.min_group_size", 1, "node.min_group_size"),
    ("principals.0.role", "god", "principals[0].role"),
    ("principals.0.token_sha256", "abc", "token_sha256"),
    ("principals.0.name", "bad name", "principals[0].name"),
    ("datasets.0.purposes", [], "purposes"),
    ("datasets.0.source", KeyError, "source"),
    ("datasets.0.format", "xlsx", "format"),
    ("datasets.0.min_group_size", 2, "min_group_size"),
    ("datasets.0.columns.1.categories", KeyError, "public domain"),
    ("datasets.0.columns.2.range", KeyError, "range"),
    ("datasets.0.columns.2.range", [5, 1], "low must be below high"),
    ("datasets.0.columns.2.controls", ["hidden", "filter"], "hidden"),
    ("datasets.0.columns.2.controls", ["nonsense"], "controls"),
    ("datasets.0.columns.2.type", "blob", "type"),
    ("datasets.0.columns.2.scale", 40, "scale"),
    ("datasets.0.columns.0.name", "x", "declared twice"),
])
def test_invalid_configs_name_the_key(tmp_path, path, value, fragment):
    with pytest.raises(ConfigError) as e:
        parse_config(with_change(path, value), base_dir=tmp_path)
    assert fragment in str(e.value)


def test_generated_demo_config_loads(tmp_path):
    tokens = init_node_folder(tmp_path, rows=50)
    cfg = load_config(tmp_path / "veil.toml", env={})
    assert {p.name for p in cfg.principals} == set(tokens)
    assert all(hashlib.sha256(tokens[p.name].encode()).hexdigest() == p.token_sha256 for p in cfg.principals)
    assert tokens["alice"] not in (tmp_path / "veil.toml").read_text()  # only digests in the file
    with pytest.raises(FileExistsError):
        init_node_folder(tmp_path, rows=50)


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ConfigError, match="veil node init"):
        load_config(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("[node\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")


def test_state_defaults_to_sqlite_and_takes_postgres_from_file_or_env(tmp_path):
    assert parse_config(BASE, base_dir=tmp_path).state.backend == "sqlite"
    raw = {**BASE, "state": {"backend": "postgres", "conninfo": "host=db dbname=s user=veil", "schema": "node_a"}}
    st = parse_config(raw, base_dir=tmp_path).state
    assert (st.backend, st.conninfo, st.schema, st.replica, st.shared) == (
        "postgres", "host=db dbname=s user=veil", "node_a", "", True)
    st = parse_config(BASE, base_dir=tmp_path, env={"VEIL_STATE_BACKEND": "postgres", "VEIL_REPLICA": "r-2",
                                                    "VEIL_STATE_CONNINFO": "host=other"}).state
    assert (st.backend, st.conninfo, st.replica) == ("postgres", "host=other", "r-2")


@pytest.mark.parametrize("state,fragment", [
    ({"backend": "mysql"}, "state.backend"),
    ({"backend": "postgres", "conninfo": "host=db password=hunter2"}, "must not contain a password"),
    ({"backend": "postgres", "conninfo": "not a conninfo ="}, "libpq connection string"),
    ({"conninfo": "host=db"}, "backend"),
    ({"backend": "postgres", "schema": "Robert'); DROP"}, "state.schema"),
    ({"backend": "postgres", "replica": "a b"}, "state.replica"),
    ({"backend": "postgres", "dsn": "x"}, "unknown key"),
])
def test_invalid_state_settings_name_the_key_and_never_echo_a_password(tmp_path, state, fragment):
    with pytest.raises(ConfigError) as e:
        parse_config({**BASE, "state": state}, base_dir=tmp_path)
    assert fragment in str(e.value) and "hunter2" not in str(e.value)


def test_an_unreachable_state_database_stops_the_node_with_a_clear_message(tmp_path):
    from veil_server.node import Node
    from veil_server.state.statedb import StateUnavailable

    raw = {**BASE, "node": {**BASE["node"], "state_dir": str(tmp_path / "state")},
           "state": {"backend": "postgres", "conninfo": "host=127.0.0.1 port=1 dbname=veil_state user=veil"}}
    (tmp_path / "d.csv").write_text("id,g,x\n1,a,1.5\n")
    with pytest.raises(StateUnavailable) as e:
        Node(parse_config(raw, base_dir=tmp_path))
    assert "database veil_state on 127.0.0.1:1" in str(e.value) and "[state] conninfo" in str(e.value)
