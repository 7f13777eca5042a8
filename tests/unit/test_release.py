"""Released cells are exact: derived from integer sufficient statistics, checked against
exact rational arithmetic, and bounded by declared ranges only."""

from __future__ import annotations

import math
import statistics
from decimal import Decimal
from fractions import Fraction

import duckdb
import pytest
from hypothesis import given, settings, strategies as st

from veil_server.query.catalog import Catalog, Column, ColumnControl, ColumnType, Dataset
from veil_server.query.engine import ColumnStats, DuckDBEngine
from veil_server.query.plan import AggFunc, Aggregate
from veil_server.query.planner import plan_query
from veil_server.query.domain import expected_groups, group_domain
from veil_server.query.release import cell_spec, cell_value

AGG = frozenset({ColumnControl.AGGREGATE, ColumnControl.FILTER})
COLS = (
    Column("g", ColumnType.TEXT, frozenset({ColumnControl.GROUP}), categories=("a", "b", "c")),
    Column("x", ColumnType.DECIMAL, AGG, value_range=(Decimal("-50"), Decimal("50")), scale=2),
    Column("n", ColumnType.INTEGER, frozenset({ColumnControl.GROUP, ColumnControl.AGGREGATE}),
           value_range=(Decimal(0), Decimal(100)), bin_width=Decimal(5)),
)


def dataset(tmp_path, rows: list[tuple], k: int = 2) -> Dataset:
    path = tmp_path / "t.csv"
    con = duckdb.connect()
    con.execute("CREATE TABLE t (g VARCHAR, x DOUBLE, n BIGINT)")
    con.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
    con.execute(f"COPY t TO '{path}' (HEADER)")
    return Dataset("t", str(path), "csv", COLS, frozenset({"r"}), min_group_size=k, max_rows=10_000)


def exact(values: list[Fraction], fn: AggFunc) -> Fraction | float:
    n = len(values)
    mean = sum(values) / n
    if fn is AggFunc.AVG:
        return mean
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return var if fn is AggFunc.VAR_SAMP else math.sqrt(var)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-5000, 5000), min_size=2, max_size=60))
def test_cells_match_exact_rational_arithmetic(cents):
    col = COLS[1]
    stats = ColumnStats(len(cents), sum(cents), sum(c * c for c in cents))
    values = [Fraction(c, 100) for c in cents]
    ds = Dataset("t", "-", "csv", COLS, frozenset({"r"}), max_rows=100)
    for fn in (AggFunc.AVG, AggFunc.VAR_SAMP, AggFunc.STDDEV_SAMP, AggFunc.SUM, AggFunc.COUNT):
        agg = Aggregate(fn, "x", "out")
        spec = cell_spec(agg, ds)
        got = cell_value(agg, len(cents), stats, col, spec)
        assert spec.low <= got <= spec.high
        if fn is AggFunc.SUM:
            assert got == sum(cents)
        elif fn is AggFunc.COUNT:
            assert got == len(cents)
        elif fn is AggFunc.STDDEV_SAMP:
            assert abs(Fraction(got, 10**spec.scale) - Fraction(exact(values, fn))) <= Fraction(1, 10**spec.scale)
        else:
            # Exact rational result, rounded half-even to the cell's scale.
            assert got == round(exact(values, fn) * 10**spec.scale)


def test_engine_clamps_skips_nulls_and_keeps_the_domain(tmp_path):
    rows = [("a", 10.25, 3), ("a", 99.0, 7), ("a", None, 12), ("b", -80.5, 99), ("b", 1.5, 101),
            ("zzz", 1.0, 1), (None, 2.0, 2), ("c", 3.0, None)]
    ds = dataset(tmp_path, rows, k=1)
    cat = Catalog([ds])
    plan = plan_query("SELECT g, COUNT(*), COUNT(x), SUM(x), AVG(x) FROM t GROUP BY g", cat)
    res = DuckDBEngine([ds]).aggregate(plan, ds)
    by = {g.keys: g for g in res.groups}
    assert ("zzz",) in by and ("c",) in by  # the engine reports what is there; release keeps the domain
    assert [k for k in group_domain(plan, ds)] == [("a",), ("b",), ("c",)]
    a = by[("a",)]
    assert a.rows == 3 and a.columns["x"].count == 2
    assert a.columns["x"].total == 1025 + 5000  # 99.0 clamped to the range's 50.00
    assert by[("b",)].columns["x"].total == -5000 + 150  # -80.5 clamped to -50.00
    assert res.rows_matched == len(rows)

    binned = plan_query("SELECT FLOOR(n / 10) * 10 AS b, COUNT(*) FROM t GROUP BY b", cat)
    keys = {g.keys[0]: g.rows for g in DuckDBEngine([ds]).aggregate(binned, ds).groups}
    assert keys == {"0": 4, "10": 1, "90": 1, "100": 1}  # n = 3, 7, 1, 2 | 12 | 99 | 101
    assert group_domain(binned, ds)[:3] == [("0",), ("10",), ("20",)] and expected_groups(binned, ds) == 11


