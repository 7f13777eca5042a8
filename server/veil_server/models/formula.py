"""Model formulas: ``y ~ a + b + C(cat)``, parsed by a small grammar of our own and checked
against the dataset's column controls.

Why not patsy or formulaic: both evaluate a term as Python code in an environment
(``np.log(x)``, ``I(x ** 2)``); on a node that holds the raw data an analyst's string must never
reach an evaluator. The grammar here accepts exactly what the node can build in SQL:

    formula   := NAME "~" term ("+" term)* [("-" "1") | ("+" "0")]
    term      := NAME | "C(" NAME [", Treatment(" [reference=] LITERAL ")"] ")" | "1"

A numeric term must be granted ``aggregate`` and declare a range (its values are clamped to it:
that bounds each row's contribution, which sizes the DP noise). A categorical term ``C(g)`` must
be a ``group`` column with declared categories; it expands, in treatment coding, over those
categories only (statsmodels' names: ``C(g)[T.b]``), the first declared category (or the named
one) as reference. A hidden or unknown column is refused like in SQL (``HIDDEN_COLUMN``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from ..errors import InvalidArgument, PolicyViolation
from ..query.catalog import Column, ColumnControl, Dataset

MAX_FORMULA = 2000
MAX_TERMS = 64

_TOKEN = re.compile(r"\s*(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<num>\d+(?:\.\d+)?)|(?P<str>'[^']*'|\"[^\"]*\")"
                    r"|(?P<op>[~+\-(),=]))")


@dataclass(frozen=True)
class Term:
    """One design column: a clamped numeric column, or one level's indicator of a categorical one."""

    name: str  # statsmodels' column name
    column: str  # "" for the intercept
    level: str | int | None = None  # categorical: the level this indicator is 1 for

    @property
    def intercept(self) -> bool:
        return not self.column


@dataclass(frozen=True)
class ModelSpec:
    response: Column
    terms: tuple[Term, ...]
    columns: tuple[str, ...]  # every dataset column the model touches (lower case)

    @property
    def parameters(self) -> int:
        return len(self.terms)


def _fail(message: str, reason: str = "MODEL_FORMULA_INVALID") -> InvalidArgument:
    return InvalidArgument(message, reason=reason)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None:
            raise _fail("the formula has a character outside the grammar `y ~ a + b + C(g)` at position "
                        f"{pos + 1}; only column names, C(...), Treatment(...), + and - 1 are accepted")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, kind: str, value: str | None = None) -> str:
        t = self.peek()
        if t is None or t[0] != kind or (value is not None and t[1] != value):
            want = value or kind
            raise _fail(f"the formula expected {want!r} at token {self.i + 1}; write it as `y ~ a + b + C(g)`")
        self.i += 1
        return t[1]

    def at(self, kind: str, value: str | None = None) -> bool:
        t = self.peek()
        return t is not None and t[0] == kind and (value is None or t[1] == value)


def _literal(kind: str, text: str) -> str | int | Decimal:
    if kind == "str":
        return text[1:-1]
    if kind == "num":
        return int(text) if text.isdigit() else Decimal(text)
    return text  # a bare word names a text level


def parse(text: str) -> tuple[str, list[tuple[str, object]], bool]:
    """(response, [(kind, payload)], intercept) -- syntax only, no catalog."""
    if len(text) > MAX_FORMULA:
        raise _fail(f"the formula is longer than {MAX_FORMULA} characters")
    p = _Parser(text)
    response = p.take("name")
    p.take("op", "~")
    terms: list[tuple[str, object]] = []
    intercept = True
    sign = "+"
    first = True
    while True:
        if not first:
            if p.peek() is None:
                break
            sign = p.take("op")
            if sign not in "+-":
                raise _fail("terms are joined by + (or `- 1` to drop the intercept)")
        first = False
        if p.at("num"):
            value = p.take("num")
            if value not in ("0", "1"):
                raise _fail("a number in a formula can only be 1 (the intercept) or 0 (no intercept)")
            intercept = (value == "1") == (sign == "+")
            continue
        if sign == "-":
            raise _fail("only the intercept can be removed (`- 1`); leave other terms out instead")
        name = p.take("name")
        if name == "C" and p.at("op", "("):
            p.take("op", "(")
            column = p.take("name")
            reference: object = None
            if p.at("op", ","):
                p.take("op", ",")
                if p.take("name") != "Treatment":
                    raise _fail("C(g, ...) accepts only Treatment(reference) as its coding")
                p.take("op", "(")
                if p.at("name", "reference"):
                    p.take("name")
                    p.take("op", "=")
                t = p.peek()
                if t is None or t[0] not in ("num", "str", "name"):
                    raise _fail("Treatment(...) takes the reference level, e.g. Treatment('b') or Treatment(2)")
                p.i += 1
                reference = _literal(*t)
                p.take("op", ")")
            p.take("op", ")")
            terms.append(("categorical", (column, reference)))
        else:
            if p.at("op", "("):
                raise _fail(f"functions such as {name}(...) are not accepted; only C(...) for categorical terms")
            terms.append(("numeric", name))
    return response, terms, intercept


