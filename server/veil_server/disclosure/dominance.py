"""(n, p)-dominance for sums: a cell whose n largest contributors make up more than p % of its
total is suppressed, because each of them could estimate the others' contribution (and a
published SUM dominated by one firm is that firm's figure). Configured per aggregate column
(``dominance = { n = 2, percent = 85 }``); applies to SUM and AVG cells of that column on
datasets without DP (with DP, noise calibrated to the clamped range already bounds what any
one contributor shows). Magnitudes are the clamped values' absolute values.
"""

from __future__ import annotations

from decimal import Decimal

from ..query.catalog import Dataset
from ..query.engine import DuckDBEngine, SqlRenderer, key_string
from ..query.plan import AggFunc, QueryPlan
from .settings import Dominance


def dominated_groups(engine: DuckDBEngine, ds: Dataset, plan: QueryPlan,
                     rules: dict[str, Dominance]) -> set[tuple[str, ...]]:
    """Group keys of the cells the dominance rule suppresses."""
    cols = []
    for a in plan.aggregates:
        if a.column and a.function in (AggFunc.SUM, AggFunc.AVG) and a.column.lower() in rules \
                and a.column not in cols:
            cols.append(a.column)
    out: set[tuple[str, ...]] = set()
    for name in cols:
        rule = rules[name.lower()]
        col = ds.column(name)
        assert col is not None
        r = SqlRenderer(ds, engine._view(ds))
        keys = [f"{r.group_expr(g.column, g.bin_width)} AS k{i}" for i, g in enumerate(plan.group_keys)]
        where = f" WHERE {r.filter(plan.where)}" if plan.where is not None else ""
        knames = [f"k{i}" for i in range(len(plan.group_keys))]
        part = f"PARTITION BY {', '.join(knames)} " if knames else ""
        sql = (f"SELECT {''.join(k + ', ' for k in knames)}SUM(ABS(v)), "
               f"SUM(CASE WHEN rn <= {int(rule.n)} THEN ABS(v) ELSE 0 END) FROM ("
               f"SELECT *, ROW_NUMBER() OVER ({part}ORDER BY ABS(v) DESC) AS rn FROM ("
               f"SELECT {''.join(k + ', ' for k in keys)}{r.clamped(col)} AS v FROM {engine._view(ds)}{where}) AS a "
               f"WHERE v IS NOT NULL) AS b" + (f" GROUP BY {', '.join(knames)}" if knames else ""))
        for row in engine._cursor().execute(sql, r.params).fetchall():
            total, top = row[-2], row[-1]
            if total and top * 100 > Decimal(str(rule.percent)) * total:
                raw = row[: len(knames)]
                if any(v is None for v in raw):
                    continue
                out.add(tuple(key_string(v) if g.bin_width is None else key_string(Decimal(int(v)) * g.bin_width)
                              for g, v in zip(plan.group_keys, raw)))
    return out
