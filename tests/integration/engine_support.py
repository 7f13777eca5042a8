"""Shared by the PostgreSQL and Spark source tests: a real PostgreSQL server (started here if it
is installed but stopped, as CI must), a throwaway database, the demo and edge-case tables, and
an exact comparison of engine statistics.

``VEIL_TEST_POSTGRES`` (a libpq conninfo to a maintenance database) points the tests at another
server; by default they use the machine's server on 127.0.0.1:5432 as user ``postgres``.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import subprocess
import time
from decimal import Decimal
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as papq
import pytest

from veil_server.query.catalog import Catalog, Column, ColumnControl, ColumnType, Dataset
from veil_server.query.engine import AggregateResult
from veil_server.query.planner import plan_query

DEFAULT_ADMIN_CONNINFO = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
DEMO_ROWS = 100_000


# -- the server -----------------------------------------------------------------------------------

def _reachable(conninfo: str) -> bool:
    import psycopg

    try:
        psycopg.connect(conninfo, connect_timeout=3).close()
        return True
    except psycopg.OperationalError:
        return False


def _start_local_server() -> None:
    """Start the machine's cluster(s) as CI's set-up would; fail loudly if that does not work."""
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    for version in versions:
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
                       check=False, capture_output=True, timeout=60)


def postgres_installed() -> bool:
    return os.path.isdir("/etc/postgresql") or shutil.which("pg_ctlcluster") is not None \
        or shutil.which("postgres") is not None


def admin_conninfo() -> str:
    """A reachable maintenance database, starting the local server if needed; skips only when
    no PostgreSQL is installed at all."""
    conninfo = os.environ.get("VEIL_TEST_POSTGRES", DEFAULT_ADMIN_CONNINFO)
    if _reachable(conninfo):
        return conninfo
    if "VEIL_TEST_POSTGRES" in os.environ:
        pytest.fail("VEIL_TEST_POSTGRES is set but the server does not answer")
    if not postgres_installed():
        pytest.skip("no PostgreSQL server is installed on this machine (apt-get install postgresql), "
                    "and VEIL_TEST_POSTGRES names none")
    _start_local_server()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if _reachable(conninfo):
            return conninfo
        time.sleep(0.5)
    pytest.fail("PostgreSQL is installed but could not be started on 127.0.0.1:5432 "
                "(pg_ctlcluster --skip-systemctl-redirect VERSION main start)")


def with_dbname(conninfo: str, dbname: str) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(conninfo, dbname=dbname)


def scratch_database(admin: str) -> Iterator[str]:
    """A database of our own, dropped afterwards (even with connections still open)."""
    import psycopg

    name = "veil_test_" + secrets.token_hex(4)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_dbname(admin, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_PG_TYPES = {pa.int64(): "BIGINT", pa.float64(): "DOUBLE PRECISION", pa.string(): "TEXT",
             pa.large_string(): "TEXT"}


def load_table(conninfo: str, relation: str, table: pa.Table) -> None:
    """CREATE TABLE + COPY of an Arrow table (doubles travel as their shortest round-trip text,
    which PostgreSQL parses back to the very same double)."""
    import psycopg

    cols = ", ".join(f'"{f.name}" {_PG_TYPES[f.type]}' for f in table.schema)
    buf = io.BytesIO()
    pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False))
    schema = relation.split(".")[0] if "." in relation else None
    quoted = ".".join(f'"{p}"' for p in relation.split("."))
    with psycopg.connect(conninfo, autocommit=True) as conn:
        if schema:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(f"CREATE TABLE {quoted} ({cols})")
        with conn.cursor() as cur, cur.copy(f"COPY {quoted} FROM STDIN (FORMAT csv)") as copy:
            copy.write(buf.getvalue())
        conn.execute(f"ANALYZE {quoted}")


def write_parquet(table: pa.Table, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    papq.write_table(table, path)
    return path


# -- the edge-case table ----------------------------------------------------------------------------

PUB = frozenset({ColumnControl.PUBLIC})
EDGE_COLUMNS = (
    Column("g", ColumnType.TEXT, PUB, categories=("a", "b", "B", "c")),
    # scale 1: x * 10 lands exactly on .5 for 0.25, -0.25, 0.45 ... (ties), and clamps at +-5
    Column("x", ColumnType.DECIMAL, PUB, value_range=(Decimal(-5), Decimal(5)), scale=1),
    # scale 0: 0.49999999999999994 must round to 0 and 2.5 to 3 (half away from zero)
    Column("y", ColumnType.DECIMAL, PUB, value_range=(Decimal(-10), Decimal(10)), scale=0),
    # negative bins: FLOOR(-1 / 10) is -1, not 0
    Column("n", ColumnType.INTEGER, PUB, value_range=(Decimal(-50), Decimal(50)), bin_width=Decimal(5)),
)
_X = [0.25, -0.25, 0.35, -0.35, 0.05, -0.05, 0.45, -0.45, 1e-17, -0.04999999999999999, None, 100.0, -100.0,
      4.95, -4.95, 2.5, 0.15, -0.15]
_Y = [0.49999999999999994, -0.49999999999999994, 2.5, -2.5, 3.5, -0.5, 0.5, None, 1.5, -1.5, 9.5, 10.5, -11.0,
      7.4999999999999991]
_N = [-1, -10, -11, 5, None, 49, -50, 0, 51, -5, 4]


def edge_table() -> pa.Table:
    rows = []
    groups = ["a", "b", "B", "c", None]
    for i in range(len(_X) * len(_Y)):
        rows.append((groups[i % 5], _X[i % len(_X)], _Y[(i // 3) % len(_Y)], _N[(i * 7) % len(_N)]))
    g, x, y, n = zip(*rows)
    return pa.table({"g": pa.array(g, pa.string()), "x": pa.array(x, pa.float64()),
                     "y": pa.array(y, pa.float64()), "n": pa.array(n, pa.int64())})


def edge_dataset(source: str, fmt: str, connection: str = "") -> Dataset:
    return Dataset("edge", source, fmt, EDGE_COLUMNS, frozenset({"research"}), min_group_size=2,
                   max_groups=1000, max_rows=10_000, connection=connection)


EDGE_QUERIES = [
    "SELECT g, COUNT(*), COUNT(x), SUM(x), VAR_SAMP(x), SUM(y), STDDEV(y), AVG(n) FROM edge GROUP BY g",
    "SELECT FLOOR(n / 10) * 10 AS b, COUNT(*), SUM(x), VARIANCE(y) FROM edge GROUP BY b",
    "SELECT FLOOR(n / 5) * 5 AS b, g, COUNT(*), AVG(y) FROM edge GROUP BY b, g",
    "SELECT COUNT(*), SUM(x), SUM(y) FROM edge WHERE g < 'b'",
    "SELECT COUNT(*), SUM(y) FROM edge WHERE g BETWEEN 'B' AND 'a'",
    "SELECT g, COUNT(*), SUM(x) FROM edge WHERE (x > 0.25 AND n IN (5, -1, 49)) OR y IS NULL GROUP BY g",
    "SELECT COUNT(*), VAR_SAMP(n) FROM edge WHERE NOT (n <= -10) AND x NOT BETWEEN -0.25 AND 0.25",
    "SELECT COUNT(*), SUM(n) FROM edge WHERE g NOT IN ('a', 'c') AND g >= 'B'",
]

DEMO_QUERIES = [
    "SELECT region, COUNT(*), COUNT(cost), SUM(length_of_stay), SUM(cost), AVG(cost), VARIANCE(cost),"
    " STDDEV(length_of_stay), VAR_SAMP(age) FROM patients GROUP BY region",
    "SELECT diagnosis, FLOOR(age / 10) * 10 AS decade, COUNT(*), AVG(length_of_stay), STDDEV(cost)"
    " FROM patients WHERE region IN ('North', 'Islands') AND (sex = 'F' OR age BETWEEN 80 AND 90)"
    " GROUP BY diagnosis, decade",
    "SELECT sex, COUNT(*), SUM(cost) FROM patients WHERE age > 30 AND age <> 40 AND postcode < '50000'"
    " GROUP BY sex",
    "SELECT COUNT(*), SUM(cost), VARIANCE(age) FROM patients WHERE admitted_year >= 2020",
]


def plan(sql: str, ds: Dataset):
    return plan_query(sql, Catalog([ds]))


def canonical(result: AggregateResult) -> tuple:
    """Statistics in a comparable form: sorted groups with every integer."""
    groups = sorted((g.keys, g.rows, tuple(sorted((k, (s.count, s.total, s.squares)) for k, s in g.columns.items())))
                    for g in result.groups)
    return result.rows_matched, groups
