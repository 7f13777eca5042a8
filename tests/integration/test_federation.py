"""Federated queries over real gRPC on loopback: three member nodes, each with its own part,
policy, key and audit log. Every member noises its own part (DP): the released result must be
exactly what the members' noisy partials combine to, for both protocols, over hundreds of
groups, and within the declared noise of DuckDB over the union of the raw parts; a member that
refuses or is unreachable fails the query with a status naming it, and nothing is released."""

from __future__ import annotations

import time

from decimal import Decimal

import pandas as pd
import pytest

import veil
from veil.accuracy import Noise
from veil.federation import FederationFailed
from veil_server.federation.transport import PeerTransport

from .federation_cluster import federation, summed_partials

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


def plan_and_layout(cluster, sql: str):
    import dataclasses

    from veil_server.federation.partial import layout_for
    from veil_server.query.catalog import Catalog
    from veil_server.query.planner import plan_query

    local = cluster.running["north"].node.dataset("patients")
    ds = dataclasses.replace(local, name="admissions")
    plan = plan_query(sql, Catalog([ds]))
    return plan, ds, layout_for(plan, ds, ds.max_rows)


def check_combination(cluster, df: pd.DataFrame, sql: str, k: int = K) -> tuple[int, int]:
    """The released result is exactly what the members' noisy partials combine to: released
    flags from the combined counts (k on every count), every cell derived from the sums as the
    SDK derives it. (Each member's noise is checked against its declared scale elsewhere.)"""
    from veil.federation import cell
    from veil_server.query.release import cell_spec

    plan, ds, layout = plan_and_layout(cluster, sql)
    sums = summed_partials(cluster, df)
    released = [all(sums[i][g] >= k for i in layout.count_indices) for g in range(layout.groups)]
    assert [not x for x in df["suppressed"]] == released
    idx = [g for g in range(layout.groups) if released[g]]
    stats = {(st.kind, st.column): [sums[i][g] for g in idx] for i, st in enumerate(layout.statistics)}
    rows = df[~df["suppressed"]]
    for o in plan.output:
        if o.kind != "aggregate":
            continue
        a = plan.aggregates[o.index]
        col = ds.column(a.column) if a.column else None
        scale = cell_spec(a, ds).scale
        bounds = tuple(float(v) for v in col.value_range) if col is not None else None
        want = [cell(a.function.value, a.column or "", scale, stats, i, col.scale if col else 0, bounds)
                for i in range(len(idx))]
        got = list(rows[o.name])
        if scale == 0:
            assert got == want, o.name
        else:
            assert got == [float(Decimal(v).scaleb(-scale)) for v in want], o.name
    assert df.attrs["disclosure"] == "dp" and all(n["terms"] == len(cluster.members) for n in df.attrs["noise"].values())
    return len(idx), layout.groups - len(idx)


def check_near_truth(df: pd.DataFrame, reference, columns=("n", "n_cost", "stay")) -> None:
    """Released counts and sums lie within the noise they declare of DuckDB over the union (a
    miss has probability below 1e-12 per cell)."""
    for row in df[~df["suppressed"]].itertuples():
        r = reference[(row.region, row.diagnosis, row.decade)]
        for c in columns:
            noise = df.attrs["noise"][c]
            scale = noise["count_scale"] if c.startswith("n") else noise["sum_scale"]
            assert abs(getattr(row, c) - getattr(r, c)) <= Noise(scale, 1, noise["terms"]).bound(1 - 1e-12), (row, c)


@pytest.mark.parametrize("protocol", ["paillier", "sharing"])
def test_totals_equal_duckdb_over_the_union(cluster, reference, analyst_home, protocol):
    with cluster.connect("north", analyst_home) as node:
        df = node.federated_query(GROUPED, purpose="research", protocol=protocol)
    released, suppressed = check_combination(cluster, df, GROUPED)
    assert released > 300 and suppressed > 100
    check_near_truth(df, reference)
    assert df.attrs["participants"] == ["east", "north", "south"] and df.attrs["protocol"] == protocol
    # The k rule applies to combined counts: some groups are released although no single
    # member's (noisy) count reaches k in them.
    q = df.attrs["federated_query"].removeprefix("federatedQueries/")
    parts = [m[0] for (_, query), m in cluster.recorder.partials.items() if query == q]  # ROWS per member
    small_everywhere = [g for g in range(len(df)) if all(p[g] < K for p in parts) and not df["suppressed"][g]]
    assert small_everywhere


def test_any_member_coordinates_and_compute_parties_are_configurable(cluster, reference, analyst_home):
    with cluster.connect("east", analyst_home) as node:
        df = node.federated_query(GROUPED, purpose="research", protocol="sharing", compute_parties=["north", "south"])
        total = node.federated_query("SELECT COUNT(*) AS n, SUM(cost) AS total FROM admissions",
                                     purpose="research", exact=True)
    check_combination(cluster, df, GROUPED)
    ref = cluster.union("SELECT COUNT(*) AS n, SUM(CAST(ROUND(cost * 100) AS BIGINT)) AS c FROM {t}")
    # exact=True: Decimal cells, computed exactly from the (noisy) statistics.
    n_sum, t_sum = summed_partials(cluster, total)[0][0], summed_partials(cluster, total)[2][0]
    assert total["n"][0] == n_sum and total["total"][0] * 100 == t_sum
    bound = Noise(total.attrs["noise"]["n"]["count_scale"], 1, 3).bound(1 - 1e-12)
    assert abs(total["n"][0] - ref["n"][0]) <= bound


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
    with cluster.connect("north", analyst_home) as node:
        for protocol in ("paillier", "sharing"):
            df = node.federated_query(sql, purpose="research", protocol=protocol)
            check_combination(cluster, df, sql)  # each member's partial counted once
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
        with c.connect("north", analyst_home) as node:
            for protocol in ("paillier", "sharing"):
                made.clear()
                df = node.federated_query(GROUPED, purpose="research", protocol=protocol)
                released, _ = check_combination(c, df, GROUPED)
                assert released > 0 and sum(made) > 0, protocol