def _column(ds: Dataset, name: str, control: ColumnControl) -> Column:
    col = ds.column(name)
    if col is None:
        raise PolicyViolation(f"datasets/{ds.name} has no column {name}; list its columns with GetDataset",
                              reason="UNKNOWN_COLUMN", metadata={"column": name})
    if col.hidden:
        raise PolicyViolation(f"column {col.name} is hidden by the owner and may not be used in a model",
                              reason="HIDDEN_COLUMN", metadata={"column": col.name})
    if not col.allows(control):
        use = "aggregated" if control is ColumnControl.AGGREGATE else "a group key"
        raise PolicyViolation(f"column {col.name} may not be {use}, so it cannot be a "
                              f"{'numeric' if control is ColumnControl.AGGREGATE else 'categorical'} model term; "
                              "use a column whose controls allow it", reason="COLUMN_NOT_ALLOWED",
                              metadata={"column": col.name})
    return col


def _numeric(ds: Dataset, name: str) -> Column:
    col = _column(ds, name, ColumnControl.AGGREGATE)
    if not col.numeric or col.value_range is None:
        raise PolicyViolation(f"column {col.name} declares no numeric range, so its contribution cannot be bounded; "
                              "ask the owner to declare one", reason="MODEL_RANGE_REQUIRED",
                              metadata={"column": col.name})
    return col


def _same(level: object, declared: str | int) -> bool:
    return str(level) == str(declared)


def resolve(text: str, ds: Dataset) -> ModelSpec:
    """The checked design of ``text`` on ``ds`` (refuses what the column controls forbid)."""
    response_name, raw, intercept = parse(text)
    response = _numeric(ds, response_name)
    terms: list[Term] = [Term("Intercept", "")] if intercept else []
    touched = [response.name.lower()]
    for kind, payload in raw:
        if kind == "numeric":
            col = _numeric(ds, str(payload))
            terms.append(Term(col.name, col.name))
            touched.append(col.name.lower())
            continue
        name, reference = payload  # type: ignore[misc]
        col = _column(ds, name, ColumnControl.GROUP)
        if not col.categories:
            raise PolicyViolation(f"column {col.name} declares no categories, so C({col.name}) has no public "
                                  "domain to expand over; ask the owner to declare them",
                                  reason="MODEL_CATEGORIES_REQUIRED", metadata={"column": col.name})
        levels = list(col.categories)
        if reference is not None:
            match = [lv for lv in levels if _same(reference, lv)]
            if not match:
                raise PolicyViolation(f"the reference level of C({col.name}) is not one of its declared categories; "
                                      "use a declared one (GetDataset lists them)", reason="CATEGORY_NOT_DECLARED",
                                      metadata={"column": col.name})
            ref = match[0]
        else:
            ref = levels[0]
        label = f"C({col.name}, Treatment({ref!r}))" if reference is not None else f"C({col.name})"
        # Treatment coding as statsmodels does it: the reference level is dropped, except for the
        # first categorical term of a model without intercept, which spans it (full rank).
        full = not intercept and not any(t.level is not None for t in terms)
        for lv in levels:
            if lv == ref and not full:
                continue
            terms.append(Term(f"{label}[{lv}]" if full else f"{label}[T.{lv}]", col.name, lv))
        touched.append(col.name.lower())
    # statsmodels' (patsy's) column order: the intercept, categorical terms, then numeric ones.
    terms = [t for t in terms if t.intercept] + [t for t in terms if t.level is not None] + \
        [t for t in terms if not t.intercept and t.level is None]
    names = [t.name for t in terms]
    if len(set(names)) != len(names):
        raise _fail("a term appears twice in the formula; name each column once")
    if not terms:
        raise _fail("the model has no terms; add a column or keep the intercept")
    if len(terms) > MAX_TERMS:
        raise InvalidArgument(f"the model has more than {MAX_TERMS} parameters; use fewer terms",
                              reason="MODEL_TOO_MANY_PARAMETERS")
    if response.name.lower() in touched[1:]:
        raise _fail("the response cannot also be a term")
    return ModelSpec(response, tuple(terms), tuple(dict.fromkeys(touched)))
