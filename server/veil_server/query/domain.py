"""The public group domain of a plan: every group a result lists, known before any data is read.

Group keys take their values from declared domains only (categories, or bins over a declared
range), so the set of groups in a result, and its size, never depends on the data.
"""

from __future__ import annotations

import itertools

from .catalog import Dataset
from .engine import key_string
from .plan import QueryPlan


def group_domain(plan: QueryPlan, dataset: Dataset) -> list[tuple[str, ...]]:
    """Every group the result will list, in declared order."""
    axes = []
    for g in plan.group_keys:
        col = dataset.column(g.column)
        assert col is not None
        if g.bin_width is None:
            axes.append([key_string(c) for c in col.categories])
        else:
            axes.append([key_string(b) for b in col.bin_domain(g.bin_width)])
    return [tuple(k) for k in itertools.product(*axes)]


def expected_groups(plan: QueryPlan, dataset: Dataset) -> int:
    n = 1
    for g in plan.group_keys:
        col = dataset.column(g.column)
        assert col is not None
        n *= len(col.categories) if g.bin_width is None else len(col.bin_domain(g.bin_width))
    return n
