"""Exact mode, part 1: populations as boxes of a lattice of declared domains.

Every population an exact-mode release describes (a query's WHERE and one group's keys) must be
a *box*: for each column that has a declared public domain (categories, or bins of its declared
``bin_width`` over its declared range), a set of that domain's pieces; the population is the
rows whose value of every such column lies in the column's set. Whether a query's populations
are boxes is decided from the query alone:

- a filter may use only columns with a declared domain; on a categorical column ``=``, ``<>``,
  ``IN``, ``NOT IN`` (values outside the domain select nothing); on a binned column ``>=`` and
  ``<`` at a bin edge (a multiple of ``bin_width``), which select whole bins; ``IS [NOT] NULL``;
- ``AND`` of such conditions, ``OR`` and ``NOT`` within one column.

Anything else (a threshold between bin edges, ``x > 47.8``, an ``OR`` across columns, a filter
on a column with no declared domain) is refused with ``EXACT_FILTER_NOT_ALIGNED``: refused for
what the query says, never for what the data holds. Why this restriction: a population that is
not a union of lattice cells can single out rows the declared domains cannot (a threshold at a
person's exact value), and the k rule could then only protect it by a data-dependent refusal.

Exact mode also needs every domain column to be *complete* (no NULL, no value outside its
domain), which the node checks when the dataset is listed (:func:`incomplete_columns`): then the
lattice's cells partition the table, and a box's row count is the sum over the cells it holds.
Those counts come from one aggregate per data version over all domain columns (the *atom table*,
computed by whichever engine holds the data), kept in memory only.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from decimal import Decimal
from typing import Iterable

import numpy as np

from ..query.catalog import Column, Dataset
from ..query.engine import key_string
from ..errors import PolicyViolation
from ..query.plan import (AggFunc, Aggregate, And, Compare, Filter, GroupKey, InList, IsNull, Not, Or,
                         OutputColumn, QueryPlan)


class NotAligned(PolicyViolation):
    default_reason = "EXACT_FILTER_NOT_ALIGNED"


@dataclass(frozen=True)
class Box:
    """Per constrained column (lower-case name), a bit mask over the column's pieces; columns not
    named are unconstrained. The empty box (some mask 0) selects nothing."""

    masks: tuple[tuple[str, int], ...]  # sorted by column

    @staticmethod
    def of(masks: dict[str, int], lattice: "Lattice") -> "Box":
        return Box(tuple(sorted((c, m) for c, m in masks.items() if m != lattice.full(c))))

    def mask(self, column: str, lattice: "Lattice") -> int:
        for c, m in self.masks:
            if c == column:
                return m
        return lattice.full(column)

    @property
    def empty(self) -> bool:
        return any(m == 0 for _, m in self.masks)

    def intersect(self, other: "Box", lattice: "Lattice") -> "Box":
        cols = {c for c, _ in self.masks} | {c for c, _ in other.masks}
        return Box.of({c: self.mask(c, lattice) & other.mask(c, lattice) for c in cols}, lattice)

    def contains(self, other: "Box", lattice: "Lattice") -> bool:
        """self ⊇ other (an empty ``other`` is inside anything)."""
        if other.empty:
            return True
        return all(other.mask(c, lattice) & ~m == 0 for c, m in self.masks)

    def disjoint(self, other: "Box", lattice: "Lattice") -> bool:
        cols = {c for c, _ in self.masks} | {c for c, _ in other.masks}
        return any(self.mask(c, lattice) & other.mask(c, lattice) == 0 for c in cols) or self.empty or other.empty

    def size(self, lattice: "Lattice") -> int:
        """How many lattice cells the box holds (structural: no data)."""
        n = 1
        for c in lattice.columns:
            n *= bin(self.mask(c, lattice)).count("1")
        return n

    def to_json(self) -> str:
        return json.dumps([[c, format(m, "x")] for c, m in self.masks], separators=(",", ":"))

    @staticmethod
    def from_json(text: str) -> "Box":
        return Box(tuple((str(c), int(m, 16)) for c, m in json.loads(text)))

    def as_filter(self, lattice: "Lattice") -> Filter | None:
        """The box as a plan filter (for engines), None for the whole table."""
        parts: list[Filter] = []
        for c, m in self.masks:
            parts.append(lattice.piece_filter(c, m))
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else And(tuple(parts))


class Lattice:
    """The pieces of every domain column of a dataset (declared order)."""

    def __init__(self, ds: Dataset) -> None:
        self.dataset = ds
        self.pieces: dict[str, list[str]] = {}  # lower-case column -> key strings of its pieces
        self.index: dict[str, dict[str, int]] = {}
        self.width: dict[str, Decimal] = {}
        self.columns: list[str] = []
        for col in ds.columns:
            if not col.has_domain:
                continue
            c = col.name.lower()
            if col.categories:
                keys = [key_string(v) for v in col.categories]
            else:
                assert col.bin_width is not None
                keys = [key_string(b) for b in col.bin_domain(col.bin_width)]
                self.width[c] = col.bin_width
            self.columns.append(c)
            self.pieces[c] = keys
            self.index[c] = {k: i for i, k in enumerate(keys)}

    def full(self, column: str) -> int:
        return (1 << len(self.pieces[column])) - 1

    def column(self, name: str) -> Column:
        col = self.dataset.column(name)
        if col is None or col.name.lower() not in self.index:
            raise NotAligned(
                f"exact mode filters and groups only on columns with a declared domain (categories, or bin_width "
                f"with range); {name} has none: ask the owner to declare one, or use a DP dataset",
                metadata={"column": name})
        return col

    # -- from the plan ------------------------------------------------------------------------

    def where_box(self, where: Filter | None) -> Box:
        if where is None:
            return Box(())
        masks = self._conjunct(where)
        return Box.of(masks, self)

    def _conjunct(self, node: Filter) -> dict[str, int]:
        if isinstance(node, And):
            out: dict[str, int] = {}
            for op in node.operands:
                for c, m in self._conjunct(op).items():
                    out[c] = out.get(c, self.full(c)) & m
            return out
        c, m = self._single(node)
        return {c: m}

    def _single(self, node: Filter) -> tuple[str, int]:
        """A condition on one column, as (column, mask); raises NotAligned otherwise."""
        if isinstance(node, Or):
            parts = [self._single(op) for op in node.operands]
            cols = {c for c, _ in parts}
            if len(cols) != 1:
                raise NotAligned("exact mode allows OR only between conditions on the same column; split the "
                                 "query, or use a DP dataset")
            mask = 0
            for _, m in parts:
                mask |= m
            return parts[0][0], mask
        if isinstance(node, Not):
            c, m = self._single(node.operand)  # NOT of conditions on one column only
            return c, self.full(c) & ~m
        if isinstance(node, And):
            parts = self._conjunct(node)
            if len(parts) != 1:
                raise NotAligned("exact mode allows OR and NOT only of conditions on one column")
            return next(iter(parts.items()))
        col = self.column(node.column)
        c = col.name.lower()
        if isinstance(node, IsNull):  # complete columns hold no NULL
            return c, self.full(c) if node.negated else 0
        if c in self.width:
            return c, self._binned(col, node)
        return c, self._categorical(col, node)

    def _categorical(self, col: Column, node: Filter) -> int:
        c = col.name.lower()
        if isinstance(node, Compare) and node.op in ("=", "<>"):
            m = self._bits(c, [node.value])
            return m if node.op == "=" else self.full(c) & ~m
        if isinstance(node, InList):
            m = self._bits(c, node.values)
            return self.full(c) & ~m if node.negated else m
        raise NotAligned(f"exact mode compares {col.name} only with =, <>, IN and NOT IN over its declared "
                         "categories", metadata={"column": col.name})

    def _bits(self, c: str, values: Iterable) -> int:
        m = 0
        for v in values:
            i = self.index[c].get(key_string(v))
            if i is not None:
                m |= 1 << i
        return m

    def _binned(self, col: Column, node: Filter) -> int:
        c = col.name.lower()
        w = self.width[c]
        fix = (f"use {col.name} >= E or {col.name} < E with E a multiple of its bin width {key_string(w)}, "
               "or a DP dataset")
        if not (isinstance(node, Compare) and node.op in (">=", "<")) or isinstance(node.value, str):
            raise NotAligned(f"exact mode filters {col.name} only at bin edges: {fix}", metadata={"column": col.name})
        edge = Decimal(node.value)
        if (edge / w) != (edge / w).to_integral_value():
            raise NotAligned(f"{key_string(edge)} is not a bin edge of {col.name}: {fix}", metadata={"column": col.name})
        m = 0
        for i, start in enumerate(self.pieces[c]):
            if Decimal(start) >= edge:
                m |= 1 << i
        return m if node.op == ">=" else self.full(c) & ~m

    def group_cells(self, plan: QueryPlan, where: Box, domain: list[tuple[str, ...]]) -> list[Box]:
        """The box of every group of the result's domain (declared order)."""
        per_key = []
        for g in plan.group_keys:
            col = self.column(g.column)
            c = col.name.lower()
            if g.bin_width is None:
                per_key.append((c, None))
            else:
                ratio = g.bin_width / self.width[c]
                if ratio != ratio.to_integral_value():  # the planner allows multiples only
                    raise NotAligned(f"bins of {col.name} must be a multiple of {key_string(self.width[c])}")
                per_key.append((c, g.bin_width))
        out = []
        for keys in domain:
            masks = {c: m for c, m in where.masks}
            for (c, width), k in zip(per_key, keys):
                m = self._bits(c, [k]) if width is None else self._bin_range(c, Decimal(k), width)
                masks[c] = masks.get(c, self.full(c)) & m
            out.append(Box.of(masks, self))
        return out

    def _bin_range(self, c: str, start: Decimal, width: Decimal) -> int:
        m = 0
        for i, s in enumerate(self.pieces[c]):
            if start <= Decimal(s) < start + width:
                m |= 1 << i
        return m

    def refine(self, box: Box, column: str, key: str) -> Box:
        """The box with ``column`` narrowed to one category (an encrypted-input sub-cell)."""
        c = column.lower()
        masks = dict(box.masks)
        masks[c] = masks.get(c, self.full(c)) & self._bits(c, [key])
        return Box.of(masks, self)

    def piece_filter(self, c: str, mask: int) -> Filter:
        col = self.dataset.column(c)
        assert col is not None
        chosen = [i for i in range(len(self.pieces[c])) if mask >> i & 1]
        if c not in self.width:
            values = tuple(col.categories[i] for i in chosen)
            return InList(col.name, values) if values else IsNull(col.name)  # complete: selects nothing
        w = self.width[c]
        runs: list[Filter] = []
        i = 0
        while i < len(chosen):
            j = i
            while j + 1 < len(chosen) and chosen[j + 1] == chosen[j] + 1:
                j += 1
            low, high = Decimal(self.pieces[c][chosen[i]]), Decimal(self.pieces[c][chosen[j]]) + w
            runs.append(And((Compare(col.name, ">=", _lit(low)), Compare(col.name, "<", _lit(high)))))
            i = j + 1
        if not runs:
            return IsNull(col.name)
        return runs[0] if len(runs) == 1 else Or(tuple(runs))


