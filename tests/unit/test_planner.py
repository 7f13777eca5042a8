"""The SQL planner: accepted queries become exact plans; everything else is refused by reason."""

from __future__ import annotations

import re
from decimal import Decimal

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veil_server.query.catalog import Catalog, Column, ColumnControl, ColumnType, Dataset
from veil_server.errors import VeilError
from veil_server.query.plan import (
    Aggregate, AggFunc, And, Between, Compare, GroupKey, InList, IsNull, Not, Or, OutputColumn,
    QueryPlan,
)
from veil_server.query.planner import PlanLimits, plan_query

C = ColumnControl
T = ColumnType
D = Decimal

REGIONS = ("North", "South", "East", "West", "Central", "Highlands", "Islands", "Capital")
DIAGNOSES = ("cardiac", "respiratory", "oncology", "orthopaedic", "maternity", "other")

PATIENTS = Dataset(
    name="patients",
    source="data/patients.csv",
    format="csv",
    purposes=frozenset({"research"}),
    columns=(
        Column("patient_id", T.INTEGER, frozenset({C.HIDDEN})),
        Column("region", T.TEXT, frozenset({C.GROUP}), categories=REGIONS),
        Column("sex", T.TEXT, frozenset({C.GROUP}), categories=("F", "M")),
        Column("age", T.INTEGER, frozenset({C.FILTER, C.GROUP, C.AGGREGATE}),
               value_range=(D(0), D(110)), scale=0, bin_width=D(5)),
        Column("postcode", T.TEXT, frozenset({C.FILTER})),
        Column("diagnosis", T.TEXT, frozenset({C.GROUP}), categories=DIAGNOSES),
        Column("length_of_stay", T.INTEGER, frozenset({C.AGGREGATE}), value_range=(D(0), D(365))),
        Column("cost", T.DECIMAL, frozenset({C.AGGREGATE}), value_range=(D(0), D(1_000_000)),
               scale=2),
        Column("admitted_year", T.INTEGER, frozenset({C.FILTER})),
        Column("bmi", T.DECIMAL, frozenset({C.FILTER, C.AGGREGATE}), value_range=(D(10), D(80)),
               scale=1, bin_width=D("0.5")),
        Column("ward", T.TEXT, frozenset({C.PUBLIC}), categories=("A", "B", "C")),
        Column("notes", T.TEXT, frozenset()),  # no controls: hidden
    ),
)
VISITS = Dataset(
    name="Visits", source="data/visits.csv", format="csv", purposes=frozenset({"research"}),
    columns=(Column("clinic", T.TEXT, frozenset({C.GROUP}), categories=("x", "y")),),
)
CATALOG = Catalog([PATIENTS, VISITS])

INVALID = grpc.StatusCode.INVALID_ARGUMENT
DENIED = grpc.StatusCode.PERMISSION_DENIED
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def plan(sql: str, **limits: int) -> QueryPlan:
    return plan_query(sql, CATALOG, limits=PlanLimits(**limits))


def count(alias: str = "count") -> Aggregate:
    return Aggregate(AggFunc.COUNT, None, alias)


def agg_out(*names: str) -> tuple[OutputColumn, ...]:
    return tuple(OutputColumn(n, "aggregate", i) for i, n in enumerate(names))


# ----- accepted queries --------------------------------------------------------------------


def test_count_star() -> None:
    p = plan("SELECT COUNT(*) FROM patients")
    assert p == QueryPlan("patients", (), (count(),), None, agg_out("count"))
    assert p.canonical_sql() == 'SELECT COUNT(*) AS "count" FROM "patients"'
    assert p.columns_touched() == []


def test_full_query_plan_is_exact() -> None:
    p = plan(
        """
        SELECT region, FLOOR(age / 10) * 10 AS age_band, COUNT(*) AS n, SUM(cost),
               AVG(length_of_stay), VARIANCE(cost), STDDEV(age) AS sd
        FROM patients
        WHERE age >= 18 AND 2020 <= admitted_year AND postcode NOT IN ('AB1', 'AB2')
          AND (bmi BETWEEN 18.5 AND 25 OR bmi IS NULL) AND NOT (admitted_year = 2021)
        GROUP BY region, age_band
        """
    )
    assert p == QueryPlan(
        dataset="patients",
        group_keys=(GroupKey("region", "region"), GroupKey("age", "age_band", D(10))),
        aggregates=(
            count("n"),
            Aggregate(AggFunc.SUM, "cost", "sum_cost"),
            Aggregate(AggFunc.AVG, "length_of_stay", "avg_length_of_stay"),
            Aggregate(AggFunc.VAR_SAMP, "cost", "var_samp_cost"),
            Aggregate(AggFunc.STDDEV_SAMP, "age", "sd"),
        ),
        where=And((
            Compare("age", ">=", 18),
            Compare("admitted_year", ">=", 2020),
            InList("postcode", ("AB1", "AB2"), negated=True),
            Or((Between("bmi", D("18.5"), 25), IsNull("bmi"))),
            Not(Compare("admitted_year", "=", 2021)),
        )),
        output=(
            OutputColumn("region", "group", 0),
            OutputColumn("age_band", "group", 1),
            OutputColumn("n", "aggregate", 0),
            OutputColumn("sum_cost", "aggregate", 1),
            OutputColumn("avg_length_of_stay", "aggregate", 2),
            OutputColumn("var_samp_cost", "aggregate", 3),
            OutputColumn("sd", "aggregate", 4),
        ),
    )
    assert p.canonical_sql() == (
        'SELECT "region" AS "region", FLOOR("age" / 10) * 10 AS "age_band", COUNT(*) AS "n", '
        'SUM("cost") AS "sum_cost", AVG("length_of_stay") AS "avg_length_of_stay", '
        'VAR_SAMP("cost") AS "var_samp_cost", STDDEV_SAMP("age") AS "sd" FROM "patients" '
        'WHERE ("age" >= 18) AND ("admitted_year" >= 2020) '
        'AND ("postcode" NOT IN (\'AB1\', \'AB2\')) '
        'AND (("bmi" BETWEEN 18.5 AND 25) OR ("bmi" IS NULL)) AND (NOT ("admitted_year" = 2021)) '
        'GROUP BY "region", FLOOR("age" / 10) * 10'
    )
    assert p.columns_touched() == [
        "admitted_year", "age", "bmi", "cost", "length_of_stay", "postcode", "region",
    ]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT sex, FLOOR(age / 5) * 5, COUNT(*) FROM patients GROUP BY sex, FLOOR(age / 5) * 5",
        "SELECT sex, FLOOR(age / 5) * 5, COUNT(*) FROM patients GROUP BY 1, 2",
        "SELECT sex, FLOOR(age / 5) * 5, COUNT(*) FROM patients GROUP BY 2, 1",
        "SELECT sex, 5 * FLOOR((age) / 5.0), COUNT(*) FROM patients GROUP BY (sex), 2",
        "select SEX, floor(AGE/5)*5, count(*) from PATIENTS group by Sex, FLOOR(age/5)*5",
        'SELECT "Sex", FLOOR("AGE" / 5) * 5, COUNT(*) FROM "Patients" GROUP BY 1, 2',
        "SELECT p.sex, FLOOR(p.age / 5) * 5, COUNT(*) FROM patients AS p GROUP BY p.sex, 2",
        "SELECT patients.sex, FLOOR(age / 5) * 5, COUNT(*) FROM patients GROUP BY sex, 2",
        "FROM patients SELECT sex, FLOOR(age / 5) * 5, COUNT(*) GROUP BY sex, 2",
        "SELECT sex, FLOOR(age / 5) * 5, COUNT(*) FROM patients GROUP BY sex, 2, sex ;",
    ],
)
def test_group_by_forms_give_one_plan(sql: str) -> None:
    expected = QueryPlan(
        "patients",
        (GroupKey("sex", "sex"), GroupKey("age", "age_bin", D(5))),
        (count(),),
        None,
        (OutputColumn("sex", "group", 0), OutputColumn("age_bin", "group", 1),
         OutputColumn("count", "aggregate", 0)),
    )
    assert plan(sql) == expected


