"""The validated query plan: the only form of a query the engine ever sees.

The planner turns the analyst's SQL into a :class:`QueryPlan` made of a handful of closed types
(group keys, aggregates, a filter tree of comparisons on named columns and literal values).
Engines render SQL from the plan with their own quoting and bound parameters, so the analyst's
string never reaches an engine. ``canonical_sql`` is a deterministic rendering used for display,
digests and idempotency checks; it is never executed.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterator, Union

Literal = Union[int, Decimal, str]


class AggFunc(enum.Enum):
    COUNT = "COUNT"
    SUM = "SUM"
    AVG = "AVG"
    VAR_SAMP = "VAR_SAMP"
    STDDEV_SAMP = "STDDEV_SAMP"


@dataclass(frozen=True)
class GroupKey:
    """A group-by key: a categorical column, or a numeric column cut into bins of ``bin_width``
    (the key is ``FLOOR(column / bin_width) * bin_width``)."""

    column: str
    alias: str
    bin_width: Decimal | None = None

    def sql(self) -> str:
        if self.bin_width is None:
            return _ident(self.column)
        w = _lit(self.bin_width)
        return f"FLOOR({_ident(self.column)} / {w}) * {w}"


@dataclass(frozen=True)
class Aggregate:
    """``function(column)``; ``column`` is None only for ``COUNT(*)``."""

    function: AggFunc
    column: str | None
    alias: str

    def sql(self) -> str:
        arg = "*" if self.column is None else _ident(self.column)
        return f"{self.function.value}({arg})"


# ----- filter tree -------------------------------------------------------------------------

COMPARISON_OPS = ("=", "<>", "<", "<=", ">", ">=")


@dataclass(frozen=True)
class Compare:
    column: str
    op: str
    value: Literal


@dataclass(frozen=True)
class InList:
    column: str
    values: tuple[Literal, ...]
    negated: bool = False


@dataclass(frozen=True)
class Between:
    column: str
    low: Literal
    high: Literal
    negated: bool = False


@dataclass(frozen=True)
class IsNull:
    column: str
    negated: bool = False


@dataclass(frozen=True)
class And:
    operands: tuple["Filter", ...]


@dataclass(frozen=True)
class Or:
    operands: tuple["Filter", ...]


@dataclass(frozen=True)
class Not:
    operand: "Filter"


Filter = Union[Compare, InList, Between, IsNull, And, Or, Not]


def filter_columns(node: Filter | None) -> Iterator[str]:
    if node is None:
        return
    if isinstance(node, (Compare, InList, Between, IsNull)):
        yield node.column
    elif isinstance(node, (And, Or)):
        for op in node.operands:
            yield from filter_columns(op)
    elif isinstance(node, Not):
        yield from filter_columns(node.operand)


def filter_sql(node: Filter) -> str:
    if isinstance(node, Compare):
        return f"{_ident(node.column)} {node.op} {_lit(node.value)}"
    if isinstance(node, InList):
        vals = ", ".join(_lit(v) for v in node.values)
        return f"{_ident(node.column)} {'NOT IN' if node.negated else 'IN'} ({vals})"
    if isinstance(node, Between):
        kw = "NOT BETWEEN" if node.negated else "BETWEEN"
        return f"{_ident(node.column)} {kw} {_lit(node.low)} AND {_lit(node.high)}"
    if isinstance(node, IsNull):
        return f"{_ident(node.column)} IS {'NOT NULL' if node.negated else 'NULL'}"
    if isinstance(node, And):
        return " AND ".join(f"({filter_sql(o)})" for o in node.operands)
    if isinstance(node, Or):
        return " OR ".join(f"({filter_sql(o)})" for o in node.operands)
    if isinstance(node, Not):
        return f"NOT ({filter_sql(node.operand)})"
    raise TypeError(f"not a filter node: {type(node).__name__}")


# ----- the plan ----------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputColumn:
    """One column of the result, in the order of the SELECT list."""

    name: str
    kind: str  # "group" | "aggregate"
    index: int  # into QueryPlan.group_keys or QueryPlan.aggregates


@dataclass(frozen=True)
class QueryPlan:
    dataset: str
    group_keys: tuple[GroupKey, ...]
    aggregates: tuple[Aggregate, ...]
    where: Filter | None
    output: tuple[OutputColumn, ...]

    def columns_touched(self) -> list[str]:
        cols = [g.column for g in self.group_keys]
        cols += [a.column for a in self.aggregates if a.column is not None]
        cols += list(filter_columns(self.where))
        return sorted(set(cols))

    def canonical_sql(self) -> str:
        items = []
        for out in self.output:
            if out.kind == "group":
                items.append(f"{self.group_keys[out.index].sql()} AS {_ident(out.name)}")
            else:
                items.append(f"{self.aggregates[out.index].sql()} AS {_ident(out.name)}")
        sql = f"SELECT {', '.join(items)} FROM {_ident(self.dataset)}"
        if self.where is not None:
            sql += f" WHERE {filter_sql(self.where)}"
        if self.group_keys:
            sql += " GROUP BY " + ", ".join(g.sql() for g in self.group_keys)
        return sql

    def digest(self) -> str:
        """SHA-256 of the canonical SQL: equal plans have equal digests."""
        return hashlib.sha256(self.canonical_sql().encode()).hexdigest()

    # JSON round trip, for the state store (plans are persisted with their query).
    def to_json(self) -> str:
        return json.dumps(_encode(self), sort_keys=True, separators=(",", ":"))

    @staticmethod
    def from_json(text: str) -> "QueryPlan":
        return _decode(json.loads(text))


# ----- helpers -----------------------------------------------------------------------------


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: Literal) -> str:
    if isinstance(value, bool):  # bool is an int; never valid here
        raise TypeError("boolean literal")
    if isinstance(value, (int, Decimal)):
        return str(value)
    return "'" + value.replace("'", "''") + "'"


_TYPES: dict[str, type] = {
    t.__name__: t
    for t in (GroupKey, Aggregate, Compare, InList, Between, IsNull, And, Or, Not, OutputColumn, QueryPlan)
}


def _encode(obj: Any) -> Any:
    if isinstance(obj, enum.Enum):
        return {"$enum": obj.value}
    if isinstance(obj, Decimal):
        return {"$dec": str(obj)}
    if isinstance(obj, tuple):
        return [_encode(x) for x in obj]
    if type(obj).__name__ in _TYPES:
        d = {k: _encode(v) for k, v in obj.__dict__.items()}
        d["$t"] = type(obj).__name__
        return d
    return obj


def _decode(obj: Any) -> Any:
    if isinstance(obj, list):
        return tuple(_decode(x) for x in obj)
    if isinstance(obj, dict):
        if "$enum" in obj:
            return AggFunc(obj["$enum"])
        if "$dec" in obj:
            return Decimal(obj["$dec"])
        cls = _TYPES[obj["$t"]]
        return cls(**{k: _decode(v) for k, v in obj.items() if k != "$t"})
    return obj


@dataclass(frozen=True)
class PlanLimits:
    """Bounds on a query's size, checked by the planner before its work can grow with the input
    (SQL length, aggregates, group keys, IN-list items, filter nodes, nesting depth)."""

    max_sql_length: int = 20_000
    max_aggregates: int = 32
    max_group_keys: int = 4
    max_in_items: int = 1_000
    max_filter_nodes: int = 200
    max_depth: int = 32
