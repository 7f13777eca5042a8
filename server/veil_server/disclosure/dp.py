"""Differential privacy for released aggregates (optional, per dataset).

Mechanism (per query, ε from policy = the dataset's ``dp.epsilon_per_query``):

- Neighbouring tables differ by adding or removing one row. Contribution bounding: every
  aggregated value is clamped to the column's declared range [lo, hi] by the engine, so one
  row moves a SUM by at most ``max(|lo|, |hi|)`` (in fixed-point units) and any COUNT by 1.
- Groups come from the declared public domain and are disjoint, so one row touches one group
  (parallel composition across groups). Within a group the query needs m statistics: the row
  count n (always: suppression is decided on it) and, per aggregated column, its non-null
  count c (for COUNT(col), AVG) and its clamped sum s (for SUM, AVG). Each gets ε/m
  (sequential composition), so the whole release is ε-DP.
- Noise: discrete Laplace on the fixed-point integers, scale = sensitivity · m / ε, sampled by
  OpenDP's ``make_laplace`` over an integer domain (exact integer sampling, no floating-point
  attack surface; no numpy or ``random``). Variance = 2·scale² asymptotically (exactly
  2·e^{-1/b}/(1-e^{-1/b})² for scale b).
- Every group of the domain is noised, including groups with no rows, so the released pattern
  does not depend on which groups exist.
- Derived values are post-processing: COUNT = noisy n or c; SUM = noisy s; AVG = noisy s /
  noisy c, clamped to [lo, hi]. VAR/STDDEV and encrypted-input sums are refused under DP.
- k-suppression runs on the *noisy* counts (post-processing, no extra ε); suppressing on true
  counts would make the suppression pattern itself a non-private release.
"""

from __future__ import annotations

from functools import lru_cache

from ..query.catalog import Dataset
from ..query.domain import group_domain
from ..query.engine import AggregateResult, ColumnStats, GroupStats
from ..errors import PolicyViolation
from ..query.plan import AggFunc, QueryPlan

DP_FUNCTIONS = (AggFunc.COUNT, AggFunc.SUM, AggFunc.AVG)


@lru_cache(maxsize=256)
def _laplace(scale: float):
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp.m.make_laplace(dp.atom_domain(T=int), dp.absolute_distance(T=int), scale=scale)


def discrete_laplace(value: int, scale: float) -> int:
    """``value`` plus discrete Laplace noise of the given scale (OpenDP's exact sampler)."""
    return int(_laplace(float(scale))(int(value)))


def check_supported(plan: QueryPlan, *, weighted: bool = False) -> None:
    bad = sorted({a.function.value for a in plan.aggregates if a.function not in DP_FUNCTIONS})
    if bad or weighted:
        what = ", ".join(bad) if bad else "encrypted-input sums"
        raise PolicyViolation(f"this dataset releases differentially private COUNT, SUM and AVG only; not {what}",
                              reason="DP_UNSUPPORTED_AGGREGATE")


def statistics(plan: QueryPlan) -> list[tuple[str, str]]:
    """The noisy statistics a query needs per group: ("rows", "") and ("count"|"sum", column)."""
    out: list[tuple[str, str]] = [("rows", "")]
    for a in plan.aggregates:
        if a.column is None:
            continue
        c = a.column.lower()
        if a.function in (AggFunc.COUNT, AggFunc.AVG) and ("count", c) not in out:
            out.append(("count", c))
        if a.function in (AggFunc.SUM, AggFunc.AVG) and ("sum", c) not in out:
            out.append(("sum", c))
    return out


def sensitivity(kind: str, column: str, ds: Dataset) -> int:
    if kind in ("rows", "count"):
        return 1
    col = ds.column(column)
    assert col is not None and col.value_range is not None
    lo, hi = (int((v * 10**col.scale).to_integral_value()) for v in col.value_range)
    return max(abs(lo), abs(hi), 1)


def noise_scales(plan: QueryPlan, ds: Dataset, epsilon: float) -> dict[tuple[str, str], float]:
    stats = statistics(plan)
    m = len(stats)
    return {s: sensitivity(s[0], s[1], ds) * m / epsilon for s in stats}


def noisy_result(plan: QueryPlan, ds: Dataset, true: AggregateResult, epsilon: float) -> AggregateResult:
    """The statistics release.build_result turns into cells, with noise added (see module doc)."""
    scales = noise_scales(plan, ds, epsilon)
    by_key = {g.keys: g for g in true.groups}
    cols = {a.column.lower(): a.column for a in plan.aggregates if a.column is not None}
    groups = []
    for keys in group_domain(plan, ds):
        g = by_key.get(keys) or GroupStats(keys, 0, {})
        rows = max(0, min(ds.max_rows, discrete_laplace(g.rows, scales[("rows", "")])))
        out: dict[str, ColumnStats] = {}
        for low, name in cols.items():
            st = _lookup(g.columns, low) or ColumnStats()
            count = (max(0, min(ds.max_rows, discrete_laplace(st.count, scales[("count", low)])))
                     if ("count", low) in scales else rows)
            total = 0
            if ("sum", low) in scales:
                col = ds.column(name)
                assert col is not None and col.value_range is not None
                lo, hi = (int((v * 10**col.scale).to_integral_value()) for v in col.value_range)
                total = discrete_laplace(st.total, scales[("sum", low)])
                # Post-processing: a sum of `count` values in [lo, hi] lies in [lo*count, hi*count];
                # this keeps SUM and AVG inside their declared cell bounds.
                n = max(count, 1)
                total = max(min(lo, 0) * ds.max_rows if count == 0 else lo * n,
                            min(total, max(hi, 0) * ds.max_rows if count == 0 else hi * n))
            out[name] = ColumnStats(count, total, 0)
        groups.append(GroupStats(keys, rows, out))
    return AggregateResult(groups, sum(g.rows for g in groups))


def _lookup(columns: dict[str, ColumnStats], low: str) -> ColumnStats | None:
    for k, v in columns.items():
        if k.lower() == low:
            return v
    return None