def test_group_by_alias_and_output_order() -> None:
    p = plan("SELECT COUNT(age) AS n, diagnosis AS dx, ward FROM patients GROUP BY dx, ward")
    assert p.group_keys == (GroupKey("diagnosis", "dx"), GroupKey("ward", "ward"))
    assert p.aggregates == (Aggregate(AggFunc.COUNT, "age", "n"),)
    assert p.output == (OutputColumn("n", "aggregate", 0), OutputColumn("dx", "group", 0),
                        OutputColumn("ward", "group", 1))
    assert p.canonical_sql() == (
        'SELECT COUNT("age") AS "n", "diagnosis" AS "dx", "ward" AS "ward" '
        'FROM "patients" GROUP BY "diagnosis", "ward"'
    )


def test_default_names() -> None:
    p = plan("SELECT COUNT(*), COUNT(age), SUM(cost), AVG(cost), VAR_SAMP(bmi), VARIANCE(age), "
             "STDDEV_SAMP(cost), STDDEV(bmi) FROM patients")
    assert [o.name for o in p.output] == [
        "count", "count_age", "sum_cost", "avg_cost", "var_samp_bmi", "var_samp_age",
        "stddev_samp_cost", "stddev_samp_bmi",
    ]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("age > 17", Compare("age", ">", 17)),
        ("17 < age", Compare("age", ">", 17)),
        ("17 <= age", Compare("age", ">=", 17)),
        ("17 >= age", Compare("age", "<=", 17)),
        ("17 = age", Compare("age", "=", 17)),
        ("17 != age", Compare("age", "<>", 17)),
        ("age <> -3", Compare("age", "<>", -3)),
        ("(age) > (17)", Compare("age", ">", 17)),
        ("bmi < 25.50", Compare("bmi", "<", D("25.50"))),
        ("bmi > -0.5", Compare("bmi", ">", D("-0.5"))),
        ("bmi >= 18", Compare("bmi", ">=", 18)),
        ("admitted_year = 2_020", Compare("admitted_year", "=", 2020)),
        ("postcode = 'O''Brien'", Compare("postcode", "=", "O'Brien")),
        ("postcode = '北京 ß'", Compare("postcode", "=", "北京 ß")),
        ("postcode = ''", Compare("postcode", "=", "")),
        ("age IN (1, 2, -3)", InList("age", (1, 2, -3))),
        ("NOT age IN (1)", InList("age", (1,), negated=True)),
        ("age NOT BETWEEN 1 AND 9", Between("age", 1, 9, negated=True)),
        ("postcode IS NULL", IsNull("postcode")),
        ("postcode IS NOT NULL", IsNull("postcode", negated=True)),
        ("NOT (postcode IS NULL)", Not(IsNull("postcode"))),
        ("NOT NOT age = 1", Not(Not(Compare("age", "=", 1)))),
        ("age = 1 OR age = 2 OR (age = 3 OR age = 4)",
         Or(tuple(Compare("age", "=", i) for i in (1, 2, 3, 4)))),
        ("(age = 1 AND (age = 2 AND age = 3)) OR age = 4",
         Or((And(tuple(Compare("age", "=", i) for i in (1, 2, 3))), Compare("age", "=", 4)))),
        ("p.age > 1", Compare("age", ">", 1)),
    ],
)
def test_filters(where: str, expected: object) -> None:
    p = plan(f"SELECT COUNT(*) FROM patients p WHERE {where}")
    assert p.where == expected