def test_bounds_come_from_declarations_not_data():
    ds = Dataset("t", "-", "csv", COLS, frozenset({"r"}), max_rows=1000)
    specs = {fn: cell_spec(Aggregate(fn, "x", "o"), ds) for fn in AggFunc}
    assert specs[AggFunc.COUNT].high == 1000
    assert (specs[AggFunc.SUM].low, specs[AggFunc.SUM].high) == (-50 * 1000 * 100, 50 * 1000 * 100)
    # Range width 100: one unit of an average is 1e-12 * 100, i.e. 10 decimal digits.
    assert specs[AggFunc.AVG].scale == 10 and specs[AggFunc.AVG].high == 50 * 10**10
    assert specs[AggFunc.VAR_SAMP].scale == 8 and specs[AggFunc.STDDEV_SAMP].scale == 10
    assert specs[AggFunc.VAR_SAMP].high >= 100**2 // 2 * 10**specs[AggFunc.VAR_SAMP].scale
    # The worst case fits: n values at the two ends give the largest sample variance.
    worst = [Fraction(-50)] * 3 + [Fraction(50)] * 3
    assert statistics.variance(worst) * 10**specs[AggFunc.VAR_SAMP].scale <= specs[AggFunc.VAR_SAMP].high


@pytest.mark.parametrize("k", [2, 3, 4])
def test_suppression_threshold(tmp_path, k):
    from veil.crypto import generate_keypair
    from veil_server.query.release import build_result

    rows = [("a", 1.0, 1)] * 3 + [("b", 2.0, 2)] * 2 + [("c", None, 3)] * 5
    ds = dataset(tmp_path, rows, k=k)
    plan = plan_query("SELECT g, COUNT(*), AVG(x) FROM t GROUP BY g", Catalog([ds]))
    stats = DuckDBEngine([ds]).aggregate(plan, ds)
    pk, sk = generate_keypair(bits=1024, insecure_test_key=True)  # small key: this test is about suppression
    result, counters = build_result("queries/x", plan, ds, stats, pk)
    flags = {r.keys[0]: r.suppressed for r in result.rows}
    # 'c' has 5 rows but no non-null x: its AVG cell would rest on fewer than k values.
    assert flags == {"a": 3 < k, "b": 2 < k, "c": True}
    assert counters["cells"] == 2 * sum(not s for s in flags.values())
    assert result.cells.cell_count == counters["cells"]


def test_per_column_packing_round_trip_and_tampering(tmp_path):
    from veil.crypto import PackingLayout, encrypt_packed, generate_keypair
    from veil.errors import IntegrityError
    from veil.results import decrypt_cells, result_digest
    from veil_server.query.release import build_result

    rows = [("a", 1.25, 1), ("a", -3.5, 2), ("b", 40.0, 100), ("b", None, 7), ("c", 0.0, 0), ("c", 2.0, 3)]
    ds = dataset(tmp_path, rows, k=2)
    plan = plan_query("SELECT g, COUNT(*), SUM(x), AVG(x), STDDEV(n) FROM t GROUP BY g", Catalog([ds]))
    pk, sk = generate_keypair(bits=1024, insecure_test_key=True)
    result, _ = build_result("queries/x", plan, ds, DuckDBEngine([ds]).aggregate(plan, ds), pk)
    specs = [cell_spec(a, ds) for a in plan.aggregates]
    assert list(result.cells.column_slot_bits) == [(s.high - s.low).bit_length() for s in specs]
    assert result.cells.slot_bits == 0 and result.cells.plaintext_bits == pk.bits - 3
    cells = decrypt_cells(result, sk)
    assert cells[:3] == [2, -225, round(Fraction(-225, 2) * 10**(specs[2].scale - 2))]

    def tampered(change) -> None:
        bad = type(result)()
        bad.CopyFrom(result)
        change(bad.cells)
        bad.result_digest = result_digest(bad)  # a node that lies consistently
        with pytest.raises(IntegrityError) as e:
            decrypt_cells(bad, sk)
        assert e.value.reason == "SHAPE_MISMATCH"

    tampered(lambda c: c.column_slot_bits.__setitem__(1, 10**9))
    tampered(lambda c: c.column_slot_bits.append(8))
    tampered(lambda c: c.column_slot_offsets.__setitem__(0, "1" * 5000))
    tampered(lambda c: setattr(c, "plaintext_bits", pk.bits))
    tampered(lambda c: c.ciphertexts.append(c.ciphertexts[0]))
    tampered(lambda c: setattr(c, "slot_bits", 8))

    # The uniform layout (federated results) still decodes.
    uniform = type(result)()
    uniform.CopyFrom(result)
    layout = PackingLayout.for_range(pk, min(s.low for s in specs), max(s.high for s in specs))
    del uniform.cells.column_slot_bits[:], uniform.cells.column_slot_offsets[:], uniform.cells.ciphertexts[:]
    uniform.cells.plaintext_bits = 0
    uniform.cells.slot_bits, uniform.cells.slots_per_ciphertext = layout.slot_bits, layout.slots
    uniform.cells.slot_offset = str(layout.low)
    uniform.cells.ciphertexts.extend(c.to_bytes() for c in encrypt_packed(pk, cells, layout))
    uniform.result_digest = result_digest(uniform)
    assert decrypt_cells(uniform, sk) == cells


