"""End to end through real gRPC: every aggregate equals the same aggregate computed directly
with DuckDB on the raw file (exact for counts and sums, 1e-9 relative for the rest)."""

from __future__ import annotations

import math

import duckdb
import pandas as pd
import pytest

import veil
from tests.conftest import E2E_ROWS

REL = 1e-9


def raw(demo_node, sql_body: str) -> pd.DataFrame:
    """Run ``sql_body`` (with {t} for the table) directly on the raw CSV: the owner's view."""
    con = duckdb.connect()
    return con.execute(sql_body.format(t=f"read_csv_auto('{demo_node.csv}')")).df()


def close(ours, theirs) -> bool:
    if theirs is None or (isinstance(theirs, float) and math.isnan(theirs)):
        return False
    return abs(float(ours) - float(theirs)) <= REL * max(1e-300, abs(float(theirs)))


def test_dataset_is_large_enough(demo_node):
    assert raw(demo_node, "SELECT COUNT(*) AS n FROM {t}")["n"][0] == E2E_ROWS >= 100_000


def test_catalog_lists_rules_not_rows(alice):
    (ds,) = alice.datasets()
    assert ds.name == "patients"
    names = [c.name for c in ds.columns]
    assert "patient_id" not in names  # hidden columns are not even listed
    assert {"region", "age", "cost"} <= set(names)
    assert ds.approximate_row_count == 100_000
    region = next(c for c in ds.columns if c.name == "region")
    assert region.controls == ("filter", "group") and len(region.categories) == 8
    with pytest.raises(veil.NotFound) as e:
        alice.dataset("nope")
    assert e.value.reason == "DATASET_NOT_FOUND"


def test_grouped_aggregates_equal_duckdb(alice, demo_node):
    df = alice.query(
        "SELECT region, COUNT(*) AS n, COUNT(cost) AS n_cost, SUM(length_of_stay) AS stay, SUM(cost) AS total,"
        " AVG(cost) AS avg_cost, VARIANCE(cost) AS var_cost, STDDEV(length_of_stay) AS sd_stay,"
        " VAR_SAMP(age) AS var_age, STDDEV_SAMP(cost) AS sd_cost"
        " FROM patients GROUP BY region",
        purpose="research",
    )
    ref = raw(demo_node,
              "SELECT region, COUNT(*) AS n, COUNT(cost) AS n_cost, SUM(length_of_stay) AS stay,"
              " SUM(CAST(ROUND(cost * 100) AS BIGINT)) AS total_cents, AVG(cost) AS avg_cost,"
              " VAR_SAMP(cost) AS var_cost, STDDEV_SAMP(length_of_stay) AS sd_stay, VAR_SAMP(age) AS var_age,"
              " STDDEV_SAMP(cost) AS sd_cost FROM {t} GROUP BY region").set_index("region")
    assert len(df) == 8 and not df["suppressed"].any()
    for _, row in df.iterrows():
        r = ref.loc[row["region"]]
        assert row["n"] == r["n"] and row["n_cost"] == r["n_cost"]  # exact
        assert row["stay"] == r["stay"]  # exact integer sum
        assert round(row["total"] * 100) == r["total_cents"]  # exact to the cent
        for col in ("avg_cost", "var_cost", "sd_stay", "var_age", "sd_cost"):
            assert close(row[col], r[col]), (row["region"], col, row[col], r[col])


def test_exact_mode_gives_decimals(alice, demo_node):
    df = alice.query("SELECT SUM(cost) AS total, AVG(age) AS a FROM patients", purpose="research", exact=True)
    ref = raw(demo_node, "SELECT SUM(CAST(ROUND(cost * 100) AS BIGINT)) AS c, AVG(age) AS a FROM {t}")
    assert int(df["total"][0] * 100) == ref["c"][0]
    assert close(df["a"][0], ref["a"][0])


def check_grouped(df, ref, groups: int) -> None:
    ref = {(r.diagnosis, int(r.decade)): r for r in ref.itertuples()}
    # The whole declared domain is listed: 10 diagnoses x 12 decades over [0, 110].
    assert len(df) == groups
    seen_suppressed = seen_released = 0
    for row in df.itertuples():
        r = ref.get((row.diagnosis, row.decade))
        if r is None or r.n < 10:
            assert row.suppressed and pd.isna(row.n) and pd.isna(row.stay)
            seen_suppressed += 1
        else:
            assert not row.suppressed and row.n == r.n and close(row.stay, r.stay)
            seen_released += 1
    assert seen_suppressed > 0 and seen_released > 0


GROUPED = "SELECT diagnosis, FLOOR(age / 10) * 10 AS decade, COUNT(*) AS n, AVG(length_of_stay) AS stay"


