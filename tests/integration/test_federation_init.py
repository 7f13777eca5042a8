"""`veil node init --federation NAME --members ...` (issue 20): three member folders that share a
development CA, pin each other's keys and have distinct names; they pass `veil node check`, serve
over TLS, and answer a federated query whose counts match DuckDB over the union of their parts."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import ExitStack

import duckdb

import pytest

import veil
from veil.federation import FederationFailed
from veil_server.access.dev_ca import DevCA, server_names
from veil_server.api.server import run_server
from veil_server.cli.federation_demo import free_ports
from veil_server.config import load_config

VEIL = [sys.executable, "-m", "veil.cli"]
MEMBERS = ["north", "south", "east"]
SQL = "SELECT region, COUNT(*) AS n FROM admissions GROUP BY region"


def serve(root, member):
    return run_server(load_config(root / member / "veil.toml", env={}), mtls_listen="127.0.0.1:0", grace=1.0)


def test_three_commands_make_a_federation(tmp_path, analyst_home):
    root = tmp_path / "fed"
    ports = free_ports(3)
    r = subprocess.run(VEIL + ["node", "init", str(root), "--federation", "demo", "--members", ",".join(MEMBERS),
                               "--rows", "3000", "--ports", ",".join(map(str, ports)), "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert set(report["members"]) == set(MEMBERS)
    ca = (root / "ca" / "ca.pem").read_bytes()
    names = set()
    for m in MEMBERS:
        folder = root / m
        assert (folder / "tls" / "ca.pem").read_bytes() == ca  # one CA for all
        assert not (folder / "tls" / "ca.key").exists()  # its key stays outside every member
        assert (folder / "state" / "node_key.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
        check = subprocess.run(VEIL + ["node", "check", "--config", str(folder / "veil.toml")],
                               capture_output=True, text=True, timeout=120)
        assert check.returncode == 0, check.stderr
        config = load_config(folder / "veil.toml", env={})
        names.add(config.name)
        assert {p.name for p in config.federation.peers} == set(MEMBERS) - {m}
    assert names == set(MEMBERS)

    token = (root / "north" / "tokens" / "alice.token").read_text().strip()

    def query():
        with veil.connect(f"127.0.0.1:{ports[0]}", token=token, home=analyst_home,
                          ca=str(root / "north" / "tls" / "ca.pem")) as north:
            return north.federated_query(SQL, purpose="research")

    with ExitStack() as stack:
        running = {m: stack.enter_context(serve(root, m)) for m in MEMBERS}
        assert [running[m].port for m in MEMBERS] == ports
        df = query()
    parts = ", ".join(f"'{root / m / 'data' / 'patients.csv'}'" for m in MEMBERS)
    truth = dict(duckdb.sql(f"SELECT region, COUNT(*) FROM read_csv_auto([{parts}]) GROUP BY region").fetchall())
    got = {row.region: int(row.n) for row in df.itertuples() if row.n == row.n}
    assert set(got) == set(truth)
    # Each member adds discrete Laplace noise (scale 2 at the demo's ε = 0.5) to its own count:
    # the sum of three has standard deviation about 4.9, so |error| > 90 has probability < 1e-12.
    for region, n in got.items():
        assert abs(n - truth[region]) <= 90, (region, n, truth[region])

    # A member whose certificate the others do not trust (re-issued by another CA): the analyst is
    # told which member, and why, not just that it was unavailable.
    south_tls = root / "south" / "tls"
    rogue = DevCA.create(tmp_path / "rogue", "Some other CA")
    issued = rogue.issue("node", server_names("south", f"127.0.0.1:{ports[1]}"), server=True, client=True)
    original = {n: (south_tls / n).read_bytes() for n in ("node.pem", "node.key")}
    (south_tls / "node.pem").write_bytes(issued.cert.read_bytes())
    (south_tls / "node.key").write_bytes(issued.key.read_bytes())
    with ExitStack() as stack:
        for m in MEMBERS:
            stack.enter_context(serve(root, m))
        with pytest.raises(FederationFailed) as failed:
            query()
    e = failed.value
    assert e.reason == "FEDERATION_PEER_UNAVAILABLE" and e.node == "south"
    assert e.metadata["cause"] == "CERTIFICATE_NOT_TRUSTED" and "not issued by a CA this node trusts" in e.message

    # A certificate from the federation's CA that does not name the address peers dial.
    shared = DevCA.load(root / "ca")
    wrong = DevCA(shared.key, shared.cert, tmp_path / "wrong-name")
    (tmp_path / "wrong-name").mkdir()
    issued = wrong.issue("node", ["somewhere-else.example"], server=True, client=True)
    (south_tls / "node.pem").write_bytes(issued.cert.read_bytes())
    (south_tls / "node.key").write_bytes(issued.key.read_bytes())
    with ExitStack() as stack:
        for m in MEMBERS:
            stack.enter_context(serve(root, m))
        with pytest.raises(FederationFailed) as failed:
            query()
    assert failed.value.node == "south" and failed.value.metadata["cause"] == "CERTIFICATE_NAME_MISMATCH", \
        failed.value.message

    # A member that is not running (south's certificate restored): connection refused.
    for n, data in original.items():
        (south_tls / n).write_bytes(data)
    with ExitStack() as stack:
        for m in ("north", "south"):
            stack.enter_context(serve(root, m))
        with pytest.raises(FederationFailed) as failed:
            query()
    assert failed.value.node == "east" and failed.value.metadata["cause"] == "CONNECTION_REFUSED"
    assert "nothing listens at its address" in failed.value.message
