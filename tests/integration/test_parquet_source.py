"""A Parquet dataset through real gRPC: where the footer proves the values inside their ranges,
the engine leaves the clamp out, and the released figures still equal DuckDB on the raw file."""

from __future__ import annotations

import duckdb

import veil
from tests.integration.test_end_to_end import close
from veil_server.config import load_config
from veil_server.cli.demo import init_node_folder
from veil_server.api.server import run_server


def test_parquet_results_are_exact_without_the_clamp(tmp_path, analyst_home):
    folder = tmp_path / "node"
    tokens = init_node_folder(folder, rows=20_000, data_format="parquet", disclosure="exact")
    config = load_config(folder / "veil.toml", env={})
    with run_server(config, listen="127.0.0.1:0", grace=1.0) as running:
        eng = running.node.engine.duckdb
        eng.range_proofs.settle_seconds = 0  # the file was written a moment ago
        scans = []
        run = eng._run
        eng._run = lambda plan, ds, unclamped: (scans.append(unclamped), run(plan, ds, unclamped))[1]
        with veil.connect(running.target, token=tokens["alice"], home=analyst_home) as alice:
            df = alice.query(
                "SELECT region, sex, COUNT(*) AS n, SUM(length_of_stay) AS stay, SUM(cost) AS total, "
                "AVG(cost) AS avg_cost, STDDEV(cost) AS sd_cost, VARIANCE(age) AS var_age "
                "FROM patients GROUP BY region, sex", purpose="research")
    # Nothing clamped: the query's scan, and exact mode's count of the lattice cells (its audit).
    assert scans and set(scans) == {frozenset({"length_of_stay", "cost", "age"})}
    ref = duckdb.connect().execute(
        "SELECT region, sex, COUNT(*) AS n, SUM(length_of_stay) AS stay, "
        "SUM(CAST(ROUND(cost * 100) AS BIGINT)) AS cents, AVG(cost) AS avg_cost, STDDEV_SAMP(cost) AS sd_cost, "
        f"VAR_SAMP(age) AS var_age FROM read_parquet('{folder / 'data' / 'patients.parquet'}') "
        "GROUP BY region, sex").df().set_index(["region", "sex"])
    assert len(df) == 16 and not df["suppressed"].any()
    for _, row in df.iterrows():
        r = ref.loc[(row["region"], row["sex"])]
        assert row["n"] == r["n"] and row["stay"] == r["stay"] and round(row["total"] * 100) == r["cents"]
        for col in ("avg_cost", "sd_cost", "var_age"):
            assert close(row[col], r[col]), (row["region"], col)
