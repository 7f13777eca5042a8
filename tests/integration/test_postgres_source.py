"""PostgreSQL as a data source, against a real server: the aggregate is pushed down and its
integer statistics equal the DuckDB path's on the same rows, exactly; a node serves a
PostgreSQL-backed dataset end to end over real gRPC."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import duckdb
import psycopg
import pytest

from tests.integration.engine_support import (
    DEMO_QUERIES,
    DEMO_ROWS,
    EDGE_QUERIES,
    admin_conninfo,
    canonical,
    edge_dataset,
    edge_table,
    load_table,
    plan,
    scratch_database,
    write_parquet,
)
from veil_server.config import ConfigError, dataset_from_dict, load_config, parse_config
from veil_server.cli.demo import dataset_toml, init_node_folder, patients_table
from veil_server.query.engine import DuckDBEngine
from veil_server.query.routing import RoutingEngine
from veil_server.query.engines.postgres import PostgresEngine, PostgresRenderer, content_fingerprint, content_stamp
from veil_server.errors import Unavailable
from veil_server.api.server import run_server

REL = 1e-9


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    """conninfo of a scratch database holding the demo table, a NUMERIC view of it and the
    edge-case table; plus the same rows as Parquet for DuckDB."""
    admin = admin_conninfo()
    folder = tmp_path_factory.mktemp("pg-data")
    patients = patients_table(DEMO_ROWS)
    edge = edge_table()
    for conninfo in scratch_database(admin):
        load_table(conninfo, "clinic.patients", patients)
        load_table(conninfo, "edge_cases.edge", edge)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute('CREATE VIEW clinic.patients_numeric AS SELECT patient_id, region, sex, age, diagnosis, '
                         'postcode, admitted_year, length_of_stay, CAST(cost AS NUMERIC(12, 2)) AS cost '
                         'FROM clinic.patients')
        yield {"conninfo": conninfo, "patients": write_parquet(patients, folder / "patients.parquet"),
               "edge": write_parquet(edge, folder / "edge.parquet")}


def demo_dataset(**source):
    raw = tomllib.loads(dataset_toml("patients", "unused.parquet"))["datasets"][0]
    raw.pop("source")
    return dataset_from_dict({**raw, **source})


@pytest.fixture(scope="module")
def engines(pg):
    ours = PostgresEngine()
    yield DuckDBEngine([]), ours
    ours.close()


@pytest.mark.parametrize("relation", ["clinic.patients", "clinic.patients_numeric"])
@pytest.mark.parametrize("sql", DEMO_QUERIES, ids=[f"demo{i}" for i in range(len(DEMO_QUERIES))])
def test_demo_statistics_equal_duckdb(pg, engines, sql, relation):
    duck, ours = engines
    local = demo_dataset(source=str(pg["patients"]), format="parquet")
    remote = demo_dataset(format="postgres", view=relation, conninfo=pg["conninfo"])
    duck = DuckDBEngine([local])
    expected = canonical(duck.aggregate(plan(sql, local), local))
    got = canonical(ours.aggregate(plan(sql, remote), remote))
    assert got == expected
    assert expected[0] > 0


@pytest.mark.parametrize("sql", EDGE_QUERIES, ids=[f"edge{i}" for i in range(len(EDGE_QUERIES))])
def test_edge_cases_equal_duckdb(pg, engines, sql):
    """Ties at .5, values just below .5, NULLs, clamping at both bounds, negative bins and text
    ordering under the database's collation: the same integers as DuckDB."""
    _, ours = engines
    local = edge_dataset(str(pg["edge"]), "parquet")
    remote = edge_dataset("edge_cases.edge", "postgres", pg["conninfo"])
    expected = canonical(DuckDBEngine([local]).aggregate(plan(sql, local), local))
    assert canonical(ours.aggregate(plan(sql, remote), remote)) == expected


def test_literals_are_bound_never_rendered(pg, engines):
    _, ours = engines
    ds = demo_dataset(format="postgres", table="clinic.patients", conninfo=pg["conninfo"])
    hostile = "x'); DROP TABLE clinic.patients; --"
    p = plan(f"SELECT COUNT(*) FROM patients WHERE region = '{hostile.replace(chr(39), chr(39) * 2)}'", ds)
    r = PostgresRenderer(ds, '"clinic"."patients"')
    sql = r.render(p)
    assert "DROP" not in sql and r.params == [hostile]
    assert ours.aggregate(p, ds).rows_matched == 0
    assert ours.row_count(ds) == DEMO_ROWS  # the table is still there


def test_statements_run_read_only(pg, engines):
    _, ours = engines
    ds = demo_dataset(format="postgres", table="clinic.patients", conninfo=pg["conninfo"])
    assert ours._fetch(ds, "SHOW transaction_read_only", []) == [("on",)]


def test_connection_from_environment(pg, monkeypatch):
    monkeypatch.setenv("VEIL_POSTGRES_CONNINFO", pg["conninfo"])
    ds = demo_dataset(format="postgres", table="clinic.patients")
    assert ds.connection == ""
    engine = RoutingEngine([ds])
    try:
        assert engine.row_count(ds) == DEMO_ROWS
    finally:
        engine.close()


