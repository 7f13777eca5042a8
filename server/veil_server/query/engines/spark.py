"""Spark SQL as a distributed engine: the plan is rendered to Spark SQL with positional
parameters and run where the data is (local mode, or the cluster named by the master URL); only
per-group statistics come back to the node, through ``collect()`` of at most ``max_groups`` rows.

The rendering makes Spark return the same integers as DuckDB on the same rows:

- fixed point: ``CAST(x AS BIGINT)`` truncates, so ``t + CAST(2 * (x - t) AS BIGINT)`` with
  ``t = CAST(x AS BIGINT)`` is round half away from zero, exactly as DuckDB's ``ROUND(DOUBLE)``
  (the fractional part of a double and its double are exact). Spark's own ``ROUND`` goes through
  ``BigDecimal`` per row, which is slower.
- bins divide in DOUBLE (as DuckDB's ``/`` does) and floor.
- sums of squares exact: BIGINT when the declared bounds keep them below 2**63, else
  DECIMAL(38, 0) (DuckDB: HUGEINT), the widest exact type Spark has.
- identifiers are quoted with backticks; text compares by bytes, as in DuckDB.
- NULLs stay NULL: clamping is a CASE, never LEAST/GREATEST.

One Spark application per process (that is how pyspark works): the engine uses the active
SparkSession if there is one, otherwise starts one on the first dataset's master (``master``, else
``$VEIL_SPARK_MASTER``, else ``local[*]``). Each dataset becomes a temporary view over its
Parquet (or CSV) location, registered on first use.
"""

from __future__ import annotations

import dataclasses

import itertools
import logging
import threading
from typing import Any

from ..catalog import Column, Dataset
from ..consent import ConsentSource, invalid_source
from ..engine import AggregateResult, SqlRenderer, consent_unavailable, decode_dominance, decode_rows, quote_string
from ...errors import Internal, Unavailable
from ..plan import QueryPlan
from ..sources import spark_master

log = logging.getLogger("veil.engine.spark")
_instances = itertools.count(1)