def _lit(d: Decimal) -> int | Decimal:
    return int(d) if d == d.to_integral_value() else d


def check_plan(plan: QueryPlan, ds: Dataset) -> Box:
    """Raise NotAligned unless every population of ``plan`` is a box; returns the WHERE box."""
    lattice = lattice_for(ds)
    box = lattice.where_box(plan.where)
    for g in plan.group_keys:
        lattice.column(g.column)
    return box


# -- the atom table: row counts per lattice cell, one aggregate per data version ----------------


class AtomTable:
    """Rows (and non-null values of each aggregate column) per non-empty lattice cell."""

    def __init__(self, lattice: Lattice, pieces: np.ndarray, counts: dict[str, np.ndarray]) -> None:
        self.lattice = lattice
        self.pieces = pieces  # (cells, columns) piece indices
        self.counts = counts  # "" -> rows; lower-case column -> non-null values

    def select(self, box: Box) -> np.ndarray:
        mask = np.ones(len(self.pieces), dtype=bool)
        for c, m in box.masks:
            j = self.lattice.columns.index(c)
            lut = np.array([(m >> i) & 1 for i in range(len(self.lattice.pieces[c]))], dtype=bool)
            mask &= lut[self.pieces[:, j]]
        return mask

    def count(self, box: Box, column: str = "") -> int:
        if box.empty:
            return 0
        return int(self.counts[column][self.select(box)].sum())


