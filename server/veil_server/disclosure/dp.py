"""Differential privacy for released aggregates: the default on every path that releases numbers.

Neighbouring tables differ by adding or removing one row. Contribution bounding: every
aggregated value is clamped by the engine to the column's declared range [lo, hi], so one row
moves a statistic by a bounded, declared amount (its sensitivity, in fixed-point units):

| statistic | value per group                         | sensitivity     |
|-----------|-----------------------------------------|-----------------|
| ROWS      | rows                                    | 1               |
| COUNT     | non-null values of a column             | 1               |
| SUM       | sum of the values                       | max(|lo|, |hi|) |
| CSUM      | sum of (2x - lo - hi)                   | hi - lo         |
| CSQ       | sum of (2x - lo - hi)^2                 | (hi - lo)^2     |

(CSUM and CSQ are the sums about the range's centre, doubled so they stay integers: an average
or a variance computed from them needs noise for half the range, not for its largest value.)

Groups come from the declared public domain and are disjoint, so one row touches one group
(parallel composition across groups). Within a group a query needs m statistics; each gets ε/m
(sequential composition), so the whole release is ε-DP. An encrypted-input query adds its
sub-cells' statistics (rows and sums per group x category, or per value column) to the same m:
a row is in one sub-cell of each weighted sum, so its contribution is still bounded by m terms.
Every group (and sub-cell) of the domain is noised, including those with no rows, so the
released pattern does not depend on which groups exist.

Which statistics: COUNT(*) -> ROWS; COUNT(c) -> COUNT; SUM(c) -> SUM; AVG(c) -> COUNT and
CSUM (or SUM when SUM(c) is asked too and no variance: then the average is SUM / COUNT, at no
extra cost); VAR/STDDEV(c) -> COUNT, CSUM and CSQ (and AVG then uses that CSUM). ROWS is added only when no count is asked, to
apply the k rule. Post-processing (no extra ε): AVG = (lo + hi)/2 + CSUM / (2 COUNT);
VAR = (COUNT CSQ - CSUM^2) / (4 COUNT (COUNT - 1)); STDDEV = sqrt(VAR); every cell is then
clamped to the bounds its column's declared range allows (which can only bring it closer to the
truth). k-suppression runs on the noisy counts: suppressing on true counts would make the
suppression pattern itself a non-private release.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from decimal import Decimal
from math import isqrt
from typing import Sequence

from veil.accuracy import Noise, avg_bound, var_bound

from ..query.catalog import Column, Dataset
from ..query.domain import group_domain
from ..query.stats import AggregateResult, ColumnStats, GroupStats
from ..query.plan import AggFunc, Aggregate, QueryPlan
from .noise import mechanism, privatize

ROWS, COUNT, SUM, CSUM, CSQ = "ROWS", "COUNT", "SUM", "CSUM", "CSQ"
COUNTS = (ROWS, COUNT)
Stat = tuple[str, str]  # (kind, lower-case column; "" for ROWS)


def fixed_range(col: Column) -> tuple[int, int]:
    assert col.value_range is not None
    return _fixed_range(tuple(col.value_range), col.scale)


@functools.lru_cache(maxsize=1024)
def _fixed_range(value_range: tuple, scale: int) -> tuple[int, int]:
    # Memoised (issue 22): a pure function of the declared range and scale, asked twice per cell
    # of a DP release (its true value and its clamp); Decimal arithmetic 20,000 times for a
    # 10,000-cell result. Costs nothing in guarantees.
    return tuple(int((v * 10**scale).to_integral_value()) for v in value_range)  # type: ignore[return-value]


def sensitivity(kind: str, col: Column | None) -> int:
    if kind in COUNTS:
        return 1
    assert col is not None
    lo, hi = fixed_range(col)
    if kind == SUM:
        return max(abs(lo), abs(hi), 1)
    if kind == CSUM:
        return max(hi - lo, 1)
    return max((hi - lo) ** 2, 1)


def statistics(plan: QueryPlan) -> list[Stat]:
    """The noisy statistics a query's cells are computed from (see the table above)."""
    funcs: dict[str, set[AggFunc]] = {}
    for a in plan.aggregates:
        if a.column is not None:
            funcs.setdefault(a.column.lower(), set()).add(a.function)
    out: list[Stat] = []
    if any(a.column is None for a in plan.aggregates):
        out.append((ROWS, ""))
    for c, fs in funcs.items():
        spread = fs & {AggFunc.VAR_SAMP, AggFunc.STDDEV_SAMP}
        if fs & {AggFunc.COUNT, AggFunc.AVG} or spread:
            out.append((COUNT, c))
        if AggFunc.SUM in fs:
            out.append((SUM, c))
        if spread or (AggFunc.AVG in fs and AggFunc.SUM not in fs):
            out.append((CSUM, c))  # a variance needs its own centred sum: errors independent of CSQ's
        if spread:
            out.append((CSQ, c))
    if not any(k in COUNTS for k, _ in out):
        out.insert(0, (ROWS, ""))  # the k rule needs a count
    return out


