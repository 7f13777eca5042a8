"""Execution: a validated plan in, per-group sufficient statistics out.

The engine renders its own SQL from the :class:`QueryPlan` (quoted identifiers from the
catalog, every analyst-supplied literal a bound parameter), so no analyst text reaches it.
It returns, per group, the row count and for each aggregated column the count of non-null
values, their sum and sum of squares, all as exact integers in the column's fixed-point scale
after clamping each value to the declared range (contribution bounding). Every released
aggregate is derived from these in :mod:`veil_server.query.release`. Where a Parquet file's footer
proves a column already inside its range, the clamp is a no-op and is left out of the SQL for
that column (:mod:`veil_server.query.range_proof`); the integers are the same.

Rows whose group key is NULL or outside the declared public domain fall in no group.
"""

from __future__ import annotations

import logging
import threading
from decimal import Decimal
from typing import Any, Callable, Protocol

import duckdb

from .catalog import Column, ColumnType, Dataset
from .consent import ConsentSource, Dialect, consented_relation, invalid_records_sql, invalid_source, snapshot_sql
from ..errors import Internal, Unavailable
from .plan import AggFunc, And, Between, Compare, Filter, InList, IsNull, Not, Or, QueryPlan
from .range_proof import NO_PROOF, RangeProofs, within_ranges
from .stats import AggregateResult, ColumnStats, GroupStats


log = logging.getLogger("veil.engine")

class Engine(Protocol):
    def aggregate(self, plan: QueryPlan, dataset: Dataset) -> AggregateResult: ...

    def row_count(self, dataset: Dataset) -> int: ...


