"""The design matrix, built inside the engine, and the aggregates a model releases.

Population: every row of the dataset, whatever the formula (no WHERE): a fit on ``y ~ a`` and
one on ``y ~ b`` cover the same rows, so two models cannot be differenced into a smaller
population. So that no row drops out, a missing numeric value is taken at the centre of its
declared range, and a categorical value outside the declared categories (or missing) has every
indicator 0, i.e. it counts with the reference level. Every numeric value is clamped to its
declared range [lo, hi] first: that bounds each row's contribution to every statistic, which is
what the DP noise is sized from (:func:`sensitivities`).

Statistics, in release order (``ModelStatistics.cells``):

- gaussian (OLS): n, the upper triangle of X'X (row by row), X'y, y'y;
- binomial (logistic, at coefficients b): n, the upper triangle of X'WX with W = p(1 - p),
  the gradient X'(y - p), with p = 1 / (1 + exp(-Xb));
- poisson (log link, at b): the same with mu = min(exp(Xb), hi) and W = mu, hi the response's
  declared maximum (the clip bounds each row's contribution; a fit whose means all stay below hi,
  as on data the range covers, is the unclipped maximum-likelihood fit).

Computed by DuckDB in double precision over the view of the dataset; column names come from the
checked :class:`~veil_server.models.formula.ModelSpec` (quoted), every value (levels, ranges,
coefficients) is a bound parameter.
"""

from __future__ import annotations

import math
from typing import Any

from dataclasses import dataclass

from ..errors import FailedPrecondition
from ..query.catalog import Column, Dataset
from .formula import ModelSpec, Term


@dataclass(frozen=True)
class Dialect:
    """What differs between the engines' SQL for the design (an engine's ``model_dialect`` tuple;
    DuckDB's by default)."""

    placeholder: str = "?"
    double: str = "DOUBLE"
    text: str = "VARCHAR"
    quote: str = '"'  # identifiers: standard SQL's double quotes; Spark SQL's backticks

    def ident(self, name: str) -> str:
        return self.quote + name.replace(self.quote, self.quote * 2) + self.quote


DUCKDB = Dialect()
POSTGRES = Dialect("%s", "DOUBLE PRECISION", "TEXT")
ETA_LIMIT = 700.0  # |Xb| beyond this gives p = 0 or 1 in doubles anyway; PostgreSQL's exp() overflows

GAUSSIAN, BINOMIAL, POISSON = "gaussian", "binomial", "poisson"
FAMILIES = (GAUSSIAN, BINOMIAL, POISSON)


def statistic_count(p: int, family: str) -> int:
    """n, the p(p+1)/2 upper triangle and p cross-products, plus y'y for OLS."""
    return 1 + p * (p + 1) // 2 + p + (1 if family == GAUSSIAN else 0)


def _range(col: Column) -> tuple[float, float]:
    assert col.value_range is not None
    lo, hi = (float(v) for v in col.value_range)
    return lo, hi


def bound(term: Term, ds: Dataset) -> float:
    """The largest |value| the term takes on any row (after clamping)."""
    if term.intercept or term.level is not None:
        return 1.0
    col = ds.column(term.column)
    assert col is not None
    lo, hi = _range(col)
    return max(abs(lo), abs(hi))


def sensitivities(spec: ModelSpec, ds: Dataset, family: str) -> list[float]:
    """How far adding or removing one row moves each statistic (value units), from the clamps:
    |x_i x_j| <= B_i B_j; for logistic, W <= 1/4 and |y - p| <= 1 (y clamped to [0, 1]); for
    Poisson, the mean is clipped to the response's declared [0, hi], so W = mu <= hi and
    |y - mu| <= hi."""
    b = [bound(t, ds) for t in spec.terms]
    lo, hi = _range(spec.response)
    by = max(abs(lo), abs(hi))
    out = [1.0]
    w = {BINOMIAL: 0.25, POISSON: hi}.get(family, 1.0)
    p = len(b)
    for i in range(p):
        for j in range(i, p):
            out.append(w * b[i] * b[j])
    out += [bi * (1.0 if family == BINOMIAL else by) for bi in b]
    if family == GAUSSIAN:
        out.append(by * by)
    return out


