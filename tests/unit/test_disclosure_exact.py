"""Exact mode's rules on their own: which filters are boxes of the declared lattice, which
tables nest, and which cells the history's secondary check holds back (remainders of fewer than
k rows, an empty one included; structural tiling allowed)."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from veil_server.disclosure.history import Candidate, Forest, TableOverlaps, audit
from veil_server.disclosure.lattice import AtomTable, Box, Lattice, NotAligned
from veil_server.disclosure.settings import DisclosurePolicy
from veil_server.query.catalog import Catalog, Column, ColumnControl, ColumnType, Dataset
from veil_server.query.planner import plan_query

C = ColumnControl
EXACT = DisclosurePolicy(mode="exact", exact_reason="unit test table")


def dataset() -> Dataset:
    cols = (
        Column("region", ColumnType.TEXT, frozenset({C.GROUP, C.FILTER}), categories=("N", "S", "E")),
        Column("sex", ColumnType.TEXT, frozenset({C.GROUP, C.FILTER}), categories=("F", "M")),
        Column("age", ColumnType.INTEGER, frozenset({C.GROUP, C.FILTER, C.AGGREGATE}),
               value_range=(Decimal(0), Decimal(99)), bin_width=Decimal(10)),
        Column("postcode", ColumnType.TEXT, frozenset({C.FILTER})),
        Column("x", ColumnType.INTEGER, frozenset({C.AGGREGATE}), value_range=(Decimal(0), Decimal(10))),
    )
    return Dataset("t", "t.csv", "csv", cols, frozenset({"r"}), disclosure=EXACT)


DS = dataset()
LAT = Lattice(DS)


def where(sql_where: str) -> Box:
    plan = plan_query(f"SELECT COUNT(*) FROM t WHERE {sql_where}", Catalog([DS]))
    return LAT.where_box(plan.where)


@pytest.mark.parametrize("ok", [
    "region = 'N'", "region <> 'N'", "region IN ('N', 'S')", "region NOT IN ('E')", "age >= 30", "age < 40",
    "age >= 30 AND age < 60 AND sex = 'F'", "(region = 'N' OR region = 'S') AND NOT sex = 'M'",
    "NOT (age >= 20 AND age < 40)", "region = 'Mars'", "sex IS NOT NULL",
])
def test_aligned_filters_are_boxes(ok):
    assert isinstance(where(ok), Box)


@pytest.mark.parametrize("bad", [
    "age >= 35", "age > 30", "age <= 40", "age = 30", "age BETWEEN 30 AND 40", "region = 'N' OR sex = 'F'",
    "postcode = '12345'", "NOT (region = 'N' AND sex = 'F')", "region > 'N'",
])
def test_unaligned_filters_are_refused_for_their_shape(bad):
    with pytest.raises(NotAligned) as e:
        where(bad)
    assert e.value.reason == "EXACT_FILTER_NOT_ALIGNED"


def test_box_relations():
    n, s, f, nf = where("region = 'N'"), where("region = 'S'"), where("sex = 'F'"), where("region = 'N' AND sex = 'F'")
    assert n.contains(nf, LAT) and not nf.contains(n, LAT)
    assert n.disjoint(s, LAT) and not n.disjoint(f, LAT)
    assert not n.contains(f, LAT) and not f.contains(n, LAT)  # crossing
    assert where("region = 'Mars'").empty
    assert Box.from_json(nf.to_json()) == nf
    assert n.size(LAT) == 2 * 10 and Box(()).size(LAT) == 3 * 2 * 10


def test_forest_accepts_nesting_and_refuses_crossing():
    f = Forest(LAT)
    f.insert(where("region = 'N'"), True)
    f.insert(where("region = 'N' AND sex = 'F'"), True)
    f.insert(where("region = 'S'"), False)
    f.insert(Box(()), True)  # the whole table: above everything
    with pytest.raises(TableOverlaps):
        f.locate(where("sex = 'F'"))  # crosses region = 'N'
    with pytest.raises(TableOverlaps):
        f.locate(where("region IN ('N', 'S') AND age >= 50"))
    existing, parent, inside = f.locate(where("region = 'N' AND sex = 'F' AND age >= 50"))
    assert existing is None and parent.box == where("region = 'N' AND sex = 'F'") and inside == []


def atoms(counts: dict[tuple[str, str, int], int]) -> AtomTable:
    """An atom table over (region, sex, age bin) from explicit counts."""
    keys = list(counts)
    pieces = np.array([[LAT.index["region"][r], LAT.index["sex"][s], LAT.index["age"][str(a)]] for r, s, a in keys],
                      dtype=np.int32)
    rows = np.array([counts[k] for k in keys], dtype=np.int64)
    return AtomTable(LAT, pieces, {"": rows, "age": rows, "x": rows})


def test_remainders_of_fewer_than_k_rows_are_held_back():
    # Region N: 30 women and 4 men; region S: 25 women, 25 men.
    t = atoms({("N", "F", 30): 30, ("N", "M", 30): 4, ("S", "F", 30): 25, ("S", "M", 30): 25})
    f = Forest(LAT)
    assert audit(f, t, [Candidate(where("region = 'N'"), True)], k=10, columns=[]) == [True]
    # N, women: releasing it would let N minus it (4 men) be computed: held back.
    assert audit(f, t, [Candidate(where("region = 'N' AND sex = 'F'"), True)], k=10, columns=[]) == [False]
    # S, women: S is not released, so nothing is derived; released.
    assert audit(f, t, [Candidate(where("region = 'S' AND sex = 'F'"), True)], k=10, columns=[]) == [True]
    # Then S as a whole: S minus its released women = 25 men >= k: released.
    assert audit(f, t, [Candidate(where("region = 'S'"), True)], k=10, columns=[]) == [True]


def test_an_empty_remainder_counts_as_small_unless_the_children_tile_it():
    t = atoms({("N", "F", 30): 30, ("S", "F", 30): 40})  # nobody is a man
    f = Forest(LAT)
    assert audit(f, t, [Candidate(Box(()), True)], k=10, columns=[]) == [True]
    # The women of N: the whole table minus them holds 40 rows: fine.
    assert audit(f, t, [Candidate(where("region = 'N' AND sex = 'F'"), True)], k=10, columns=[]) == [True]
    # The women of S: what is left of the table is the men and region E: 0 rows, but not
    # structurally empty -> held back (an empty difference must not show).
    assert audit(f, t, [Candidate(where("region = 'S' AND sex = 'F'"), True)], k=10, columns=[]) == [False]
    # A table whose cells tile the parent exactly leaves nothing to derive: GROUP BY sex of N.
    f2 = Forest(LAT)
    audit(f2, t, [Candidate(where("region = 'N'"), True)], k=10, columns=[])
    cells = [Candidate(where("region = 'N' AND sex = 'F'"), True), Candidate(where("region = 'N' AND sex = 'M'"), False)]
    assert audit(f2, t, cells, k=10, columns=[]) == [False, False]  # F would reveal M's 0 rows


def test_each_column_has_its_own_family():
    """A box released for COUNT(*) only is known for its rows, not for x: it neither tiles its
    parent for x nor stops the walk up to the ancestor released with x (red team, E5-E7)."""
    pieces = {("N", "F", 30): (30, 1), ("N", "M", 30): (20, 20), ("S", "F", 30): (25, 25), ("S", "M", 30): (25, 25)}
    keys = list(pieces)
    idx = np.array([[LAT.index["region"][r], LAT.index["sex"][s], LAT.index["age"][str(a)]] for r, s, a in keys],
                   dtype=np.int32)
    rows = np.array([pieces[k][0] for k in keys], dtype=np.int64)
    xs = np.array([pieces[k][1] for k in keys], dtype=np.int64)  # N's women: 30 rows, one value of x
    t = AtomTable(LAT, idx, {"": rows, "age": rows, "x": xs})
    x = ["#x", "x"]
    f = Forest(LAT)
    assert audit(f, t, [Candidate(where("region = 'N'"), True)], k=10, columns=x) == [True]  # SUM(x) over N
    assert audit(f, t, [Candidate(where("region = 'N' AND sex = 'F'"), True)], k=10, columns=[]) == [True]  # COUNT
    # SUM(x) over N's men would give N's women's one value by difference: held back.
    assert audit(f, t, [Candidate(where("region = 'N' AND sex = 'M'"), True)], k=10, columns=x) == [False]
    # Their COUNT(*) is fine: N's women's row count is released anyway.
    f2 = Forest(LAT)
    audit(f2, t, [Candidate(where("region = 'N'"), True)], k=10, columns=x)
    assert audit(f2, t, [Candidate(where("region = 'N' AND sex = 'M'"), True)], k=10, columns=[]) == [True]
    node = f2.by_box[where("region = 'N' AND sex = 'M'")]
    assert node.knows("") and not node.knows("x") and f2.by_box[where("region = 'N'")].knows("x")


def test_the_history_keeps_each_populations_columns(open_state):
    from veil_server.disclosure.history import ExactHistory
    from veil_server.state.store import StateStore

    store = StateStore(open_state())
    with store.joined_tx() as db:  # a state from before the columns were recorded
        db.script("CREATE TABLE exact_populations (seq INTEGER PRIMARY KEY AUTOINCREMENT, dataset TEXT NOT NULL, "
                  "box TEXT NOT NULL, released INTEGER NOT NULL, query_id TEXT NOT NULL, at_us INTEGER NOT NULL)")
    h = ExactHistory(store)
    n, nf, s = where("region = 'N'"), where("region = 'N' AND sex = 'F'"), where("region = 'S'")
    h.record("t", "q1", [(n, frozenset({"", "#x", "x"})), (nf, frozenset({""})), (s, False)])
    with store.joined_tx() as db:  # a row written before the columns were recorded
        db.execute("INSERT INTO exact_populations (dataset, box, released, query_id, at_us) VALUES (?,?,?,?,?)",
                   ("t", where("region = 'E'").to_json(), 1, "q0", 0))
    f = ExactHistory(StateStore(open_state())).forest("t", LAT)
    assert f.by_box[n].knows("x") and f.by_box[nf].knows("") and not f.by_box[nf].knows("x")
    assert not f.by_box[s].released
    assert f.by_box[where("region = 'E'")].knows("x")  # as it was taken then: released for every column


def test_release_flags_round_trip():
    from veil_server.audit.events import pack_flags, unpack_flags

    for flags in ([], [True], [False] * 9, [bool(i % 3) for i in range(1000)]):
        assert unpack_flags(pack_flags(flags)) == flags
    assert unpack_flags("3:!!") is None and unpack_flags("9:AA==") is None and unpack_flags("x") is None
