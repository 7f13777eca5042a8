"""Federated queries over real gRPC on loopback: three member nodes, each with its own part,
policy, key and audit log. Totals must equal DuckDB over the union of the raw parts, for both
protocols, over hundreds of groups; a member that refuses or is unreachable fails the query
with a status naming it, and nothing is released."""

from __future__ import annotations

import time

import pandas as pd
import pytest

import veil
from veil.federation import FederationFailed
from veil_server.federation.transport import PeerTransport

from .federation_cluster import federation

REL = 1e-9
K = 12  # the largest member k: north 10, south 12, east 10
GROUPED = ("SELECT region, diagnosis, FLOOR(age / 10) * 10 AS decade, COUNT(*) AS n, COUNT(cost) AS n_cost,"
           " SUM(cost) AS total, SUM(length_of_stay) AS stay, AVG(cost) AS avg_cost, VARIANCE(cost) AS var_cost,"
           " STDDEV(length_of_stay) AS sd_stay FROM admissions GROUP BY region, diagnosis, decade")
REFERENCE = ("SELECT region, diagnosis, CAST(FLOOR(age / 10) * 10 AS BIGINT) AS decade, COUNT(*) AS n,"
             " COUNT(cost) AS n_cost, SUM(CAST(ROUND(cost * 100) AS BIGINT)) AS total_cents,"
             " SUM(length_of_stay) AS stay, AVG(cost) AS avg_cost, VAR_SAMP(cost) AS var_cost,"
             " STDDEV_SAMP(length_of_stay) AS sd_stay FROM {t} GROUP BY ALL")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # Purpose "planning" is allowed by north and east only: south's policy refuses it.
    with federation(tmp_path_factory.mktemp("federation"), min_group_size=(10, K, 10), rows=(20_000, 15_000, 10_000),
                    edit={"south": ('purposes = ["research", "planning"]', 'purposes = ["research"]')}) as c:
        yield c


@pytest.fixture(scope="module")
def reference(cluster):
    return {(r.region, r.diagnosis, int(r.decade)): r for r in cluster.union(REFERENCE).itertuples()}


def close(ours, theirs) -> bool:
    return abs(float(ours) - float(theirs)) <= REL * max(1e-300, abs(float(theirs)))


def check_against_union(df: pd.DataFrame, reference) -> tuple[int, int]:
    assert len(df) == 8 * 10 * 12  # the whole public domain: 960 groups
    released = suppressed = 0
    for row in df.itertuples():
        r = reference.get((row.region, row.diagnosis, row.decade))
        if r is None or r.n < K or r.n_cost < K:
            assert row.suppressed and pd.isna(row.n) and pd.isna(row.total)
            suppressed += 1
            continue
        released += 1
        assert not row.suppressed
        assert row.n == r.n and row.n_cost == r.n_cost and row.stay == r.stay  # exact
        assert round(row.total * 100) == r.total_cents  # exact to the cent
        for col in ("avg_cost", "var_cost", "sd_stay"):
            assert close(getattr(row, col), getattr(r, col)), (row, col)
    return released, suppressed


@pytest.mark.parametrize("protocol", ["paillier", "sharing"])
def test_totals_equal_duckdb_over_the_union(cluster, reference, analyst_home, protocol):
    with cluster.connect("north", analyst_home) as node:
        df = node.federated_query(GROUPED, purpose="research", protocol=protocol)
    released, suppressed = check_against_union(df, reference)
    assert released > 300 and suppressed > 100
    assert df.attrs["participants"] == ["east", "north", "south"] and df.attrs["protocol"] == protocol
    # The k rule applies to combined counts: some groups are released although no single
    # member reaches k in them.
    per_part = [cluster.part(m, REFERENCE).set_index(["region", "diagnosis", "decade"])["n"] for m in cluster.members]
    small_everywhere = [k for k, r in reference.items() if r.n >= K and r.n_cost >= K
                        and all(p.get(k, 0) < K for p in per_part)]
    assert small_everywhere
    assert not df.set_index(["region", "diagnosis", "decade"]).loc[small_everywhere[0], "suppressed"]


