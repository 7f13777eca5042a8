"""The clamp is left out only where a Parquet footer proves it a no-op: values outside the
range, missing statistics, unsupported types, CSV files and files that change all keep it, and
the statistics are the same integers either way."""

from __future__ import annotations

import os
from decimal import Decimal
from fractions import Fraction

import pyarrow as pa
import pyarrow.parquet as papq
import pytest

from veil_server.query import range_proof
from veil_server.query.catalog import Catalog, Column, ColumnControl, ColumnType, Dataset
from veil_server.query.engine import DuckDBEngine, SqlRenderer
from veil_server.query.planner import plan_query
from veil_server.query.range_proof import RangeProofs, footer_ranges

AGG = frozenset({ColumnControl.AGGREGATE})
COLS = (
    Column("g", ColumnType.TEXT, frozenset({ColumnControl.GROUP}), categories=("a", "b")),
    Column("x", ColumnType.DECIMAL, AGG, value_range=(Decimal("-50"), Decimal("50")), scale=2),
    Column("n", ColumnType.INTEGER, AGG, value_range=(Decimal(0), Decimal(100))),
)
SQL = "SELECT g, COUNT(*), COUNT(x), SUM(x), AVG(x), VARIANCE(x), SUM(n), STDDEV(n) FROM t GROUP BY g"


def write(path, g, x, n, *, x_type=pa.float64(), n_type=pa.int64(), **options):
    papq.write_table(pa.table({"g": pa.array(g), "x": pa.array(x, x_type), "n": pa.array(n, n_type)}), path,
                     **options)


def dataset(path, fmt: str = "parquet") -> Dataset:
    return Dataset("t", str(path), fmt, COLS, frozenset({"r"}), min_group_size=1, max_rows=10_000)


def engine(ds: Dataset) -> DuckDBEngine:
    eng = DuckDBEngine([ds])
    eng.range_proofs.settle_seconds = 0  # files written by the test are seconds old at most
    return eng


def stats(res):
    return {g.keys: (g.rows, {k: (c.count, c.total, c.squares) for k, c in g.columns.items()}) for g in res.groups}


def both_paths(ds: Dataset):
    """(proven columns, the engine's statistics, the statistics with every column clamped)."""
    eng = engine(ds)
    plan = plan_query(SQL, Catalog([ds]))
    proof = eng.range_proofs.prove(ds, [ds.column("x"), ds.column("n")])
    return proof.columns, stats(eng.aggregate(plan, ds)), stats(eng._run(plan, ds, frozenset()))


IN_RANGE = (["a", "a", "b", "b", "a"], [10.25, -50.0, None, 50.0, 0.005], [0, 100, 7, None, 3])


def test_in_range_file_skips_the_clamp_and_gives_the_same_integers(tmp_path):
    write(tmp_path / "t.parquet", *IN_RANGE)
    proven, got, clamped = both_paths(dataset(tmp_path / "t.parquet"))
    assert proven == {"x", "n"}
    assert got == clamped
    assert got[("a",)][1]["x"] == (3, 1025 - 5000 + 1, 1025**2 + 5000**2 + 1)  # 0.005 rounds away to 1 cent
    assert got[("b",)][1]["x"][0] == 1 and got[("b",)][1]["n"][0] == 1  # NULLs stay NULL, not a bound
    ds = dataset(tmp_path / "t.parquet")
    sql = SqlRenderer(ds, "t", unclamped=frozenset({"x"})).render(plan_query(SQL, Catalog([ds])))
    # n is still clamped to its declared bounds; x only has NaN made missing.
    assert sql.count("CASE WHEN") == 2 and sql.count("THEN NULL WHEN") == 1


@pytest.mark.parametrize("x, n, clamped_column", [
    ([10.0, 50.01, 1.0, 2.0, 3.0], [1, 2, 3, 4, 5], "x"),     # one cent above the range
    ([10.0, -50.005, 1.0, 2.0, 3.0], [1, 2, 3, 4, 5], "x"),   # rounds to -50.01: below it
    ([10.0, 1.0, 1.0, 2.0, 3.0], [1, 2, 3, 4, 101], "n"),
    ([10.0, 1.0, 1.0, 2.0, 3.0], [-1, 2, 3, 4, 5], "n"),
])
def test_a_value_outside_the_range_keeps_the_clamp(tmp_path, x, n, clamped_column):
    write(tmp_path / "t.parquet", ["a", "a", "b", "b", "a"], x, n)
    proven, got, clamped = both_paths(dataset(tmp_path / "t.parquet"))
    assert clamped_column not in proven and proven == {"x", "n"} - {clamped_column}
    assert got == clamped
    low, high = {"x": (-5000, 5000), "n": (0, 100)}[clamped_column]
    for rows, cols in got.values():
        count, total, _ = cols[clamped_column]
        assert count * low <= total <= count * high