@pytest.mark.parametrize(
    ("sql", "value"),
    [
        ("SELECT COUNT(*) FROM patients WHERE postcode = 'x' --' OR 1=1", "x"),
        ("SELECT COUNT(*) FROM patients WHERE postcode = 'x' /* ; DROP TABLE patients; */", "x"),
        ("/* lead */ SELECT -- inline\n COUNT(*) FROM patients WHERE postcode = 'x';", "x"),
        ("SELECT COUNT(*) FROM patients WHERE postcode = 'x''; DROP TABLE patients; --'",
         "x'; DROP TABLE patients; --"),
        ("SELECT COUNT(*) FROM patients WHERE postcode = '\\'' OR 1=1 --'", "\\' OR 1=1 --"),
    ],
)
def test_comments_and_quoted_payloads_stay_data(sql: str, value: str) -> None:
    """Comments vanish; a payload inside a string literal stays one literal value."""
    p = plan(sql)
    assert p.where == Compare("postcode", "=", value)
    assert p.canonical_sql() == (
        'SELECT COUNT(*) AS "count" FROM "patients" WHERE "postcode" = '
        + "'" + value.replace("'", "''") + "'"
    )


def test_bin_width_multiples() -> None:
    p = plan("SELECT FLOOR(age / 25) * 25, COUNT(*) FROM patients GROUP BY 1")
    assert p.group_keys == (GroupKey("age", "age_bin", D(25)),)
    p = plan("SELECT FLOOR(age / 10.0) * 10.00, COUNT(*) FROM patients GROUP BY 1")
    assert p.group_keys == (GroupKey("age", "age_bin", D(10)),)


def test_other_dataset_and_case_insensitive_name() -> None:
    p = plan("SELECT clinic, COUNT(*) FROM visits GROUP BY clinic")
    assert p.dataset == "Visits"
    assert p.canonical_sql() == ('SELECT "clinic" AS "clinic", COUNT(*) AS "count" FROM "Visits" '
                                 'GROUP BY "clinic"')


def test_limits_are_configurable() -> None:
    sql = "SELECT COUNT(*) FROM patients WHERE age IN (1, 2, 3) AND age > 0"
    assert plan(sql).where is not None
    for kwargs, reason in [
        ({"max_in_items": 2}, "TOO_MANY_IN_ITEMS"),
        ({"max_filter_nodes": 2}, "FILTER_TOO_COMPLEX"),
        ({"max_depth": 1}, "FILTER_TOO_COMPLEX"),
        ({"max_sql_length": 20}, "SQL_TOO_LONG"),
    ]:
        with pytest.raises(VeilError) as info:
            plan(sql, **kwargs)
        assert info.value.reason == reason
    with pytest.raises(VeilError) as info:
        plan("SELECT COUNT(*), SUM(cost) FROM patients", max_aggregates=1)
    assert info.value.reason == "TOO_MANY_AGGREGATES"
    with pytest.raises(VeilError) as info:
        plan("SELECT sex, region, COUNT(*) FROM patients GROUP BY 1, 2", max_group_keys=1)
    assert info.value.reason == "TOO_MANY_GROUP_KEYS"
    assert plan("SELECT COUNT(*) FROM patients WHERE age IN (1, 2)", max_in_items=2).where


def test_zero_padded_numbers_are_exact() -> None:
    assert plan(ZERO_PADDED).where == Compare("age", "=", 7)
    padded_ordinal = "SELECT sex, COUNT(*) FROM patients GROUP BY " + "0" * 5000 + "1"
    assert plan(padded_ordinal).group_keys == (GroupKey("sex", "sex"),)


def test_in_list_at_the_limit_is_accepted() -> None:
    values = ", ".join(f"'P{i}'" for i in range(1000))
    p = plan(f"SELECT COUNT(*) FROM patients WHERE postcode IN ({values})")
    assert isinstance(p.where, InList) and len(p.where.values) == 1000


def test_plans_are_deterministic_and_round_trip() -> None:
    for sql in ACCEPTED:
        p = plan(sql)
        assert QueryPlan.from_json(p.to_json()) == p
        assert p.to_json() == plan(sql).to_json()
        # The canonical rendering is itself in the subset and plans to the same plan.
        assert plan(p.canonical_sql()) == p
        assert plan(p.canonical_sql()).digest() == p.digest()


ACCEPTED = [
    "SELECT COUNT(*) FROM patients",
    "SELECT region, sex, COUNT(*) AS n, AVG(cost) FROM patients WHERE age BETWEEN 18 AND 65 "
    "GROUP BY region, sex",
    "SELECT FLOOR(age / 10) * 10 AS decade, SUM(length_of_stay) FROM patients "
    "WHERE postcode IN ('AB1', 'O''Neil') OR NOT (bmi > 30.5 AND bmi IS NOT NULL) GROUP BY decade",
    "SELECT ward, STDDEV(bmi), VARIANCE(cost) FROM patients WHERE admitted_year <> 2020 "
    "AND bmi NOT BETWEEN -1.25 AND 0 GROUP BY 1",
    "SELECT COUNT(age) AS \"Count Of Age\", diagnosis FROM patients GROUP BY diagnosis",
]


# ----- rejected queries --------------------------------------------------------------------

DEEP_PARENS = "SELECT COUNT(*) FROM patients WHERE " + "(" * 40 + "age > 1" + ")" * 40
MANY_ANDS = "SELECT COUNT(*) FROM patients WHERE " + " AND ".join(["age > 1"] * 201)
MANY_NOTS = "SELECT COUNT(*) FROM patients WHERE " + "NOT " * 40 + "age > 1"
NOT_AVALANCHE = "SELECT COUNT(*) FROM patients WHERE " + "NOT " * 4000 + "age > 1"
MINUS_AVALANCHE = "SELECT COUNT(*) FROM patients WHERE age = " + "- " * 5000 + "1"
HUGE_IN = ("SELECT COUNT(*) FROM patients WHERE age IN (" + ", ".join(["1"] * 1001) + ")")
TOO_LONG = "SELECT COUNT(*) FROM patients WHERE postcode = '" + "A" * 20_000 + "'"
MANY_AGGS = "SELECT " + ", ".join(f"COUNT(*) AS c{i}" for i in range(33)) + " FROM patients"
MANY_KEYS = ("SELECT region, sex, diagnosis, ward, FLOOR(age / 5) * 5, COUNT(*) FROM patients "
             "GROUP BY 1, 2, 3, 4, 5")
