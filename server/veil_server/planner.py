"""SQL → :class:`QueryPlan`: the only door between an analyst's string and the engine.

Threat: the analyst is untrusted and the SQL is crafted. The string is parsed once by sqlglot
(DuckDB dialect) and never edited, re-rendered or forwarded; the planner rebuilds the query from
closed types (:mod:`veil_server.plan`) and the engine renders its own SQL from those. The AST is
read with an allow-list: each clause and node type the subset supports is translated explicitly,
and everything else is refused (deny by default). Every refusal is a ``QueryRejected`` (the SQL is
outside the subset: INVALID_ARGUMENT) or a ``PolicyViolation`` (a column control forbids it:
PERMISSION_DENIED) with a stable reason; messages name the rule, the column or construct and the
fix, and never a literal value. Sizes are bounded before work is done (length, nesting, list
lengths, filter nodes), and nothing here recurses deeper than ``PlanLimits.max_depth``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import NoReturn

import sqlglot
from sqlglot import exp
from sqlglot.tokens import TokenType

from veil_server.catalog import Catalog, Column, ColumnControl, ColumnType, Dataset
from veil_server.errors import DatasetNotFound, PolicyViolation, QueryRejected
from veil_server.plan import (
    Aggregate, AggFunc, And, Between, Compare, Filter, GroupKey, InList, IsNull, Literal, Not, Or,
    OutputColumn, QueryPlan,
)

__all__ = ["PlanLimits", "plan_query"]


@dataclass(frozen=True)
class PlanLimits:
    max_sql_length: int = 20_000
    max_aggregates: int = 32
    max_group_keys: int = 4
    max_in_items: int = 1_000
    max_filter_nodes: int = 200
    max_depth: int = 32


def plan_query(sql: str, catalog: Catalog, *, limits: PlanLimits = PlanLimits()) -> QueryPlan:
    """Validate ``sql`` against the subset and ``catalog``'s column controls and return its plan.

    Raises ``QueryRejected`` (INVALID_ARGUMENT), ``PolicyViolation`` (PERMISSION_DENIED) or
    ``DatasetNotFound`` (NOT_FOUND); never any other exception for any input string.
    """
    return _Planner(catalog, limits).plan(_parse(sql, limits))


# ----- errors ------------------------------------------------------------------------------


def _reject(reason: str, message: str, **meta: str) -> NoReturn:
    raise QueryRejected(message, reason=reason, metadata=meta)


def _deny(reason: str, message: str, column: Column) -> NoReturn:
    raise PolicyViolation(message, reason=reason, metadata={"column": column.name})


def _name(text: object) -> str:
    """An identifier or keyword for a message: truncated, so a huge name cannot flood logs."""
    s = str(text)
    return s if len(s) <= 64 else s[:61] + "..."


def _construct(node: exp.Expr | None) -> str:
    if not isinstance(node, exp.Expr):  # a missing operand the parser let through
        return "EXPRESSION"
    if isinstance(node, exp.Anonymous):
        return _name(node.name).upper()
    if isinstance(node, exp.Cast):
        return "CAST"
    if isinstance(node, exp.Func):
        return _name(node.sql_name())
    if isinstance(node, exp.Command):
        return _name(node.this).upper()
    return node.key.upper()


def _unsupported(node: exp.Expr | None, where: str) -> NoReturn:
    """The refusal for a node the allow-list does not know in this position."""
    construct = _construct(node)
    if isinstance(node, exp.Func) and not isinstance(node, (exp.Floor, exp.Case, exp.If)):
        _reject("FUNCTION_NOT_ALLOWED",
                f"{construct} is not an allowed function in {where}; the subset allows COUNT, SUM, "
                "AVG, VARIANCE/VAR_SAMP, STDDEV/STDDEV_SAMP and FLOOR(column / width) * width.",
                construct=construct)
    if isinstance(node, exp.Star):
        _reject("SELECT_STAR", "* is not allowed: name the aggregates to compute, e.g. COUNT(*).",
                construct="*")
    _reject("UNSUPPORTED_EXPRESSION",
            f"{construct} is not supported in {where}; use bare columns, literals, the allowed "
            "aggregates and the bin pattern FLOOR(column / width) * width.", construct=construct)


# ----- parsing -----------------------------------------------------------------------------

_DIALECT = sqlglot.Dialect.get_or_raise("duckdb")
_OPEN = {TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE}
_CLOSE = {TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE}
_ALLOWED_CONTROL = {"\t", "\n", "\r"}


def _parse(sql: str, limits: PlanLimits) -> exp.Expr:
    if not isinstance(sql, str):
        _reject("SQL_SYNTAX_ERROR", "the query must be a text string of SQL.")
    if len(sql) > limits.max_sql_length:
        _reject("SQL_TOO_LONG", f"the query is longer than {limits.max_sql_length} characters; "
                "shorten it (e.g. fewer IN items).", limit=str(limits.max_sql_length))
    # Control and format characters (NUL, bidi overrides, zero-width) have no place in the subset
    # and can make the SQL a reviewer reads differ from what the parser sees (Trojan Source).
    for ch in sql:
        if ch not in _ALLOWED_CONTROL and unicodedata.category(ch) in ("Cc", "Cf", "Cs"):
            _reject("INVALID_CHARACTER", f"the query contains the control or format character "
                    f"U+{ord(ch):04X}; remove it.", construct=f"U+{ord(ch):04X}")
    if not sql.strip():
        _reject("EMPTY_QUERY", "the query is empty; send one SELECT statement.")
    try:
        tokens = _DIALECT.tokenize(sql)
    except Exception as exc:  # sqlglot raises TokenError and, on odd input, anything else
        _syntax_error(exc)
    # The parser recurses per nesting level: bound nesting on the flat token list first.
    depth = 0
    for tok in tokens:
        if tok.token_type in _OPEN:
            depth += 1
            if depth > limits.max_depth:
                _reject("EXPRESSION_TOO_DEEP", f"the query nests brackets more than "
                        f"{limits.max_depth} deep; flatten it.", limit=str(limits.max_depth))
        elif tok.token_type in _CLOSE:
            depth -= 1
    try:
        statements = _DIALECT.parser().parse(tokens, sql)
    except RecursionError:
        _reject("EXPRESSION_TOO_DEEP", "the query nests expressions too deeply (e.g. a long "
                "chain of NOT or unary minus); flatten it.")
    except Exception as exc:
        _syntax_error(exc)
    found = [s for s in statements if s is not None]
    if not found:
        _reject("EMPTY_QUERY", "the query has no statement; send one SELECT statement.")
    if len(found) > 1:
        _reject("MULTIPLE_STATEMENTS", f"the query holds {len(found)} statements; send exactly "
                "one SELECT statement, without ';' separators.")
    return found[0]


def _syntax_error(exc: Exception) -> NoReturn:
    where = ""
    errors = getattr(exc, "errors", None)
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        line, col = errors[0].get("line"), errors[0].get("col")
        if isinstance(line, int) and isinstance(col, int):
            where = f" near line {line}, column {col}"
    # sqlglot's own message quotes the query text; it goes to the private field only.
    raise QueryRejected(f"the query is not valid SQL{where}; check it against the supported "
                        "subset (SELECT aggregates FROM one dataset [WHERE ...] [GROUP BY ...]).",
                        reason="SQL_SYNTAX_ERROR",
                        private=f"{type(exc).__name__}: {str(exc)[:500]}")


# ----- the subset --------------------------------------------------------------------------

_AGGREGATES: dict[type, AggFunc] = {
    exp.Count: AggFunc.COUNT,
    exp.Sum: AggFunc.SUM,
    exp.Avg: AggFunc.AVG,
    exp.Variance: AggFunc.VAR_SAMP,  # VARIANCE and VAR_SAMP parse to the same node
    exp.Stddev: AggFunc.STDDEV_SAMP,
    exp.StddevSamp: AggFunc.STDDEV_SAMP,
}
_COMPARISONS: dict[type, str] = {
    exp.EQ: "=", exp.NEQ: "<>", exp.LT: "<", exp.LTE: "<=", exp.GT: ">", exp.GTE: ">=",
}
_FLIPPED = {"=": "=", "<>": "<>", "<": ">", "<=": ">=", ">": "<", ">=": "<="}

# Select clauses outside the subset, with the reason and the fix for each; any clause not named
# here or in _SELECT_CLAUSES is refused as UNSUPPORTED_CLAUSE (deny by default).
_SELECT_CLAUSES = {"expressions", "from_", "where", "group"}
_CLAUSES: dict[str, tuple[str, str]] = {
    "with_": ("CTE_NOT_ALLOWED", "WITH"),
    "joins": ("JOIN_NOT_ALLOWED", "JOIN"),
    "laterals": ("JOIN_NOT_ALLOWED", "LATERAL"),
    "having": ("HAVING_NOT_ALLOWED", "HAVING"),
    "order": ("ORDER_BY_NOT_ALLOWED", "ORDER BY"),
    "sort": ("ORDER_BY_NOT_ALLOWED", "SORT BY"),
    "cluster": ("ORDER_BY_NOT_ALLOWED", "CLUSTER BY"),
    "distribute": ("ORDER_BY_NOT_ALLOWED", "DISTRIBUTE BY"),
    "limit": ("LIMIT_NOT_ALLOWED", "LIMIT"),
    "offset": ("LIMIT_NOT_ALLOWED", "OFFSET"),
    "distinct": ("DISTINCT_NOT_ALLOWED", "DISTINCT"),
    "qualify": ("WINDOW_FUNCTION_NOT_ALLOWED", "QUALIFY"),
    "windows": ("WINDOW_FUNCTION_NOT_ALLOWED", "WINDOW"),
    "into": ("NOT_A_SELECT", "SELECT INTO"),
}
_FIXES = {
    "CTE_NOT_ALLOWED": "name the dataset directly in FROM",
    "JOIN_NOT_ALLOWED": "query one dataset per query",
    "HAVING_NOT_ALLOWED": "filter rows with WHERE; the node suppresses groups that are too small",
    "ORDER_BY_NOT_ALLOWED": "sort the result on your side",
    "LIMIT_NOT_ALLOWED": "every group is returned; drop LIMIT/OFFSET",
    "DISTINCT_NOT_ALLOWED": "GROUP BY keys are already distinct; drop DISTINCT",
    "WINDOW_FUNCTION_NOT_ALLOWED": "use plain aggregates with GROUP BY",
    "NOT_A_SELECT": "send one SELECT query",
    "UNSUPPORTED_CLAUSE": "remove it",
}
_NUMBER = re.compile(r"([0-9]*)(?:\.([0-9]*))?")
_MAX_DIGITS = 38  # the widest exact DECIMAL the engines take
_MAX_ALIAS = 128
_ODD_LITERALS = (exp.Null, exp.Boolean, exp.Placeholder, exp.ByteString, exp.RawString,
                 exp.HexString, exp.BitString, exp.National, exp.UnicodeString)

_Key = tuple[str, "Decimal | None"]  # (column name, bin width or None)


@dataclass
class _Item:
    """One SELECT list item: an aggregate or a (candidate) group key."""

    name: str
    explicit: bool  # the name came from AS alias
    agg: tuple[AggFunc, Column | None] | None = None
    key: _Key | None = None
    column: Column | None = None


def _unparen(node: exp.Expr) -> exp.Expr:
    while isinstance(node, exp.Paren):  # bracket nesting is bounded before parsing
        node = node.this
    return node


def _contains(node: exp.Expr, kind: type | tuple[type, ...]) -> exp.Expr | None:
    for sub in node.walk(bfs=False):  # iterative: AND chains make left-deep trees
        if isinstance(sub, kind):
            return sub
    return None


def _extra_args(node: exp.Expr, allowed: set[str]) -> str | None:
    """The first argument ``node`` carries beyond ``allowed`` (flags set to False don't count)."""
    for key, value in node.args.items():
        if key in allowed or value is None or value is False:
            continue
        if isinstance(value, (list, str)) and not value:
            continue
        return key
    return None


def _plain(value: Decimal) -> Decimal:
    """``value`` without an exponent or trailing zeros (5.0 → 5), exactly."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return Decimal(text)


def _key_sql(key: _Key) -> str:
    column, width = key
    return column if width is None else f"FLOOR({column} / {width}) * {width}"


class _Planner:
    def __init__(self, catalog: Catalog, limits: PlanLimits) -> None:
        self.catalog = catalog
        self.limits = limits
        self.dataset: Dataset
        self.qualifier = ""
        self.filter_nodes = 0

    def plan(self, stmt: exp.Expr) -> QueryPlan:
        select = self._statement(stmt)
        self.dataset = self._from(select)
        items = self._select_list(select)
        grouped = self._group_by(select, items)
        keys = [i for i in items if i.key is not None]
        for item in keys:
            if item.key not in grouped:
                assert item.column is not None
                _reject("RAW_COLUMN_IN_OUTPUT",
                        f"{_key_sql(item.key)} is in SELECT but neither aggregated nor in GROUP "
                        "BY; aggregate the column (e.g. COUNT(*), SUM(...)) or add it to GROUP BY "
                        "if it is a group key.", column=item.column.name)
        selected = {i.key for i in keys}
        for key in grouped:
            if key not in selected:
                _reject("GROUP_KEY_NOT_SELECTED",
                        f"GROUP BY key {_key_sql(key)} is not in SELECT; every group key must be "
                        "selected so each released row says which group it is.", column=key[0])
        for item in keys:
            self._check_group_key(item)
        if not any(i.agg is not None for i in items):
            _reject("NO_AGGREGATE", "the query selects no aggregate; add COUNT(*), SUM(column), "
                    "AVG(column), VARIANCE(column) or STDDEV(column).")
        where = None
        if select.args.get("where") is not None:
            cond = select.args["where"].this
            if _contains(cond, exp.AggFunc) is not None:
                _reject("AGGREGATE_IN_WHERE", "aggregates are not allowed in WHERE (and HAVING "
                        "is not supported); WHERE filters rows by column values.",
                        construct="WHERE")
            where = self._filter(cond, 1)
        return self._assemble(items, where)

    # ----- statement and clauses -----------------------------------------------------------

    def _statement(self, stmt: exp.Expr) -> exp.Select:
        if isinstance(stmt, exp.SetOperation):
            kw = _construct(stmt)
            _reject("SET_OPERATION_NOT_ALLOWED", f"{kw} is not allowed; send one SELECT per "
                    "query and combine results on your side.", construct=kw)
        if isinstance(stmt, exp.Subquery):
            _reject("SUBQUERY_NOT_ALLOWED", "a parenthesised query is not allowed; send a bare "
                    "SELECT.", construct="SUBQUERY")
        if not isinstance(stmt, exp.Select):
            kw = _construct(stmt)
            _reject("NOT_A_SELECT", f"the query is not a SELECT (found {kw}); only one SELECT "
                    "of aggregates is accepted.", construct=kw)
        if stmt.args.get("with_"):
            self._clause("with_")
        for node in stmt.walk(bfs=False):
            if node is stmt:
                continue
            if isinstance(node, (exp.Query, exp.Subquery, exp.Exists)):
                _reject("SUBQUERY_NOT_ALLOWED", "subqueries are not allowed (in FROM, WHERE or "
                        "SELECT); send one flat SELECT over one dataset.", construct="SUBQUERY")
            if isinstance(node, exp.Window):
                _reject("WINDOW_FUNCTION_NOT_ALLOWED", "window functions (OVER) are not "
                        "allowed; use plain aggregates with GROUP BY.", construct="OVER")
        extra = _extra_args(stmt, _SELECT_CLAUSES)
        if extra is not None:
            self._clause(extra)
        if stmt.args.get("from_") is None:
            _reject("MISSING_FROM", "the query has no FROM; name one dataset, e.g. FROM patients.",
                    construct="FROM")
        return stmt

    def _clause(self, arg: str) -> NoReturn:
        reason, kw = _CLAUSES.get(arg, ("UNSUPPORTED_CLAUSE", arg.rstrip("_").upper()))
        _reject(reason, f"{kw} is not allowed: {_FIXES[reason]}.", construct=kw)

    def _from(self, select: exp.Select) -> Dataset:
        source = select.args["from_"].this
        if isinstance(source, exp.Table) and isinstance(source.this, exp.Func):
            source = source.this  # FROM read_csv(...): a table function
        if isinstance(source, exp.Func):
            kw = _construct(source)
            _reject("FUNCTION_NOT_ALLOWED", f"table function {kw} is not allowed; FROM names one "
                    "registered dataset.", construct=kw)
        if not isinstance(source, exp.Table) or not isinstance(source.this, exp.Identifier):
            kw = _construct(source)
            _reject("UNSUPPORTED_CLAUSE", f"FROM {kw} is not allowed; FROM names one registered "
                    "dataset.", construct=kw)
        if source.args.get("joins") or source.args.get("laterals"):
            self._clause("joins")
        if source.args.get("db") or source.args.get("catalog"):
            _reject("QUALIFIED_NAME_NOT_ALLOWED", "schema or catalog qualifiers are not allowed "
                    "in FROM; write the bare dataset name.", construct="FROM")
        extra = _extra_args(source, {"this", "alias"})
        if extra is not None:
            kw = "TABLESAMPLE" if extra == "sample" else extra.rstrip("_").upper()
            _reject("UNSUPPORTED_CLAUSE", f"{kw} on the dataset is not allowed: remove it.",
                    construct=kw)
        name = source.this.name
        dataset = self.catalog.get(name)
        if dataset is None:
            raise DatasetNotFound(f"there is no dataset named {_name(name)!r}; list datasets with "
                                  "the catalog.", metadata={"dataset": _name(name)})
        self.qualifier = dataset.name.lower()
        alias = source.args.get("alias")
        if alias is not None:
            if _extra_args(alias, {"this"}) or not isinstance(alias.this, exp.Identifier):
                _reject("UNSUPPORTED_CLAUSE", "a table alias may not rename columns; write "
                        "FROM name [AS alias].", construct="ALIAS")
            self.qualifier = alias.this.name.lower()
        return dataset

    # ----- columns -------------------------------------------------------------------------

    def _column(self, node: exp.Column) -> Column:
        if isinstance(node.this, exp.Star):
            _reject("SELECT_STAR", "* is not allowed: name the aggregates to compute, e.g. "
                    "COUNT(*).", construct="*")
        if not isinstance(node.this, exp.Identifier) or _extra_args(node, {"this", "table"}):
            if node.args.get("db") or node.args.get("catalog"):
                _reject("QUALIFIED_NAME_NOT_ALLOWED", "a column may be qualified by the dataset "
                        "(or its alias) only; write the bare column name.", construct="COLUMN")
            _unsupported(node, "a column reference")
        table = node.args.get("table")
        if table is not None and table.name.lower() != self.qualifier:
            _reject("UNKNOWN_TABLE_REFERENCE", f"{_name(table.name)!r} is not the dataset in FROM; "
                    "qualify columns by the dataset (or its alias) or not at all.",
                    construct=_name(table.name))
        column = self.dataset.column(node.name)
        if column is None:
            _reject("UNKNOWN_COLUMN", f"dataset {self.dataset.name} has no column "
                    f"{_name(node.name)!r}; check the column names in the catalog.",
                    column=_name(node.name))
        if column.hidden:
            _deny("HIDDEN_COLUMN", f"column {column.name} is hidden by the owner and may not be "
                  "referenced anywhere in a query; remove it.", column)
        return column

    # ----- SELECT list ---------------------------------------------------------------------

    def _select_list(self, select: exp.Select) -> list[_Item]:
        items: list[_Item] = []
        n_aggs = n_keys = 0
        for raw in select.expressions:
            alias = None
            node = raw
            if isinstance(raw, exp.Alias):
                alias = self._alias(raw)
                node = raw.this
            node = _unparen(node)
            if type(node) in _AGGREGATES:
                n_aggs += 1
                if n_aggs > self.limits.max_aggregates:
                    _reject("TOO_MANY_AGGREGATES", f"the query has more than "
                            f"{self.limits.max_aggregates} aggregates; split it.",
                            limit=str(self.limits.max_aggregates))
                func, column = self._aggregate(node)
                default = "count" if column is None else f"{func.value.lower()}_{column.name}"
                items.append(_Item(alias or default, alias is not None, agg=(func, column)))
                continue
            if isinstance(node, exp.Star):
                _unsupported(node, "SELECT")
            if isinstance(node, exp.AggFunc) or _contains(node, exp.AggFunc) is None:
                key = self._key(node, "SELECT")
            else:  # e.g. SUM(cost) / COUNT(*), ROUND(AVG(age))
                _unsupported(node, "SELECT (arithmetic or functions over aggregates)")
            n_keys += 1
            if n_keys > self.limits.max_group_keys:
                _reject("TOO_MANY_GROUP_KEYS", f"the query has more than "
                        f"{self.limits.max_group_keys} group keys; use fewer.",
                        limit=str(self.limits.max_group_keys))
            column = self.dataset.column(key[0])
            default = key[0] if key[1] is None else f"{key[0]}_bin"
            if any(i.key == key for i in items):
                _reject("DUPLICATE_GROUP_KEY", f"group key {_key_sql(key)} is selected twice; "
                        "select it once.", column=key[0])
            items.append(_Item(alias or default, alias is not None, key=key, column=column))
        return items

    def _alias(self, node: exp.Alias) -> str:
        ident = node.args.get("alias")
        if not isinstance(ident, exp.Identifier):
            _unsupported(node, "SELECT aliases")
        name = ident.name
        if not name.strip() or len(name) > _MAX_ALIAS:
            _reject("INVALID_ALIAS", f"an output name must be 1 to {_MAX_ALIAS} characters and "
                    "not blank; choose another alias.", construct="AS")
        return name

    def _aggregate(self, node: exp.Expr) -> tuple[AggFunc, Column | None]:
        func = _AGGREGATES[type(node)]
        extra = _extra_args(node, {"this", "big_int"})
        if extra is not None:
            _reject("UNSUPPORTED_EXPRESSION", f"{func.value} takes exactly one argument (a "
                    "column, or * for COUNT).", construct=func.value)
        arg = node.this
        if arg is None:
            _reject("UNSUPPORTED_EXPRESSION", f"{func.value} needs an argument: a column, or * "
                    "for COUNT.", construct=func.value)
        arg = _unparen(arg)
        if isinstance(arg, exp.Distinct):
            kw = f"{func.value}(DISTINCT)"
            _reject("FUNCTION_NOT_ALLOWED", f"{kw} is not allowed (distinct counts single out "
                    f"values); use {func.value} without DISTINCT.", construct=kw)
        if _contains(arg, exp.AggFunc) is not None:
            _reject("NESTED_AGGREGATE", f"an aggregate inside {func.value} is not allowed; "
                    "aggregate a bare column.", construct=func.value)
        if isinstance(arg, exp.Star) and func is AggFunc.COUNT:
            return func, None
        if not isinstance(arg, exp.Column):
            _unsupported(arg, f"the argument of {func.value} (use a bare column)")
        column = self._column(arg)
        if not column.allows(ColumnControl.AGGREGATE):
            _deny("AGGREGATE_NOT_ALLOWED", f"column {column.name} may not be aggregated; the owner "
                  "has not granted 'aggregate' on it (COUNT(*) needs no grant).", column)
        if func is not AggFunc.COUNT:
            if not column.numeric:
                _reject("AGGREGATE_TYPE_MISMATCH", f"{func.value} needs a numeric column and "
                        f"{column.name} is {column.type.value.upper()}; use COUNT on it.",
                        column=column.name)
            if column.value_range is None:
                _deny("AGGREGATE_NOT_ALLOWED", f"column {column.name} declares no value range, "
                      f"so {func.value} cannot bound each row's contribution; ask the owner to "
                      "declare one.", column)
        return func, column

    # ----- group keys ----------------------------------------------------------------------

    def _key(self, node: exp.Expr, where: str) -> _Key:
        """A group-key expression: a bare column or FLOOR(column / w) * w."""
        node = _unparen(node)
        if isinstance(node, exp.Column):
            return (self._column(node).name, None)
        if isinstance(node, exp.Mul):
            left, right = _unparen(node.this), _unparen(node.expression)
            if isinstance(right, exp.Floor) and not isinstance(left, exp.Floor):
                left, right = right, left
            if isinstance(left, exp.Floor):
                return self._bin(left, right)
        if isinstance(node, exp.Floor):
            _reject("UNSUPPORTED_EXPRESSION", "FLOOR is allowed only in the bin pattern "
                    "FLOOR(column / width) * width.", construct="FLOOR")
        _unsupported(node, where)

    def _bin(self, floor: exp.Floor, outer: exp.Expr) -> _Key:
        div = _unparen(floor.this)
        if (_extra_args(floor, {"this"}) or not isinstance(div, exp.Div)
                or not isinstance(_unparen(div.this), exp.Column)):
            _reject("UNSUPPORTED_EXPRESSION", "a binned key must read FLOOR(column / width) * "
                    "width, with the same literal width twice.", construct="FLOOR")
        column = self._column(_unparen(div.this))
        inner_w, outer_w = self._width(div.expression, column), self._width(outer, column)
        if inner_w != outer_w:
            _reject("UNSUPPORTED_EXPRESSION", f"the bin pattern for {column.name} uses two "
                    "different widths; write FLOOR(column / width) * width with one width.",
                    construct="FLOOR")
        return (column.name, _plain(inner_w))

    def _width(self, node: exp.Expr, column: Column) -> Decimal:
        value = self._literal(node, "a bin width")
        if isinstance(value, str):
            _reject("UNSUPPORTED_EXPRESSION", f"the bin width for {column.name} must be a number.",
                    column=column.name)
        return Decimal(value)

    def _group_by(self, select: exp.Select, items: list[_Item]) -> list[_Key]:
        group = select.args.get("group")
        if group is None:
            return []
        extra = _extra_args(group, {"expressions"})
        if extra is not None:
            kw = "GROUP BY ALL" if extra == "all" else extra.upper().replace("_", " ")
            _reject("UNSUPPORTED_CLAUSE", f"{kw} is not allowed: list the group keys.",
                    construct=kw)
        keys: list[_Key] = []
        for raw in group.expressions:
            node = _unparen(raw)
            if isinstance(node, (exp.Rollup, exp.Cube, exp.GroupingSets)):
                kw = _construct(node)
                _reject("UNSUPPORTED_CLAUSE", f"{kw} is not allowed: list the group keys.",
                        construct=kw)
            if _contains(node, exp.AggFunc) is not None:
                _reject("AGGREGATE_IN_GROUP_BY", "aggregates are not allowed in GROUP BY; group "
                        "by columns or bins.", construct="GROUP BY")
            key = self._group_item(node, items)
            if key not in keys:
                keys.append(key)
            if len(keys) > self.limits.max_group_keys:
                _reject("TOO_MANY_GROUP_KEYS", f"the query has more than "
                        f"{self.limits.max_group_keys} group keys; use fewer.",
                        limit=str(self.limits.max_group_keys))
        return keys

    def _group_item(self, node: exp.Expr, items: list[_Item]) -> _Key:
        if isinstance(node, exp.Literal) and not node.is_string:
            digits = str(node.this).lstrip("0")
            if not digits.isascii() or not digits.isdigit() or len(digits) > 6:
                _reject("INVALID_GROUP_BY_ORDINAL", "a GROUP BY position must be a whole number "
                        "between 1 and the number of SELECT items.", construct="GROUP BY")
            pos = int(digits)
            if not 1 <= pos <= len(items):
                _reject("INVALID_GROUP_BY_ORDINAL", f"GROUP BY position {pos} is not between 1 and "
                        f"{len(items)}, the number of SELECT items.", construct="GROUP BY")
            return self._referenced(items[pos - 1])
        if isinstance(node, exp.Column) and node.args.get("table") is None \
                and isinstance(node.this, exp.Identifier):
            named = [i for i in items if i.explicit and i.name.lower() == node.name.lower()]
            column = self.dataset.column(node.name)
            if named and (column is None or column.hidden):
                return self._referenced(named[0])
            key = (self._column(node).name, None)
            if named and named[0].key != key:
                _reject("AMBIGUOUS_GROUP_BY", f"GROUP BY {column.name} names both a column and a "
                        "SELECT alias for something else; rename the alias or use a position.",
                        column=column.name)
            return key
        return self._key(node, "GROUP BY")

    @staticmethod
    def _referenced(item: _Item) -> _Key:
        if item.key is None:
            _reject("AGGREGATE_IN_GROUP_BY", f"GROUP BY refers to the aggregate {item.name}; group "
                    "by columns or bins.", construct="GROUP BY")
        return item.key

    def _check_group_key(self, item: _Item) -> None:
        column, key = item.column, item.key
        assert column is not None and key is not None
        if not column.allows(ColumnControl.GROUP):
            _deny("GROUP_BY_NOT_ALLOWED", f"column {column.name} may not be a group key; the "
                  "owner has not granted 'group' on it.", column)
        width = key[1]
        if width is None:
            if not column.categories and ColumnControl.PUBLIC not in column.controls:
                fix = (f"group by bins instead: FLOOR({column.name} / {column.bin_width}) * "
                       f"{column.bin_width}" if column.bin_width is not None
                       else "ask the owner to declare its categories")
                _deny("GROUP_BY_NOT_ALLOWED", f"column {column.name} declares no public set of "
                      f"categories, so it cannot be a group key as is; {fix}.", column)
            return
        if (not column.numeric or column.bin_width is None or column.bin_width <= 0
                or column.value_range is None):
            _deny("GROUP_BY_NOT_ALLOWED", f"column {column.name} declares no bin width and range, "
                  "so it cannot be binned.", column)
        ratio = Fraction(width) / Fraction(column.bin_width)
        if width <= 0 or ratio.denominator != 1:
            _deny("BIN_WIDTH_NOT_ALLOWED", f"bin width for {column.name} must be a positive "
                  f"multiple of {column.bin_width}.", column)

    # ----- WHERE ---------------------------------------------------------------------------

    def _filter(self, node: exp.Expr, depth: int) -> Filter:
        node = _unparen(node)
        self.filter_nodes += 1
        if depth > self.limits.max_depth or self.filter_nodes > self.limits.max_filter_nodes:
            self._too_complex()
        if isinstance(node, (exp.And, exp.Or)):
            kind = type(node)
            operands: list[exp.Expr] = []
            stack: list[exp.Expr] = [node]
            while stack:  # flatten a AND b AND c (a left-deep chain) without recursion
                top = _unparen(stack.pop())
                if type(top) is kind:
                    stack += [top.expression, top.this]
                else:
                    operands.append(top)
                    if len(operands) > self.limits.max_filter_nodes:
                        self._too_complex()
            parts = tuple(self._filter(o, depth + 1) for o in operands)
            return And(parts) if kind is exp.And else Or(parts)
        if isinstance(node, exp.Not):
            inner = node.this
            if isinstance(inner, exp.In):
                return self._in(inner, negated=True)
            if isinstance(inner, exp.Between):
                return self._between(inner, negated=True)
            if isinstance(inner, exp.Is):
                return self._is_null(inner, negated=True)
            return Not(self._filter(inner, depth + 1))
        if type(node) in _COMPARISONS:
            return self._compare(node)
        if isinstance(node, exp.In):
            return self._in(node, negated=False)
        if isinstance(node, exp.Between):
            return self._between(node, negated=False)
        if isinstance(node, exp.Is):
            return self._is_null(node, negated=False)
        if isinstance(node, exp.Column):
            _reject("UNSUPPORTED_EXPRESSION", "a bare column is not a condition; compare it with "
                    "a literal, e.g. column = 'value' or column IS NOT NULL.", construct="COLUMN")
        _unsupported(node, "WHERE")

    def _too_complex(self) -> NoReturn:
        _reject("FILTER_TOO_COMPLEX", f"the WHERE clause has more than "
                f"{self.limits.max_filter_nodes} conditions or nests deeper than "
                f"{self.limits.max_depth}; simplify it (an IN list counts once).",
                construct="WHERE")

    def _filter_column(self, node: exp.Expr, construct: str) -> Column:
        node = _unparen(node)
        if not isinstance(node, exp.Column):
            if isinstance(node, (exp.Literal, exp.Neg)):
                _reject("UNSUPPORTED_EXPRESSION", f"{construct} must test a column, not a "
                        "literal; put the column on the left.", construct=construct)
            _unsupported(node, f"WHERE ({construct} tests a bare column)")
        column = self._column(node)
        if not column.allows(ColumnControl.FILTER):
            _deny("FILTER_NOT_ALLOWED", f"column {column.name} may not be used in WHERE; the owner "
                  "has not granted 'filter' on it.", column)
        return column

    def _compare(self, node: exp.Expr) -> Compare:
        op = _COMPARISONS[type(node)]
        left, right = _unparen(node.this), _unparen(node.expression)
        if isinstance(left, exp.Column) and isinstance(right, exp.Column):
            _reject("UNSUPPORTED_EXPRESSION", "a comparison between two columns is not allowed; "
                    "compare a column with a literal.", construct="COMPARISON")
        if not isinstance(left, exp.Column):
            if not isinstance(right, exp.Column):
                bad = left if not isinstance(left, (exp.Literal, exp.Neg)) else right
                if isinstance(bad, (exp.Literal, exp.Neg)):
                    _reject("UNSUPPORTED_EXPRESSION", "a comparison between two literals is not "
                            "allowed; compare a column with a literal.", construct="COMPARISON")
                _unsupported(bad, "WHERE (compare a bare column with a literal)")
            left, right, op = right, left, _FLIPPED[op]
        column = self._filter_column(left, op)
        return Compare(column.name, op, self._value(right, column))

    def _in(self, node: exp.In, *, negated: bool) -> InList:
        if _extra_args(node, {"this", "expressions"}):
            _unsupported(node, "WHERE (IN takes a list of literals)")
        column = self._filter_column(node.this, "IN")
        values = node.expressions
        if not values:
            _reject("UNSUPPORTED_EXPRESSION", f"IN on {column.name} needs at least one literal.",
                    column=column.name)
        if len(values) > self.limits.max_in_items:
            _reject("TOO_MANY_IN_ITEMS", f"IN on {column.name} lists more than "
                    f"{self.limits.max_in_items} values; split the query.", column=column.name)
        return InList(column.name, tuple(self._value(v, column) for v in values), negated)

    def _between(self, node: exp.Between, *, negated: bool) -> Between:
        if _extra_args(node, {"this", "low", "high"}):
            _unsupported(node, "WHERE (BETWEEN SYMMETRIC is not supported)")
        column = self._filter_column(node.this, "BETWEEN")
        return Between(column.name, self._value(node.args.get("low"), column),
                       self._value(node.args.get("high"), column), negated)

    def _is_null(self, node: exp.Is, *, negated: bool) -> IsNull:
        if not isinstance(node.expression, exp.Null) or _extra_args(node, {"this", "expression"}):
            _reject("UNSUPPORTED_EXPRESSION", "IS is supported only as IS NULL or IS NOT NULL.",
                    construct="IS")
        column = self._filter_column(node.this, "IS NULL")
        return IsNull(column.name, negated)

    # ----- literals ------------------------------------------------------------------------

    def _literal(self, node: exp.Expr | None, where: str) -> Literal:
        node = _unparen(node)
        negative = False
        if isinstance(node, exp.Neg):
            negative, node = True, _unparen(node.this)
            if not (isinstance(node, exp.Literal) and not node.is_string):
                _reject("UNSUPPORTED_LITERAL", f"unary minus applies to one number literal in "
                        f"{where}.", construct="-")
        if isinstance(node, exp.Literal):
            if node.is_string:
                return str(node.this)
            return self._number(str(node.this), negative, where)
        if isinstance(node, _ODD_LITERALS):
            kw = _construct(node)
            fix = {"NULL": "use IS NULL / IS NOT NULL"}.get(kw, "write a number or a quoted string")
            _reject("UNSUPPORTED_LITERAL", f"{kw} is not a supported literal in {where}; {fix}.",
                    construct=kw)
        if isinstance(node, exp.Column):
            _reject("UNSUPPORTED_EXPRESSION", f"{where} must be a literal, not a column.",
                    construct="COLUMN")
        _unsupported(node, f"{where} (write a number or a quoted string)")

    @staticmethod
    def _number(text: str, negative: bool, where: str) -> int | Decimal:
        m = _NUMBER.fullmatch(text)
        if m is None or not (m.group(1) or m.group(2)):
            _reject("UNSUPPORTED_LITERAL", f"numbers in {where} must be plain decimals such as 42 "
                    "or -3.25 (no exponent or hex).", construct="NUMBER")
        if len(m.group(1).lstrip("0") + (m.group(2) or "")) > _MAX_DIGITS:
            _reject("LITERAL_OUT_OF_RANGE", f"a number in {where} has more than {_MAX_DIGITS} "
                    "digits; shorten it.", construct="NUMBER")
        if m.group(2) is None and "." not in text:
            value = int(m.group(1).lstrip("0") or "0")  # bounded digits: int() caps at 4300
            return -value if negative else value
        value = Decimal(text)  # exact: the constructor does not round
        return value.copy_negate() if negative else value

    def _value(self, node: exp.Expr | None, column: Column) -> Literal:
        value = self._literal(node, f"a filter on {column.name}")
        if column.type is ColumnType.TEXT:
            ok, want = isinstance(value, str), "a quoted string"
        elif column.type is ColumnType.INTEGER:
            ok, want = isinstance(value, int), "an integer"
        else:
            ok, want = isinstance(value, (int, Decimal)), "a number"
        if not ok:
            _reject("FILTER_VALUE_TYPE", f"column {column.name} is {column.type.value.upper()}; "
                    f"compare it with {want} literal.", column=column.name)
        return value

    # ----- the plan ------------------------------------------------------------------------

    def _assemble(self, items: list[_Item], where: Filter | None) -> QueryPlan:
        seen: set[str] = set()
        keys: list[GroupKey] = []
        aggs: list[Aggregate] = []
        output: list[OutputColumn] = []
        for item in items:
            folded = item.name.casefold()
            if folded in seen:
                _reject("DUPLICATE_OUTPUT_NAME", f"two SELECT items are named "
                        f"{_name(item.name)!r}; give each a distinct alias with AS.",
                        column=_name(item.name))
            seen.add(folded)
            if item.key is not None:
                keys.append(GroupKey(item.key[0], item.name, item.key[1]))
                output.append(OutputColumn(item.name, "group", len(keys) - 1))
            else:
                assert item.agg is not None
                func, column = item.agg
                aggs.append(Aggregate(func, None if column is None else column.name, item.name))
                output.append(OutputColumn(item.name, "aggregate", len(aggs) - 1))
        return QueryPlan(self.dataset.name, tuple(keys), tuple(aggs), where, tuple(output))
