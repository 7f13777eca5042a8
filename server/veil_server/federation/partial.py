"""A member's partial aggregate: per group of the public domain, its sufficient statistics.

The vector is laid out from the plan and the public schema only, never from the data: for every
group of ``domain.group_domain`` (declared order) and every statistic the plan needs --
ROWS, then per aggregated column COUNT, SUM and (for VAR/STDDEV) SUM_OF_SQUARES -- one exact
integer in the column's fixed-point scale, as ``DuckDBEngine.aggregate`` returns them after
clamping to the declared range. A group with no rows is a row of zeros, so the vector's shape
says nothing about the data.

Bounds per statistic (for one member, R = the largest declared ``max_rows`` of the members):
ROWS and COUNT in [0, R]; SUM in [min(0, lo*R), max(0, hi*R)]; SUM_OF_SQUARES in
[0, max(lo^2, hi^2) * R]. Totals over N members stay within N times these, which sizes Paillier
slots and the share ring before any value exists.

The k rule on combined counts (``released_groups``): a group is released only if its combined
ROWS and every combined COUNT are >= k, as ``release.build_result`` does on one node.

Differential privacy (:func:`noisy_matrix`). Every member's dataset must release with DP (an
exact-mode member refuses to take part: combining members' exact audits would tell each member
which of its small counts are small). Each member adds its *own, full* discrete Laplace draw to
every statistic of every group before anything leaves it: sensitivity 1 for ROWS and COUNT,
max(|lo|, |hi|) for SUM and max(lo^2, hi^2) for SUM_OF_SQUARES (fixed point), each at ε/m for the
layout's m statistics, so a member's noisy partial is ε-DP for its rows on its own. Then:

- no party -- coordinator, another member, a compute party or the analyst, or any coalition of
  them -- ever sees a noise-free aggregate: what it can compute is a post-processing of every
  member's ε-DP partial, so a row of an honest member stays ε-DP whoever colludes (the sum carries
  at least that member's draw, unknown to the others);
- a member that drops out fails the query (nothing is released: see coordinator), so the noise
  of a release is never short of a draw;
- the price of needing no trusted party and surviving any collusion is accuracy: the total
  carries n draws, so its variance is n times one node's (the SDK is told: each column's
  noise has ``terms`` = n);
- each member charges ε to its own dataset's budgets (analyst and dataset) when its noisy
  contribution leaves it; the noisy combined counts members learn for the k rule are
  post-processing too.

A noisy statistic is clamped to the statistic's declared bounds for one member (post-processing,
and what keeps slots and share rings sized from the declarations alone).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from ..query.catalog import Dataset
from ..query.domain import group_domain
from ..query.engine import AggregateResult, aggregated_columns, needs_squares
from ..query.plan import QueryPlan
from ..disclosure.noise import Noise, mechanism, privatize

ROWS, COUNT, SUM, SQUARES = "ROWS", "COUNT", "SUM", "SUM_OF_SQUARES"
COUNT_KINDS = (ROWS, COUNT)


@dataclass(frozen=True)
class Statistic:
    kind: str
    column: str  # "" for ROWS
    scale: int  # the column's fixed-point scale
    low: int
    high: int
    sensitivity: int = 1  # how far one row moves it (fixed point)

    @property
    def is_count(self) -> bool:
        return self.kind in COUNT_KINDS


@dataclass(frozen=True)
class VectorLayout:
    """Which statistics, in which order, over how many groups."""

    statistics: tuple[Statistic, ...]
    groups: int

    @property
    def count_indices(self) -> list[int]:
        return [i for i, s in enumerate(self.statistics) if s.is_count]

    def max_abs(self, terms: int) -> int:
        """The largest |total| of ``terms`` members' values of any statistic."""
        return terms * max(max(abs(s.low), abs(s.high)) for s in self.statistics)