HUGE_NUMBER = "SELECT COUNT(*) FROM patients WHERE age = 1" + "0" * 40
HUGE_NAME = "SELECT COUNT(" + "x" * 5000 + ") FROM patients"
ZERO_PADDED = "SELECT COUNT(*) FROM patients WHERE age = " + "0" * 5000 + "7"  # int() caps at 4300

REJECTED: list[tuple[str, str, grpc.StatusCode]] = [
    # size, encoding and parse
    ("", "EMPTY_QUERY", INVALID),
    ("  \n\t ", "EMPTY_QUERY", INVALID),
    ("-- nothing but a comment", "EMPTY_QUERY", INVALID),
    (";", "EMPTY_QUERY", INVALID),
    (TOO_LONG, "SQL_TOO_LONG", INVALID),
    ("SELEC COUNT(*) FROM patients", "SQL_SYNTAX_ERROR", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE postcode = 'unterminated", "SQL_SYNTAX_ERROR", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE (age > 1", "SQL_SYNTAX_ERROR", INVALID),
    ("SELECT COUNT(*) FROM patients /* unterminated", "SQL_SYNTAX_ERROR", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE age = 0x1F", "SQL_SYNTAX_ERROR", INVALID),
    ("SELECT COUNT(*) FROM patients\x00; DROP TABLE patients", "INVALID_CHARACTER", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE postcode = 'a\x00b'", "INVALID_CHARACTER", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE postcode = '\u202eAB1'", "INVALID_CHARACTER", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE patient\u200b_id = 1", "INVALID_CHARACTER", INVALID),
    ("\ufeffSELECT COUNT(*) FROM patients", "INVALID_CHARACTER", INVALID),
    (DEEP_PARENS, "EXPRESSION_TOO_DEEP", INVALID),
    ("SELECT " + "(" * 33 + "COUNT(*)" + ")" * 33 + " FROM patients", "EXPRESSION_TOO_DEEP",
     INVALID),
    (NOT_AVALANCHE, "EXPRESSION_TOO_DEEP", INVALID),
    (MINUS_AVALANCHE, "EXPRESSION_TOO_DEEP", INVALID),
    # statements
    ("SELECT COUNT(*) FROM patients; DROP TABLE patients", "MULTIPLE_STATEMENTS", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE postcode = ''; DELETE FROM patients; --'",
     "MULTIPLE_STATEMENTS", INVALID),
    ("SELECT COUNT(*) FROM patients; SELECT COUNT(*) FROM patients", "MULTIPLE_STATEMENTS",
     INVALID),
    ("DROP TABLE patients", "NOT_A_SELECT", INVALID),
    ("DELETE FROM patients", "NOT_A_SELECT", INVALID),
    ("UPDATE patients SET age = 1", "NOT_A_SELECT", INVALID),
    ("INSERT INTO patients VALUES (1)", "NOT_A_SELECT", INVALID),
    ("CREATE TABLE leak AS SELECT * FROM patients", "NOT_A_SELECT", INVALID),
    ("COPY patients TO '/tmp/out.csv'", "NOT_A_SELECT", INVALID),
    ("COPY (SELECT * FROM patients) TO '/tmp/out.csv' (FORMAT csv)", "NOT_A_SELECT", INVALID),
    ("ATTACH '/tmp/evil.db' AS evil", "NOT_A_SELECT", INVALID),
    ("DETACH evil", "NOT_A_SELECT", INVALID),
    ("PRAGMA table_info('patients')", "NOT_A_SELECT", INVALID),
    ("SET enable_external_access = true", "NOT_A_SELECT", INVALID),
    ("INSTALL httpfs", "NOT_A_SELECT", INVALID),
    ("LOAD httpfs", "NOT_A_SELECT", INVALID),
    ("EXPORT DATABASE '/tmp/x'", "SQL_SYNTAX_ERROR", INVALID),
    ("CALL pragma_version()", "NOT_A_SELECT", INVALID),
    ("DESCRIBE patients", "NOT_A_SELECT", INVALID),
    ("SUMMARIZE patients", "NOT_A_SELECT", INVALID),
    ("EXPLAIN SELECT COUNT(*) FROM patients", "NOT_A_SELECT", INVALID),
    ("VALUES (1)", "NOT_A_SELECT", INVALID),
    ("SELECT COUNT(*) INTO leak FROM patients", "NOT_A_SELECT", INVALID),
    ("(SELECT COUNT(*) FROM patients)", "SUBQUERY_NOT_ALLOWED", INVALID),
    # FROM
    ("SELECT 1", "MISSING_FROM", INVALID),
    ("SELECT COUNT(*) FROM doctors", "DATASET_NOT_FOUND", NOT_FOUND),
    ("SELECT COUNT(*) FROM '/etc/passwd'", "DATASET_NOT_FOUND", NOT_FOUND),
    ("SELECT COUNT(*) FROM read_csv('/etc/passwd')", "FUNCTION_NOT_ALLOWED", INVALID),
    ("SELECT COUNT(*) FROM read_parquet('s3://bucket/x.parquet')", "FUNCTION_NOT_ALLOWED",
     INVALID),
    ("SELECT COUNT(*) FROM main.patients", "QUALIFIED_NAME_NOT_ALLOWED", INVALID),
    ("SELECT COUNT(*) FROM evil.main.patients", "QUALIFIED_NAME_NOT_ALLOWED", INVALID),
    ("SELECT COUNT(*) FROM patients AS p(a, b)", "UNSUPPORTED_CLAUSE", INVALID),
    ("SELECT COUNT(*) FROM patients TABLESAMPLE 10%", "UNSUPPORTED_CLAUSE", INVALID),
    ("SELECT COUNT(*) FROM patients, patients", "JOIN_NOT_ALLOWED", INVALID),
    ("SELECT COUNT(*) FROM patients JOIN visits ON true", "JOIN_NOT_ALLOWED", INVALID),
    ("SELECT COUNT(*) FROM patients p CROSS JOIN patients q", "JOIN_NOT_ALLOWED", INVALID),
    ("SELECT COUNT(*) FROM patients POSITIONAL JOIN visits", "JOIN_NOT_ALLOWED", INVALID),
    ("SELECT COUNT(*) FROM (SELECT * FROM patients)", "SUBQUERY_NOT_ALLOWED", INVALID),
    ("SELECT COUNT(*) FROM patients, LATERAL (SELECT 1)", "SUBQUERY_NOT_ALLOWED", INVALID),
    ("WITH p AS (SELECT * FROM patients) SELECT COUNT(*) FROM p", "CTE_NOT_ALLOWED", INVALID),
    ("SELECT COUNT(*) FROM patients UNION ALL SELECT COUNT(*) FROM patients",
     "SET_OPERATION_NOT_ALLOWED", INVALID),
    ("SELECT COUNT(*) FROM patients INTERSECT SELECT COUNT(*) FROM visits",
     "SET_OPERATION_NOT_ALLOWED", INVALID),
    ("SELECT COUNT(*) FROM patients EXCEPT SELECT COUNT(*) FROM visits",
     "SET_OPERATION_NOT_ALLOWED", INVALID),
    # clauses
    ("SELECT sex, COUNT(*) FROM patients GROUP BY sex HAVING COUNT(*) > 1", "HAVING_NOT_ALLOWED",
     INVALID),
    ("SELECT sex, COUNT(*) FROM patients GROUP BY sex ORDER BY 2", "ORDER_BY_NOT_ALLOWED", INVALID),
    ("SELECT COUNT(*) FROM patients LIMIT 1", "LIMIT_NOT_ALLOWED", INVALID),
    ("SELECT COUNT(*) FROM patients OFFSET 5", "LIMIT_NOT_ALLOWED", INVALID),
    ("SELECT DISTINCT sex, COUNT(*) FROM patients GROUP BY sex", "DISTINCT_NOT_ALLOWED", INVALID),
    ("SELECT COUNT(*) FROM patients QUALIFY 1", "WINDOW_FUNCTION_NOT_ALLOWED", INVALID),
    ("SELECT SUM(cost) OVER () FROM patients", "WINDOW_FUNCTION_NOT_ALLOWED", INVALID),
    ("SELECT sex, COUNT(*) FROM patients GROUP BY ALL", "UNSUPPORTED_CLAUSE", INVALID),
    ("SELECT sex, COUNT(*) FROM patients GROUP BY ROLLUP (sex)", "UNSUPPORTED_CLAUSE", INVALID),
    # SELECT list
    ("SELECT * FROM patients", "SELECT_STAR", INVALID),
    ("SELECT patients.* FROM patients", "SELECT_STAR", INVALID),
    ("FROM patients", "SELECT_STAR", INVALID),
    ("SELECT cost FROM patients", "RAW_COLUMN_IN_OUTPUT", INVALID),
    ("SELECT region, COUNT(*) FROM patients", "RAW_COLUMN_IN_OUTPUT", INVALID),
    ("SELECT postcode, COUNT(*) FROM patients GROUP BY sex, postcode", "GROUP_KEY_NOT_SELECTED",
     INVALID),
    ("SELECT COUNT(*) FROM patients GROUP BY region", "GROUP_KEY_NOT_SELECTED", INVALID),
    ("SELECT region FROM patients GROUP BY region", "NO_AGGREGATE", INVALID),
    ("SELECT COUNT(*), COUNT(*) FROM patients", "DUPLICATE_OUTPUT_NAME", INVALID),
    ("SELECT COUNT(*) AS n, SUM(cost) AS N FROM patients", "DUPLICATE_OUTPUT_NAME", INVALID),
    ("SELECT sex AS count, COUNT(*) FROM patients GROUP BY 1", "DUPLICATE_OUTPUT_NAME", INVALID),
    ("SELECT region, region AS r2, COUNT(*) FROM patients GROUP BY region", "DUPLICATE_GROUP_KEY",
     INVALID),
    ('SELECT sex AS "", COUNT(*) FROM patients GROUP BY 1', "INVALID_ALIAS", INVALID),
    ("SELECT region AS sex, COUNT(*) FROM patients GROUP BY sex", "AMBIGUOUS_GROUP_BY", INVALID),
    ("SELECT region, COUNT(*) FROM patients GROUP BY 3", "INVALID_GROUP_BY_ORDINAL", INVALID),
    ("SELECT region, COUNT(*) FROM patients GROUP BY 0", "INVALID_GROUP_BY_ORDINAL", INVALID),
    ("SELECT region, COUNT(*) FROM patients GROUP BY 1.5", "INVALID_GROUP_BY_ORDINAL", INVALID),
    ("SELECT region, COUNT(*) FROM patients GROUP BY 2", "AGGREGATE_IN_GROUP_BY", INVALID),
    ("SELECT region, COUNT(*) AS n FROM patients GROUP BY region, n", "AGGREGATE_IN_GROUP_BY",
     INVALID),
    ("SELECT COUNT(*) FROM patients GROUP BY COUNT(*)", "AGGREGATE_IN_GROUP_BY", INVALID),
    (MANY_AGGS, "TOO_MANY_AGGREGATES", INVALID),
    (MANY_KEYS, "TOO_MANY_GROUP_KEYS", INVALID),
    # functions and expressions
    ("SELECT MIN(age) FROM patients", "FUNCTION_NOT_ALLOWED", INVALID),
    ("SELECT MAX(cost) FROM patients", "FUNCTION_NOT_ALLOWED", INVALID),
    ("SELECT VAR_POP(cost) FROM patients", "FUNCTION_NOT_ALLOWED", INVALID),
    ("SELECT STDDEV_POP(cost) FROM patients", "FUNCTION_NOT_ALLOWED", INVALID),
    ("SELECT quantile_cont(cost, 0.5) FROM patients", "FUNCTION_NOT_ALLOWED", INVALID),
    ("SELECT COUNT(DISTINCT region) FROM patients", "FUNCTION_NOT_ALLOWED", INVALID),
    ("SELECT SUM(DISTINCT cost) FROM patients", "FUNCTION_NOT_ALLOWED", INVALID),
    ("SELECT LOWER(region), COUNT(*) FROM patients GROUP BY 1", "FUNCTION_NOT_ALLOWED", INVALID),
    ("SELECT ROUND(AVG(cost)) FROM patients", "FUNCTION_NOT_ALLOWED", INVALID),
    ("SELECT SUM(cost::INTEGER) FROM patients", "FUNCTION_NOT_ALLOWED", INVALID),
    ("SELECT SUM(ABS(cost)) FROM patients", "FUNCTION_NOT_ALLOWED", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE CAST(age AS TEXT) = '5'", "FUNCTION_NOT_ALLOWED",
     INVALID),
    ("SELECT COUNT(*) FROM patients WHERE age > getenv('HOME')", "FUNCTION_NOT_ALLOWED", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE admitted_year = DATE '2020-01-01'",
     "FUNCTION_NOT_ALLOWED", INVALID),
    ("SELECT my_udf(cost) FROM patients", "FUNCTION_NOT_ALLOWED", INVALID),
    ("SELECT SUM(SUM(cost)) FROM patients", "NESTED_AGGREGATE", INVALID),
    ("SELECT AVG(COUNT(*)) FROM patients", "NESTED_AGGREGATE", INVALID),
    ("SELECT SUM(cost) / COUNT(*) FROM patients", "UNSUPPORTED_EXPRESSION", INVALID),
    ("SELECT SUM(cost * 2) FROM patients", "UNSUPPORTED_EXPRESSION", INVALID),
    ("SELECT SUM(CASE WHEN age > 5 THEN cost END) FROM patients", "UNSUPPORTED_EXPRESSION",
     INVALID),
    ("SELECT 1, COUNT(*) FROM patients", "UNSUPPORTED_EXPRESSION", INVALID),
    ("SELECT COUNT(1) FROM patients", "UNSUPPORTED_EXPRESSION", INVALID),
    ("SELECT COUNT(*) FILTER (WHERE age > 1) FROM patients", "UNSUPPORTED_EXPRESSION", INVALID),
    ("SELECT FLOOR(age / 5) * 10, COUNT(*) FROM patients GROUP BY 1", "UNSUPPORTED_EXPRESSION",
     INVALID),
    ("SELECT FLOOR(age), COUNT(*) FROM patients GROUP BY 1", "UNSUPPORTED_EXPRESSION", INVALID),
    ("SELECT FLOOR(age / age) * age, COUNT(*) FROM patients GROUP BY 1", "UNSUPPORTED_EXPRESSION",
     INVALID),
    ("SELECT age + 1, COUNT(*) FROM patients GROUP BY 1", "UNSUPPORTED_EXPRESSION", INVALID),
    ("SELECT SUM(ward) FROM patients", "AGGREGATE_TYPE_MISMATCH", INVALID),
    # WHERE
    ("SELECT COUNT(*) FROM patients WHERE SUM(cost) > 10", "AGGREGATE_IN_WHERE", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE age IN (SELECT age FROM patients)",
     "SUBQUERY_NOT_ALLOWED", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE EXISTS (SELECT 1)", "SUBQUERY_NOT_ALLOWED", INVALID),
    ("SELECT (SELECT COUNT(*) FROM patients)", "SUBQUERY_NOT_ALLOWED", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE age + 1 > 5", "UNSUPPORTED_EXPRESSION", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE 1 = 1", "UNSUPPORTED_EXPRESSION", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE postcode = '' OR '1' = '1'", "UNSUPPORTED_EXPRESSION",
     INVALID),
    ("SELECT COUNT(*) FROM patients WHERE age = admitted_year", "UNSUPPORTED_EXPRESSION", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE age", "UNSUPPORTED_EXPRESSION", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE TRUE", "UNSUPPORTED_EXPRESSION", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE postcode LIKE 'AB%'", "UNSUPPORTED_EXPRESSION", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE postcode IS TRUE", "UNSUPPORTED_EXPRESSION", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE age IS NOT DISTINCT FROM 1", "UNSUPPORTED_EXPRESSION",
     INVALID),
    ("SELECT COUNT(*) FROM patients WHERE age BETWEEN SYMMETRIC 9 AND 1",
     "UNSUPPORTED_EXPRESSION", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE age IN ()", "UNSUPPORTED_EXPRESSION", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE 5 IN (age)", "UNSUPPORTED_EXPRESSION", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE postcode = 'a' || 'b'", "UNSUPPORTED_EXPRESSION",
     INVALID),
    ("SELECT COUNT(*) FROM patients WHERE postcode = NULL", "UNSUPPORTED_LITERAL", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE age = $1", "UNSUPPORTED_LITERAL", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE age = ?", "UNSUPPORTED_LITERAL", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE age = 1e3", "UNSUPPORTED_LITERAL", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE age = - -5", "UNSUPPORTED_LITERAL", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE postcode = E'\\x41'", "UNSUPPORTED_LITERAL", INVALID),
    (HUGE_NUMBER, "LITERAL_OUT_OF_RANGE", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE bmi > 0." + "0" * 40 + "1", "LITERAL_OUT_OF_RANGE",
     INVALID),
    ("SELECT sex, COUNT(*) FROM patients GROUP BY " + "9" * 5000, "INVALID_GROUP_BY_ORDINAL",
     INVALID),
    ("SELECT COUNT(*) FROM patients WHERE age = 'forty-two'", "FILTER_VALUE_TYPE", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE age > 17.5", "FILTER_VALUE_TYPE", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE postcode = 12345", "FILTER_VALUE_TYPE", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE bmi = '20'", "FILTER_VALUE_TYPE", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE age IN (1, 'two')", "FILTER_VALUE_TYPE", INVALID),
    (HUGE_IN, "TOO_MANY_IN_ITEMS", INVALID),
    (MANY_ANDS, "FILTER_TOO_COMPLEX", INVALID),
    (MANY_NOTS, "FILTER_TOO_COMPLEX", INVALID),
    # columns: unknown, hidden, and the quoted-identifier / unicode tricks
    ("SELECT COUNT(*) FROM patients WHERE nosuch = 1", "UNKNOWN_COLUMN", INVALID),
    (HUGE_NAME, "UNKNOWN_COLUMN", INVALID),
    ('SELECT COUNT(*) FROM patients WHERE "patıent_id" = 1', "UNKNOWN_COLUMN", INVALID),
    ("SELECT COUNT(ｐatient_id) FROM patients", "UNKNOWN_COLUMN", INVALID),
    ('SELECT COUNT(*) FROM patients WHERE "patient_id " = 1', "UNKNOWN_COLUMN", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE visits.clinic = 'x'", "UNKNOWN_TABLE_REFERENCE",
     INVALID),
    ("SELECT COUNT(*) FROM patients p WHERE patients.age = 1", "UNKNOWN_TABLE_REFERENCE", INVALID),
    ("SELECT COUNT(*) FROM patients WHERE main.patients.age = 1", "QUALIFIED_NAME_NOT_ALLOWED",
     INVALID),
    ("SELECT patient_id FROM patients", "HIDDEN_COLUMN", DENIED),
    ("SELECT patient_id, COUNT(*) FROM patients GROUP BY patient_id", "HIDDEN_COLUMN", DENIED),
    ('SELECT COUNT("Patient_ID") FROM patients', "HIDDEN_COLUMN", DENIED),
    ('SELECT COUNT(*) FROM patients WHERE "PATIENT_ID" = 1', "HIDDEN_COLUMN", DENIED),
    ("SELECT COUNT(*) FROM patients p WHERE p.patient_id IS NULL", "HIDDEN_COLUMN", DENIED),
    ("SELECT SUM(patient_id) FROM patients", "HIDDEN_COLUMN", DENIED),
    ("SELECT COUNT(*) FROM patients GROUP BY notes", "HIDDEN_COLUMN", DENIED),
    ("SELECT COUNT(*) FROM patients WHERE notes IS NULL", "HIDDEN_COLUMN", DENIED),
    # column controls
    ("SELECT SUM(region) FROM patients", "AGGREGATE_NOT_ALLOWED", DENIED),
    ("SELECT COUNT(postcode) FROM patients", "AGGREGATE_NOT_ALLOWED", DENIED),
    ("SELECT AVG(admitted_year) FROM patients", "AGGREGATE_NOT_ALLOWED", DENIED),
    ("SELECT COUNT(*) FROM patients WHERE cost > 100", "FILTER_NOT_ALLOWED", DENIED),
    ("SELECT COUNT(*) FROM patients WHERE region = 'North'", "FILTER_NOT_ALLOWED", DENIED),
    ("SELECT COUNT(*) FROM patients WHERE length_of_stay IS NULL", "FILTER_NOT_ALLOWED", DENIED),
    ("SELECT postcode, COUNT(*) FROM patients GROUP BY postcode", "GROUP_BY_NOT_ALLOWED", DENIED),
    ("SELECT age, COUNT(*) FROM patients GROUP BY age", "GROUP_BY_NOT_ALLOWED", DENIED),
    ("SELECT FLOOR(length_of_stay / 5) * 5, COUNT(*) FROM patients GROUP BY 1",
     "GROUP_BY_NOT_ALLOWED", DENIED),
    ("SELECT FLOOR(bmi / 5) * 5, COUNT(*) FROM patients GROUP BY 1", "GROUP_BY_NOT_ALLOWED",
     DENIED),
    ("SELECT FLOOR(age / 3) * 3 AS b, COUNT(*) FROM patients GROUP BY b", "BIN_WIDTH_NOT_ALLOWED",
     DENIED),
    ("SELECT FLOOR(age / 2.5) * 2.5, COUNT(*) FROM patients GROUP BY 1", "BIN_WIDTH_NOT_ALLOWED",
     DENIED),
    ("SELECT FLOOR(age / 0) * 0, COUNT(*) FROM patients GROUP BY 1", "BIN_WIDTH_NOT_ALLOWED",
     DENIED),
    ("SELECT FLOOR(age / -5) * -5, COUNT(*) FROM patients GROUP BY 1", "BIN_WIDTH_NOT_ALLOWED",
     DENIED),
]


@pytest.mark.parametrize(("sql", "reason", "code"), REJECTED,
                         ids=[f"{i:03d}-{r}" for i, (_, r, _) in enumerate(REJECTED)])
def test_rejected(sql: str, reason: str, code: grpc.StatusCode) -> None:
    with pytest.raises(VeilError) as info:
        plan(sql)
    err = info.value
    assert (err.reason, err.code) == (reason, code), err.message
    assert err.message and len(err.message) < 400
    # A message names rules, columns and constructs, never a literal value from the query
    # (FROM 'name' is an identifier: DATASET_NOT_FOUND names it back to the analyst).
    for literal in re.findall(r"(?<!FROM )'([^']{2,})'", sql):
        assert literal not in err.message
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in err.metadata.items())


def test_rejection_table_is_large_and_has_no_duplicates() -> None:
    assert len(REJECTED) >= 60
    assert len({sql for sql, _, _ in REJECTED}) == len(REJECTED)


def test_policy_errors_name_the_column() -> None:
    for sql, column in [
        ("SELECT SUM(region) FROM patients", "region"),
        ('SELECT COUNT(*) FROM patients WHERE "PATIENT_ID" = 1', "patient_id"),
        ("SELECT COUNT(*) FROM patients WHERE cost > 987654", "cost"),
    ]:
        with pytest.raises(VeilError) as info:
            plan(sql)
        assert info.value.metadata == {"column": column}
        assert column in info.value.message
        assert "987654" not in info.value.message


def test_syntax_error_keeps_parser_detail_private() -> None:
    with pytest.raises(VeilError) as info:
        plan("SELECT COUNT(*) FROM patients WHERE postcode = 'SECRET-Z9' AND AND")
    assert info.value.reason == "SQL_SYNTAX_ERROR"
    assert "SECRET-Z9" not in info.value.message
    assert info.value.private


def test_non_string_input_is_rejected() -> None:
    with pytest.raises(VeilError) as info:
        plan_query(b"SELECT COUNT(*) FROM patients", CATALOG)  # type: ignore[arg-type]
    assert info.value.code == INVALID


# ----- properties --------------------------------------------------------------------------

TOKENS = [
    "SELECT", "FROM", "WHERE", "GROUP", "BY", "AND", "OR", "NOT", "IN", "BETWEEN", "IS", "NULL",
    "AS", "COUNT(*)", "COUNT", "SUM", "AVG", "VARIANCE", "STDDEV", "FLOOR", "MIN", "(", ")", ",",
    ";", "*", "/", "+", "-", "=", "<>", "<", ">=", "'x'", "'", '"', "1", "5", "2.5", "-3", "1e9",
    "patients", "visits", "region", "sex", "age", "postcode", "cost", "patient_id", '"Age"', "p",
    "p.age", "HAVING", "ORDER", "LIMIT", "UNION", "WITH", "JOIN", "OVER", "()", "DISTINCT", "CASE",
    "WHEN", "THEN", "END", "read_csv", "COPY", "TO", "ATTACH", "PRAGMA", "--", "/*", "*/", "::",
    "$1", "?", "\x00", "\u202e", "ǅ", "[", "]", "{", "}", "LATERAL", "TRUE", "INTERVAL", "ALL",
]


def _plan_or_refuse(sql: str) -> None:
    try:
        p = plan(sql)
    except VeilError as err:
        assert err.reason and err.reason == err.reason.upper()
        return
    assert isinstance(p, QueryPlan)
    assert QueryPlan.from_json(p.to_json()) == p


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_random_text_only_raises_veil_errors(sql: str) -> None:
    _plan_or_refuse(sql)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map(" ".join))
def test_token_soup_only_raises_veil_errors(sql: str) -> None:
    _plan_or_refuse(sql)


@st.composite
def _mutated(draw: st.DrawFn) -> str:
    """An accepted query with a few tokens inserted, deleted or replaced."""
    base = draw(st.sampled_from(ACCEPTED))
    toks = base.replace("(", " ( ").replace(")", " ) ").replace(",", " , ").split()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(toks) - 1))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        if op == "insert":
            toks.insert(i, draw(st.sampled_from(TOKENS)))
        elif op == "delete" and len(toks) > 1:
            del toks[i]
        else:
            toks[i] = draw(st.sampled_from(TOKENS))
    return " ".join(toks)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_mutated_queries_only_raise_veil_errors(sql: str) -> None:
    _plan_or_refuse(sql)


def test_parser_failures_of_any_kind_become_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    from veil_server.query import planner

    for exc, reason in [(IndexError("boom"), "SQL_SYNTAX_ERROR"),
                        (RecursionError(), "EXPRESSION_TOO_DEEP")]:
        def broken(*_a: object, _exc: BaseException = exc, **_k: object) -> object:
            raise _exc

        monkeypatch.setattr(planner._DIALECT, "parser", broken)
        with pytest.raises(VeilError) as info:
            plan("SELECT COUNT(*) FROM patients")
        assert info.value.reason == reason
    monkeypatch.setattr(planner._DIALECT, "tokenize", broken)  # raises RecursionError
    with pytest.raises(VeilError) as info:
        plan("SELECT COUNT(*) FROM patients")
    assert info.value.reason == "SQL_SYNTAX_ERROR"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=25).map(
    lambda toks: "SELECT COUNT(*) FROM patients WHERE " + " ".join(toks)))