def test_value_out_of_range_in_one_row_group_of_many(tmp_path):
    g = ["a", "b"] * 50
    n = [5] * 100
    n[77] = 1000
    write(tmp_path / "t.parquet", g, [1.0] * 100, n, row_group_size=10)
    assert papq.read_metadata(tmp_path / "t.parquet").num_row_groups == 10
    proven, got, clamped = both_paths(dataset(tmp_path / "t.parquet"))
    assert proven == {"x"}
    assert got == clamped and got[("b",)][1]["n"][1] == 49 * 5 + 100


def test_missing_statistics_keep_the_clamp(tmp_path):
    write(tmp_path / "none.parquet", *IN_RANGE, write_statistics=False)
    assert both_paths(dataset(tmp_path / "none.parquet"))[0] == frozenset()
    write(tmp_path / "some.parquet", *IN_RANGE, write_statistics=["x"])
    proven, got, clamped = both_paths(dataset(tmp_path / "some.parquet"))
    assert proven == {"x"} and got == clamped


def test_null_only_row_groups_need_no_statistic(tmp_path):
    write(tmp_path / "t.parquet", ["a"] * 4, [None, None, 1.0, 2.0], [1, 2, 3, 4], row_group_size=2)
    ranges = footer_ranges(str(tmp_path / "t.parquet"), [COLS[1]])
    assert ranges["x"] == (Fraction(1), Fraction(2))
    write(tmp_path / "nulls.parquet", ["a"] * 2, [None, None], [1, 2], x_type=pa.float64())
    proven, got, clamped = both_paths(dataset(tmp_path / "nulls.parquet"))
    assert "x" in proven and got == clamped and got[("a",)][1]["x"] == (0, 0, 0)


@pytest.mark.parametrize("x_type, n_type", [
    (pa.decimal128(10, 2), pa.int64()),  # decimal statistics: not trusted here
    (pa.float64(), pa.uint32()),         # unsigned order
    (pa.float64(), pa.string()),         # not a number at all
])
def test_unsupported_types_keep_the_clamp(tmp_path, x_type, n_type):
    x = [Decimal("1.5"), Decimal("2")] if pa.types.is_decimal(x_type) else [1.5, 2.0]
    n = ["1", "2"] if pa.types.is_string(n_type) else [1, 2]
    write(tmp_path / "t.parquet", ["a", "b"], x, n, x_type=x_type, n_type=n_type)
    ds = dataset(tmp_path / "t.parquet")
    proof = engine(ds).range_proofs.prove(ds, [ds.column("x"), ds.column("n")])
    expected = {"n"} if pa.types.is_decimal(x_type) else {"x"}
    assert proof.columns == expected


def test_csv_globs_and_fresh_files_get_no_proof(tmp_path):
    write(tmp_path / "t.parquet", *IN_RANGE)
    cols = [COLS[1], COLS[2]]
    assert not RangeProofs(settle_seconds=0).prove(dataset(tmp_path / "t.csv", "csv"), cols)
    assert not RangeProofs(settle_seconds=0).prove(dataset(tmp_path / "*.parquet"), cols)
    assert not RangeProofs(settle_seconds=3600).prove(dataset(tmp_path / "t.parquet"), cols)  # changed just now
    assert RangeProofs(settle_seconds=0).prove(dataset(tmp_path / "t.parquet"), cols).columns == {"x", "n"}


def test_integer_bounds_too_wide_for_doubles_get_no_proof(tmp_path):
    wide = Column("x", ColumnType.DECIMAL, AGG, value_range=(Decimal(0), Decimal(10**14)), scale=2)
    assert range_proof.raw_bounds(wide) is None  # 10^16 fixed-point units > 2^50
    assert range_proof.raw_bounds(COLS[1]) == (Fraction(-50), Fraction(50))


def test_a_changed_file_is_proven_again(tmp_path):
    path = tmp_path / "t.parquet"
    write(path, *IN_RANGE)
    ds = dataset(path)
    proofs = RangeProofs(settle_seconds=0)
    first = proofs.prove(ds, [COLS[1], COLS[2]])
    assert first.columns == {"x", "n"} and proofs.unchanged(first)
    write(tmp_path / "new.parquet", IN_RANGE[0], IN_RANGE[1], [0, 100, 7, None, 300])
    os.replace(tmp_path / "new.parquet", path)
    assert not proofs.unchanged(first)
    assert proofs.prove(ds, [COLS[1], COLS[2]]).columns == {"x"}