def true_value(kind: str, col: Column | None, rows: int, st: ColumnStats | None) -> int:
    if kind == ROWS:
        return rows
    st = st or ColumnStats()
    if kind == COUNT:
        return st.count
    if kind == SUM:
        return st.total
    assert col is not None
    lo, hi = fixed_range(col)
    if kind == CSUM:
        return 2 * st.total - (lo + hi) * st.count
    return 4 * st.squares - 4 * (lo + hi) * st.total + (lo + hi) ** 2 * st.count


@dataclass
class NoisyStatistics:
    """Noisy statistics per group of a domain, with the noise each was drawn with."""

    noises: dict[Stat, Noise]
    values: dict[tuple[str, ...], dict[Stat, int]] = field(default_factory=dict)

    def count(self, keys: tuple[str, ...], column: str | None = None) -> int:
        v = self.values[keys]
        if column is not None and (COUNT, column.lower()) in v:
            return v[(COUNT, column.lower())]
        if (ROWS, "") in v:
            return v[(ROWS, "")]
        return min(x for (k, _), x in v.items() if k == COUNT)

    def released(self, keys: tuple[str, ...], k: int) -> bool:
        """The k rule on the noisy counts: every count statistic of the group reaches k."""
        return all(x >= k for (kind, _), x in self.values[keys].items() if kind in COUNTS)


def add_noise(domain: Sequence[tuple[str, ...]], stats: list[Stat], ds: Dataset, true: AggregateResult,
              epsilon_each: float, *, terms: int = 1, sample: bool = True) -> NoisyStatistics:
    """Every statistic of every group of ``domain`` plus its own noise at ``epsilon_each``
    (``terms`` only records how many members' draws a combined figure will carry; with
    ``sample=False`` only the noises are worked out: what ExplainQuery shows)."""
    by_key = {g.keys: g for g in true.groups}
    out = NoisyStatistics({})
    for stat in stats:
        kind, c = stat
        col = ds.column(c) if c else None
        noise = mechanism(sensitivity(kind, col), epsilon_each)
        out.noises[stat] = noise.with_terms(terms)
        if not sample:
            continue
        values = []
        for keys in domain:
            g = by_key.get(keys)
            st = _lookup(g.columns, c) if g is not None else None
            values.append(true_value(kind, col, g.rows if g is not None else 0, st))
        for keys, v in zip(domain, privatize(values, noise)):
            out.values.setdefault(keys, {})[stat] = _clamp_statistic(kind, col, ds.max_rows, v)
    return out


def _clamp_statistic(kind: str, col: Column | None, rows: int, v: int) -> int:
    """Into the range the statistic can take over at most ``rows`` rows (post-processing)."""
    if kind in COUNTS:
        return max(0, min(rows, v))
    assert col is not None
    lo, hi = fixed_range(col)
    if kind == SUM:
        return max(min(0, lo * rows), min(max(0, hi * rows), v))
    w = hi - lo
    if kind == CSUM:
        return max(-w * rows, min(w * rows, v))
    return max(0, min(w * w * rows, v))


