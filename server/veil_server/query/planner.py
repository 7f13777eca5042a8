"""SQL → :class:`QueryPlan`: the only door between an analyst's string and the engine.

Threat: the analyst is untrusted and the SQL is crafted. The string is parsed once by sqlglot
(DuckDB dialect) and never edited, re-rendered or forwarded; the planner rebuilds the query from
closed types (:mod:`veil_server.query.plan`) and the engine renders its own SQL from those. The AST is
read with an allow-list: each clause and node type the subset supports is translated explicitly,
and everything else is refused (deny by default). Every refusal is a ``QueryRejected`` (the SQL is
outside the subset: INVALID_ARGUMENT) or a ``PolicyViolation`` (a column control forbids it:
PERMISSION_DENIED) with a stable reason; messages name the rule, the column or construct and the
fix, and never a literal value. Sizes are bounded before work is done (length, nesting, list
lengths, filter nodes), and nothing here recurses deeper than ``PlanLimits.max_depth``.
WHERE and its literals are planned in :mod:`veil_server.query.planner_filters`; the node reading and
refusals every part shares live in :mod:`veil_server.query.planner_ast`.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import NoReturn

import sqlglot
from sqlglot import exp
from sqlglot.tokens import TokenType

from veil_server.query.catalog import Catalog, Column, ColumnControl, Dataset
from veil_server.errors import DatasetNotFound, QueryRejected
from veil_server.query.plan import Aggregate, AggFunc, Filter, GroupKey, OutputColumn, PlanLimits, QueryPlan
from veil_server.query.planner_ast import (
    construct_name, contains, deny, extra_args, reject, short, unparen, unsupported,
)
from veil_server.query.planner_filters import literal, plan_filter

__all__ = ["PlanLimits", "plan_query"]


def plan_query(sql: str, catalog: Catalog, *, limits: PlanLimits = PlanLimits()) -> QueryPlan:
    """Validate ``sql`` against the subset and ``catalog``'s column controls and return its plan.

    Raises ``QueryRejected`` (INVALID_ARGUMENT), ``PolicyViolation`` (PERMISSION_DENIED) or
    ``DatasetNotFound`` (NOT_FOUND); never any other exception for any input string.
    """
    return _Planner(catalog, limits).plan(_parse(sql, limits))


# ----- parsing -----------------------------------------------------------------------------

_DIALECT = sqlglot.Dialect.get_or_raise("duckdb")
_OPEN = {TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE}
_CLOSE = {TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE}
_ALLOWED_CONTROL = {"\t", "\n", "\r"}


def _parse(sql: str, limits: PlanLimits) -> exp.Expr:
    if not isinstance(sql, str):
        reject("SQL_SYNTAX_ERROR", "the query must be a text string of SQL.")
    if len(sql) > limits.max_sql_length:
        reject("SQL_TOO_LONG", f"the query is longer than {limits.max_sql_length} characters; "
               "shorten it (e.g. fewer IN items).", limit=str(limits.max_sql_length))
    # Control and format characters (NUL, bidi overrides, zero-width) have no place in the subset
    # and can make the SQL a reviewer reads differ from what the parser sees (Trojan Source).
    for ch in sql:
        if ch not in _ALLOWED_CONTROL and unicodedata.category(ch) in ("Cc", "Cf", "Cs"):
            reject("INVALID_CHARACTER", f"the query contains the control or format character "
                   f"U+{ord(ch):04X}; remove it.", construct=f"U+{ord(ch):04X}")
    if not sql.strip():
        reject("EMPTY_QUERY", "the query is empty; send one SELECT statement.")
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
                reject("EXPRESSION_TOO_DEEP", f"the query nests brackets more than "
                       f"{limits.max_depth} deep; flatten it.", limit=str(limits.max_depth))
        elif tok.token_type in _CLOSE:
            depth -= 1
    try:
        statements = _DIALECT.parser().parse(tokens, sql)
    except RecursionError:
        reject("EXPRESSION_TOO_DEEP", "the query nests expressions too deeply (e.g. a long "
               "chain of NOT or unary minus); flatten it.")
    except Exception as exc:
        _syntax_error(exc)
    found = [s for s in statements if s is not None]
    if not found:
        reject("EMPTY_QUERY", "the query has no statement; send one SELECT statement.")
    if len(found) > 1:
        reject("MULTIPLE_STATEMENTS", f"the query holds {len(found)} statements; send exactly "
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
_MAX_ALIAS = 128

_Key = tuple[str, "Decimal | None"]  # (column name, bin width or None)


@dataclass
class _Item:
    """One SELECT list item: an aggregate or a (candidate) group key."""

    name: str
    explicit: bool  # the name came from AS alias
    agg: tuple[AggFunc, Column | None] | None = None
    key: _Key | None = None
    column: Column | None = None


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

    def plan(self, stmt: exp.Expr) -> QueryPlan:
        select = self._statement(stmt)
        self.dataset = self._from(select)
        items = self._select_list(select)
        grouped = self._group_by(select, items)
        keys = [i for i in items if i.key is not None]
        for item in keys:
            if item.key not in grouped:
                assert item.column is not None
                reject("RAW_COLUMN_IN_OUTPUT",
                       f"{_key_sql(item.key)} is in SELECT but neither aggregated nor in GROUP "
                       "BY; aggregate the column (e.g. COUNT(*), SUM(...)) or add it to GROUP BY "
                       "if it is a group key.", column=item.column.name)
        selected = {i.key for i in keys}
        for key in grouped:
            if key not in selected:
                reject("GROUP_KEY_NOT_SELECTED",
                       f"GROUP BY key {_key_sql(key)} is not in SELECT; every group key must be "
                       "selected so each released row says which group it is.", column=key[0])
        for item in keys:
            self._check_group_key(item)
        if not any(i.agg is not None for i in items):
            reject("NO_AGGREGATE", "the query selects no aggregate; add COUNT(*), SUM(column), "
                   "AVG(column), VARIANCE(column) or STDDEV(column).")
        where = None
        if select.args.get("where") is not None:
            where = plan_filter(select.args["where"].this, self.limits, self._column)
        return self._assemble(items, where)

    # ----- statement and clauses -----------------------------------------------------------

    def _statement(self, stmt: exp.Expr) -> exp.Select:
        if isinstance(stmt, exp.SetOperation):
            kw = construct_name(stmt)
            reject("SET_OPERATION_NOT_ALLOWED", f"{kw} is not allowed; send one SELECT per "
                   "query and combine results on your side.", construct=kw)
        if isinstance(stmt, exp.Subquery):
            reject("SUBQUERY_NOT_ALLOWED", "a parenthesised query is not allowed; send a bare "
                   "SELECT.", construct="SUBQUERY")
        if not isinstance(stmt, exp.Select):
            kw = construct_name(stmt)
            reject("NOT_A_SELECT", f"the query is not a SELECT (found {kw}); only one SELECT "
                   "of aggregates is accepted.", construct=kw)
        if stmt.args.get("with_"):
            self._clause("with_")
        for node in stmt.walk(bfs=False):
            if node is stmt:
                continue
            if isinstance(node, (exp.Query, exp.Subquery, exp.Exists)):
                reject("SUBQUERY_NOT_ALLOWED", "subqueries are not allowed (in FROM, WHERE or "
                       "SELECT); send one flat SELECT over one dataset.", construct="SUBQUERY")
            if isinstance(node, exp.Window):
                reject("WINDOW_FUNCTION_NOT_ALLOWED", "window functions (OVER) are not "
                       "allowed; use plain aggregates with GROUP BY.", construct="OVER")
        extra = extra_args(stmt, _SELECT_CLAUSES)
        if extra is not None:
            self._clause(extra)
        if stmt.args.get("from_") is None:
            reject("MISSING_FROM", "the query has no FROM; name one dataset, e.g. FROM patients.",
                   construct="FROM")
        return stmt

    def _clause(self, arg: str) -> NoReturn:
        reason, kw = _CLAUSES.get(arg, ("UNSUPPORTED_CLAUSE", arg.rstrip("_").upper()))
        reject(reason, f"{kw} is not allowed: {_FIXES[reason]}.", construct=kw)

    def _from(self, select: exp.Select) -> Dataset:
        source = select.args["from_"].this
        if isinstance(source, exp.Table) and isinstance(source.this, exp.Func):
            source = source.this  # FROM read_csv(...): a table function
        if isinstance(source, exp.Func):
            kw = construct_name(source)
            reject("FUNCTION_NOT_ALLOWED", f"table function {kw} is not allowed; FROM names one "
                   "registered dataset.", construct=kw)
        if not isinstance(source, exp.Table) or not isinstance(source.this, exp.Identifier):
            kw = construct_name(source)
            reject("UNSUPPORTED_CLAUSE", f"FROM {kw} is not allowed; FROM names one registered "
                   "dataset.", construct=kw)
        if source.args.get("joins") or source.args.get("laterals"):
            self._clause("joins")
        if source.args.get("db") or source.args.get("catalog"):
            reject("QUALIFIED_NAME_NOT_ALLOWED", "schema or catalog qualifiers are not allowed "
                   "in FROM; write the bare dataset name.", construct="FROM")
        extra = extra_args(source, {"this", "alias"})
        if extra is not None:
            kw = "TABLESAMPLE" if extra == "sample" else extra.rstrip("_").upper()
            reject("UNSUPPORTED_CLAUSE", f"{kw} on the dataset is not allowed: remove it.",
                   construct=kw)
        name = source.this.name
        dataset = self.catalog.get(name)
        if dataset is None:
            raise DatasetNotFound(f"there is no dataset named {short(name)!r}; list datasets with "
                                  "the catalog.", metadata={"dataset": short(name)})
        self.qualifier = dataset.name.lower()
        alias = source.args.get("alias")
        if alias is not None:
            if extra_args(alias, {"this"}) or not isinstance(alias.this, exp.Identifier):
                reject("UNSUPPORTED_CLAUSE", "a table alias may not rename columns; write "
                       "FROM name [AS alias].", construct="ALIAS")
            self.qualifier = alias.this.name.lower()
        return dataset

    # ----- columns -------------------------------------------------------------------------

    def _column(self, node: exp.Column) -> Column:
        if isinstance(node.this, exp.Star):
            reject("SELECT_STAR", "* is not allowed: name the aggregates to compute, e.g. "
                   "COUNT(*).", construct="*")
        if not isinstance(node.this, exp.Identifier) or extra_args(node, {"this", "table"}):
            if node.args.get("db") or node.args.get("catalog"):
                reject("QUALIFIED_NAME_NOT_ALLOWED", "a column may be qualified by the dataset "
                       "(or its alias) only; write the bare column name.", construct="COLUMN")
            unsupported(node, "a column reference")
        table = node.args.get("table")
        if table is not None and table.name.lower() != self.qualifier:
            reject("UNKNOWN_TABLE_REFERENCE", f"{short(table.name)!r} is not the dataset in FROM; "
                   "qualify columns by the dataset (or its alias) or not at all.",
                   construct=short(table.name))
        column = self.dataset.column(node.name)
        if column is None:
            reject("UNKNOWN_COLUMN", f"dataset {self.dataset.name} has no column "
                   f"{short(node.name)!r}; check the column names in the catalog.",
                   column=short(node.name))
        if column.hidden:
            deny("HIDDEN_COLUMN", f"column {column.name} is hidden by the owner and may not be "
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
            node = unparen(node)
            if type(node) in _AGGREGATES:
                n_aggs += 1
                if n_aggs > self.limits.max_aggregates:
                    reject("TOO_MANY_AGGREGATES", f"the query has more than "
                           f"{self.limits.max_aggregates} aggregates; split it.",
                           limit=str(self.limits.max_aggregates))
                func, column = self._aggregate(node)
                default = "count" if column is None else f"{func.value.lower()}_{column.name}"
                items.append(_Item(alias or default, alias is not None, agg=(func, column)))
                continue
            if isinstance(node, exp.Star):
                unsupported(node, "SELECT")
            if isinstance(node, exp.AggFunc) or contains(node, exp.AggFunc) is None:
                key = self._key(node, "SELECT")
            else:  # e.g. SUM(cost) / COUNT(*), ROUND(AVG(age))
                unsupported(node, "SELECT (arithmetic or functions over aggregates)")
            n_keys += 1
            if n_keys > self.limits.max_group_keys:
                reject("TOO_MANY_GROUP_KEYS", f"the query has more than "
                       f"{self.limits.max_group_keys} group keys; use fewer.",
                       limit=str(self.limits.max_group_keys))
            column = self.dataset.column(key[0])
            default = key[0] if key[1] is None else f"{key[0]}_bin"
            if any(i.key == key for i in items):
                reject("DUPLICATE_GROUP_KEY", f"group key {_key_sql(key)} is selected twice; "
                       "select it once.", column=key[0])
            items.append(_Item(alias or default, alias is not None, key=key, column=column))
        return items

    def _alias(self, node: exp.Alias) -> str:
        ident = node.args.get("alias")
        if not isinstance(ident, exp.Identifier):
            unsupported(node, "SELECT aliases")
        name = ident.name
        if not name.strip() or len(name) > _MAX_ALIAS:
            reject("INVALID_ALIAS", f"an output name must be 1 to {_MAX_ALIAS} characters and "
                   "not blank; choose another alias.", construct="AS")
        return name

    def _aggregate(self, node: exp.Expr) -> tuple[AggFunc, Column | None]:
        func = _AGGREGATES[type(node)]
        extra = extra_args(node, {"this", "big_int"})
        if extra is not None:
            reject("UNSUPPORTED_EXPRESSION", f"{func.value} takes exactly one argument (a "
                   "column, or * for COUNT).", construct=func.value)
        arg = node.this
        if arg is None:
            reject("UNSUPPORTED_EXPRESSION", f"{func.value} needs an argument: a column, or * "
                   "for COUNT.", construct=func.value)
        arg = unparen(arg)
        if isinstance(arg, exp.Distinct):
            kw = f"{func.value}(DISTINCT)"
            reject("FUNCTION_NOT_ALLOWED", f"{kw} is not allowed (distinct counts single out "
                   f"values); use {func.value} without DISTINCT.", construct=kw)
        if contains(arg, exp.AggFunc) is not None:
            reject("NESTED_AGGREGATE", f"an aggregate inside {func.value} is not allowed; "
                   "aggregate a bare column.", construct=func.value)
        if isinstance(arg, exp.Star) and func is AggFunc.COUNT:
            return func, None
        if not isinstance(arg, exp.Column):
            unsupported(arg, f"the argument of {func.value} (use a bare column)")
        column = self._column(arg)
        if not column.allows(ColumnControl.AGGREGATE):
            deny("AGGREGATE_NOT_ALLOWED", f"column {column.name} may not be aggregated; the owner "
                 "has not granted 'aggregate' on it (COUNT(*) needs no grant).", column)
        if func is not AggFunc.COUNT:
            if not column.numeric:
                reject("AGGREGATE_TYPE_MISMATCH", f"{func.value} needs a numeric column and "
                       f"{column.name} is {column.type.value.upper()}; use COUNT on it.",
                       column=column.name)
            if column.value_range is None:
                deny("AGGREGATE_NOT_ALLOWED", f"column {column.name} declares no value range, "
                     f"so {func.value} cannot bound each row's contribution; ask the owner to "
                     "declare one.", column)
        return func, column

    # ----- group keys ----------------------------------------------------------------------

    def _key(self, node: exp.Expr, where: str) -> _Key:
        """A group-key expression: a bare column or FLOOR(column / w) * w."""
        node = unparen(node)
        if isinstance(node, exp.Column):
            return (self._column(node).name, None)
        if isinstance(node, exp.Mul):
            left, right = unparen(node.this), unparen(node.expression)
            if isinstance(right, exp.Floor) and not isinstance(left, exp.Floor):
                left, right = right, left
            if isinstance(left, exp.Floor):
                return self._bin(left, right)
        if isinstance(node, exp.Floor):
            reject("UNSUPPORTED_EXPRESSION", "FLOOR is allowed only in the bin pattern "
                   "FLOOR(column / width) * width.", construct="FLOOR")
        unsupported(node, where)

    def _bin(self, floor: exp.Floor, outer: exp.Expr) -> _Key:
        div = unparen(floor.this)
        if (extra_args(floor, {"this"}) or not isinstance(div, exp.Div)
                or not isinstance(unparen(div.this), exp.Column)):
            reject("UNSUPPORTED_EXPRESSION", "a binned key must read FLOOR(column / width) * "
                   "width, with the same literal width twice.", construct="FLOOR")
        column = self._column(unparen(div.this))
        inner_w, outer_w = self._width(div.expression, column), self._width(outer, column)
        if inner_w != outer_w:
            reject("UNSUPPORTED_EXPRESSION", f"the bin pattern for {column.name} uses two "
                   "different widths; write FLOOR(column / width) * width with one width.",
                   construct="FLOOR")
        return (column.name, _plain(inner_w))

    def _width(self, node: exp.Expr, column: Column) -> Decimal:
        value = literal(node, "a bin width")
        if isinstance(value, str):
            reject("UNSUPPORTED_EXPRESSION", f"the bin width for {column.name} must be a number.",
                   column=column.name)
        return Decimal(value)

    def _group_by(self, select: exp.Select, items: list[_Item]) -> list[_Key]:
        group = select.args.get("group")
        if group is None:
            return []
        extra = extra_args(group, {"expressions"})
        if extra is not None:
            kw = "GROUP BY ALL" if extra == "all" else extra.upper().replace("_", " ")
            reject("UNSUPPORTED_CLAUSE", f"{kw} is not allowed: list the group keys.",
                   construct=kw)
        keys: list[_Key] = []
        for raw in group.expressions:
            node = unparen(raw)
            if isinstance(node, (exp.Rollup, exp.Cube, exp.GroupingSets)):
                kw = construct_name(node)
                reject("UNSUPPORTED_CLAUSE", f"{kw} is not allowed: list the group keys.",
                       construct=kw)
            if contains(node, exp.AggFunc) is not None:
                reject("AGGREGATE_IN_GROUP_BY", "aggregates are not allowed in GROUP BY; group "
                       "by columns or bins.", construct="GROUP BY")
            key = self._group_item(node, items)
            if key not in keys:
                keys.append(key)
            if len(keys) > self.limits.max_group_keys:
                reject("TOO_MANY_GROUP_KEYS", f"the query has more than "
                       f"{self.limits.max_group_keys} group keys; use fewer.",
                       limit=str(self.limits.max_group_keys))
        return keys

    def _group_item(self, node: exp.Expr, items: list[_Item]) -> _Key:
        if isinstance(node, exp.Literal) and not node.is_string:
            digits = str(node.this).lstrip("0")
            if not digits.isascii() or not digits.isdigit() or len(digits) > 6:
                reject("INVALID_GROUP_BY_ORDINAL", "a GROUP BY position must be a whole number "
                       "between 1 and the number of SELECT items.", construct="GROUP BY")
            pos = int(digits)
            if not 1 <= pos <= len(items):
                reject("INVALID_GROUP_BY_ORDINAL", f"GROUP BY position {pos} is not between 1 and "
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
                reject("AMBIGUOUS_GROUP_BY", f"GROUP BY {column.name} names both a column and a "
                       "SELECT alias for something else; rename the alias or use a position.",
                       column=column.name)
            return key
        return self._key(node, "GROUP BY")

    @staticmethod
    def _referenced(item: _Item) -> _Key:
        if item.key is None:
            reject("AGGREGATE_IN_GROUP_BY", f"GROUP BY refers to the aggregate {item.name}; group "
                   "by columns or bins.", construct="GROUP BY")
        return item.key

    def _check_group_key(self, item: _Item) -> None:
        column, key = item.column, item.key
        assert column is not None and key is not None
        if not column.allows(ColumnControl.GROUP):
            deny("GROUP_BY_NOT_ALLOWED", f"column {column.name} may not be a group key; the "
                 "owner has not granted 'group' on it.", column)
        width = key[1]
        if width is None:
            if not column.categories and ColumnControl.PUBLIC not in column.controls:
                fix = (f"group by bins instead: FLOOR({column.name} / {column.bin_width}) * "
                       f"{column.bin_width}" if column.bin_width is not None
                       else "ask the owner to declare its categories")
                deny("GROUP_BY_NOT_ALLOWED", f"column {column.name} declares no public set of "
                     f"categories, so it cannot be a group key as is; {fix}.", column)
            return
        if (not column.numeric or column.bin_width is None or column.bin_width <= 0
                or column.value_range is None):
            deny("GROUP_BY_NOT_ALLOWED", f"column {column.name} declares no bin width and range, "
                 "so it cannot be binned.", column)
        ratio = Fraction(width) / Fraction(column.bin_width)
        if width <= 0 or ratio.denominator != 1:
            deny("BIN_WIDTH_NOT_ALLOWED", f"bin width for {column.name} must be a positive "
                 f"multiple of {column.bin_width}.", column)

    # ----- the plan ------------------------------------------------------------------------

    def _assemble(self, items: list[_Item], where: Filter | None) -> QueryPlan:
        seen: set[str] = set()
        keys: list[GroupKey] = []
        aggs: list[Aggregate] = []
        output: list[OutputColumn] = []
        for item in items:
            folded = item.name.casefold()
            if folded in seen:
                reject("DUPLICATE_OUTPUT_NAME", f"two SELECT items are named "
                       f"{short(item.name)!r}; give each a distinct alias with AS.",
                       column=short(item.name))
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