def test_where_soup_only_raises_veil_errors(sql: str) -> None:
    _plan_or_refuse(sql)


# Valid queries built from the grammar: each plans, and its canonical SQL plans back to it.
_text = st.text(st.characters(codec="utf-8", categories=("L", "N", "P", "Zs")), max_size=8)
_int = st.integers(-10**6, 10**6)
_dec = st.decimals(-1000, 1000, places=2, allow_nan=False, allow_infinity=False)


def _leaf() -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds(lambda op, v: f"age {op} {v}", st.sampled_from(["=", "<>", "<", "<=", ">", ">="]),
                  _int),
        st.builds(lambda v, op: f"{v} {op} admitted_year", _int, st.sampled_from(["<", ">="])),
        st.builds(lambda v: f"bmi > {v}", _dec),
        st.builds(lambda v: "postcode = '" + v.replace("'", "''") + "'", _text),
        st.builds(lambda vs, neg: f"age {'NOT ' if neg else ''}IN ({', '.join(map(str, vs))})",
                  st.lists(_int, min_size=1, max_size=5), st.booleans()),
        st.builds(lambda a, b: f"bmi BETWEEN {a} AND {b}", _dec, _int),
        st.sampled_from(["postcode IS NULL", "postcode IS NOT NULL"]),
    )


_where = st.recursive(
    _leaf(),
    lambda inner: st.one_of(
        st.builds(lambda a, b: f"({a}) AND ({b})", inner, inner),
        st.builds(lambda a, b: f"{a} OR {b}", inner, inner),
        st.builds(lambda a: f"NOT ({a})", inner),
    ),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None)
@given(_where, st.sampled_from(["", "region", "sex, FLOOR(age / 10) * 10", "ward"]))
def test_generated_queries_round_trip(where: str, keys: str) -> None:
    select = (keys + ", " if keys else "") + "COUNT(*), SUM(cost) AS total"
    group = f" GROUP BY {keys}" if keys else ""
    p = plan(f"SELECT {select} FROM patients WHERE {where}{group}")
    assert plan(p.canonical_sql()) == p
    assert QueryPlan.from_json(p.to_json()) == p