def test_binned_keys_filters_and_suppression(alice, demo_node):
    # An exact-mode dataset: filters on declared domains (categories, bin edges of age).
    where = " WHERE region IN ('North', 'Islands') AND sex = 'F' AND NOT age < 20 AND age < 90"
    df = alice.query(f"{GROUPED} FROM patients{where} GROUP BY diagnosis, decade", purpose="research")
    check_grouped(df, raw(demo_node, f"{GROUPED} FROM {{t}}{where} GROUP BY diagnosis, decade"), 10 * 12)


def test_engine_filters_of_every_kind_equal_duckdb(demo_node):
    """The engine's own rendering of every filter form (BETWEEN, OR across columns, NOT, columns
    without a domain), through the planner, against DuckDB on the raw file. Exact mode refuses
    such filters and DP noises the answers, so the engine is checked directly."""
    from veil_server.query.planner import plan_query

    node = demo_node.running.node
    where = (" WHERE region IN ('North', 'Islands') AND (sex = 'F' OR age BETWEEN 80 AND 90)"
             " AND NOT admitted_year < 2017 AND postcode <> '12345'")
    sql = f"{GROUPED} FROM patients{where} GROUP BY diagnosis, decade"
    plan = plan_query(sql, node.catalog)
    ds = node.dataset("patients")
    stats = {g.keys: g for g in node.engine.aggregate(plan, ds).groups}
    ref = raw(demo_node, f"SELECT diagnosis, CAST(FLOOR(age / 10) * 10 AS BIGINT) AS decade, COUNT(*) AS n, "
                         f"SUM(length_of_stay) AS s FROM {{t}}{where} GROUP BY diagnosis, decade")
    assert len(ref) > 20
    for r in ref.itertuples():
        g = stats[(r.diagnosis, str(r.decade))]
        assert g.rows == r.n and g.columns["length_of_stay"].total == r.s
    assert sum(g.rows for g in stats.values()) == ref["n"].sum()


def test_global_aggregate(alice, demo_node):
    df = alice.query("SELECT COUNT(*), AVG(cost) FROM patients WHERE diagnosis = 'renal'", purpose="planning")
    ref = raw(demo_node, "SELECT COUNT(*) AS n, AVG(cost) AS a FROM {t} WHERE diagnosis = 'renal'")
    assert list(df.columns) == ["count", "avg_cost", "suppressed"]
    assert df["count"][0] == ref["n"][0] and close(df["avg_cost"][0], ref["a"][0])


def test_submit_is_idempotent(alice):
    sql = "SELECT sex, COUNT(*) FROM patients GROUP BY sex"
    first = alice.submit(sql, purpose="research", request_id="retry-me-1")
    again = alice.submit(sql, purpose="research", request_id="retry-me-1")
    assert first.name == again.name
    assert sum(q.name == first.name for q in alice.queries(limit=500)) == 1
    with pytest.raises(veil.AlreadyExists) as e:
        alice.submit("SELECT COUNT(*) FROM patients", purpose="research", request_id="retry-me-1")
    assert e.value.reason == "REQUEST_ID_REUSED"
    assert alice.wait(first.name)["count"].sum() > 0


def test_lifecycle_history_and_listing(alice):
    info = alice.submit("SELECT region, AVG(age) FROM patients GROUP BY region", purpose="research")
    alice.wait(info.name)
    done = alice.get(info.name)
    assert done.state == "SUCCEEDED"
    assert [h[0] for h in done.history] == ["PENDING_APPROVAL", "APPROVED", "RUNNING", "SUCCEEDED"]
    assert done.history[1][1] == "POLICY_AUTO_APPROVED"
    listed = alice.queries(limit=500)
    assert listed[0].name == info.name  # newest first
    with pytest.raises(veil.WrongState) as e:
        alice.cancel(info.name)
    assert e.value.reason == "QUERY_FINISHED"


def test_paging_walks_every_query(alice):
    names = {alice.submit("SELECT COUNT(*) FROM patients", purpose="research").name for _ in range(7)}
    seen = []
    stub_pages = alice.queries(limit=10_000)
    seen = [q.name for q in stub_pages]
    assert names <= set(seen) and len(seen) == len(set(seen))


def test_other_analysts_cannot_see_my_queries(alice, bob):
    info = alice.submit("SELECT COUNT(*) FROM patients", purpose="research")
    alice.wait(info.name)
    for call in (bob.get, bob.cancel, bob.result):
        with pytest.raises(veil.NotFound):
            call(info.name)
    assert info.name not in {q.name for q in bob.queries()}


