"""WHERE → :class:`Filter`: the row conditions of a query and the literals they compare with.

A condition is a tree of AND/OR/NOT over comparisons, IN, BETWEEN and IS NULL, each testing one
bare column the owner lets analysts filter on, against literals of that column's type. The tree is
flattened and walked without unbounded recursion: nodes and depth are counted against
``PlanLimits`` before any is translated further.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Callable, NoReturn

from sqlglot import exp

from veil_server.query.catalog import Column, ColumnControl, ColumnType
from veil_server.query.plan import And, Between, Compare, Filter, InList, IsNull, Literal, Not, Or, PlanLimits
from veil_server.query.planner_ast import (
    construct_name, contains, deny, extra_args, reject, unparen, unsupported,
)

__all__ = ["literal", "plan_filter"]

_COMPARISONS: dict[type, str] = {
    exp.EQ: "=", exp.NEQ: "<>", exp.LT: "<", exp.LTE: "<=", exp.GT: ">", exp.GTE: ">=",
}
_FLIPPED = {"=": "=", "<>": "<>", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_NUMBER = re.compile(r"([0-9]*)(?:\.([0-9]*))?")
_MAX_DIGITS = 38  # the widest exact DECIMAL the engines take
_ODD_LITERALS = (exp.Null, exp.Boolean, exp.Placeholder, exp.ByteString, exp.RawString,
                 exp.HexString, exp.BitString, exp.National, exp.UnicodeString)


def plan_filter(cond: exp.Expr, limits: PlanLimits,
                resolve_column: Callable[[exp.Column], Column]) -> Filter:
    """The filter for the WHERE condition ``cond``.

    ``resolve_column`` maps a column reference to the dataset's column, refusing unknown, hidden
    and wrongly qualified ones.
    """
    if contains(cond, exp.AggFunc) is not None:
        reject("AGGREGATE_IN_WHERE", "aggregates are not allowed in WHERE (and HAVING "
               "is not supported); WHERE filters rows by column values.",
               construct="WHERE")
    return _FilterPlanner(limits, resolve_column).filter(cond, 1)


class _FilterPlanner:
    def __init__(self, limits: PlanLimits,
                 resolve_column: Callable[[exp.Column], Column]) -> None:
        self.limits = limits
        self.resolve_column = resolve_column
        self.filter_nodes = 0

    def filter(self, node: exp.Expr, depth: int) -> Filter:
        node = unparen(node)
        self.filter_nodes += 1
        if depth > self.limits.max_depth or self.filter_nodes > self.limits.max_filter_nodes:
            self._too_complex()
        if isinstance(node, (exp.And, exp.Or)):
            kind = type(node)
            operands: list[exp.Expr] = []
            stack: list[exp.Expr] = [node]
            while stack:  # flatten a AND b AND c (a left-deep chain) without recursion
                top = unparen(stack.pop())
                if type(top) is kind:
                    stack += [top.expression, top.this]
                else:
                    operands.append(top)
                    if len(operands) > self.limits.max_filter_nodes:
                        self._too_complex()
            parts = tuple(self.filter(o, depth + 1) for o in operands)
            return And(parts) if kind is exp.And else Or(parts)
        if isinstance(node, exp.Not):
            inner = node.this
            if isinstance(inner, exp.In):
                return self._in(inner, negated=True)
            if isinstance(inner, exp.Between):
                return self._between(inner, negated=True)
            if isinstance(inner, exp.Is):
                return self._is_null(inner, negated=True)
            return Not(self.filter(inner, depth + 1))
        if type(node) in _COMPARISONS:
            return self._compare(node)
        if isinstance(node, exp.In):
            return self._in(node, negated=False)
        if isinstance(node, exp.Between):
            return self._between(node, negated=False)
        if isinstance(node, exp.Is):
            return self._is_null(node, negated=False)
        if isinstance(node, exp.Column):
            reject("UNSUPPORTED_EXPRESSION", "a bare column is not a condition; compare it with "
                   "a literal, e.g. column = 'value' or column IS NOT NULL.", construct="COLUMN")
        unsupported(node, "WHERE")

    def _too_complex(self) -> NoReturn:
        reject("FILTER_TOO_COMPLEX", f"the WHERE clause has more than "
               f"{self.limits.max_filter_nodes} conditions or nests deeper than "
               f"{self.limits.max_depth}; simplify it (an IN list counts once).",
               construct="WHERE")

    def _filter_column(self, node: exp.Expr, construct: str) -> Column:
        node = unparen(node)
        if not isinstance(node, exp.Column):
            if isinstance(node, (exp.Literal, exp.Neg)):
                reject("UNSUPPORTED_EXPRESSION", f"{construct} must test a column, not a "
                       "literal; put the column on the left.", construct=construct)
            unsupported(node, f"WHERE ({construct} tests a bare column)")
        column = self.resolve_column(node)
        if not column.allows(ColumnControl.FILTER):
            deny("FILTER_NOT_ALLOWED", f"column {column.name} may not be used in WHERE; the owner "
                 "has not granted 'filter' on it.", column)
        return column

    def _compare(self, node: exp.Expr) -> Compare:
        op = _COMPARISONS[type(node)]
        left, right = unparen(node.this), unparen(node.expression)
        if isinstance(left, exp.Column) and isinstance(right, exp.Column):
            reject("UNSUPPORTED_EXPRESSION", "a comparison between two columns is not allowed; "
                   "compare a column with a literal.", construct="COMPARISON")
        if not isinstance(left, exp.Column):
            if not isinstance(right, exp.Column):
                bad = left if not isinstance(left, (exp.Literal, exp.Neg)) else right
                if isinstance(bad, (exp.Literal, exp.Neg)):
                    reject("UNSUPPORTED_EXPRESSION", "a comparison between two literals is not "
                           "allowed; compare a column with a literal.", construct="COMPARISON")
                unsupported(bad, "WHERE (compare a bare column with a literal)")
            left, right, op = right, left, _FLIPPED[op]
        column = self._filter_column(left, op)
        return Compare(column.name, op, self._value(right, column))

    def _in(self, node: exp.In, *, negated: bool) -> InList:
        if extra_args(node, {"this", "expressions"}):
            unsupported(node, "WHERE (IN takes a list of literals)")
        column = self._filter_column(node.this, "IN")
        values = node.expressions
        if not values:
            reject("UNSUPPORTED_EXPRESSION", f"IN on {column.name} needs at least one literal.",
                   column=column.name)
        if len(values) > self.limits.max_in_items:
            reject("TOO_MANY_IN_ITEMS", f"IN on {column.name} lists more than "
                   f"{self.limits.max_in_items} values; split the query.", column=column.name)
        return InList(column.name, tuple(self._value(v, column) for v in values), negated)

    def _between(self, node: exp.Between, *, negated: bool) -> Between:
        if extra_args(node, {"this", "low", "high"}):
            unsupported(node, "WHERE (BETWEEN SYMMETRIC is not supported)")
        column = self._filter_column(node.this, "BETWEEN")
        return Between(column.name, self._value(node.args.get("low"), column),
                       self._value(node.args.get("high"), column), negated)

    def _is_null(self, node: exp.Is, *, negated: bool) -> IsNull:
        if not isinstance(node.expression, exp.Null) or extra_args(node, {"this", "expression"}):
            reject("UNSUPPORTED_EXPRESSION", "IS is supported only as IS NULL or IS NOT NULL.",
                   construct="IS")
        column = self._filter_column(node.this, "IS NULL")
        return IsNull(column.name, negated)

    def _value(self, node: exp.Expr | None, column: Column) -> Literal:
        value = literal(node, f"a filter on {column.name}")
        if column.type is ColumnType.TEXT:
            ok, want = isinstance(value, str), "a quoted string"
        elif column.type is ColumnType.INTEGER:
            ok, want = isinstance(value, int), "an integer"
        else:
            ok, want = isinstance(value, (int, Decimal)), "a number"
        if not ok:
            reject("FILTER_VALUE_TYPE", f"column {column.name} is {column.type.value.upper()}; "
                   f"compare it with {want} literal.", column=column.name)
        return value


# ----- literals --------------------------------------------------------------------------


def literal(node: exp.Expr | None, where: str) -> Literal:
    node = unparen(node)
    negative = False
    if isinstance(node, exp.Neg):
        negative, node = True, unparen(node.this)
        if not (isinstance(node, exp.Literal) and not node.is_string):
            reject("UNSUPPORTED_LITERAL", f"unary minus applies to one number literal in "
                   f"{where}.", construct="-")
    if isinstance(node, exp.Literal):
        if node.is_string:
            return str(node.this)
        return _number(str(node.this), negative, where)
    if isinstance(node, _ODD_LITERALS):
        kw = construct_name(node)
        fix = {"NULL": "use IS NULL / IS NOT NULL"}.get(kw, "write a number or a quoted string")
        reject("UNSUPPORTED_LITERAL", f"{kw} is not a supported literal in {where}; {fix}.",
               construct=kw)
    if isinstance(node, exp.Column):
        reject("UNSUPPORTED_EXPRESSION", f"{where} must be a literal, not a column.",
               construct="COLUMN")
    unsupported(node, f"{where} (write a number or a quoted string)")


def _number(text: str, negative: bool, where: str) -> int | Decimal:
    m = _NUMBER.fullmatch(text)
    if m is None or not (m.group(1) or m.group(2)):
        reject("UNSUPPORTED_LITERAL", f"numbers in {where} must be plain decimals such as 42 "
               "or -3.25 (no exponent or hex).", construct="NUMBER")
    if len(m.group(1).lstrip("0") + (m.group(2) or "")) > _MAX_DIGITS:
        reject("LITERAL_OUT_OF_RANGE", f"a number in {where} has more than {_MAX_DIGITS} "
               "digits; shorten it.", construct="NUMBER")
    if m.group(2) is None and "." not in text:
        value = int(m.group(1).lstrip("0") or "0")  # bounded digits: int() caps at 4300
        return -value if negative else value
    value = Decimal(text)  # exact: the constructor does not round
    return value.copy_negate() if negative else value
