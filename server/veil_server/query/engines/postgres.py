"""PostgreSQL as a data source: the aggregate is pushed down, only per-group statistics come back.

The SQL is rendered from the validated plan with psycopg placeholders (``%s``) for every
analyst-supplied literal and quoted identifiers from the catalog, and runs in a READ ONLY
transaction. It returns the same integers as the DuckDB path on the same rows; where the two
dialects differ, the rendering makes them agree:

- fixed point: DuckDB's ``ROUND(DOUBLE)`` is C ``round`` (half away from zero) while PostgreSQL's
  ``round(float8)`` is ``rint`` (half to even). ``trunc(x) + trunc(2 * (x - trunc(x)))`` is
  half-away-from-zero exactly: ``x - trunc(x)`` is the exact fractional part of a double and
  doubling it is exact. (No detour through NUMERIC: float8 -> numeric keeps 15 digits only.)
- bins: ``bigint / int`` is integer division (towards zero) in PostgreSQL and a DOUBLE division
  in DuckDB; the renderer divides in float8 as DuckDB does, then floors.
- sums of squares exact, as DuckDB's HUGEINT ones: SUM of a bigint square (128-bit accumulator)
  when the declared range keeps v * v in a bigint, else of a NUMERIC square.
- ordering comparisons on text use ``COLLATE "C"`` (byte order, as DuckDB and Spark compare);
  the database's default collation may order 'b' before 'N'.
- NULLs stay NULL: clamping is a CASE, never LEAST/GREATEST (which skip NULLs).

Connections: one per worker thread and conninfo, opened on first use, reopened after an error.
The conninfo comes from the dataset, ``$VEIL_POSTGRES_CONNINFO`` or libpq's ``PG*`` variables; the
password from libpq's own sources. Neither the conninfo nor a password is ever logged: failures
carry the server's message (which names host and user, never a password) in ``private`` only.
"""

from __future__ import annotations

import dataclasses

import hashlib
import threading
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from ..catalog import Column, ColumnType, Dataset
from ..consent import ConsentSource, invalid_source
from ..engine import (AggregateResult, SqlRenderer, consent_unavailable, decode_dominance, decode_rows, quote_ident,
                      quote_string)
from ...errors import Internal, Unavailable
from ..plan import Between, Compare, Filter, QueryPlan
from ..sources import postgres_conninfo

CONNECT_TIMEOUT_S = 10
BIGINT_SQUARE_MAX = 3_037_000_499  # floor(sqrt(2**63 - 1)): v * v fits a bigint
APPLICATION_NAME = "veil-node"


def relation_sql(ds: Dataset) -> str:
    """``"schema"."name"``: each part quoted verbatim (validated by the config)."""
    return ".".join(quote_ident(part) for part in ds.source.split("."))


class PostgresRenderer(SqlRenderer):
    placeholder = "%s"

    double_type = "DOUBLE PRECISION"
    text_type = "TEXT"

    def timestamp(self, text: str) -> str:
        # A UTC instant: timestamptz columns compare exactly; timestamp columns are read in the
        # session's time zone, which the node sets to UTC (_connect).
        return f"CAST({quote_string(text + '+00')} AS TIMESTAMPTZ)"

    def consent_table(self, src: ConsentSource) -> str:
        return ".".join(quote_ident(part) for part in src.source.split("."))

    def dialect(self):
        d = super().dialect()
        return dataclasses.replace(d, full_match=lambda text, pattern: f"({text} ~ {quote_string('^(' + pattern + ')$')})")

    def is_nan(self, d: str) -> str:
        return f"({d} = 'NaN'::float8)"

    def rounded(self, d: str) -> str:
        # Half away from zero, as DuckDB's ROUND (PostgreSQL's round(float8) rounds half to even).
        return f"(TRUNC({d}) + TRUNC(2 * ({d} - TRUNC({d}))))"

    def sum_of_squares(self, v: str, col: Column) -> str:
        # SUM(bigint) accumulates in 128 bits and returns NUMERIC, so it is exact whenever v * v
        # fits a bigint, which the declared range decides (not the data); else NUMERIC, ~40% slower.
        if max(abs(b) for b in self.bounds(col)) <= BIGINT_SQUARE_MAX:
            return f"SUM({v} * {v})"
        return f"SUM(CAST({v} AS NUMERIC) * {v})"

    def filter(self, node: Filter) -> str:
        col = self.dataset.column(getattr(node, "column", "") or "")
        text_order = col is not None and col.type is ColumnType.TEXT and (
            isinstance(node, Between) or (isinstance(node, Compare) and node.op not in ("=", "<>")))
        if not text_order:
            return super().filter(node)
        ident = f'{self.ident(node.column)} COLLATE "C"'
        if isinstance(node, Compare):
            self.params.append(node.value)
            return f"{ident} {node.op} {self.placeholder}"
        assert isinstance(node, Between)
        self.params.extend((node.low, node.high))
        kw = "NOT BETWEEN" if node.negated else "BETWEEN"
        return f"{ident} {kw} {self.placeholder} AND {self.placeholder}"