def _clamped(ident: str, col: Column, params: list[Any], d: Dialect) -> str:
    lo, hi = _range(col)
    params.extend([lo, hi, (lo + hi) / 2])
    q = d.placeholder
    return f"COALESCE(LEAST(GREATEST(CAST({ident} AS {d.double}), {q}), {q}), {q})"


def _term_sql(term: Term, ds: Dataset, params: list[Any], d: Dialect) -> str:
    if term.intercept:
        return "1.0"
    ident = d.ident(term.column)
    if term.level is not None:
        params.append(str(term.level))
        return f"(CASE WHEN CAST({ident} AS {d.text}) = {d.placeholder} THEN 1.0 ELSE 0.0 END)"
    col = ds.column(term.column)
    assert col is not None
    return _clamped(ident, col, params, d)


def render(spec: ModelSpec, ds: Dataset, family: str, coefficients: list[float],
           dialect: Dialect = DUCKDB) -> tuple[Any, list[Any]]:
    """(render(relation) -> SQL, params) for one row of the statistics in release order."""
    d = dialect
    params: list[Any] = []
    p = len(spec.terms)
    cols = [f"{_term_sql(t, ds, params, d)} AS x{i}" for i, t in enumerate(spec.terms)]
    cols.append(f"{_clamped(d.ident(spec.response.name), spec.response, params, d)} AS y")
    inner_params = params
    outer: list[str] = ["COUNT(*)"]
    if family == GAUSSIAN:
        outer += [f"SUM(x{i} * x{j})" for i in range(p) for j in range(i, p)]
        outer += [f"SUM(x{i} * y)" for i in range(p)]
        outer.append("SUM(y * y)")
        select_params: list[Any] = []
        middle = None
    else:
        eta = " + ".join(f"{d.placeholder} * x{i}" for i in range(p))
        q = d.placeholder
        select_params = [float(c) for c in coefficients] + [-ETA_LIMIT, ETA_LIMIT]
        if family == POISSON:  # log link; the mean clipped to the response's declared maximum
            select_params.append(_range(spec.response)[1])
            mean, weight = f"LEAST(exp(LEAST(GREATEST({eta}, {q}), {q})), {q})", "mu"
        else:  # logit link
            mean, weight = f"1.0 / (1.0 + exp(-LEAST(GREATEST({eta}, {q}), {q})))", "mu * (1.0 - mu)"
        middle = f"SELECT *, {mean} AS mu FROM ({{inner}}) AS terms"
        outer += [f"SUM({weight} * x{i} * x{j})" for i in range(p) for j in range(i, p)]
        outer += [f"SUM(x{i} * (y - mu))" for i in range(p)]

    def sql(view: str) -> str:
        inner = f"SELECT {', '.join(cols)} FROM {view}"
        source = middle.format(inner=inner) if middle else inner
        return f"SELECT {', '.join(outer)} FROM ({source}) AS design"

    # Parameter order follows the text: the coefficients appear in the middle SELECT, before
    # the inner SELECT's ranges and levels.
    return sql, select_params + inner_params


def compute(engine: Any, spec: ModelSpec, ds: Dataset, family: str, coefficients: list[float]) -> list[float]:
    """The exact statistics, from the dataset's engine (DuckDB files, PostgreSQL, Spark)."""
    backend = getattr(engine, "engine_for", lambda _d: engine)(ds)
    moments = getattr(backend, "model_moments", None)
    if moments is None:
        raise FailedPrecondition(f"datasets/{ds.name} is served by the {ds.format} engine, which cannot fit "
                                 "models yet; models run on CSV, Parquet and PostgreSQL datasets",
                                 reason="MODEL_ENGINE_UNSUPPORTED", metadata={"dataset": ds.name})
    render_sql, params = render(spec, ds, family, coefficients, Dialect(*getattr(backend, "model_dialect", ())))
    row = moments(ds, render_sql, params)
    out = [float(v) if v is not None else 0.0 for v in row]
    if not all(math.isfinite(v) for v in out):  # clamped inputs cannot give this; never release it
        raise FailedPrecondition("the model statistics are not finite at these coefficients; start the fit "
                                 "again from smaller coefficients", reason="MODEL_NOT_FINITE")
    return out