def test_unreachable_or_missing_source_is_unavailable(pg, engines):
    _, ours = engines
    p = plan("SELECT COUNT(*) FROM patients", demo_dataset(source="x.parquet"))
    for ds in (demo_dataset(format="postgres", table="clinic.nope", conninfo=pg["conninfo"]),
               demo_dataset(format="postgres", table="clinic.patients",
                            conninfo="host=127.0.0.1 port=1 user=veil dbname=nope connect_timeout=2")):
        with pytest.raises(Unavailable) as e:
            ours.aggregate(p, ds)
        assert e.value.reason == "DATASET_UNAVAILABLE"
        assert "nope" not in e.value.message  # the analyst's message names no database detail


@pytest.mark.parametrize("conninfo", ["host=db user=veil password=s3cret-pw dbname=w",
                                      "postgresql://veil:s3cret-pw@db/w"])
def test_config_refuses_passwords(conninfo, tmp_path):
    raw = tomllib.loads(dataset_toml("patients", "unused.parquet"))
    d = raw["datasets"][0]
    d.pop("source")
    d.update(format="postgres", table="clinic.patients", conninfo=conninfo)
    with pytest.raises(ConfigError) as e:
        parse_config(raw, base_dir=tmp_path, env={})
    assert "password" in str(e.value) and "s3cret-pw" not in str(e.value)


@pytest.mark.parametrize("bad", [{"table": "a.b.c"}, {"table": 'x"; drop'}, {"table": "t", "view": "v"}, {}])
def test_config_validates_relations(bad, tmp_path):
    raw = tomllib.loads(dataset_toml("patients", "unused.parquet"))
    d = raw["datasets"][0]
    d.pop("source")
    d.update(format="postgres", **bad)
    with pytest.raises(ConfigError):
        parse_config(raw, base_dir=tmp_path, env={})


def test_certificate_fingerprint_follows_the_rows(pg):
    with psycopg.connect(pg["conninfo"], autocommit=True) as conn:
        conn.execute("CREATE TABLE clinic.small AS SELECT * FROM clinic.patients WHERE patient_id <= 1000")
    ds = demo_dataset(format="postgres", table="clinic.small", conninfo=pg["conninfo"])
    before, stamp = content_fingerprint(ds), content_stamp(ds)
    assert content_fingerprint(ds) == before
    with psycopg.connect(pg["conninfo"], autocommit=True) as conn:
        conn.execute("UPDATE clinic.small SET cost = cost + 0.01 WHERE patient_id = 7")
    assert content_fingerprint(ds) != before
    with psycopg.connect(pg["conninfo"], autocommit=True) as conn:
        conn.execute("TRUNCATE clinic.small")  # new storage: the stamp changes at once
    assert content_stamp(ds) != stamp


# -- a node over real gRPC ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def pg_node(pg, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pg-node")
    tokens = init_node_folder(folder, rows=200, disclosure="exact")  # principals, tokens, governance; the data is in PostgreSQL
    config = folder / "veil.toml"
    text = config.read_text()
    assert text.count('source = "data/patients.csv"') == 1
    config.write_text(text.replace('source = "data/patients.csv"',
                                   f'format = "postgres"\ntable = "clinic.patients"\nconninfo = "{pg["conninfo"]}"'))
    with run_server(load_config(config, env={}), listen="127.0.0.1:0", grace=1.0) as running:
        yield running, tokens


def test_node_query_over_grpc_equals_duckdb(pg, pg_node, analyst_home: Path):
    import veil

    running, tokens = pg_node
    with veil.connect(running.target, token=tokens["alice"], home=analyst_home) as node:
        (ds,) = node.datasets()
        assert ds.approximate_row_count == DEMO_ROWS
        # the quality profile was computed in PostgreSQL at listing (exact mode: exact counts)
        assert ds.quality["rows"] == DEMO_ROWS and ds.quality["columns"]["region"] == {
            "missing": "0.0000", "out_of_domain": "0.0000", "distinct": "2-9"}
        df = node.query("SELECT region, COUNT(*) AS n, SUM(length_of_stay) AS stay, SUM(cost) AS total,"
                        " AVG(cost) AS avg_cost, STDDEV(cost) AS sd_cost FROM patients WHERE sex = 'F'"
                        " GROUP BY region", purpose="research")
    ref = duckdb.connect().execute(
        "SELECT region, COUNT(*) AS n, SUM(length_of_stay) AS stay, SUM(CAST(ROUND(cost * 100) AS BIGINT)) AS c,"
        " AVG(cost) AS a, STDDEV_SAMP(cost) AS s FROM read_parquet(?) WHERE sex = 'F' GROUP BY region",
        [str(pg["patients"])]).df().set_index("region")
    assert len(df) == 8 and not df["suppressed"].any()
    for _, row in df.iterrows():
        r = ref.loc[row["region"]]
        assert row["n"] == r["n"] and row["stay"] == r["stay"] and round(row["total"] * 100) == r["c"]
        for ours, theirs in ((row["avg_cost"], r["a"]), (row["sd_cost"], r["s"])):
            assert math.isclose(ours, theirs, rel_tol=REL)


def test_dataset_round_trips_through_the_registry_form(pg):
    from veil_server.config import dataset_to_dict

    for ds in (demo_dataset(format="postgres", view="clinic.patients_numeric", conninfo=pg["conninfo"]),
               demo_dataset(format="spark", source="s3a://lake/patients/", master="spark://head:7077")):
        assert dataset_from_dict(dataset_to_dict(ds)) == ds
