"""A release that only repeats a remembered one (same filter, grouping, cells and data) skips
the differencing scan; anything that differs in one of those is audited."""

from __future__ import annotations

from decimal import Decimal

from veil_server.disclosure.differencing import Release
from veil_server.query.plan import AggFunc, Aggregate, Compare, GroupKey, OutputColumn, QueryPlan


def plan(where=Compare("age", ">=", 65), keys=(GroupKey("region", "region"),)):
    return QueryPlan("patients", keys, (Aggregate(AggFunc.COUNT, None, "n"),), where,
                     tuple(OutputColumn(k.alias, "group", i) for i, k in enumerate(keys))
                     + (OutputColumn("n", "aggregate", 0),))


def test_repeats():
    first = Release(plan(), [("North",), ("South",)], "cert-1")
    assert Release(plan(), [("North",)], "cert-1").repeats(first)  # fewer cells: nothing new
    assert not Release(plan(), [("North",), ("East",)], "cert-1").repeats(first)  # a new cell
    assert not Release(plan(where=Compare("age", ">=", 66)), [("North",)], "cert-1").repeats(first)
    assert not Release(plan(keys=(GroupKey("age", "a", Decimal(10)),)), [("North",)], "cert-1").repeats(first)
    assert not Release(plan(), [("North",)], "cert-2").repeats(first)  # the data changed version
    assert not Release(plan(), [("North",)], "").repeats(Release(plan(), [("North",)], ""))  # unknown data
