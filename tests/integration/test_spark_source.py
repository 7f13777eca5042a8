"""Spark SQL (pyspark, local mode) as the distributed engine: the plan is pushed down and its
integer statistics equal the DuckDB path's on the same Parquet file, exactly; a node serves a
Spark-backed dataset end to end over real gRPC. One SparkSession for the whole module: the JVM
takes seconds to start."""

from __future__ import annotations

import math
import shutil
import tomllib
from pathlib import Path

import duckdb
import pytest

from tests.integration.engine_support import (
    DEMO_QUERIES,
    DEMO_ROWS,
    EDGE_QUERIES,
    canonical,
    edge_dataset,
    edge_table,
    plan,
    write_parquet,
)
from veil_server.config import ConfigError, dataset_from_dict, load_config, parse_config
from veil_server.cli.demo import dataset_toml, init_node_folder, patients_table
from veil_server.query.engine import DuckDBEngine
from veil_server.errors import Unavailable
from veil_server.api.server import run_server

pyspark = pytest.importorskip("pyspark", reason="pyspark is installed by `make test` (the dev extra)")
REL = 1e-9


@pytest.fixture(scope="module")
def spark():
    if shutil.which("java") is None:
        pytest.skip("Spark needs a Java runtime (17 or later) on PATH")
    from veil_server.query.engines.spark import spark_session

    session = spark_session("local[2]", app_name="veil-tests")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spark-data")
    return {"patients": write_parquet(patients_table(DEMO_ROWS), folder / "patients.parquet"),
            "edge": write_parquet(edge_table(), folder / "edge.parquet")}


@pytest.fixture(scope="module")
def engine(spark):
    from veil_server.query.engines.spark import SparkEngine

    e = SparkEngine(spark)
    yield e
    e.close()


def demo_dataset(**source):
    raw = tomllib.loads(dataset_toml("patients", "unused.parquet"))["datasets"][0]
    raw.pop("source")
    return dataset_from_dict({**raw, **source})


@pytest.mark.parametrize("sql", DEMO_QUERIES, ids=[f"demo{i}" for i in range(len(DEMO_QUERIES))])
def test_demo_statistics_equal_duckdb(data, engine, sql):
    local = demo_dataset(source=str(data["patients"]))
    remote = demo_dataset(source=str(data["patients"]), format="spark")
    expected = canonical(DuckDBEngine([local]).aggregate(plan(sql, local), local))
    assert canonical(engine.aggregate(plan(sql, remote), remote)) == expected
    assert expected[0] > 0


@pytest.mark.parametrize("sql", EDGE_QUERIES, ids=[f"edge{i}" for i in range(len(EDGE_QUERIES))])
def test_edge_cases_equal_duckdb(data, engine, sql):
    local = edge_dataset(str(data["edge"]), "parquet")
    remote = edge_dataset(str(data["edge"]), "spark")
    expected = canonical(DuckDBEngine([local]).aggregate(plan(sql, local), local))
    assert canonical(engine.aggregate(plan(sql, remote), remote)) == expected


def test_literals_are_bound_never_rendered(data, engine):
    from veil_server.query.engines.spark import SparkRenderer

    ds = demo_dataset(source=str(data["patients"]), format="spark")
    hostile = "x') UNION SELECT * FROM secrets --"
    p = plan(f"SELECT COUNT(*) FROM patients WHERE region = '{hostile.replace(chr(39), chr(39) * 2)}'", ds)
    r = SparkRenderer(ds, "`v`")
    assert "UNION" not in r.render(p) and r.params == [hostile]
    assert engine.aggregate(p, ds).rows_matched == 0
    assert engine.row_count(ds) == DEMO_ROWS


def test_missing_source_is_unavailable(engine, tmp_path):
    ds = demo_dataset(source=str(tmp_path / "gone.parquet"), format="spark")
    with pytest.raises(Unavailable) as e:
        engine.aggregate(plan("SELECT COUNT(*) FROM patients", ds), ds)
    assert e.value.reason == "DATASET_UNAVAILABLE"


@pytest.mark.parametrize("master, ok", [("local[2]", True), ("spark://head:7077", True), ("yarn", True),
                                        ("http://x", False), ("local[2]; rm", False)])
def test_config_master(master, ok, tmp_path):
    raw = tomllib.loads(dataset_toml("patients", "p.parquet"))
    raw["datasets"][0].update(format="spark", master=master)
    if ok:
        (ds,) = parse_config(raw, base_dir=tmp_path, env={}).datasets
        assert (ds.format, ds.connection, ds.source) == ("spark", master, str(tmp_path / "p.parquet"))
    else:
        with pytest.raises(ConfigError):
            parse_config(raw, base_dir=tmp_path, env={})


@pytest.mark.parametrize("family,formula,coefficients", [
    ("gaussian", "cost ~ age + length_of_stay + C(sex) + C(region)", []),
    ("binomial", "cost ~ age + C(sex)", [0.3, -0.01, 0.2]),  # not a binary response: moments only
    ("poisson", "length_of_stay ~ age + C(sex)", [0.5, 0.01, -0.1]),
])
def test_model_statistics_equal_duckdb(data, engine, family, formula, coefficients):
    """Issue 18 on Spark: a model's design statistics (X'X, X'y or the Hessian and gradient at
    given coefficients) pushed down to Spark equal DuckDB's on the same file."""
    from veil_server.models import design
    from veil_server.models.formula import resolve

    local = demo_dataset(source=str(data["patients"]))
    remote = demo_dataset(source=str(data["patients"]), format="spark")
    want = design.compute(DuckDBEngine([local]), resolve(formula, local), local, family, coefficients)
    got = design.compute(engine, resolve(formula, remote), remote, family, coefficients)
    assert len(got) == len(want) and want[0] == DEMO_ROWS
    for g, w in zip(got, want):
        assert math.isclose(g, w, rel_tol=1e-9, abs_tol=1e-6)