@settings(max_examples=300, deadline=None)
@given(st.integers(-10**30, 10**30), st.integers(1, 10**12), st.integers(2, 10**9), st.integers(-10**15, 10**15),
       st.integers(0, 10**20))
def test_integer_rounding_matches_rationals(num, den, count, total, extra):
    """The release's integer arithmetic gives what exact rationals give (ties included)."""
    from math import isqrt

    from veil_server.query.release import _round

    assert _round(num, den) == round(Fraction(num, den))  # half to even, like Python's round
    assert _round(2 * num + 1, 2) == round(Fraction(2 * num + 1, 2))  # exact ties
    squares = -(-total * total // count) + extra  # count * squares >= total^2, as real data gives
    stats = ColumnStats(count, total, squares)
    ds = Dataset("t", "-", "csv", COLS, frozenset({"r"}), max_rows=10**9)
    col = COLS[1]
    var = Fraction(count * squares - total * total, count * (count - 1))
    for fn in (AggFunc.AVG, AggFunc.VAR_SAMP, AggFunc.STDDEV_SAMP):
        agg = Aggregate(fn, "x", "o")
        spec = cell_spec(agg, ds)
        got = cell_value(agg, count, stats, col, spec)
        if fn is AggFunc.AVG:
            want = round(Fraction(total, count) * 10 ** (spec.scale - col.scale))
        elif fn is AggFunc.VAR_SAMP:
            want = round(var * 10 ** (spec.scale - 2 * col.scale))
        else:  # round half up of the exact square root
            x = var * 10 ** (2 * spec.scale - 2 * col.scale)
            want = isqrt(x.numerator // x.denominator)
            want += (want + Fraction(1, 2)) ** 2 <= x
        assert got == want, fn


def test_randomness_made_during_the_scan_is_what_the_result_uses(tmp_path):
    from veil.crypto import generate_keypair, obfuscation
    from veil.results import decrypt_cells
    from veil_server.query.release import Randomness, build_result

    rows = [(g, float(i % 7), i % 11) for i, g in enumerate("abc" * 20)]
    ds = dataset(tmp_path, rows, k=2)
    plan = plan_query("SELECT g, COUNT(*), SUM(x), AVG(x), VARIANCE(n) FROM t GROUP BY g", Catalog([ds]))
    pk, sk = generate_keypair(bits=1024, insecure_test_key=True)
    randomness = Randomness(plan, ds, pk)
    randomness._thread.join()
    state = obfuscation._CACHE.state(pk._n, pk._n2)
    prepared = list(state.stock)
    assert len(prepared) == 1  # 3 groups x 4 cells (~120 bits a group) fit one 1024-bit plaintext
    result, _ = build_result("queries/x", plan, ds, DuckDBEngine([ds]).aggregate(plan, ds), pk)
    assert not state.stock and len(result.cells.ciphertexts) == 1
    assert decrypt_cells(result, sk)[:2] == [20, sum(100 * (i % 7) for i in range(0, 60, 3))]
    stopped = Randomness(plan, ds, pk)
    stopped.stop()
    stopped._thread.join()
    assert len(state.stock) <= 1  # stopped at once (at most the one in progress)