def test_wrong_purpose_and_roles(alice, demo_node, analyst_home):
    with pytest.raises(veil.PermissionDenied) as e:
        alice.query("SELECT COUNT(*) FROM patients", purpose="marketing")
    assert e.value.reason == "PURPOSE_NOT_ALLOWED"
    with demo_node.connect("olivia", analyst_home) as owner:
        assert owner.datasets()[0].name == "patients"
        with pytest.raises(veil.PermissionDenied) as e:
            owner.query("SELECT COUNT(*) FROM patients", purpose="research")
        assert e.value.reason == "ROLE_NOT_ALLOWED"


@pytest.mark.parametrize("token,reason", [(None, "MISSING_CREDENTIALS"), ("not-a-token", "INVALID_TOKEN")])
def test_authentication_required(demo_node, analyst_home, token, reason, monkeypatch):
    monkeypatch.delenv("VEIL_TOKEN", raising=False)
    with veil.connect(demo_node.target, token=token, home=analyst_home) as anon:
        with pytest.raises(veil.AuthenticationError) as e:
            anon.datasets()
    assert e.value.reason == reason


def test_cancel_pending_query_and_wait_reports_it(alice, demo_node):
    # Cancelling races with execution; whichever wins, the state is final and consistent.
    info = alice.submit("SELECT region, VARIANCE(cost) FROM patients GROUP BY region", purpose="research")
    try:
        alice.cancel(info.name)
    except veil.WrongState:
        pass  # it finished first
    final = alice.get(info.name)
    assert final.state in ("CANCELLED", "SUCCEEDED")
    if final.state == "CANCELLED":
        with pytest.raises(veil.QueryFailed) as e:
            alice.wait(info.name)
        assert e.value.state == "CANCELLED"
        with pytest.raises(veil.NotReady):
            alice.result(info.name)


def test_node_tops_up_the_keys_randomness_between_queries(alice, demo_node):
    """After a release the node makes the next result's obfuscators while idle: the repeat's
    encryption takes them from the stock, and the result still decrypts to the same figures."""
    import gmpy2

    from veil.crypto import obfuscation

    sql = "SELECT region, SUM(length_of_stay) AS stay FROM patients GROUP BY region"
    first = alice.query(sql, purpose="research")
    node = demo_node.running.node
    assert node.refill.wait_idle(60)
    pk = alice.keys[0]
    state = obfuscation._CACHE.state(gmpy2.mpz(pk.n), gmpy2.mpz(pk.nsquare))
    ready = list(state.stock)
    assert ready  # topped up after the release
    info = alice.submit(sql, purpose="research")
    again = alice.wait(info.name)
    assert again.equals(first)
    used = [s for s in ready if s not in state.stock]
    assert used  # the repeat's ciphertexts used obfuscators made between the queries


def test_a_node_set_to_full_width_randomness_uses_it(tmp_path):
    """[crypto] obfuscation = "full": the node's ciphertexts take r^n randomness (its own stock,
    topped up between queries like the default's), and the figures are the same."""
    import gmpy2

    from tests.conftest import NodeFixture, write_home
    from veil.crypto import generate_keypair, obfuscation

    # A key of its own, so that no other node of this test session touches its stocks.
    analyst_home = write_home(tmp_path / "home", generate_keypair(bits=2048)[1])
    from veil_server.config import load_config
    from veil_server.cli.demo import init_node_folder
    from veil_server.api.server import run_server

    folder = tmp_path / "node"
    tokens = init_node_folder(folder, rows=20_000, disclosure="exact")
    config = load_config(folder / "veil.toml", env={"VEIL_CRYPTO_OBFUSCATION": "full"})
    assert config.crypto.obfuscation == "full"
    sql = "SELECT region, COUNT(*) AS n, SUM(length_of_stay) AS stay FROM patients GROUP BY region"
    with run_server(config, listen="127.0.0.1:0", grace=1.0) as running:
        fixture = NodeFixture(folder, tokens, running)
        with fixture.connect("alice", analyst_home) as alice:
            pk = alice.keys[0]
            state = obfuscation._CACHE.state(gmpy2.mpz(pk.n), gmpy2.mpz(pk.nsquare))
            djn_before = list(state.stock)
            first = alice.query(sql, purpose="research")
            assert running.node.refill.wait_idle(60)
            ready = list(state.stocks["full"])
            assert ready  # the full-width stock was topped up after the release
            again = alice.query(sql, purpose="research")
            assert [s for s in ready if s not in state.stocks["full"]]  # and the repeat used it
            assert state.stock == djn_before  # the DJN stock was neither used nor filled
    ref = raw(fixture, "SELECT region, COUNT(*) AS n, SUM(length_of_stay) AS stay FROM {t} GROUP BY region")
    ref = ref.set_index("region")
    assert again.equals(first) and len(first) == len(ref)
    for _, row in first.iterrows():
        assert row["n"] == ref.loc[row["region"], "n"] and row["stay"] == ref.loc[row["region"], "stay"]