def atom_plan(ds: Dataset, lattice: Lattice) -> QueryPlan:
    keys = tuple(GroupKey(ds.column(c).name, f"k{i}", lattice.width.get(c))  # type: ignore[union-attr]
                 for i, c in enumerate(lattice.columns))
    aggs = [Aggregate(AggFunc.COUNT, None, "n")]
    for col in ds.columns:
        if col.value_range is not None and col.numeric and not col.hidden:
            aggs.append(Aggregate(AggFunc.COUNT, col.name, f"c_{col.name.lower()}"))
    output = tuple(OutputColumn(k.alias, "group", i) for i, k in enumerate(keys)) + tuple(
        OutputColumn(a.alias, "aggregate", i) for i, a in enumerate(aggs))
    return QueryPlan(ds.name, keys, tuple(aggs), None, output)


def build_atoms(engine, ds: Dataset) -> AtomTable:
    lattice = lattice_for(ds)
    plan = atom_plan(ds, lattice)
    result = engine.aggregate(plan, ds)
    cols = [a.column for a in plan.aggregates if a.column is not None]
    pieces = np.zeros((len(result.groups), len(lattice.columns)), dtype=np.int32)
    counts = {"": np.zeros(len(result.groups), dtype=np.int64)}
    for c in cols:
        counts[c.lower()] = np.zeros(len(result.groups), dtype=np.int64)
    for r, g in enumerate(result.groups):
        for j, (c, k) in enumerate(zip(lattice.columns, g.keys)):
            pieces[r, j] = lattice.index[c][k]
        counts[""][r] = g.rows
        for c in cols:
            st = g.columns.get(c)
            counts[c.lower()][r] = st.count if st is not None else 0
    return AtomTable(lattice, pieces, counts)


def incomplete_columns(engine, ds: Dataset) -> list[str]:
    """Domain columns holding a NULL or a value outside the declared domain (exact mode needs none)."""
    total = engine.row_count(ds)
    lat = lattice_for(ds)
    out = []
    for c in lat.columns:
        col = ds.column(c)
        assert col is not None
        plan = QueryPlan(ds.name, (GroupKey(col.name, "k", col.bin_width if not col.categories else None),),
                         (Aggregate(AggFunc.COUNT, None, "n"),), None,
                         (OutputColumn("k", "group", 0), OutputColumn("n", "aggregate", 0)))
        # Only the domain's own categories and bins count: a NULL, an undeclared category or a
        # value beyond the range (binned outside it) leaves the total short.
        known = lat.index[c]
        if sum(g.rows for g in engine.aggregate(plan, ds).groups if g.keys[0] in known) != total:
            out.append(col.name)
    return out


_lattices: dict[Dataset, Lattice] = {}
_lattice_lock = threading.Lock()


def lattice_for(ds: Dataset) -> Lattice:
    with _lattice_lock:
        lat = _lattices.get(ds)
        if lat is None:
            if len(_lattices) > 256:
                _lattices.clear()
            lat = _lattices[ds] = Lattice(ds)
        return lat