def test_any_member_coordinates_and_compute_parties_are_configurable(cluster, reference, analyst_home):
    with cluster.connect("east", analyst_home) as node:
        df = node.federated_query(GROUPED, purpose="research", protocol="sharing", compute_parties=["north", "south"])
        exact = node.federated_query("SELECT COUNT(*) AS n, SUM(cost) AS total FROM admissions",
                                     purpose="research", exact=True)
    check_against_union(df, reference)
    ref = cluster.union("SELECT COUNT(*) AS n, SUM(CAST(ROUND(cost * 100) AS BIGINT)) AS c FROM {t}")
    assert exact["n"][0] == ref["n"][0] and exact["total"][0] * 100 == ref["c"][0]


def test_every_member_logs_every_exchange(cluster, analyst_home):
    before = {m: len(cluster.entries(m, "query.execute")) for m in cluster.members}
    releases = len(cluster.entries("north", "query.release"))
    with cluster.connect("north", analyst_home) as node:
        node.federated_query("SELECT sex, COUNT(*) FROM admissions GROUP BY sex", purpose="research",
                             protocol="sharing")
    after = {m: len(cluster.entries(m, "query.execute")) for m in cluster.members}
    # Every member (the coordinator too: it answers its own steps in-process, through the same
    # signed messages) logs prepare, contribute, aggregate and release; only the coordinator logs
    # a release to the analyst.
    assert all(after[m] - before[m] == 4 for m in ("south", "east"))
    # The coordinator: its own 4 answers, and each of the 2 other members' 4 answers received.
    assert after["north"] - before["north"] == 4 + 2 * 4
    received = [e for e in cluster.entries("north", "query.execute")[before["north"]:]
                if e.details["federation"]["direction"] == "received"]
    assert {(e.details["federation"]["peer"], e.details["federation"]["step"]) for e in received} == {
        (m, s) for m in ("south", "east") for s in ("prepare", "contribute", "aggregate", "release")}
    assert len(cluster.entries("north", "query.release")) == releases + 1
    last = cluster.entries("south", "query.execute")[-1]
    assert last.details["federation"] == {"step": "release", "peer": "north", "direction": "answered"}
    assert set(last.details) >= {"request_sha256", "response_sha256"}


def test_a_refusing_member_fails_the_query_naming_it(cluster, analyst_home):
    releases = {m: len(cluster.entries(m, "query.release")) for m in cluster.members}
    with cluster.connect("north", analyst_home) as node, pytest.raises(FederationFailed) as e:
        node.federated_query("SELECT sex, COUNT(*) FROM admissions GROUP BY sex", purpose="planning")
    assert e.value.node == "south" and e.value.reason == "FEDERATION_PEER_REJECTED"
    assert e.value.metadata["peer_reason"] == "PURPOSE_NOT_ALLOWED" and "south" in e.value.message
    assert {m: len(cluster.entries(m, "query.release")) for m in cluster.members} == releases
    fail = cluster.entries("north", "query.fail")[-1]
    assert fail.details["federation"]["failed_node"] == "south"
    decision = cluster.entries("south", "query.decision")[-1]
    assert decision.outcome == "denied" and decision.details["reason"] == "PURPOSE_NOT_ALLOWED"


def test_the_coordinators_own_policy_and_sql_checks_come_first(cluster, analyst_home):
    with cluster.connect("north", analyst_home) as node:
        with pytest.raises(veil.InvalidQuery):
            node.federated_query("SELECT * FROM admissions", purpose="research")
        with pytest.raises(veil.PermissionDenied) as e:
            node.federated_query("SELECT COUNT(*) FROM admissions WHERE patient_id = 7", purpose="research")
        assert e.value.reason == "HIDDEN_COLUMN"
        refusal = cluster.entries("north", "query.submit")[-1]
        assert refusal.outcome == "denied" and refusal.details["reason"] == "HIDDEN_COLUMN"
        with pytest.raises(veil.NotFound):
            node.federated_query("SELECT COUNT(*) FROM patients_elsewhere", purpose="research")