class PostgresEngine:
    """Aggregates pushed down into PostgreSQL tables and views (``format = "postgres"``)."""

    # A model's design SQL (veil_server.models.design.Dialect): placeholder, double and text types.
    model_dialect = ("%s", "DOUBLE PRECISION", "TEXT")

    def __init__(self) -> None:
        self._local = threading.local()
        self._counts: dict[tuple[str, str, str], int] = {}
        self._lock = threading.Lock()
        self._all: list[psycopg.Connection] = []

    def _connection(self, ds: Dataset) -> psycopg.Connection:
        conns: dict[str, psycopg.Connection] = self._local.__dict__.setdefault("conns", {})
        conninfo = postgres_conninfo(ds)
        conn = conns.get(conninfo)
        if conn is None or conn.closed:
            conn = _connect(conninfo)
            conns[conninfo] = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _drop(self, ds: Dataset) -> None:
        conn = self._local.__dict__.get("conns", {}).pop(postgres_conninfo(ds), None)
        if conn is not None:
            conn.close()

    def _fetch(self, ds: Dataset, sql: str, params: list[Any]) -> list[tuple]:
        try:
            conn = self._connection(ds)
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(sql, params)  # type: ignore[arg-type]  (rendered from the plan, never the analyst's text)
                return cur.fetchall()
        except (psycopg.OperationalError, pg_errors.UndefinedTable, pg_errors.UndefinedColumn,
                pg_errors.InsufficientPrivilege) as e:
            self._drop(ds)
            raise Unavailable("the dataset's source cannot be read; the owner must restore it",
                              reason="DATASET_UNAVAILABLE", private=_describe(e)) from None
        except psycopg.Error as e:
            self._drop(ds)
            raise Internal("the query could not be executed", reason="EXECUTION_FAILED",
                           private=_describe(e)) from None

    def model_moments(self, dataset: Dataset, render, params: list[Any]) -> tuple:
        """One row of a model's aggregates (issue 18, :mod:`veil_server.models.design`), pushed down."""
        # The consented relation: a consent dataset's rows of consenting subjects only.
        return tuple(self._fetch(dataset, render(PostgresRenderer(dataset, relation_sql(dataset)).relation), params)[0])

    def aggregate(self, plan: QueryPlan, dataset: Dataset) -> AggregateResult:
        r = PostgresRenderer(dataset, relation_sql(dataset))
        sql = r.render(plan)
        return decode_rows(plan, dataset, self._fetch(dataset, sql, r.params))

    def profile_counts(self, dataset: Dataset, build) -> tuple:
        """One row of whole-table counts (governance.quality builds the SQL with this renderer)."""
        r = PostgresRenderer(dataset, relation_sql(dataset))
        (row,) = self._fetch(dataset, build(r), [])
        return row

    def consent_subjects(self, dataset: Dataset, *, validate: bool = True) -> list[str]:
        r = PostgresRenderer(dataset, relation_sql(dataset))
        try:
            ((invalid,),) = self._fetch(dataset, r.consent_check_sql(), []) if validate else ((0,),)
            rows = [] if invalid else self._fetch(dataset, r.snapshot_sql(), [])
        except (Unavailable, Internal) as e:
            raise consent_unavailable(e.private or e.reason) from None
        if (refusal := invalid_source(invalid)) is not None:
            raise refusal
        return [str(row[0]) for row in rows]

    def column_types(self, dataset: Dataset) -> dict[str, str]:
        try:
            conn = self._connection(dataset)
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(f"SELECT * FROM {relation_sql(dataset)} LIMIT 0")  # type: ignore[arg-type]
                names = {d.name.lower(): d.type_code for d in cur.description or ()}
                cur.execute("SELECT oid, typname FROM pg_type WHERE oid = ANY(%s)", [list(names.values())])
                types = dict(cur.fetchall())
        except psycopg.Error as e:
            self._drop(dataset)
            raise Unavailable("the dataset's source cannot be read; the owner must restore it",
                              reason="DATASET_UNAVAILABLE", private=_describe(e)) from None
        return {n: {"int2": "SMALLINT", "int4": "INTEGER", "int8": "BIGINT", "float4": "REAL", "float8": "DOUBLE",
                    "numeric": "NUMERIC"}.get(types.get(oid, ""), types.get(oid, "")) for n, oid in names.items()}

    def dominance(self, plan: QueryPlan, dataset: Dataset, column: str, n: int) -> dict[tuple[str, ...], tuple[int, int]]:
        r = PostgresRenderer(dataset, relation_sql(dataset))
        sql = r.render_dominance(plan, column, n)
        return decode_dominance(plan, self._fetch(dataset, sql, r.params))

    def row_count(self, dataset: Dataset) -> int:
        key = (dataset.name.lower(), dataset.source, postgres_conninfo(dataset))
        with self._lock:
            if key in self._counts:
                return self._counts[key]
        try:
            ((n,),) = self._fetch(dataset, f"SELECT COUNT(*) FROM {relation_sql(dataset)}", [])
        except (Unavailable, Internal):
            return 0
        with self._lock:
            self._counts[key] = int(n)
        return int(n)

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for c in conns:
            c.close()


