"""(n, p)-dominance (exact mode): a population whose n largest contributors make up more than
p % of a column's total is not released, because each of them could estimate the others'
contribution (and a published sum dominated by one firm is that firm's figure).

Configured per aggregate column (``dominance = { n = 2, percent = 85 }``). It covers every
aggregate that reveals the column's magnitudes -- SUM, AVG, VAR_SAMP and STDDEV_SAMP (a variance
over a dominated cell is dominated by the same contributors) -- and, through the history's
secondary check (:mod:`.history`), every population that released totals would let an analyst
compute by subtraction. With DP the rule is not needed: the noise, calibrated to the declared
range, already bounds what any one contributor shows. Magnitudes are the clamped values'
absolute values; the totals are computed by whichever engine holds the data.
"""

from __future__ import annotations

from decimal import Decimal

from ..query.catalog import Dataset
from ..query.plan import AggFunc, Aggregate, And, Not, OutputColumn, QueryPlan
from .lattice import Box, Lattice

REVEALING = (AggFunc.SUM, AggFunc.AVG, AggFunc.VAR_SAMP, AggFunc.STDDEV_SAMP)


def ruled_columns(plan: QueryPlan, ds: Dataset) -> list[str]:
    """The plan's aggregated columns that carry a dominance rule and a revealing aggregate."""
    out: list[str] = []
    for a in plan.aggregates:
        col = ds.column(a.column) if a.column else None
        if col is not None and col.dominance is not None and a.function in REVEALING and col.name not in out:
            out.append(col.name)
    return out


def _dominated(total: int, top: int, percent: float) -> bool:
    return total > 0 and top * 100 > Decimal(str(percent)) * total


def dominated_groups(engine, ds: Dataset, plan: QueryPlan) -> set[tuple[str, ...]]:
    """Group keys of the cells the dominance rule suppresses (any ruled column)."""
    out: set[tuple[str, ...]] = set()
    for name in ruled_columns(plan, ds):
        rule = ds.column(name).dominance  # type: ignore[union-attr]
        for keys, (total, top) in engine.dominance(plan, ds, name, rule.n).items():
            if _dominated(total, top, rule.percent):
                out.add(keys)
    return out


def remainder_check(engine, ds: Dataset, plan: QueryPlan, lattice: Lattice, extra_columns=()):
    """``dominated(box, minus, column)`` for the history's secondary check, or None if no rule
    applies. ``extra_columns``: value columns of encrypted-input sums (they reveal magnitudes
    too)."""
    ruled = {c.lower(): c for c in ruled_columns(plan, ds)}
    for name in extra_columns:
        col = ds.column(name)
        if col is not None and col.dominance is not None:
            ruled[col.name.lower()] = col.name
    if not ruled:
        return None

    def dominated(box: Box, minus: list[Box], column: str) -> bool:
        name = ruled.get(column.lower())
        if name is None:
            return False
        parts = [f for f in [box.as_filter(lattice)] if f is not None]
        for m in minus:
            f = m.as_filter(lattice)
            if f is None:
                return False  # minus the whole table: nothing left
            parts.append(Not(f))
        where = None if not parts else parts[0] if len(parts) == 1 else And(tuple(parts))
        probe = QueryPlan(ds.name, (), (Aggregate(AggFunc.COUNT, None, "n"),), where,
                          (OutputColumn("n", "aggregate", 0),))
        rule = ds.column(name).dominance  # type: ignore[union-attr]
        for total, top in engine.dominance(probe, ds, name, rule.n).values():
            if _dominated(total, top, rule.percent):
                return True
        return False

    return dominated
