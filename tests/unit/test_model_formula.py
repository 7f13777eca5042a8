"""The model formula grammar (issue 18): what it accepts, how it names and orders design columns
(as statsmodels does), and what it refuses -- nothing is ever evaluated as code."""

from __future__ import annotations

from decimal import Decimal

import pytest

from veil_server.errors import VeilError
from veil_server.models.design import GAUSSIAN, BINOMIAL, render, sensitivities, statistic_count
from veil_server.models.formula import parse, resolve
from veil_server.query.catalog import Column, ColumnControl, ColumnType, Dataset

AGG, GROUP, HIDDEN, FILTER = (frozenset({ColumnControl.AGGREGATE}), frozenset({ColumnControl.GROUP}),
                              frozenset({ColumnControl.HIDDEN}), frozenset({ColumnControl.FILTER}))
DS = Dataset("t", "t.csv", "csv", (
    Column("y", ColumnType.DECIMAL, AGG, value_range=(Decimal(0), Decimal(10)), scale=2),
    Column("b", ColumnType.INTEGER, AGG, value_range=(Decimal(0), Decimal(1))),
    Column("a", ColumnType.DECIMAL, AGG, value_range=(Decimal(-3), Decimal(2)), scale=1),
    Column("g", ColumnType.TEXT, GROUP, categories=("x", "y", "z")),
    Column("h", ColumnType.INTEGER, GROUP, categories=(1, 2)),
    Column("secret", ColumnType.INTEGER, HIDDEN),
    Column("f", ColumnType.INTEGER, FILTER, value_range=(Decimal(0), Decimal(9))),
), frozenset({"research"}))


@pytest.mark.parametrize("formula,names", [
    ("y ~ a", ["Intercept", "a"]),
    ("y ~ a + C(g)", ["Intercept", "C(g)[T.y]", "C(g)[T.z]", "a"]),
    ("y~C(g)+a-1", ["C(g)[x]", "C(g)[y]", "C(g)[z]", "a"]),
    ("y ~ C(g) + C(h) + 0", ["C(g)[x]", "C(g)[y]", "C(g)[z]", "C(h)[T.2]"]),
    ("y ~ C(g, Treatment('y'))", ["Intercept", "C(g, Treatment('y'))[T.x]", "C(g, Treatment('y'))[T.z]"]),
    ("y ~ C(h, Treatment(reference=2)) + a", ["Intercept", "C(h, Treatment(2))[T.1]", "a"]),
    ("Y ~ A", ["Intercept", "a"]),  # names are case-insensitive, as in SQL
])
def test_accepted(formula, names):
    spec = resolve(formula, DS)
    assert [t.name for t in spec.terms] == names
    assert statistic_count(len(names), GAUSSIAN) == statistic_count(len(names), BINOMIAL) + 1


@pytest.mark.parametrize("formula,reason", [
    ("y ~ secret", "HIDDEN_COLUMN"),
    ("secret ~ a", "HIDDEN_COLUMN"),
    ("y ~ C(secret)", "HIDDEN_COLUMN"),
    ("y ~ f", "COLUMN_NOT_ALLOWED"),
    ("y ~ C(a)", "COLUMN_NOT_ALLOWED"),
    ("y ~ g", "COLUMN_NOT_ALLOWED"),
    ("y ~ nope", "UNKNOWN_COLUMN"),
    ("y ~ C(g, Treatment('w'))", "CATEGORY_NOT_DECLARED"),
    ("y ~ C(h, Treatment(3))", "CATEGORY_NOT_DECLARED"),
    ("y ~ a + a", "MODEL_FORMULA_INVALID"),
    ("y ~ y", "MODEL_FORMULA_INVALID"),
    ("y ~ a:b", "MODEL_FORMULA_INVALID"),
    ("y ~ a*b", "MODEL_FORMULA_INVALID"),
    ("y ~ log(a)", "MODEL_FORMULA_INVALID"),
    ("y ~ I(a**2)", "MODEL_FORMULA_INVALID"),
    ("y ~ C(g, Sum)", "MODEL_FORMULA_INVALID"),
    ("y ~ a - b", "MODEL_FORMULA_INVALID"),
    ("y ~ 2", "MODEL_FORMULA_INVALID"),
    ("y a", "MODEL_FORMULA_INVALID"),
    ("~ a", "MODEL_FORMULA_INVALID"),
    ("y ~ a; DROP TABLE t", "MODEL_FORMULA_INVALID"),
    ('y ~ a + "b"', "MODEL_FORMULA_INVALID"),
    ("y ~ a" + " + a" * 2000, "MODEL_FORMULA_INVALID"),
    ("y ~ 0", "MODEL_FORMULA_INVALID"),
])
def test_refused(formula, reason):
    with pytest.raises(VeilError) as e:
        resolve(formula, DS)
    assert e.value.reason == reason


def test_sensitivities_come_from_declared_ranges():
    spec = resolve("y ~ a + C(h)", DS)  # Intercept, C(h)[T.2], a; |a| <= 3, |y| <= 10
    s = sensitivities(spec, DS, GAUSSIAN)
    assert s == [1.0, 1, 1, 3, 1, 3, 9, 10, 10, 30, 100]
    spec = resolve("b ~ a", DS)
    assert sensitivities(spec, DS, BINOMIAL) == [1.0, 0.25, 0.75, 2.25, 1, 3]


def test_poisson_sensitivities_use_the_clipped_mean():
    spec = resolve("y ~ a", DS)  # y in [0, 10]: mu clipped to 10, W <= 10, |y - mu| <= 10
    assert sensitivities(spec, DS, "poisson") == [1.0, 10, 30, 90, 10, 30]


def test_sql_binds_every_value_and_quotes_every_name():
    spec = resolve("y ~ a + C(g)", DS)
    sql, params = render(spec, DS, BINOMIAL, [0.5, 1.0, -2.0, 3.0])
    text = sql('"ds_t"')
    assert "'x'" not in text and "0.5" not in text  # levels and coefficients are parameters
    assert text.count("?") == len(params)
    assert '"a"' in text and '"g"' in text


def test_parse_is_syntax_only():
    assert parse("y ~ a + C(g) - 1") == ("y", [("numeric", "a"), ("categorical", ("g", None))], False)