@dataclass
class DpRelease:
    """A query's noisy statistics and how each output column is derived from them."""

    plan: QueryPlan
    dataset: Dataset
    epsilon: float
    m: int  # statistics per row (this query's plus its encrypted-input sub-cells')
    noisy: NoisyStatistics

    def released(self, keys: tuple[str, ...], k: int) -> bool:
        return self.noisy.released(keys, k)

    def cell(self, agg: Aggregate, keys: tuple[str, ...], spec_scale: int, low: int, high: int) -> int:
        """The released cell of ``agg`` for a group, in its cell scale, inside [low, high]."""
        v = self.noisy.values[keys]
        if agg.function is AggFunc.COUNT:
            value = self.noisy.count(keys, agg.column)
        else:
            assert agg.column is not None
            c = agg.column.lower()
            col = self.dataset.column(c)
            assert col is not None
            lo, hi = fixed_range(col)
            if agg.function is AggFunc.SUM:
                value = v[(SUM, c)]
            else:
                n = max(self.noisy.count(keys, c), 1)
                s2 = v[(CSUM, c)] if (CSUM, c) in v else 2 * v[(SUM, c)] - (lo + hi) * n
                if agg.function is AggFunc.AVG:  # (lo + hi) / 2 + s2 / (2 n), at the cell scale
                    value = _round(((lo + hi) * n + s2) * 10 ** (spec_scale - col.scale), 2 * n)
                else:
                    num = n * v[(CSQ, c)] - s2 * s2  # 4 n (n - 1) VAR, in squared column units
                    den = 4 * n * max(n - 1, 1)
                    num = max(num, 0)
                    if agg.function is AggFunc.VAR_SAMP:
                        value = _round(num * 10 ** (spec_scale - 2 * col.scale), den)
                    else:
                        value = isqrt(num * 10 ** (2 * spec_scale - 2 * col.scale) // den)
        return max(low, min(high, value))

    def column_noise(self, agg: Aggregate, k: int) -> dict:
        """What a result column says of its noise (value units; see veil.accuracy)."""
        info: dict = {"mechanism": "discrete_laplace", "epsilon": self.epsilon, "terms": 1,
                      "count_scale": 0.0, "sum_scale": 0.0, "squares_scale": 0.0, "centre": 0.0, "spread": 0.0}
        noises = self.noisy.noises
        if agg.function is AggFunc.COUNT:
            n = noises.get((COUNT, agg.column.lower())) if agg.column else None
            n = n or noises[(ROWS, "")]
            info |= {"count_scale": n.scale * n.unit, "terms": n.terms, "std": n.std(), "error_bound_95": n.bound()}
            return info
        assert agg.column is not None
        c = agg.column.lower()
        col = self.dataset.column(c)
        assert col is not None and col.value_range is not None
        unit = Decimal(10) ** -col.scale
        lo, hi = col.value_range
        to_value = float(unit)
        if agg.function is AggFunc.SUM:
            n = noises[(SUM, c)]
            info |= {"sum_scale": n.scale * n.unit * to_value, "terms": n.terms, "std": n.std() * to_value,
                     "error_bound_95": n.bound() * to_value}
            return info
        count = noises[(COUNT, c)]
        if (CSUM, c) in noises:  # doubled units about the centre
            total = _scaled(noises[(CSUM, c)], 0.5 * to_value)
            magnitude = float((hi - lo) / 2)
            info["centred"] = True
        else:
            total = _scaled(noises[(SUM, c)], to_value)
            magnitude = float(max(abs(lo), abs(hi)))
        info |= {"count_scale": count.scale * count.unit, "sum_scale": total.scale * total.unit,
                 "centre": float((lo + hi) / 2), "spread": float(hi - lo), "terms": count.terms}
        if agg.function is AggFunc.AVG:
            b = avg_bound(k, count=count, total=total, magnitude=magnitude)
            return info | {"std": b / 1.96, "error_bound_95": b}
        sq = _scaled(noises[(CSQ, c)], 0.25 * to_value * to_value)
        info["squares_scale"] = sq.scale * sq.unit
        b = var_bound(k, count=count, total=total, squares=sq, spread=2 * magnitude)
        if agg.function is AggFunc.STDDEV_SAMP:
            b = b ** 0.5
        return info | {"std": b / 1.96, "error_bound_95": b}


def _scaled(noise: Noise, factor: float) -> Noise:
    """The same noise expressed in other units (a continuous rescaling; for accuracy only)."""
    return Noise(noise.scale * noise.unit * factor, 1, noise.terms) if factor else noise


def noisy_release(plan: QueryPlan, ds: Dataset, true: AggregateResult, epsilon: float, *,
                  extra_statistics: int = 0, sample: bool = True) -> DpRelease:
    """The query's statistics with noise; ``extra_statistics`` are the encrypted-input sub-cells'
    statistics that share the query's ε (see :func:`weighted_statistics`)."""
    stats = statistics(plan)
    m = len(stats) + extra_statistics
    noisy = add_noise(group_domain(plan, ds), stats, ds, true, epsilon / m, sample=sample)
    return DpRelease(plan, ds, epsilon, m, noisy)


def weighted_statistics(spec) -> list[Stat]:
    """An encrypted-input sum's sub-cell statistics: the rows of each sub-cell (k rule) and the sum
    of each value column (the weights multiply these)."""
    return [(ROWS, "")] + [(SUM, c.lower()) for c in spec.value_columns]


def noisy_weighted(spec, plan: QueryPlan, ds: Dataset, true: AggregateResult, epsilon_each: float,
                   domain: Sequence[tuple[str, ...]]) -> AggregateResult:
    """Noisy sub-cell statistics for ``encrypted_input.cells_for_groups``, over the whole
    (group x category) domain: counts are the noisy rows, totals the noisy sums."""
    noisy = add_noise(domain, weighted_statistics(spec), ds, true, epsilon_each)
    groups = []
    for keys in domain:
        v = noisy.values[keys]
        rows = v[(ROWS, "")]
        groups.append(GroupStats(keys, rows, {c: ColumnStats(rows, v[(SUM, c.lower())], 0)
                                              for c in spec.value_columns}))
    return AggregateResult(groups, sum(g.rows for g in groups))


def _lookup(columns: dict[str, ColumnStats], key: str) -> ColumnStats | None:
    if key in columns:
        return columns[key]
    for k, v in columns.items():
        if k.lower() == key:
            return v
    return None


def _round(num: int, den: int) -> int:
    q, r = divmod(num, den)
    if 2 * r > den or (2 * r == den and q % 2):
        q += 1
    return q
