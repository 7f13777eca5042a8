"""The quality profile of a dataset version, computed when it is submitted for review.

What a buyer sees before asking for anything (数据质量评测): how many rows, and per visible
column the share of missing values, of values outside the declared range, of categories outside
the declared domain, and a band of distinct values; and, when the owner names a
``freshness_column`` (a date or timestamp column of the source), the share of rows dated within
the last 30 and 365 days. Reviewers see it in the listing queue, analysts in the catalog, and it
is signed into the version's certificate, so versions can be compared.

**What it reveals, and to whom.** Only counts over the whole table, released once per version:

- DP datasets: every count carries discrete Laplace noise. One row changes each count by at most
  one, so the L1 sensitivity of the m counts together is m, and each draws noise of scale
  m / ``PROFILE_EPSILON``; the profile states that scale. The ε is charged to the dataset's
  budget (beyond it if need be), like the certificate's noisy row count. Shares are computed from
  the noisy counts and clamped to [0, 1]; distinct counts are released only as bands.
- Exact datasets: the counts are exact (the owner chose exact release), but a count between 1 and
  k - 1 is shown only as "below k rows" (``"<0.0012"``: less than k / rows), so no share singles
  out fewer than k rows.
- Hidden columns are not profiled. The freshness column is read only here, never by a query.
- A consent dataset is profiled over all its rows (the owner's listing check, not a query).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable

from ..query.catalog import Column, Dataset

PROFILE_EPSILON = 0.5
FRESH_DAYS = (30, 365)
SHARE_DIGITS = 4


@dataclass(frozen=True)
class Measure:
    """One count of the profile: ``key`` ("rows", "<column>.missing", ...) and its SQL."""

    key: str
    sql: str


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def measures(ds: Dataset, r: Any, freshness_column: str = "", now: datetime | None = None) -> list[Measure]:
    """The counts, as SQL aggregates over ``r.relation`` (``r`` is the engine's renderer: its
    identifiers, NaN test and fixed-point conversion are the ones queries use)."""
    out = [Measure("rows", "COUNT(*)")]
    for col in ds.visible_columns():
        out += _column_measures(col, r)
    if freshness_column:
        now = now or datetime.now(timezone.utc)
        ident = r.ident(freshness_column)
        for days in FRESH_DAYS:
            since = (now - timedelta(days=days)).strftime("%Y-%m-%d %H:%M:%S")
            out.append(Measure(f"fresh.{days}d", f"SUM(CASE WHEN CAST({ident} AS TIMESTAMP) >= "
                                                 f"CAST({_quote(since)} AS TIMESTAMP) THEN 1 ELSE 0 END)"))
    return out


def _column_measures(col: Column, r: Any) -> list[Measure]:
    ident = r.ident(col.name)
    key = col.name.lower()
    if col.numeric:
        d = r.scaled(col)
        missing = f"SUM(CASE WHEN {ident} IS NULL THEN 1 WHEN {r.is_nan(d)} THEN 1 ELSE 0 END)"
    else:
        missing = f"SUM(CASE WHEN {ident} IS NULL THEN 1 ELSE 0 END)"
    out = [Measure(f"{key}.missing", missing)]
    if col.numeric and col.value_range is not None:
        low, high = r.bounds(col)
        d = r.scaled(col)
        # NaN sorts above every number in DuckDB and PostgreSQL: it is missing, never out of range.
        out.append(Measure(f"{key}.out_of_range", f"SUM(CASE WHEN {ident} IS NULL THEN 0 WHEN {r.is_nan(d)} THEN 0 "
                                                  f"WHEN {d} < {low} OR {d} > {high} THEN 1 ELSE 0 END)"))
    if col.categories:
        cats = ", ".join(_quote(str(c)) for c in col.categories)
        out.append(Measure(f"{key}.out_of_domain", f"SUM(CASE WHEN {ident} IS NULL THEN 0 WHEN "
                                                   f"CAST({ident} AS {r.text_type}) NOT IN ({cats}) THEN 1 ELSE 0 END)"))
    out.append(Measure(f"{key}.distinct", f"COUNT(DISTINCT {ident})"))
    return out


def distinct_band(n: int) -> str:
    """1, 2-9, 10-99, 100-999, ... (0 for an empty or all-missing column)."""
    if n <= 0:
        return "0"
    if n == 1:
        return "1"
    low = 10 ** (len(str(n)) - 1)
    return f"{max(2, low)}-{low * 10 - 1}"


def _share(count: int, rows: int, *, small: int = 0) -> str:
    """``count / rows`` as decimal text; ``small`` > 0 (exact mode's k): a count in [1, small)
    is shown only as below small / rows."""
    if rows <= 0:
        return "0"
    if 0 < count < small:
        return "<" + _fmt(Decimal(small) / rows)
    return _fmt(Decimal(min(max(count, 0), rows)) / rows)


def _fmt(x: Decimal) -> str:
    return str(x.quantize(Decimal(1).scaleb(-SHARE_DIGITS)))


def profile(ds: Dataset, counts: dict[str, int], *, noise_scale: str = "", epsilon: float = 0.0,
            freshness_column: str = "") -> dict[str, Any]:
    """The profile as the certificate states it (strings and integers only: canonical JSON)."""
    dp = noised(ds)
    small = 0 if dp else ds.min_group_size
    rows = max(counts["rows"], 0)
    columns = {}
    for col in ds.visible_columns():
        key = col.name.lower()
        entry = {"missing": _share(counts[f"{key}.missing"], rows, small=small),
                 "distinct": distinct_band(counts[f"{key}.distinct"])}
        if f"{key}.out_of_range" in counts:
            entry["out_of_range"] = _share(counts[f"{key}.out_of_range"], rows, small=small)
        if f"{key}.out_of_domain" in counts:
            entry["out_of_domain"] = _share(counts[f"{key}.out_of_domain"], rows, small=small)
        columns[col.name] = entry
    out: dict[str, Any] = {"rows": rows, "columns": columns, "mode": "dp" if dp else "exact"}
    if dp:
        out["epsilon"] = repr(epsilon)
        out["noise_scale"] = noise_scale
    if freshness_column:
        out["freshness"] = {"column": freshness_column,
                            **{f"within_{d}d": _share(counts[f"fresh.{d}d"], rows, small=small) for d in FRESH_DAYS}}
    return out


def noised(ds: Dataset) -> bool:
    """Whether the version's profile and size are noised: DP datasets, and consent datasets in
    exact mode too. A consent dataset's listing counts every row, those of people without consent
    included, and its exact figures would difference against later exact releases over the
    consenting rows (one withdrawal: that person's missing values, exactly)."""
    return ds.disclosure.dp or ds.needs_consent


def compute(engine: Any, ds: Dataset, *, freshness_column: str = "",
            charge: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Read the counts through ``engine`` (all rows: the caller binds a consent dataset's
    listing scope), add noise under DP (``charge(ε)`` debits the dataset's budget first), and
    return the profile."""
    from ..disclosure.noise import mechanism, privatize

    ms: list[Measure] = []
    values = engine.profile_counts(ds, lambda r: _select(ms, ds, r, freshness_column))
    counts = {m.key: int(v or 0) for m, v in zip(ms, values)}
    if not noised(ds):
        return profile(ds, counts, freshness_column=freshness_column)
    if charge is not None:
        charge(PROFILE_EPSILON)
    noise = mechanism(len(ms), PROFILE_EPSILON)
    noisy = privatize([counts[m.key] for m in ms], noise)
    counts = {m.key: max(0, v) for m, v in zip(ms, noisy)}
    return profile(ds, counts, noise_scale=f"{noise.scale * noise.unit:.6g}", epsilon=PROFILE_EPSILON,
                   freshness_column=freshness_column)


def _select(ms: list[Measure], ds: Dataset, r: Any, freshness_column: str) -> str:
    ms[:] = measures(ds, r, freshness_column)
    return f"SELECT {', '.join(m.sql for m in ms)} FROM {r.relation}"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS dataset_quality (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    profile TEXT NOT NULL,
    PRIMARY KEY (name, version)
)
"""


class Profiles:
    """Each dataset version's profile, stored when first computed (in the state database)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        store.ensure_schema(_SCHEMA)

    def get(self, name: str, version: int) -> dict[str, Any] | None:
        with self.store.reading() as db:
            row = db.execute("SELECT profile FROM dataset_quality WHERE lower(name)=lower(?) AND version=?",
                             (name, version)).fetchone()
        return json.loads(row[0]) if row is not None else None

    def put(self, name: str, version: int, profile: dict[str, Any]) -> None:
        with self.store.joined_tx() as db:
            if db.execute("SELECT 1 FROM dataset_quality WHERE lower(name)=lower(?) AND version=?",
                          (name, version)).fetchone() is None:
                db.execute("INSERT INTO dataset_quality (name, version, profile) VALUES (?,?,?)",
                           (name, version, json.dumps(profile, sort_keys=True)))


def quality_proto(profile: dict[str, Any]) -> Any:
    """The profile as ``veil.v1.QualityProfile`` (a message is data: built here, sent by api/)."""
    from veil.v1 import catalog_pb2

    out = catalog_pb2.QualityProfile(rows=int(profile.get("rows", 0)), mode=str(profile.get("mode", "")),
                                     epsilon=str(profile.get("epsilon", "")),
                                     noise_scale=str(profile.get("noise_scale", "")))
    for name, entry in profile.get("columns", {}).items():
        out.columns.add(column=name, missing=entry.get("missing", ""), out_of_range=entry.get("out_of_range", ""),
                        out_of_domain=entry.get("out_of_domain", ""), distinct=entry.get("distinct", ""))
    fresh = profile.get("freshness")
    if fresh:
        out.freshness_column = fresh["column"]
        out.within_30d, out.within_365d = fresh.get("within_30d", ""), fresh.get("within_365d", "")
    return out