def _connect(conninfo: str) -> psycopg.Connection:
    # The session in UTC: a consent table's timestamp columns (without zone) are UTC instants.
    conn = psycopg.connect(conninfo, connect_timeout=CONNECT_TIMEOUT_S, application_name=APPLICATION_NAME,
                           options="-c TimeZone=UTC")
    # Every statement runs in a READ ONLY transaction: defence in depth behind plan-only rendering.
    conn.read_only = True
    return conn


def _describe(e: psycopg.Error) -> str:
    """The error for the operator's log: class and server message, never the conninfo."""
    diag = getattr(e, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    return f"{type(e).__name__}: {primary or (str(e).splitlines() or [''])[0]}"


# -- change detection for the data asset certificate ---------------------------------------------

def content_stamp(ds: Dataset) -> str:
    """Changes whenever the relation's rows may have: the relation's storage (relfilenode, which
    TRUNCATE and VACUUM FULL replace) and its cumulative insert/update/delete counters, and for
    a view its definition and the same for each relation it reads directly. The counters are
    PostgreSQL's statistics, flushed about once a second: a change may be seen a moment late."""
    sql = """
        WITH target AS (SELECT to_regclass(%(rel)s) AS oid),
        rels AS (
            SELECT oid FROM target
            UNION
            SELECT d.refobjid FROM pg_rewrite r JOIN pg_depend d
              ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid AND d.refclassid = 'pg_class'::regclass
             WHERE r.ev_class = (SELECT oid FROM target))
        SELECT (SELECT oid FROM target) IS NOT NULL,
               string_agg(concat_ws(':', c.oid, c.relkind, c.relfilenode, s.n_tup_ins, s.n_tup_upd, s.n_tup_del,
                                    CASE WHEN c.relkind = 'v' THEN md5(pg_get_viewdef(c.oid)) END),
                          ',' ORDER BY c.oid)
          FROM rels JOIN pg_class c ON c.oid = rels.oid
          LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid"""
    rows = _once(ds, sql, {"rel": relation_sql(ds)})
    found, text = rows[0]
    if not found:
        raise Unavailable("the dataset's source cannot be read; the owner must restore it",
                          reason="DATASET_UNAVAILABLE", private="relation not found")
    return "pg:" + hashlib.sha256(str(text).encode()).hexdigest()


def content_fingerprint(ds: Dataset) -> str:
    """An order-independent digest of the rows: the row count and the sum of a 60-bit hash of
    each row's text form, computed in the database (a full scan; run at listing and when the
    stamp changes). It detects changed, added and removed rows; like the file fingerprint it is
    a change detector for a trusted operator, not a commitment against one."""
    rel = relation_sql(ds)
    sql = (f"SELECT COUNT(*), COALESCE(SUM(('x' || LEFT(md5(CAST(t AS TEXT)), 15))::bit(60)::bigint), 0) "
           f"FROM {rel} AS t")
    ((count, total),) = _once(ds, sql, {})
    return "pg-rows-sha256:" + hashlib.sha256(f"{int(count)}:{int(total)}".encode()).hexdigest()


def _once(ds: Dataset, sql: str, params: dict[str, Any]) -> list[tuple]:
    try:
        with _connect(postgres_conninfo(ds)) as conn, conn.cursor() as cur:
            cur.execute(sql, params)  # type: ignore[arg-type]
            return cur.fetchall()
    except psycopg.Error as e:
        raise Unavailable("the dataset's source cannot be read; the owner must restore it",
                          reason="DATASET_UNAVAILABLE", private=_describe(e)) from None