def test_retries_never_count_a_partial_twice(cluster, analyst_home, monkeypatch):
    """Every call to a peer is sent twice (a retry after a lost answer): the member returns its
    kept answer byte for byte, and the totals stay exact."""
    original = PeerTransport._remote
    seen: list[tuple[bytes, bytes]] = []

    def twice(self, node, step, envelope, timeout, retries):
        first = original(self, node, step, envelope, timeout, retries)
        again = original(self, node, step, envelope, timeout, retries)
        seen.append((first.SerializeToString(), again.SerializeToString()))
        return again

    monkeypatch.setattr(PeerTransport, "_remote", twice)
    sql = "SELECT diagnosis, COUNT(*) AS n, SUM(length_of_stay) AS s FROM admissions GROUP BY diagnosis"
    ref = cluster.union("SELECT diagnosis, COUNT(*) AS n, SUM(length_of_stay) AS s FROM {t} GROUP BY diagnosis")
    ref = ref.set_index("diagnosis")
    with cluster.connect("north", analyst_home) as node:
        for protocol in ("paillier", "sharing"):
            df = node.federated_query(sql, purpose="research", protocol=protocol).set_index("diagnosis")
            assert (df["n"] == ref["n"].loc[df.index]).all() and (df["s"] == ref["s"].loc[df.index]).all()
    assert seen and all(a == b for a, b in seen)


def _one_member_fails(tmp_path, analyst_home, victim: str, step: str, how: str):
    with federation(tmp_path, rows=(3000, 3000, 3000), timeout_seconds=1.5, retries=1) as c:
        def act(node, what, sender, data):
            if node == victim and what == f"request:{step}":
                if how == "kill":
                    c.running[victim].server.stop(0)
                time.sleep(2.5 if how == "block" else 0.5)

        c.running[victim].federation.participant.observers.append(act)
        with c.connect("north", analyst_home) as node, pytest.raises(FederationFailed) as e:
            node.federated_query("SELECT region, COUNT(*), AVG(cost) FROM admissions GROUP BY region",
                                 purpose="research", protocol="paillier" if step != "aggregate" else "sharing")
        assert e.value.node == victim and e.value.reason == "FEDERATION_PEER_UNAVAILABLE"
        assert victim in e.value.message and e.value.code.name == "UNAVAILABLE"
        assert not c.entries("north", "query.release")  # nothing released, anywhere
        fails = c.entries("north", "query.fail")
        assert fails and fails[-1].details["federation"]["failed_node"] == victim
        others = [m for m in c.members if m not in ("north", victim)]
        assert all(c.entries(m, "query.fail") for m in others)  # told to abort, and logged it


@pytest.mark.parametrize("victim,step,how", [("south", "contribute", "kill"), ("east", "release", "kill"),
                                             ("south", "aggregate", "block")])
def test_a_member_that_dies_or_hangs_mid_query_fails_it_naming_it(tmp_path, analyst_home, victim, step, how):
    _one_member_fails(tmp_path, analyst_home, victim, step, how)


def test_list_federated_datasets(cluster, analyst_home):
    from veil.federation import list_federated

    with cluster.connect("south", analyst_home) as node:
        listing = list_federated(node)
    assert listing.node == "south"
    assert [(d.name, list(d.members)) for d in listing.datasets] == [("admissions", ["east", "north", "south"])]


def test_members_set_to_full_width_randomness_use_it(tmp_path, analyst_home, monkeypatch):
    """[crypto] obfuscation = "full" on every member: their contributions and the coordinator's
    combination take r^n randomness, and the totals still equal DuckDB over the union."""
    from veil.crypto import obfuscation

    made: list[int] = []
    full = obfuscation._full
    monkeypatch.setattr(obfuscation, "_full", lambda n, n2, count: (made.append(count), full(n, n2, count))[1])
    full_crypto = ("[node]", '[crypto]\nobfuscation = "full"\n\n[node]')
    with federation(tmp_path / "fed", min_group_size=(10, K, 10), rows=(4_000, 3_000, 2_000),
                    edit={m: full_crypto for m in ("north", "south", "east")}) as c:
        assert all(r.node.obfuscation == "full" for r in c.running.values())
        reference = {(r.region, r.diagnosis, int(r.decade)): r for r in c.union(REFERENCE).itertuples()}
        with c.connect("north", analyst_home) as node:
            for protocol in ("paillier", "sharing"):
                made.clear()
                df = node.federated_query(GROUPED, purpose="research", protocol=protocol)
                released, _ = check_against_union(df, reference)
                assert released > 0 and sum(made) > 0, protocol
