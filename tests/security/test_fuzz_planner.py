"""Property-based fuzzing of the SQL planner: for any string, a plan or a typed refusal, quickly.

Two generators: arbitrary text (any code point, control characters included), and SQL built from
the subset's own grammar plus hostile pieces (keywords outside the subset, comments, quotes,
deep nesting, huge numbers, hidden and unknown columns), which reaches far deeper into the
planner than random text does. Property: ``plan_query`` returns a plan whose canonical SQL plans
again to the same digest, or raises ``QueryRejected`` / ``PolicyViolation`` /
``DatasetNotFound`` -- never any other exception -- and no input takes more than a second of this
thread's CPU time (CPU, not wall-clock, time: a busy machine must not fail the property; a
pathological input, e.g. one with exponential backtracking, still does).
"""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veil_server.config import load_config
from veil_server.query.catalog import Catalog
from veil_server.cli.demo import init_node_folder
from veil_server.errors import DatasetNotFound, PolicyViolation, QueryRejected
from veil_server.query.planner import plan_query

from . import ledger

_CATALOG: list[Catalog] = []
COUNTS = {"text": 0, "grammar": 0, "planned": 0}
COLUMNS = ["region", "sex", "age", "diagnosis", "postcode", "admitted_year", "length_of_stay", "cost", "patient_id",
           "nope", '"Region"', "patients.age", "*"]
AGGS = ["COUNT", "SUM", "AVG", "VARIANCE", "STDDEV", "MIN", "MAX", "VAR_SAMP", "STDDEV_SAMP", "LOWER", "read_csv",
        "COUNT(DISTINCT", "QUANTILE"]
LITERALS = ["1", "0", "-1", "'North'", "'x''y'", "NULL", "1e308", "99999999999999999999999999", "'\u202e'", "TRUE",
            "0.5", "'%'", "$1", "?"]
OPS = ["=", "<>", "!=", "<", ">=", "LIKE", "IN", "BETWEEN", "IS", "IS NOT", "||", "+", "/", "AND", "OR"]
EXTRA = ["", " GROUP BY 1", " GROUP BY region", " GROUP BY region, sex", " HAVING COUNT(*) > 1", " ORDER BY 1",
         " LIMIT 1", " UNION SELECT 1", "; DROP TABLE patients", " -- comment", " /* x */", " WINDOW w AS ()"]


def catalog() -> Catalog:
    if not _CATALOG:
        import tempfile
        from pathlib import Path

        folder = Path(tempfile.mkdtemp(prefix="veil-fuzz-"))
        init_node_folder(folder, rows=200)
        _CATALOG.append(Catalog(load_config(folder / "veil.toml", env={}).datasets))
    return _CATALOG[0]


def check(sql: str) -> None:
    t0 = time.thread_time()
    try:
        plan = plan_query(sql, catalog())
    except (QueryRejected, PolicyViolation, DatasetNotFound) as e:
        assert e.reason and e.message and len(e.message) < 2000
    else:
        COUNTS["planned"] += 1
        assert plan_query(plan.canonical_sql(), catalog()).digest() == plan.digest()
    assert time.thread_time() - t0 < 1.0, sql[:200]


@st.composite
def expr(draw, depth: int = 0):
    kind = draw(st.integers(0, 5 if depth < 4 else 1))
    if kind == 0:
        return draw(st.sampled_from(COLUMNS))
    if kind == 1:
        return draw(st.sampled_from(LITERALS))
    if kind == 2:
        return f"{draw(st.sampled_from(AGGS))}({draw(expr(depth + 1))})"
    if kind == 3:
        return f"({draw(expr(depth + 1))} {draw(st.sampled_from(OPS))} {draw(expr(depth + 1))})"
    if kind == 4:
        return f"FLOOR({draw(st.sampled_from(COLUMNS))} / {draw(st.sampled_from(['5', '10', '3', '0', '-5']))}) * 10"
    return "(" * draw(st.integers(1, 60)) + "1" + ")" * draw(st.integers(0, 60))


@st.composite
def grammar_sql(draw):
    items = ", ".join(draw(st.lists(expr(), min_size=1, max_size=5)))
    table = draw(st.sampled_from(["patients", "PATIENTS", "secrets", "patients p", "(SELECT 1)", "patients, patients"]))
    where = f" WHERE {draw(expr())}" if draw(st.booleans()) else ""
    return f"SELECT {items} FROM {table}{where}{draw(st.sampled_from(EXTRA))}"


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.text(max_size=400))
def test_planner_arbitrary_text(sql):
    COUNTS["text"] += 1
    check(sql)


@settings(max_examples=800, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(grammar_sql())
def test_planner_grammar_based(sql):
    COUNTS["grammar"] += 1
    check(sql)


def test_record_planner_fuzzing():
    """Runs after the two properties above (file order): both ran to completion, and the grammar
    reached valid plans too, not only refusals."""
    assert COUNTS["text"] >= 400 and COUNTS["grammar"] >= 800, COUNTS
    assert COUNTS["planned"] > 0
    ledger.record("fuzz", "sql-planner", "arbitrary text as SQL (hypothesis)", COUNTS["text"])
    ledger.record("fuzz", "sql-grammar", "grammar-built hostile SQL (hypothesis), incl. deep nesting", COUNTS["grammar"])
    ledger.figure("planner_fuzz_valid_plans", COUNTS["planned"])
