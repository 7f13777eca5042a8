"""Shared fixtures: a real node on a real loopback socket, and analysts with real 2048-bit keys.

Keys are generated once per session (2048-bit generation takes a second or two) and written to
a temporary VEIL_HOME, exactly where the SDK would keep them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

import veil
from veil.crypto import generate_keypair
from veil_server.config import load_config
from veil_server.cli.demo import init_node_folder
from veil_server.api.server import RunningNode, run_server

E2E_ROWS = 100_000


@dataclass
class NodeFixture:
    folder: Path
    tokens: dict[str, str]
    running: RunningNode

    @property
    def target(self) -> str:
        return self.running.target

    @property
    def csv(self) -> Path:
        return self.folder / "data" / "patients.csv"

    def connect(self, who: str, home: Path, **kw) -> veil.Node:
        return veil.connect(self.target, token=self.tokens[who], home=home, **kw)


def write_home(home: Path, sk) -> Path:
    (home / "keys").mkdir(parents=True, exist_ok=True)
    (home / "keys" / f"paillier-{sk.public_key.bits}.json").write_text(
        json.dumps({"format": "veil-paillier-v1", "bits": sk.public_key.bits, "private_key": sk.to_dict()})
    )
    return home


@pytest.fixture(autouse=True)
def _own_known_nodes(tmp_path_factory, monkeypatch) -> None:
    """Each test pins node keys (trust on first use) in a file of its own: tests start many
    nodes, each with its own key, on ports the OS hands out again."""
    monkeypatch.setenv("VEIL_KNOWN_NODES", str(tmp_path_factory.mktemp("known") / "known_nodes"))


@pytest.fixture(scope="session")
def analyst_home(tmp_path_factory) -> Path:
    """VEIL_HOME of analyst alice, holding a real 2048-bit key pair."""
    _, sk = generate_keypair(bits=2048)
    return write_home(tmp_path_factory.mktemp("alice-home"), sk)


@pytest.fixture(scope="session")
def other_home(tmp_path_factory) -> Path:
    """VEIL_HOME of analyst bob, with his own 2048-bit key pair."""
    _, sk = generate_keypair(bits=2048)
    return write_home(tmp_path_factory.mktemp("bob-home"), sk)


@pytest.fixture()
def demo_node(tmp_path_factory) -> Iterator[NodeFixture]:
    """A node of its own (an exact-mode dataset's release history is the node's, so tests that
    compare exact figures each start from an empty history); starting one takes a fraction of a
    second."""
    folder = tmp_path_factory.mktemp("node")
    tokens = init_node_folder(folder, rows=E2E_ROWS, disclosure="exact")
    config = load_config(folder / "veil.toml", env={})
    with run_server(config, listen="127.0.0.1:0", grace=1.0) as running:
        yield NodeFixture(folder, tokens, running)


@pytest.fixture()
def alice(demo_node: NodeFixture, analyst_home: Path) -> Iterator[veil.Node]:
    with demo_node.connect("alice", analyst_home) as node:
        yield node


@pytest.fixture()
def bob(demo_node: NodeFixture, other_home: Path) -> Iterator[veil.Node]:
    with demo_node.connect("bob", other_home) as node:
        yield node


def pytest_collection_modifyitems(session, config, items):
    """Start Spark's JVM before any test starts a gRPC server. pyspark launches the JVM with fork()
    and a Python preexec hook, which fails at random in a process whose gRPC threads run; the
    session then serves every Spark test (SparkSession is one per process)."""
    import shutil

    if not any("spark" in item.nodeid for item in items) or shutil.which("java") is None:
        return
    try:
        from veil_server.query.engines.spark import spark_session
    except ImportError:
        return
    spark_session("local[2]", app_name="veil-tests")


# -- the node's own state on SQLite and on PostgreSQL (issue 9) ----------------------------------

@pytest.fixture(scope="session")
def state_postgres() -> Iterator[str]:
    """A scratch PostgreSQL database for node state (the machine's server, started if stopped)."""
    from tests.integration.engine_support import admin_conninfo, scratch_database

    yield from scratch_database(admin_conninfo())


@pytest.fixture(params=["sqlite", "postgres"])
def open_state(request, tmp_path):
    """``open_state(audit=False)`` opens (again) this test's state database: a file under
    tmp_path, or a schema of its own in the scratch PostgreSQL database. Each call is a new
    connection to the same state, as a restarted node or a second replica would have."""
    from veil_server.state.statedb import StateSettings, open_database
    import secrets as _secrets

    if request.param == "sqlite":
        settings = StateSettings()
    else:
        conninfo = request.getfixturevalue("state_postgres")
        settings = StateSettings("postgres", conninfo, "t_" + _secrets.token_hex(4))
    opened = []

    def open_(audit: bool = False):
        db = open_database(settings, sqlite_path=tmp_path / ("audit.db" if audit else "state.db"), audit=audit)
        opened.append(db)
        return db

    open_.backend = request.param
    open_.settings = settings
    yield open_
    for db in opened:
        try:
            db.close()
        except Exception:
            pass