def quote_backtick(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


class SparkRenderer(SqlRenderer):
    placeholder = "?"

    text_type = "STRING"  # Spark's VARCHAR needs a length

    def ident(self, name: str) -> str:
        return quote_backtick(name)

    def consent_table(self, src: ConsentSource) -> str:
        """The consent table as Spark SQL reads a Parquet location in place (the configuration
        accepts only Parquet for a Spark dataset's consent source)."""
        if src.format != "parquet":
            raise Internal("a Spark dataset's consent source must be Parquet", reason="CONSENT_NOT_APPLIED")
        return f"parquet.{quote_backtick(src.source)}"

    def timestamp(self, text: str) -> str:
        # Spark's TIMESTAMP is an instant in the session's zone, which the node pins to UTC.
        return f"CAST({quote_string(text)} AS TIMESTAMP)"

    def dialect(self):
        d = super().dialect()
        return dataclasses.replace(d, full_match=lambda text, pattern: f"({text} RLIKE {quote_string('^(' + pattern + ')$')})")

    def rounded(self, d: str) -> str:
        # Half away from zero, as DuckDB's ROUND; only ever reached inside the guarded bounds.
        t = f"CAST({d} AS BIGINT)"
        return f"({t} + CAST(2 * ({d} - {t}) AS BIGINT))"

    def sum_of_squares(self, v: str, col: Column) -> str:
        # Spark's SUM(BIGINT) is a BIGINT (it fails on overflow): use it only when the declared
        # range and row bound keep the total below 2**63, else DECIMAL(38, 0) (BigDecimal, slower).
        bound = max(abs(b) for b in self.bounds(col))
        if self.dataset.max_rows * bound * bound < 2**63:
            return f"SUM({v} * {v})"
        return f"SUM(CAST({v} AS DECIMAL(38, 0)) * CAST({v} AS DECIMAL(38, 0)))"


def spark_session(master: str, *, app_name: str = "veil-node") -> Any:
    """The process's SparkSession: the active one, or a new one on ``master``."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = (SparkSession.builder.master(master).appName(app_name)
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.session.timeZone", "UTC"))
    if master.startswith("local"):
        # A handful of result rows: 200 shuffle partitions would only add scheduling.
        builder = builder.config("spark.sql.shuffle.partitions", "8")
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


class SparkEngine:
    """Aggregates run by Spark SQL over Parquet/CSV locations (``format = "spark"``)."""

    def __init__(self, session: Any = None) -> None:
        self._session = session
        self._prefix = f"veil{next(_instances)}_"
        self._views: dict[str, str] = {}  # dataset name -> source its view reads
        self._counts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def _spark(self, ds: Dataset) -> Any:
        if self._session is None:
            self._session = spark_session(spark_master(ds))
        return self._session

    def _view(self, ds: Dataset) -> str:
        name = self._prefix + ds.name.lower()
        with self._lock:
            spark = self._spark(ds)
            if self._views.get(ds.name.lower()) != ds.source:
                try:
                    reader = spark.read
                    frame = (reader.csv(ds.source, header=True, inferSchema=True)
                             if ds.source.lower().endswith(".csv") else reader.parquet(ds.source))
                    frame.createOrReplaceTempView(name)
                except Exception as e:
                    raise _mapped(e) from None
                self._views[ds.name.lower()] = ds.source
        return quote_backtick(name)

    def _collect(self, ds: Dataset, sql: str, params: list[Any]) -> list[tuple]:
        try:  # rendered from the plan, never the analyst's text; literals are parameters
            rows = self._spark(ds).sql(sql, args=params or None).collect()
        except Exception as e:
            raise _mapped(e) from None
        return [tuple(r) for r in rows]

    def aggregate(self, plan: QueryPlan, dataset: Dataset) -> AggregateResult:
        r = SparkRenderer(dataset, self._view(dataset))
        sql = r.render(plan)
        return decode_rows(plan, dataset, self._collect(dataset, sql, [_param(p) for p in r.params]))

    # Models (issue 18, veil_server.models.design): Spark SQL types, backtick identifiers.
    model_dialect = ("?", "DOUBLE", "STRING", "`")

    def model_moments(self, dataset: Dataset, render, params: list[Any]) -> tuple:
        """One row of a model's aggregates, pushed down to Spark over the consented relation."""
        relation = SparkRenderer(dataset, self._view(dataset)).relation
        (row,) = self._collect(dataset, render(relation), [_param(p) for p in params])
        return row

    def profile_counts(self, dataset: Dataset, build) -> tuple:
        """One row of whole-table counts (governance.quality builds the SQL with this renderer)."""
        r = SparkRenderer(dataset, self._view(dataset))
        (row,) = self._collect(dataset, build(r), [])
        return row

    def consent_subjects(self, dataset: Dataset, *, validate: bool = True) -> list[str]:
        """The subject ids (as text) with a valid consent for the dataset's bound scope."""
        r = SparkRenderer(dataset, self._view(dataset))
        try:
            ((invalid,),) = self._collect(dataset, r.consent_check_sql(), []) if validate else ((0,),)
            rows = [] if invalid else self._collect(dataset, r.snapshot_sql(), [])
        except (Unavailable, Internal) as e:
            raise consent_unavailable(str(e)) from None
        if (refusal := invalid_source(invalid)) is not None:
            raise refusal
        return [str(row[0]) for row in rows]

    def column_types(self, dataset: Dataset) -> dict[str, str]:
        try:
            frame = self._spark(dataset).table(self._view(dataset).strip("`"))
            return {f.name.lower(): f.dataType.simpleString() for f in frame.schema.fields}
        except Exception as e:
            raise _mapped(e) from None

    def dominance(self, plan: QueryPlan, dataset: Dataset, column: str, n: int) -> dict[tuple[str, ...], tuple[int, int]]:
        r = SparkRenderer(dataset, self._view(dataset))
        sql = r.render_dominance(plan, column, n)
        return decode_dominance(plan, self._collect(dataset, sql, [_param(p) for p in r.params]))

    def row_count(self, dataset: Dataset) -> int:
        key = (dataset.name.lower(), dataset.source)
        with self._lock:
            if key in self._counts:
                return self._counts[key]
        try:
            ((n,),) = self._collect(dataset, f"SELECT COUNT(*) FROM {self._view(dataset)}", [])
        except (Unavailable, Internal):
            return 0
        with self._lock:
            self._counts[key] = int(n)
        return int(n)

    def close(self) -> None:
        """Drops this engine's views; the SparkSession belongs to the process and stays."""
        with self._lock:
            names, self._views = list(self._views), {}
        if self._session is not None:
            for n in names:
                self._session.catalog.dropTempView(self._prefix + n)


def _param(value: Any) -> Any:
    # Spark types an int literal as INT or BIGINT by size and a Decimal as DECIMAL(p, s): the
    # comparison then widens exactly as DuckDB's does.
    return value


def _mapped(e: Exception) -> Exception:
    text = str(e)
    first = text.splitlines()[0] if text else type(e).__name__
    if "PATH_NOT_FOUND" in text or "FileNotFoundException" in text or "does not exist" in text:
        return Unavailable("the dataset's source cannot be read; the owner must restore it",
                           reason="DATASET_UNAVAILABLE", private=first)
    log.debug("spark execution failed", exc_info=e)
    return Internal("the query could not be executed", reason="EXECUTION_FAILED", private=first)