def key_string(value: Any) -> str:
    """The canonical text of a group-key value: the same for 30, 30.0 and Decimal('30.00')."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    d = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    d = d.normalize()
    if d == d.to_integral_value():
        return str(d.quantize(Decimal(1)))
    return format(d, "f")


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def aggregated_columns(plan: QueryPlan) -> list[str]:
    """Columns whose statistics the plan needs, in first-use order."""
    out: list[str] = []
    for a in plan.aggregates:
        if a.column is not None and a.column not in out:
            out.append(a.column)
    return out


def needs_squares(plan: QueryPlan, column: str) -> bool:
    return any(
        a.column == column and a.function in (AggFunc.VAR_SAMP, AggFunc.STDDEV_SAMP) for a in plan.aggregates
    )


class SqlRenderer:
    """Renders a plan into parameterised SQL for a dialect: DuckDB here; the PostgreSQL and Spark
    renderers (:mod:`veil_server.query.engines`) override the dialect hooks (``ident``, ``fixed``,
    ``group_expr``, ``sum_of_squares``) so that every engine returns the same integers."""

    placeholder = "?"

    def __init__(self, dataset: Dataset, relation: str, *, unclamped: frozenset[str] = frozenset(),
                 int64_sums: bool = False) -> None:
        """``unclamped``: columns proven inside their declared range (the clamp would be a no-op).
        ``int64_sums``: DuckDB only, see ``total``."""
        self.dataset = dataset
        self.raw_relation = relation  # only the consent snapshot reads it unfiltered
        self.relation = self.consented(relation)
        self.params: list[Any] = []
        self.unclamped = unclamped
        self.int64_sums = int64_sums
        # (column, largest |term|) of every sum accumulated in 64 bits: exact only if the
        # group's count times that bound stays below 2^63, which the engine checks afterwards.
        self.int64_bounds: list[tuple[str, int]] = []

    def ident(self, name: str) -> str:
        return quote_ident(name)

    # -- consent (see query.consent): every statement a renderer makes reads self.relation --
    text_type = "VARCHAR"

    def timestamp(self, text: str) -> str:
        # A UTC instant (the engine's connections also run in UTC: naive columns are UTC).
        return f"CAST({quote_string(text + '+00')} AS TIMESTAMPTZ)"

    def dialect(self) -> Dialect:
        return Dialect(self.ident, self.text_type, self.timestamp)

    def consent_table(self, src: ConsentSource) -> str:
        """The consent source as a relation in this engine's SQL. A CSV's times are read as
        timestamps whatever they look like (a column left empty for "never" would otherwise be
        typed as text and fail every query)."""
        if src.format == "parquet":
            return duckdb_reader(src.source, src.format)
        types = ", ".join(f"{quote_string(c)}: 'TIMESTAMPTZ'" for c in (src.granted_at, src.expires_at))
        return f"read_csv_auto({quote_string(src.source)}, nullstr = {CSV_NULLS}, types = {{{types}}})"

    def consented(self, relation: str) -> str:
        """``relation``, restricted to consented rows for a consent dataset. Deny by default: a
        consent dataset whose scope was not bound at execution is refused, never read whole."""
        ds = self.dataset
        if not ds.needs_consent:
            return relation
        scope = ds.consent_scope
        if ds.consent is None or scope is None:
            raise Internal("the consent filter was not bound for this dataset; nothing was read",
                           reason="CONSENT_NOT_APPLIED", private=ds.name)
        if scope.all_rows:
            return relation
        return consented_relation(relation, self.consent_table(ds.consent), ds.consent, scope, self.dialect())

    def snapshot_sql(self) -> str:
        ds = self.dataset
        assert ds.consent is not None and ds.consent_scope is not None
        return snapshot_sql(self.consent_table(ds.consent), ds.consent, ds.consent_scope, self.dialect(),
                            self.raw_relation)

    def consent_check_sql(self) -> str:
        """The count of consent records the node could misread (query.consent.invalid_records_sql)."""
        ds = self.dataset
        assert ds.consent is not None
        col = ds.column(ds.consent.subject_column)
        return invalid_records_sql(self.consent_table(ds.consent), ds.consent, ds.purposes, self.dialect(),
                                   integer_subjects=col is not None and getattr(col.type, "value", col.type) == "integer",
                                   relation=self.raw_relation)

    def total(self, v: str, col: Column, bound: int) -> str:
        """Exact sum of ``v`` (terms of magnitude at most ``bound``). DuckDB sums BIGINT into a
        128-bit accumulator; its own ``sum_no_overflow`` accumulates 64 bits, which DuckDB's
        optimizer picks when statistics prove no overflow. Here the proof comes after the scan:
        a group of c values of magnitude <= bound has every partial sum within c * bound, so
        when c * bound < 2^63 for every group no partial sum overflowed (``int64_sums_held``).
        Used only when the declared row bound allows it, so the check is expected to pass."""
        if self.int64_sums and self.dataset.max_rows * bound < 2**63:
            self.int64_bounds.append((col.name, bound))
            return f"sum_no_overflow({v})"
        return f"SUM({v})"

    def sum_of_squares(self, v: str, col: Column) -> str:
        """Exact sum of ``v * v`` (``v`` is ``col`` clamped to its declared range). Only the
        product needs care: when the declared range keeps every square below 2^63, 64-bit
        products are exact and much cheaper."""
        low, high = self.bounds(col)
        bound = max(abs(low), abs(high))
        if bound**2 < 2**63:
            return self.total(f"{v} * {v}", col, bound**2)
        return f"SUM(CAST({v} AS HUGEINT) * {v})"

    # No value in the data may make a query fail: a failure that depends on the rows a filter
    # selects would tell the analyst about them, without noise and without a charge. So every
    # conversion to an integer is guarded (NaN is missing; a value beyond the declared range, or
    # beyond 64 bits, is clamped before the cast), and filters on decimal columns compare the
    # rounded fixed-point value the aggregates and bins use, never the raw one.
    double_type = "DOUBLE"
    WIDE = 2**62  # the guard for columns without a declared range: far beyond any real value

    def scaled(self, col: Column) -> str:
        """The column times 10^scale as a double, not yet rounded (NaN and infinities possible)."""
        x = f"CAST({self.ident(col.name)} AS {self.double_type})"
        return x if col.type is ColumnType.INTEGER or col.scale == 0 else f"({x} * {10 ** col.scale})"

    def is_nan(self, d: str) -> str:
        return f"isnan({d})"

    def rounded(self, d: str) -> str:
        """``d`` rounded half away from zero (DuckDB's ROUND), still a double."""
        return f"ROUND({d})"

    def safe_int(self, d: str, low: int, high: int) -> str:
        """``d`` (a scaled double) rounded to an integer within [low, high]: NaN is NULL, anything
        beyond the bounds is the bound. Only a value inside them reaches the cast."""
        return (f"CASE WHEN {self.is_nan(d)} THEN NULL WHEN {d} >= {high} THEN {high} WHEN {d} <= {low} THEN {low} "
                f"ELSE CAST({self.rounded(d)} AS BIGINT) END")

    def fixed(self, col: Column) -> str:
        """The column as an integer in its fixed-point scale (far values held at +-2^62)."""
        return self.fixed_of(self.scaled(col))

    def fixed_of(self, d: str) -> str:
        return self.safe_int(d, -self.WIDE, self.WIDE)

    def proven(self, d: str) -> str:
        """A column whose values the file's footer proves inside the declared range: no clamp,
        only NaN (which footers do not record) made missing."""
        return f"CASE WHEN {self.is_nan(d)} THEN NULL ELSE CAST({self.rounded(d)} AS BIGINT) END"

    @staticmethod
    def bounds(col: Column) -> tuple[int, int]:
        """The declared range in the column's fixed-point scale."""
        assert col.value_range is not None
        low, high = (int((v * 10**col.scale).to_integral_value()) for v in col.value_range)
        return low, high

    def clamped(self, col: Column) -> str:
        return self.clamp(self.scaled(col), col)

    def clamp(self, d: str, col: Column) -> str:
        """``d`` (the column scaled, a double) rounded and clamped to the declared range. CASE,
        not LEAST/GREATEST: those skip NULLs, which would turn a missing value into a bound."""
        low, high = self.bounds(col)
        return self.safe_int(d, low, high)

    def group_expr(self, column: str, bin_width: Decimal | None) -> str:
        col = self.dataset.column(column)
        assert col is not None
        if bin_width is None:
            return self.ident(col.name)
        width = int((bin_width * 10**col.scale).to_integral_value())
        # A value outside the range lands in a bin outside the domain (one further out at most),
        # which no group holds; it never makes the cast fail.
        low, high = (b // width for b in self.bounds(col)) if col.value_range is not None else (
            -self.WIDE // width, self.WIDE // width)
        floor = f"FLOOR(CAST({self.fixed(col)} AS {self.double_type}) / {width})"
        return self.safe_int(floor, low - 1, high + 1)

    def compared(self, column: str, value: Any) -> tuple[str, Any]:
        """The left side and the parameter of a comparison: a number column's rounded
        fixed-point value against the literal in the same units (what its bins and sums see).
        Integer columns too: a source may hold fractions in a column declared integer, and a
        filter on the raw value would select other rows than the bins it is aligned with."""
        col = self.dataset.column(column)
        if col is not None and col.type in (ColumnType.DECIMAL, ColumnType.INTEGER) \
                and isinstance(value, (int, Decimal)) and not isinstance(value, bool):
            return self.fixed(col), Decimal(value).scaleb(col.scale)
        return self.ident(column), value

    def filter(self, node: Filter) -> str:
        if isinstance(node, Compare):
            left, value = self.compared(node.column, node.value)
            self.params.append(_param(value))
            return f"{left} {node.op} {self.placeholder}"
        if isinstance(node, InList):
            pairs = [self.compared(node.column, v) for v in node.values]
            left = pairs[0][0] if pairs else self.ident(node.column)
            self.params.extend(_param(v) for _, v in pairs)
            marks = ", ".join(self.placeholder for _ in node.values)
            return f"{left} {'NOT IN' if node.negated else 'IN'} ({marks})"
        if isinstance(node, Between):
            left, low = self.compared(node.column, node.low)
            _, high = self.compared(node.column, node.high)
            self.params.extend((_param(low), _param(high)))
            kw = "NOT BETWEEN" if node.negated else "BETWEEN"
            return f"{left} {kw} {self.placeholder} AND {self.placeholder}"
        if isinstance(node, IsNull):
            return f"{self.ident(node.column)} IS {'NOT NULL' if node.negated else 'NULL'}"
        if isinstance(node, And):
            return "(" + " AND ".join(self.filter(o) for o in node.operands) + ")"
        if isinstance(node, Or):
            return "(" + " OR ".join(self.filter(o) for o in node.operands) + ")"
        if isinstance(node, Not):
            return f"(NOT {self.filter(node.operand)})"
        raise Internal("unknown filter node in a validated plan", private=type(node).__name__)

    def render_dominance(self, plan: QueryPlan, column: str, n: int) -> str:
        """Per group of ``plan``: the sum of the clamped values' magnitudes and the sum of the
        ``n`` largest of them (the dominance rule of :mod:`veil_server.disclosure.dominance`)."""
        col = self.dataset.column(column)
        assert col is not None
        knames = [f"k{i}" for i in range(len(plan.group_keys))]
        keys = "".join(f"{self.group_expr(g.column, g.bin_width)} AS k{i}, " for i, g in enumerate(plan.group_keys))
        where = f" WHERE {self.filter(plan.where)}" if plan.where is not None else ""
        part = f"PARTITION BY {', '.join(knames)} " if knames else ""
        sel = "".join(k + ", " for k in knames)
        sql = (f"SELECT {sel}SUM(ABS(v)), SUM(CASE WHEN rn <= {int(n)} THEN ABS(v) ELSE 0 END) FROM ("
               f"SELECT {sel}v, ROW_NUMBER() OVER ({part}ORDER BY ABS(v) DESC) AS rn FROM ("
               f"SELECT {keys}{self.clamped(col)} AS v FROM {self.relation}{where}) AS a WHERE v IS NOT NULL) AS b")
        return sql + (f" GROUP BY {', '.join(knames)}" if knames else "")

    def render(self, plan: QueryPlan) -> str:
        # Three levels: the filtered rows with each value converted to fixed point once, then
        # clamped (a CASE naming the converted value three times would convert it three times),
        # then aggregated.
        keys = [f"k{i}" for i in range(len(plan.group_keys))]
        inner = [f"{self.group_expr(g.column, g.bin_width)} AS k{i}" for i, g in enumerate(plan.group_keys)]
        middle = list(keys)
        outer = list(keys) + ["COUNT(*) AS n"]
        for j, name in enumerate(aggregated_columns(plan)):
            col = self.dataset.column(name)
            assert col is not None
            inner.append(f"{self.scaled(col)} AS f{j}")
            guarded = self.proven(f"f{j}") if col.name in self.unclamped else self.clamp(f"f{j}", col)
            middle.append(f"{guarded} AS v{j}")
            outer += [f"COUNT(v{j})", self.total(f"v{j}", col, max(abs(b) for b in self.bounds(col)))]
            outer.append(self.sum_of_squares(f"v{j}", col) if needs_squares(plan, name) else "0")
        where = f" WHERE {self.filter(plan.where)}" if plan.where is not None else ""
        select_inner = ", ".join(inner) if inner else "1 AS one"
        select_middle = ", ".join(middle) if middle else "1 AS one"
        sql = (f"SELECT {', '.join(outer)} FROM (SELECT {select_middle} FROM (SELECT {select_inner} "
               f"FROM {self.relation}{where}) AS r) AS t")
        if keys:
            sql += " GROUP BY " + ", ".join(keys)
        return sql


def duckdb_reader(path: str, fmt: str) -> str:
    if fmt == "parquet":
        return f"read_parquet({quote_string(path)})"
    # the usual spellings of a missing value (R writes NA) are missing, not text
    return f"read_csv_auto({quote_string(path)}, nullstr = {CSV_NULLS})"


def consent_unavailable(private: str) -> Unavailable:
    return Unavailable("the dataset's consent source cannot be read, so no row may be used; the owner must "
                       "restore the consent table", reason="CONSENT_SOURCE_UNAVAILABLE", private=private)


def _param(value: Any) -> Any:
    return value


def decode_rows(plan: QueryPlan, dataset: Dataset, rows: list[tuple]) -> AggregateResult:
    nk = len(plan.group_keys)
    cols = aggregated_columns(plan)
    groups = []
    matched = 0
    for row in rows:
        keys = []
        for g, raw in zip(plan.group_keys, row[:nk]):
            if raw is None:
                keys.append(None)
            elif g.bin_width is None:
                keys.append(key_string(raw))
            else:
                keys.append(key_string(Decimal(int(raw)) * g.bin_width))
        n = int(row[nk])
        matched += n
        stats = {}
        for j, name in enumerate(cols):
            c, s, q = row[nk + 1 + 3 * j : nk + 4 + 3 * j]
            stats[name] = ColumnStats(int(c or 0), int(s or 0), int(q or 0))
        if any(k is None for k in keys):
            continue
        groups.append(GroupStats(tuple(keys), n, stats))  # type: ignore[arg-type]
    return AggregateResult(groups, matched)


CSV_NULLS = "['', 'NA', 'N/A', 'NULL', 'null', 'NaN', 'nan', '.']"
NUMERIC_TYPES = ("INT", "DECIMAL", "NUMERIC", "DOUBLE", "FLOAT", "REAL", "BIGINT", "LONG", "SHORT", "BYTE")


def is_numeric_type(name: str) -> bool:
    """Whether an engine's type name is a number type (DuckDB, PostgreSQL and Spark spellings)."""
    upper = name.upper()
    return any(t in upper for t in NUMERIC_TYPES) and "INTERVAL" not in upper and "[]" not in upper


def decode_dominance(plan: QueryPlan, rows: list[tuple]) -> dict[tuple[str, ...], tuple[int, int]]:
    """Rows of ``render_dominance`` by group key: (sum of magnitudes, sum of the largest)."""
    nk = len(plan.group_keys)
    out = {}
    for row in rows:
        raw = row[:nk]
        if any(v is None for v in raw):
            continue
        keys = tuple(key_string(v) if g.bin_width is None else key_string(Decimal(int(v)) * g.bin_width)
                     for g, v in zip(plan.group_keys, raw))
        out[keys] = (int(row[nk] or 0), int(row[nk + 1] or 0))
    return out


def int64_sums_held(result: AggregateResult, int64_bounds: list[tuple[str, int]]) -> bool:
    """Whether every sum accumulated in 64 bits is exact: in each group, the column's count of
    values times the largest magnitude of a term stays below 2^63 (see ``SqlRenderer.total``)."""
    for g in result.groups:
        for name, bound in int64_bounds:
            st = g.columns.get(name)
            if st is not None and st.count * bound >= 2**63:
                return False
    return True


class DuckDBEngine:
    """Embedded DuckDB over the owner's CSV and Parquet files (one view per dataset)."""

    def __init__(self, datasets: list[Dataset] | tuple[Dataset, ...], *, threads: int | None = None) -> None:
        self._db = duckdb.connect(":memory:")
        # Every connection (cursor) in UTC: consent times without a zone are UTC, and a naive
        # literal is never read in the host's zone.
        self._db.execute("SET GLOBAL TimeZone = 'UTC'")
        if threads:
            self._db.execute(f"SET threads = {int(threads)}")
        self._local = threading.local()
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.range_proofs = RangeProofs()
        try:  # DuckDB's own 64-bit sum (see SqlRenderer.total); plain SUM without it
            self._db.execute("SELECT sum_no_overflow(CAST(1 AS BIGINT))").fetchall()
            self.int64_sums = True
        except duckdb.Error:
            self.int64_sums = False
        for ds in datasets:
            self._register(ds)

    def _register(self, ds: Dataset) -> None:
        reader = duckdb_reader(ds.source, ds.format)
        self._db.execute(f"CREATE OR REPLACE VIEW {self._view(ds)} AS SELECT * FROM {reader}")

    def column_types(self, dataset: Dataset) -> dict[str, str]:
        """The engine's type of each column of the source (lower-case names)."""
        try:
            rows = self._cursor().execute(f"DESCRIBE SELECT * FROM {self._view(dataset)}").fetchall()
        except duckdb.Error as e:
            raise Unavailable("the dataset's source cannot be read; the owner must restore it",
                              reason="DATASET_UNAVAILABLE", private=str(e)) from None
        return {str(r[0]).lower(): str(r[1]) for r in rows}

    @staticmethod
    def _view(ds: Dataset) -> str:
        return quote_ident("ds_" + ds.name.lower())

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._db.cursor()
            self._local.cursor = cur
        return cur

    def aggregate(self, plan: QueryPlan, dataset: Dataset) -> AggregateResult:
        cols = [c for c in (dataset.column(n) for n in aggregated_columns(plan)) if c is not None]
        proof = self.range_proofs.prove(dataset, cols) if cols else NO_PROOF
        if proof:
            try:
                result = self._run(plan, dataset, proof.columns)
            except Internal:  # e.g. an overflow that clamped values could not cause: decide below
                result = None
            # The proof is for the file version it was made on: the file must not have moved
            # during the scan, and the sums must be what in-range values can give.
            if result is not None and self.range_proofs.unchanged(proof) and \
                    within_ranges(result, dataset, proof.columns):
                return result
            log.warning("range proof for dataset %s did not hold; computing again with clamping", dataset.name)
        return self._run(plan, dataset, frozenset())

    def _run(self, plan: QueryPlan, dataset: Dataset, unclamped: frozenset[str]) -> AggregateResult:
        if self.int64_sums:
            r = SqlRenderer(dataset, self._view(dataset), unclamped=unclamped, int64_sums=True)
            try:
                result = self._execute(plan, dataset, r)
            except Internal:  # DuckDB may report an overflow the check below would have caught
                result = None
            if result is not None and int64_sums_held(result, r.int64_bounds):
                return result
            log.info("a group of dataset %s is too large for 64-bit sums; summing in 128 bits", dataset.name)
        return self._execute(plan, dataset, SqlRenderer(dataset, self._view(dataset), unclamped=unclamped))

    def _execute(self, plan: QueryPlan, dataset: Dataset, r: SqlRenderer) -> AggregateResult:
        sql = r.render(plan)
        try:
            rows = self._cursor().execute(sql, r.params).fetchall()
        except duckdb.IOException as e:
            raise Unavailable(
                "the dataset's source cannot be read; the owner must restore it",
                reason="DATASET_UNAVAILABLE",
                private=str(e),
            ) from None
        except duckdb.Error as e:
            raise Internal("the query could not be executed", reason="EXECUTION_FAILED", private=str(e)) from None
        return decode_rows(plan, dataset, rows)

    def dominance(self, plan: QueryPlan, dataset: Dataset, column: str, n: int) -> dict[tuple[str, ...], tuple[int, int]]:
        r = SqlRenderer(dataset, self._view(dataset))
        sql = r.render_dominance(plan, column, n)
        try:
            rows = self._cursor().execute(sql, r.params).fetchall()
        except duckdb.Error as e:
            raise Internal("the query could not be executed", reason="EXECUTION_FAILED", private=str(e)) from None
        return decode_dominance(plan, rows)

    def model_moments(self, dataset: Dataset, render: Callable[[str], str], params: list) -> tuple:
        """One row of aggregates over the dataset's view, for :mod:`veil_server.models.design`,
        which renders the SQL from checked column names and binds every value as a parameter."""
        try:
            # The consented relation: a consent dataset's rows of consenting subjects only.
            row = self._cursor().execute(render(SqlRenderer(dataset, self._view(dataset)).relation), params).fetchone()
        except duckdb.IOException as e:
            raise Unavailable("the dataset's source cannot be read; the owner must restore it",
                              reason="DATASET_UNAVAILABLE", private=str(e)) from None
        except duckdb.Error as e:
            raise Internal("the model statistics could not be computed", reason="EXECUTION_FAILED",
                           private=str(e)) from None
        return tuple(row)

    def profile_counts(self, dataset: Dataset, build) -> tuple:
        """One row of whole-table counts (governance.quality builds the SQL with this renderer)."""
        r = SqlRenderer(dataset, self._view(dataset))
        try:
            row = self._cursor().execute(build(r)).fetchone()
        except duckdb.IOException as e:
            raise Unavailable("the dataset's source cannot be read; the owner must restore it",
                              reason="DATASET_UNAVAILABLE", private=str(e)) from None
        except duckdb.Error as e:
            raise Internal("the quality profile could not be computed", reason="EXECUTION_FAILED",
                           private=str(e)) from None
        return tuple(row)

    def consent_subjects(self, dataset: Dataset, *, validate: bool = True) -> list[str]:
        """The subject ids (as text) with a valid consent for the dataset's bound scope (query.consent)."""
        r = SqlRenderer(dataset, self._view(dataset))
        try:
            (invalid,) = self._cursor().execute(r.consent_check_sql()).fetchone() if validate else (0,)
            rows = [] if invalid else self._cursor().execute(r.snapshot_sql()).fetchall()
        except duckdb.Error as e:
            raise consent_unavailable(str(e)) from None
        if (refusal := invalid_source(invalid)) is not None:
            raise refusal
        return [str(row[0]) for row in rows]

    def row_count(self, dataset: Dataset) -> int:
        with self._lock:
            if dataset.name not in self._counts:
                try:
                    (n,) = self._cursor().execute(f"SELECT COUNT(*) FROM {self._view(dataset)}").fetchone()
                except duckdb.Error:
                    return 0
                self._counts[dataset.name] = int(n)
            return self._counts[dataset.name]