def test_node_query_over_grpc_equals_duckdb(spark, data, tmp_path, analyst_home: Path):
    import veil

    tokens = init_node_folder(tmp_path, rows=200, disclosure="exact")
    config = tmp_path / "veil.toml"
    text = config.read_text()
    assert text.count('source = "data/patients.csv"') == 1
    config.write_text(text.replace('source = "data/patients.csv"',
                                   f'format = "spark"\nsource = "{data["patients"]}"'))
    with run_server(load_config(config, env={}), listen="127.0.0.1:0", grace=1.0) as running:
        with veil.connect(running.target, token=tokens["alice"], home=analyst_home) as node:
            df = node.query("SELECT diagnosis, COUNT(*) AS n, SUM(cost) AS total, AVG(age) AS a, "
                            "VARIANCE(cost) AS v FROM patients GROUP BY diagnosis", purpose="research")
            fitted = node.fit("cost ~ age + length_of_stay", dataset="patients", purpose="research")
            # the quality profile was computed by Spark at listing (exact mode: exact counts)
            quality = node.dataset("patients").quality
            rows = duckdb.connect().execute("SELECT COUNT(*) FROM read_parquet(?)", [str(data["patients"])]).fetchone()[0]
            assert quality["rows"] == rows and quality["columns"]["region"] == {
                "missing": "0.0000", "out_of_domain": "0.0000", "distinct": "2-9"}
    ref = duckdb.connect().execute(
        "SELECT diagnosis, COUNT(*) AS n, SUM(CAST(ROUND(cost * 100) AS BIGINT)) AS c, AVG(age) AS a,"
        " VAR_SAMP(cost) AS v FROM read_parquet(?) GROUP BY diagnosis",
        [str(data["patients"])]).df().set_index("diagnosis")
    assert len(df) == 10 and not df["suppressed"].any()
    import statsmodels.formula.api as smf

    raw = duckdb.connect().execute("SELECT * FROM read_parquet(?)", [str(data["patients"])]).df()
    ols = smf.ols("cost ~ age + length_of_stay", raw).fit()
    for name in ols.params.index:  # a model fitted by Spark over gRPC equals statsmodels on the file
        assert math.isclose(fitted.params[name], ols.params[name], rel_tol=1e-6)
        assert math.isclose(fitted.bse[name], ols.bse[name], rel_tol=1e-6)
    for _, row in df.iterrows():
        r = ref.loc[row["diagnosis"]]
        assert row["n"] == r["n"] and round(row["total"] * 100) == r["c"]
        assert math.isclose(row["a"], r["a"], rel_tol=REL) and math.isclose(row["v"], r["v"], rel_tol=REL)


def test_a_spark_dataset_counts_only_consented_rows(spark, tmp_path, analyst_home: Path):
    """Issue 21 on Spark: the consent table (Parquet) is read by Spark in the same statement as
    the data; each purpose's figures equal the same filter applied to the raw file, and the
    result carries the consent snapshot's digest."""
    import pyarrow.parquet as pq

    import veil
    from tests.integration.consent_support import arrow_table, consent_records, digest_of, raw_reference, valid_subjects

    rows = 400
    tokens = init_node_folder(tmp_path, rows=rows, disclosure="exact")
    data = write_parquet(patients_table(rows), tmp_path / "patients.parquet")
    records = consent_records(rows)
    pq.write_table(arrow_table(records), tmp_path / "consent.parquet")
    config = tmp_path / "veil.toml"
    text = config.read_text()
    old = 'purposes = ["research", "planning"]'
    assert text.count('source = "data/patients.csv"') == 1 and text.count(old) == 1
    text = text.replace('source = "data/patients.csv"', f'format = "spark"\nsource = "{data}"')
    text = text.replace(old, 'purposes = ["research", "marketing"]\nbasis = "consent"\n'
                        f'consent = {{ source = "{tmp_path / "consent.parquet"}", subject_column = "patient_id" }}')
    config.write_text(text.replace('purpose = "planning"', 'purpose = "marketing"'))
    sql = "SELECT region, COUNT(*) AS n, SUM(length_of_stay) AS stay FROM patients GROUP BY region"
    raw_sql = "SELECT region, COUNT(*), SUM(length_of_stay) FROM {src} GROUP BY region"
    with run_server(load_config(config, env={}), listen="127.0.0.1:0", grace=1.0) as running:
        with veil.connect(running.target, token=tokens["alice"], home=analyst_home) as node:
            df = node.query(sql, purpose="research")
    subjects = valid_subjects(records, "research")
    want = raw_reference(f"read_parquet('{data}')", raw_sql, subjects)
    got = {(r["region"],): (int(r["n"]), int(r["stay"])) for _, r in df.iterrows() if not r["suppressed"]}
    assert got and all(got[k] == want[k] for k in got)
    assert sum(n for n, _ in want.values()) < rows  # the filter bites
    assert df.attrs["consent_snapshot"] == digest_of(records, "research", running.node, range(1, rows + 1))