def test_file_replaced_during_the_scan_is_computed_again_with_clamping(tmp_path):
    path = tmp_path / "t.parquet"
    write(path, *IN_RANGE)
    ds = dataset(path)
    eng = engine(ds)
    plan = plan_query(SQL, Catalog([ds]))
    scans = []
    run = eng._run

    def scan_then_replace(plan, ds, unclamped):
        out = run(plan, ds, unclamped)
        scans.append(unclamped)
        if len(scans) == 1:  # the owner swaps the file while the unclamped scan runs
            write(tmp_path / "new.parquet", ["a"] * 3, [1.0, 2.0, 3.0], [1, 2, 1000])
            os.replace(tmp_path / "new.parquet", path)
        return out

    eng._run = scan_then_replace
    res = stats(eng.aggregate(plan, ds))
    assert scans == [frozenset({"x", "n"}), frozenset()]
    assert res == {("a",): (3, {"x": (3, 600, 140000), "n": (3, 103, 10005)})}  # 1000 clamped to 100


def test_statistics_that_lie_are_caught_by_the_sums(tmp_path, monkeypatch):
    path = tmp_path / "t.parquet"
    write(path, ["a"] * 3, [1.0, 2.0, 3.0], [1, 2, 1000])
    monkeypatch.setattr(range_proof, "footer_ranges", lambda p, cols: {c.name: (Fraction(0), Fraction(1)) for c in cols})
    ds = dataset(path)
    eng = engine(ds)
    assert eng.range_proofs.prove(ds, [COLS[2]]).columns == {"n"}  # the (forged) footer says so
    res = stats(eng.aggregate(plan_query(SQL, Catalog([ds])), ds))
    assert res[("a",)][1]["n"] == (3, 103, 10005)  # the sum gave the lie away: clamped after all


def test_nan_is_missing_the_same_way_with_or_without_a_proof(tmp_path):
    path = tmp_path / "t.parquet"
    write(path, ["a", "a"], [1.0, float("nan")], [1, 2])
    ds = dataset(path)
    assert footer_ranges(str(path), [COLS[1]])["x"] == (Fraction(1), Fraction(1))  # NaN is not in the footer
    eng = engine(ds)
    plan = plan_query(SQL, Catalog([ds]))
    # NaN is a missing value either way, never a failure (a failure would depend on the rows).
    got, clamped = stats(eng.aggregate(plan, ds)), stats(eng._run(plan, ds, frozenset()))
    assert got == clamped and got[("a",)][1]["x"][0] == 1


# -- 64-bit sums, proven exact after the scan ------------------------------------------------------

def test_int64_sums_equal_128_bit_sums(tmp_path):
    write(tmp_path / "t.parquet", *IN_RANGE)
    ds = dataset(tmp_path / "t.parquet")
    eng = engine(ds)
    assert eng.int64_sums  # this DuckDB has sum_no_overflow
    plan = plan_query(SQL, Catalog([ds]))
    fast = SqlRenderer(ds, eng._view(ds), int64_sums=True)
    assert "sum_no_overflow" in fast.render(plan) and {name for name, _ in fast.int64_bounds} == {"x", "n"}
    wide = SqlRenderer(ds, eng._view(ds))
    assert "sum_no_overflow" not in wide.render(plan)
    assert stats(eng._execute(plan, ds, SqlRenderer(ds, eng._view(ds), int64_sums=True))) == \
        stats(eng._execute(plan, ds, wide)) == stats(eng.aggregate(plan, ds))


def test_a_group_too_large_for_64_bit_sums_is_summed_again_in_128_bits(tmp_path):
    # Declared: at most one row of at most 2^62, so 64-bit sums are chosen; the file holds four.
    big = Column("n", ColumnType.INTEGER, AGG, value_range=(Decimal(0), Decimal(2**62)))
    ds = Dataset("t", str(tmp_path / "t.parquet"), "parquet", (COLS[0], big), frozenset({"r"}),
                 min_group_size=1, max_rows=1)
    papq.write_table(pa.table({"g": ["a"] * 4, "n": pa.array([2**62] * 4, pa.int64())}), tmp_path / "t.parquet")
    eng = engine(ds)
    plan = plan_query("SELECT g, SUM(n) FROM t GROUP BY g", Catalog([ds]))
    r = SqlRenderer(ds, eng._view(ds), int64_sums=True)
    assert "sum_no_overflow" in r.render(plan)
    got = eng.aggregate(plan, ds)
    assert got.groups[0].columns["n"].total == 2**64  # exact: the 64-bit sum would have wrapped
    assert not int64_held(got, r)


def int64_held(result, renderer) -> bool:
    from veil_server.query.engine import int64_sums_held

    return int64_sums_held(result, renderer.int64_bounds)