def layout_for(plan: QueryPlan, dataset: Dataset, max_rows: int) -> VectorLayout:
    """Count statistics first (ROWS, then COUNT per column), then SUM and SUM_OF_SQUARES: the
    count section, which is combined and checked against k before anything else, is a prefix."""
    counts = [Statistic(ROWS, "", 0, 0, max_rows)]
    values = []
    for name in aggregated_columns(plan):
        col = dataset.column(name)
        assert col is not None and col.value_range is not None
        s = col.scale
        lo, hi = (int((v * 10**s).to_integral_value()) for v in col.value_range)
        counts.append(Statistic(COUNT, name, s, 0, max_rows))
        values.append(Statistic(SUM, name, s, min(0, lo * max_rows), max(0, hi * max_rows), max(abs(lo), abs(hi), 1)))
        if needs_squares(plan, name):
            values.append(Statistic(SQUARES, name, s, 0, max(lo * lo, hi * hi) * max_rows, max(lo * lo, hi * hi, 1)))
    return VectorLayout(tuple(counts + values), len(group_domain(plan, dataset)))


def partial_matrix(plan: QueryPlan, dataset: Dataset, layout: VectorLayout, stats: AggregateResult) -> list[list[int]]:
    """One list per statistic, one entry per group of the domain (zeros for absent groups)."""
    by_key = {g.keys: g for g in stats.groups}
    out: list[list[int]] = [[] for _ in layout.statistics]
    for keys in group_domain(plan, dataset):
        g = by_key.get(keys)
        for i, st in enumerate(layout.statistics):
            if g is None:
                out[i].append(0)
            elif st.kind == ROWS:
                out[i].append(g.rows)
            else:
                cs = g.columns[st.column]
                out[i].append({COUNT: cs.count, SUM: cs.total, SQUARES: cs.squares}[st.kind])
    return out


def noises(layout: VectorLayout, epsilon: float, members: int = 1) -> list[Noise]:
    """The discrete Laplace noise of each statistic of a member's partial at ``epsilon``
    (``members``: draws each combined figure carries)."""
    m = len(layout.statistics)
    return [mechanism(st.sensitivity, epsilon / m).with_terms(members) for st in layout.statistics]


def noisy_matrix(layout: VectorLayout, matrix: list[list[int]], epsilon: float) -> list[list[int]]:
    """This member's partial with its own noise on every statistic of every group (see above)."""
    out = []
    for st, noise, row in zip(layout.statistics, noises(layout, epsilon), matrix):
        out.append([max(st.low, min(st.high, v)) for v in privatize(row, noise)])
    return out


def flatten(matrix: list[list[int]]) -> list[int]:
    """Statistic-major: all groups of statistic 0, then of statistic 1, ..."""
    return [v for row in matrix for v in row]


def count_slice(layout: VectorLayout) -> slice:
    """The count section of a flattened vector: its leading statistics (see ``layout_for``)."""
    return slice(0, len(layout.count_indices) * layout.groups)


def released_groups(layout: VectorLayout, combined_counts: list[int], k: int) -> list[bool]:
    """Statistic-major combined counts -> which groups every count of reaches k."""
    width, g = len(layout.count_indices), layout.groups
    if len(combined_counts) != width * g:
        raise ValueError("combined counts do not match the layout")
    return [all(combined_counts[i * g + j] >= k for i in range(width)) for j in range(g)]


def bitmap(flags: list[bool]) -> bytes:
    out = bytearray((len(flags) + 7) // 8)
    for i, f in enumerate(flags):
        if f:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def from_bitmap(data: bytes, groups: int) -> list[bool]:
    if len(data) != (groups + 7) // 8:
        raise ValueError("bitmap size does not match the group count")
    return [bool(data[g // 8] >> (g % 8) & 1) for g in range(groups)]


def part_digest(plan: QueryPlan, dataset: Dataset) -> str:
    """What members must agree on for the columns the plan uses: types, public domains,
    ranges, scales and bin widths (not controls, purposes or k: those are each member's own)."""
    cols = []
    for name in plan.columns_touched():
        c = dataset.column(name)
        assert c is not None
        cols.append({"name": c.name.lower(), "type": c.type.value, "categories": [str(x) for x in c.categories],
                     "range": [str(v.normalize()) for v in c.value_range] if c.value_range else None,
                     "scale": c.scale, "bin_width": str(c.bin_width.normalize()) if c.bin_width else None})
    text = json.dumps({"plan": plan.canonical_sql(), "columns": cols}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
