"""Attacks on disclosure control by a motivated analyst with a valid token and grant, on a real
public survey (``survey_support``: Fair's 6,366 respondents, one of them the target), through
real gRPC. One test (or more) per item of issue 14's list; every attack also runs with its
defence taken out (a monkeypatch), as a positive control showing the same script does recover
the target there.

How "does not recover" is judged:

- exact mode (deterministic): the attacker's conclusion is the same on the real table and on a
  neighbouring one where the target's secret differs, or the value it computes is not hers;
- DP (random): a value the attacker computes never equals the target's exactly (the noise of an
  ``affairs`` sum has a scale of millions of fixed-point units, so an exact hit has probability
  below 1e-7), and one attribute attack is run many times on both tables to bound how often it
  guesses right (see ``test_dp_attribute_oracle_is_bounded_by_epsilon``).
"""

from __future__ import annotations

import contextlib
import itertools
from decimal import Decimal

import pytest

import veil
from veil_server.api.server import run_server
from veil_server.config import load_config
from veil_server.disclosure import history, noise

from . import ledger
from .survey_support import K, QI, find_target, survey_rows, variant, write_survey_node

ASKED = {"n": 0}  # queries the current test submitted, on any path (for SECURITY.md's table)


@pytest.fixture(autouse=True)
def _count_queries(monkeypatch):
    """Counts every query a test submits (plain, encrypted-input, federated), whatever helper asks it."""
    ASKED["n"] = 0
    for name in ("submit", "federated_query"):
        real = getattr(veil.Node, name)

        def counted(self, *args, _real=real, **kwargs):
            ASKED["n"] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(veil.Node, name, counted)

BIG_DP = "dp = { epsilon_per_query = 0.5, max_epsilon_per_query = 1.0, analyst_budget = 500.0, dataset_budget = 1000.0 }"
FAST = "[limits]\nrequests_per_second = 100000\nburst = 100000\n"  # many queries in a row


@pytest.fixture(scope="module")
def survey():
    d = survey_rows()
    return d, find_target(d)


@contextlib.contextmanager
def node(folder, data, mode="exact", who="alice", home=None, **kw):
    tokens = write_survey_node(folder, data, mode=mode, **kw)
    with run_server(load_config(folder / "veil.toml", env={}), listen="127.0.0.1:0", grace=0.5) as running:
        with veil.connect(running.target, token=tokens[who], home=home) as analyst:
            yield analyst, running, tokens


def ask(n, sql, **kw):
    """The first aggregate of the first row, None if suppressed, or the refusal reason. A
    transport hiccup (UNAVAILABLE, DEADLINE_EXCEEDED on a loaded machine) is asked again: it is
    no answer of the node's rules."""
    for attempt in range(3):
        try:
            df = n.query(sql, purpose="research", exact=True, **kw)
            break
        except veil.VeilError as e:
            if e.code.name in ("UNAVAILABLE", "DEADLINE_EXCEEDED") and attempt < 2:
                continue
            return e.reason
    if df["suppressed"][0]:
        return None
    v = df.iloc[0, 0]
    return v.item() if hasattr(v, "item") else v  # numpy integers as int


def no_secondary_suppression(monkeypatch):
    """The defence taken out: exact mode without its history (no structural refusal of crossing
    tables, no secondary suppression): the per-query k rule (and dominance) alone."""
    from veil_server.disclosure import lattice
    from veil_server.disclosure.control import Audited, DisclosureControl

    monkeypatch.setattr(DisclosureControl, "check_exact", lambda self, plan, ds, weighted: lattice.check_plan(plan, ds))
    monkeypatch.setattr(DisclosureControl, "_audit", lambda self, *a, **k: Audited())


def no_noise(monkeypatch):
    """The defence taken out: DP's noise draws all zero."""
    monkeypatch.setattr(noise, "privatize", lambda values, n: [int(v) for v in values])
    import veil_server.disclosure.dp as dp_module
    import veil_server.federation.partial as partial_module

    monkeypatch.setattr(dp_module, "privatize", lambda values, n: [int(v) for v in values])
    monkeypatch.setattr(partial_module, "privatize", lambda values, n: [int(v) for v in values])


# -- 1. refusals (and suppressions) are not an oracle -------------------------------------------


SEEN: list = []


def attribute_attack(n, t) -> int | None:
    """Which religious value is the target's? The C-or-P probe of the report, then its
    box-shaped form: the total of B, then B without each value in turn."""
    for r in (1, 2, 3, 4):  # the report's form: refused for what it says, whatever the data
        ask(n, f"SELECT COUNT(*) FROM survey WHERE religious = 1 OR ({t.where()} AND religious = {r})")
    total = ask(n, f"SELECT COUNT(*) FROM survey WHERE {t.where()}")
    answers = {r: ask(n, f"SELECT COUNT(*) FROM survey WHERE {t.where()} AND religious <> {r}") for r in (1, 2, 3, 4)}
    SEEN[:] = [total, answers]  # for the assertion messages
    ones = [r for r, a in answers.items() if isinstance(a, int) and isinstance(total, int) and total - a == 1]
    if len(ones) == 1:
        return ones[0]
    odd = [r for r, a in answers.items() if not isinstance(a, int)]
    return odd[0] if len(odd) == 1 else None


def test_exact_refusals_and_suppressions_are_no_oracle(tmp_path, survey, analyst_home, monkeypatch):
    d, t = survey
    real, neighbour = d, variant(d, t, religious=t.other_religious)
    with node(tmp_path / "a", real, home=analyst_home) as (n, _, _):
        assert ask(n, f"SELECT COUNT(*) FROM survey WHERE religious = 1 OR ({t.where()} AND religious = 4)") \
            == "EXACT_FILTER_NOT_ALIGNED"  # the report's probe: refused for its shape
    with node(tmp_path / "b", real, home=analyst_home) as (n, _, _):
        on_real = attribute_attack(n, t)
    with node(tmp_path / "c", neighbour, home=analyst_home) as (n, _, _):
        on_neighbour = attribute_attack(n, t)
    assert on_real == on_neighbour, SEEN  # the attacker's conclusion does not depend on her value
    no_secondary_suppression(monkeypatch)
    with node(tmp_path / "d", real, home=analyst_home) as (n, _, _):
        assert attribute_attack(n, t) == t.religious, SEEN  # positive control: recovered
    with node(tmp_path / "e", neighbour, home=analyst_home) as (n, _, _):
        assert attribute_attack(n, t) != t.religious
    ledger.record("attack", "disclosure-oracle", "refusal and suppression oracle on a unique respondent (exact; DP bound in its own test)", ASKED["n"])


# -- 2. encrypted-input sub-cells are in the history --------------------------------------------


def weighted_boxes(d, t):
    """A box X in which 11+ respondents share the target's religious value but she alone has
    her value of one more column D: sub-cells (X, religious) and (X without her D value) differ
    by her only, while the plain cells differ by dozens of rows."""
    b = d.copy()
    for col, w in QI.items():
        b[col] = (d[col] // w * w).astype(int)
    me = b[b["pid"] == t.pid].iloc[0]
    dims = ["rate_marriage", "age", "yrs_married", "children", "educ", "occupation", "occupation_husb"]
    for size in (1, 2, 3):
        for sub in itertools.combinations(dims, size):
            x = (b[list(sub)] == me[list(sub)].values).all(axis=1)
            s = x & (b["religious"] == t.religious)
            for dim in dims:
                only = s & (b[dim] == me[dim])
                if dim not in sub and s.sum() > K and only.sum() == 1 and (x & (b[dim] == me[dim])).sum() >= 30 \
                        and b.loc[s & ~only, "affairs"].sum() > 0:
                    return {c: int(me[c]) for c in sub}, dim, int(me[dim])
    raise AssertionError("no box fits")


def box_sql(box: dict[str, int]) -> str:
    return " AND ".join(f"{c} >= {v} AND {c} < {v + QI[c]}" if c in QI and c != "rate_marriage" else f"{c} = {v}"
                        for c, v in box.items())


def weighted_attack(n, t, box, dim, value) -> list[Decimal]:
    """Weights that pick her religious value, over two populations whose sub-cells differ by her
    alone: the report's form (plain cells differing by dozens of rows), then a nested form that
    keeps exact mode's tables nested. Returns every difference the attacker obtains."""
    ws = veil.WeightedSum.by_category(n.dataset("survey"), "religious", {str(t.religious): 1},
                                      value_column="affairs", name="w")
    out = []
    for where in (box_sql(box), f"{box_sql(box)} AND religious = {t.religious}"):
        try:
            first = n.query(f"SELECT COUNT(*) AS n FROM survey WHERE {where}", purpose="research",
                            weighted_sums=[ws], exact=True)
            second = n.query(f"SELECT COUNT(*) AS n FROM survey WHERE {where} AND {dim} <> {value}",
                             purpose="research", weighted_sums=[ws], exact=True)
        except veil.VeilError as e:
            assert e.reason == "EXACT_TABLE_OVERLAPS"  # structural: refused whatever the data
            continue
        if not first["suppressed"][0] and not second["suppressed"][0]:
            out.append(first["w"][0] - second["w"][0])
    return out


def test_exact_encrypted_input_sub_cells_join_the_history(tmp_path, survey, analyst_home, monkeypatch):
    d, t = survey
    box, dim, value = weighted_boxes(d, t)
    with node(tmp_path / "a", d, home=analyst_home) as (n, _, _):
        assert Decimal(str(t.affairs)) not in weighted_attack(n, t, box, dim, value)
    no_secondary_suppression(monkeypatch)
    with node(tmp_path / "b", d, home=analyst_home) as (n, _, _):
        assert Decimal(str(t.affairs)) in weighted_attack(n, t, box, dim, value)  # positive control
    ledger.record("attack", "disclosure-weighted", "encrypted-input sub-cells differing by one person (exact and DP)", ASKED["n"])


def test_dp_encrypted_input_sub_cells_carry_noise(tmp_path, survey, analyst_home, monkeypatch):
    d, t = survey
    box, dim, value = weighted_boxes(d, t)
    with node(tmp_path / "a", d, mode="dp", dp=BIG_DP, home=analyst_home) as (n, _, _):
        # DP refuses neither form (a noisy count below k may suppress one: never a refusal).
        assert Decimal(str(t.affairs)) not in weighted_attack(n, t, box, dim, value)
    no_noise(monkeypatch)
    with node(tmp_path / "b", d, mode="dp", dp=BIG_DP, home=analyst_home) as (n, _, _):
        assert weighted_attack(n, t, box, dim, value) == [Decimal(str(t.affairs))] * 2  # positive control


# -- 3. colluding analysts ------------------------------------------------------------------------


def pair(first, second, t, **kw) -> Decimal | None:
    """The differencing pair, its halves asked by two different analysts."""
    a = ask(first, f"SELECT SUM(affairs) FROM survey WHERE {t.where()}", **kw)
    b = ask(second, f"SELECT SUM(affairs) FROM survey WHERE {t.where()} AND religious <> {t.religious}", **kw)
    return a - b if isinstance(a, Decimal) and isinstance(b, Decimal) else None


def two_analysts(tmp_path, data, home_a, home_b, **kw):
    stack = contextlib.ExitStack()
    alice, running, tokens = stack.enter_context(node(tmp_path, data, home=home_a, **kw))
    bob = stack.enter_context(veil.connect(running.target, token=tokens["bob"], home=home_b))
    return stack, alice, bob


def test_exact_history_is_shared_by_all_analysts(tmp_path, survey, analyst_home, other_home, monkeypatch):
    d, t = survey
    stack, alice, bob = two_analysts(tmp_path / "a", d, analyst_home, other_home)
    with stack:
        assert pair(alice, bob, t) is None  # bob's half is suppressed: alice's release is in the history
    no_secondary_suppression(monkeypatch)
    stack, alice, bob = two_analysts(tmp_path / "b", d, analyst_home, other_home)
    with stack:
        assert pair(alice, bob, t) == Decimal(str(t.affairs))  # positive control
    ledger.record("attack", "disclosure-collusion", "two analysts' differencing pair; colluders against the dataset budget", ASKED["n"])


def test_dp_dataset_budget_stops_colluders(tmp_path, survey, analyst_home, other_home, tmp_path_factory):
    d, t = survey
    # ε = 1 per query (a count of 50 stays above k but with probability ~1e-9): two each. The
    # dataset's budget is four queries plus the 0.1 its listing spent on the certificate's row count
    # and the 0.5 on its quality profile.
    terms = "dp = { epsilon_per_query = 1.0, analyst_budget = 2.0, dataset_budget = 4.6 }"
    with node(tmp_path / "a", d, mode="dp", dp=terms, home=analyst_home) as (alice, running, tokens):
        carol_home = tmp_path_factory.mktemp("carol")
        with veil.connect(running.target, token=tokens["bob"], home=other_home) as bob, \
                veil.connect(running.target, token=tokens["carol"], home=carol_home) as carol:
            for analyst in (alice, alice, bob, bob):  # each within its own budget
                assert isinstance(ask(analyst, f"SELECT SUM(affairs) FROM survey WHERE {t.where()}"), Decimal)
            with pytest.raises(veil.VeilError) as e:
                carol.query("SELECT COUNT(*) FROM survey", purpose="research")
            assert e.value.reason == "PRIVACY_BUDGET_EXHAUSTED" and e.value.metadata["budget"] == "dataset"
            assert alice.budget("survey").dataset_remaining == 0
    # Positive control: with a dataset budget as large as the analysts' together, carol is answered.
    big = "dp = { epsilon_per_query = 1.0, analyst_budget = 2.0, dataset_budget = 6.6 }"
    with node(tmp_path / "b", d, mode="dp", dp=big, who="carol", home=tmp_path_factory.mktemp("carol2")) as (c, _, _):
        assert isinstance(ask(c, "SELECT COUNT(*) FROM survey"), int)


def test_dp_pair_never_gives_the_exact_value(tmp_path, survey, analyst_home, other_home, monkeypatch):
    d, t = survey
    stack, alice, bob = two_analysts(tmp_path / "a", d, analyst_home, other_home, mode="dp", dp=BIG_DP)
    with stack:
        # At ε = 1 a count of 49 falls below k with probability ~1e-9: both halves are released.
        estimate = pair(alice, bob, t, epsilon=1.0)
        assert estimate is not None and estimate != Decimal(str(t.affairs))
    no_noise(monkeypatch)
    stack, alice, bob = two_analysts(tmp_path / "b", d, analyst_home, other_home, mode="dp", dp=BIG_DP)
    with stack:
        assert pair(alice, bob, t) == Decimal(str(t.affairs))  # positive control


# -- 4. the history has no window -----------------------------------------------------------------


def cheap_releases(n, count: int) -> None:
    """Distinct small tables disjoint from the target's box (rate_marriage 1)."""
    combos = itertools.product((9, 12, 14, 16, 17, 20), (1, 2, 3, 4, 5, 6))
    for (educ, occ), _ in zip(combos, range(count)):
        ask(n, f"SELECT COUNT(*) FROM survey WHERE rate_marriage = 1 AND educ = {educ} AND occupation = {occ}")


def test_exact_history_never_forgets(tmp_path, survey, analyst_home, monkeypatch):
    d, t = survey

    def attack(folder):
        with node(folder, d, home=analyst_home) as (n, _, _):
            whole = ask(n, f"SELECT SUM(affairs) FROM survey WHERE {t.where()}")
            cheap_releases(n, 30)
            rest = ask(n, f"SELECT SUM(affairs) FROM survey WHERE {t.where()} AND religious <> {t.religious}")
            return whole - rest if isinstance(rest, Decimal) else None

    assert attack(tmp_path / "a") is None
    # Positive control: a history that remembers the last 25 populations only.
    forest = history.ExactHistory.forest

    def last_25(self, dataset, lattice):
        with self.store.reading() as db:
            rows = db.execute("SELECT box, released FROM exact_populations WHERE dataset=? ORDER BY seq DESC LIMIT 25",
                              (dataset.lower(),)).fetchall()
        f = history.Forest(lattice)
        for box, released in sorted(rows, key=lambda r: -history.Box.from_json(r[0]).size(lattice)):
            f.insert(history.Box.from_json(box), bool(released))
        f.seq = 10**12
        return f

    assert forest is not None
    monkeypatch.setattr(history.ExactHistory, "forest", last_25)
    assert attack(tmp_path / "b") == Decimal(str(t.affairs))
    ledger.record("attack", "disclosure-window", "differencing pair after 30 distinct releases", ASKED["n"])


# -- 5. margins and trackers under the default settings ------------------------------------------


DOMAINS = {"educ": (9, 12, 14, 16, 17, 20), "occupation": (1, 2, 3, 4, 5, 6), "occupation_husb": (1, 2, 3, 4, 5, 6),
           "children": (0, 1, 2, 3, 4, 5), "yrs_married": (0, 5, 10, 15, 20), "age": (15, 20, 25, 30, 35, 40)}


def margin_setup(d):
    """A box (one rate_marriage value) and a column D such that, in some religious row of the
    religious x D cross-tab, exactly one cell is small (1..k-1 respondents) and the others reach
    k: the cross-tab suppresses that one cell, and its row's margin would give it away."""
    b = d.copy()
    for col, w in QI.items():
        b[col] = (d[col] // w * w).astype(int)
    for rm, grp in b.groupby("rate_marriage"):
        for dim, domain in DOMAINS.items():
            for r, g in grp.groupby("religious"):
                cnt = g.groupby(dim).size().reindex(domain, fill_value=0)
                small = [v for v in domain if cnt[v] < K]
                if len(small) == 1 and cnt[small[0]] > 0:
                    return int(rm), dim, b
    raise AssertionError("no cross-tab fits")


def margin_attack(n, rm: int, dim: str, b) -> list[Decimal]:
    """Cross-tab religious x D, then the religious margin: a margin minus its released cells gives
    the suppressed cell whenever exactly one cell of the row is suppressed. Returns every such
    derived sum that is exactly a small (1..k-1 respondents) cell's true sum."""
    key = f"FLOOR({dim} / {QI[dim]}) * {QI[dim]} AS {dim}" if dim in QI else dim
    cross = n.query(f"SELECT religious, {key}, COUNT(*) AS n, SUM(affairs) AS s FROM survey WHERE rate_marriage = {rm} "
                    "GROUP BY 1, 2", purpose="research", exact=True)
    margin = n.query(f"SELECT religious, COUNT(*) AS n, SUM(affairs) AS s FROM survey WHERE rate_marriage = {rm} "
                     "GROUP BY religious", purpose="research", exact=True)
    inside = b[b["rate_marriage"] == rm]
    truth = {(int(r), int(v)): (len(g), Decimal(str(round(g["affairs"].sum(), 6))))
             for (r, v), g in inside.groupby(["religious", dim])}
    derived = []
    for row in margin.itertuples():
        cells = cross[cross["religious"] == row.religious]
        hidden = cells[cells["suppressed"]]
        if row.suppressed or len(hidden) != 1:
            continue
        value = row.s - sum(cells[~cells["suppressed"]]["s"])
        size, s = truth.get((row.religious, int(hidden[dim].iloc[0])), (0, Decimal(0)))
        if 0 < size < K and value == s:
            derived.append(value)
    return derived


def test_exact_margins_do_not_give_away_suppressed_cells(tmp_path, survey, analyst_home, monkeypatch):
    d, _ = survey
    rm, dim, b = margin_setup(d)
    with node(tmp_path / "a", d, home=analyst_home) as (n, _, _):
        assert margin_attack(n, rm, dim, b) == []
    no_secondary_suppression(monkeypatch)
    with node(tmp_path / "b", d, home=analyst_home) as (n, _, _):
        assert margin_attack(n, rm, dim, b)  # positive control: a small cell's exact sum
    ledger.record("attack", "disclosure-margins", "margins of a cross-tab; two-query tracker (exact and DP)", ASKED["n"])


def tracker(n, t) -> Decimal | None:
    """Grouped totals, then the ungrouped total: the total minus the released groups."""
    groups = n.query(f"SELECT religious, SUM(affairs) AS s FROM survey WHERE {t.where()} GROUP BY religious",
                     purpose="research", exact=True)
    total = ask(n, f"SELECT SUM(affairs) FROM survey WHERE {t.where()}")
    released = groups[~groups["suppressed"]]
    if not isinstance(total, Decimal) or len(released) != 3:
        return None
    return total - sum(released["s"])


def test_exact_two_query_tracker_is_suppressed(tmp_path, survey, analyst_home, monkeypatch):
    d, t = survey
    with node(tmp_path / "a", d, home=analyst_home) as (n, _, _):
        assert tracker(n, t) is None
    no_secondary_suppression(monkeypatch)
    with node(tmp_path / "b", d, home=analyst_home) as (n, _, _):
        assert tracker(n, t) == Decimal(str(t.affairs))  # positive control


def test_dp_tracker_never_gives_the_exact_value(tmp_path, survey, analyst_home, monkeypatch):
    d, t = survey
    with node(tmp_path / "a", d, mode="dp", dp=BIG_DP, home=analyst_home) as (n, _, _):
        assert tracker(n, t) != Decimal(str(t.affairs))
    no_noise(monkeypatch)
    with node(tmp_path / "b", d, mode="dp", dp=BIG_DP, home=analyst_home) as (n, _, _):
        assert tracker(n, t) == Decimal(str(t.affairs))


# -- 6. dominance covers every aggregate and subtraction -----------------------------------------


def dominated_boxes(d):
    """A box C of k+ rows whose largest affairs figure is over half of C's sum, inside a box C'
    (C without its children constraint) that is not dominated, with C' - C a box of k+ rows."""
    b = d.copy()
    for col, w in QI.items():
        b[col] = (d[col] // w * w).astype(int)
    dims = list(QI)
    for key, grp in b.groupby(dims):
        outer = b[(b[dims[:3]] == list(key[:3])).all(axis=1)]
        if len(grp) >= K and 0 < grp["affairs"].sum() < 2 * grp["affairs"].max() \
                and outer["affairs"].max() < 0.4 * outer["affairs"].sum() and len(outer) - len(grp) >= K:
            truth = Decimal(str(round(d.loc[grp.index, "affairs"].sum(), 6)))
            return dict(zip(dims, map(int, key))), truth
    raise AssertionError("no dominated box")


def dominance_attack(n, box) -> set[str]:
    """What the attacker obtains about C: its SUM directly, its VARIANCE and STDDEV, and its
    SUM as C' minus C' - C."""
    c, outer = box_sql(box), box_sql({k: v for k, v in box.items() if k != "children"})
    got = {}
    for name, agg in (("sum", "SUM(affairs)"), ("var", "VARIANCE(affairs)"), ("sd", "STDDEV(affairs)")):
        v = ask(n, f"SELECT {agg} FROM survey WHERE {c}")
        if isinstance(v, Decimal):
            got[name] = v
    score = veil.WeightedSum.score({"affairs": 1}, name="w")  # an encrypted-input sum over C
    scored = n.query(f"SELECT COUNT(*) AS n FROM survey WHERE {c}", purpose="research", weighted_sums=[score],
                     exact=True)
    if not scored["suppressed"][0]:
        got["weighted"] = scored["w"][0]
    whole = ask(n, f"SELECT SUM(affairs) FROM survey WHERE {outer}")
    rest = ask(n, f"SELECT SUM(affairs) FROM survey WHERE {outer} AND NOT (children >= {box['children']} "
                  f"AND children < {box['children'] + 1})")
    if isinstance(whole, Decimal) and isinstance(rest, Decimal):
        got["difference"] = whole - rest
    return got


def test_exact_dominance_covers_every_aggregate_and_subtraction(tmp_path, survey, analyst_home):
    d, _ = survey
    box, truth = dominated_boxes(d)
    with node(tmp_path / "a", d, dominance=True, home=analyst_home) as (n, _, _):
        got = dominance_attack(n, box)
        assert "sum" not in got and "var" not in got and "sd" not in got and "weighted" not in got
        assert got.get("difference") != truth
    # Positive control: the same table without the rule gives C's sum away, three ways.
    with node(tmp_path / "b", d, dominance=False, home=analyst_home) as (n, _, _):
        got = dominance_attack(n, box)
        assert got["sum"] == truth and got["weighted"] == truth and "var" in got
    # (The subtraction alone, without the rule, is caught by the history too when C is released
    # first; here C was released, so C' - C is legitimately computable and equals C's sum.)
    ledger.record("attack", "disclosure-dominance", "dominated cell: SUM, VARIANCE, STDDEV, subtraction", ASKED["n"])


# -- 7. federated queries ---------------------------------------------------------------------------


FED_DP = "dp = { epsilon_per_query = 10.0, max_epsilon_per_query = 10.0, analyst_budget = 1000.0, dataset_budget = 1000.0 }"


def federated_attack(cluster, home) -> tuple[Decimal, Decimal]:
    """Two thresholds whose populations both reach k across the members while their difference
    (one age) holds 1 to 4 patients in all: (estimate of that age's total cost, the truth).
    At the largest ε a member allows, so the noise is as small as it gets."""
    ages = cluster.union("SELECT age, COUNT(*) AS n FROM {t} GROUP BY age ORDER BY age DESC")
    above, a = 0, None
    for age, count in zip(ages["age"], ages["n"]):
        if 1 <= count <= 4 and above >= 3 * K:
            a = int(age)
            break
        above += count
    assert a is not None
    truth = Decimal(int(cluster.union(f"SELECT SUM(CAST(ROUND(cost * 100) AS BIGINT)) AS c FROM {{t}} "
                                      f"WHERE age = {a}")["c"][0])) / 100
    with cluster.connect("north", home) as n:
        first = n.federated_query(f"SELECT SUM(cost) AS s FROM admissions WHERE age >= {a}", purpose="research",
                                  exact=True, epsilon=10.0)
        second = n.federated_query(f"SELECT SUM(cost) AS s FROM admissions WHERE age > {a}", purpose="research",
                                   exact=True, epsilon=10.0)
    assert not first["suppressed"][0] and not second["suppressed"][0]
    assert first.attrs["disclosure"] == "dp" and first.attrs["noise"]["s"]["terms"] == 3
    return first["s"][0] - second["s"][0], truth


def test_federated_queries_carry_every_members_noise(tmp_path, analyst_home, monkeypatch):
    from tests.integration.federation_cluster import federation

    with federation(tmp_path / "a", rows=(3_000, 3_000, 3_000), dp_terms=FED_DP) as c:
        estimate, truth = federated_attack(c, analyst_home)
        assert estimate != truth
    no_noise(monkeypatch)
    with federation(tmp_path / "b", rows=(3_000, 3_000, 3_000), dp_terms=FED_DP) as c:
        estimate, truth = federated_attack(c, analyst_home)
        assert estimate == truth  # positive control
    ledger.record("attack", "disclosure-federated", "threshold pair isolating 1-4 patients across three members", ASKED["n"])


def test_an_exact_member_refuses_to_federate(tmp_path, analyst_home):
    from veil.federation import FederationFailed
    from tests.integration.federation_cluster import TEST_DP, federation

    exact = (f'disclosure = "dp"\n{TEST_DP}', 'disclosure = "exact"\nexact_reason = "this member publishes exact tables"')
    with federation(tmp_path, rows=(1_000, 1_000, 1_000), edit={"south": exact}) as c:
        text = c.members["south"].config.read_text()
        assert 'disclosure = "exact"' in text
        with c.connect("north", analyst_home) as n, pytest.raises(FederationFailed) as e:
            n.federated_query("SELECT COUNT(*) FROM admissions", purpose="research")
    assert e.value.node == "south" and e.value.metadata["peer_reason"] == "FEDERATION_REQUIRES_DP"


# -- 8. DP on decimal sums and every aggregate --------------------------------------------------------


def test_dp_releases_every_aggregate_on_decimal_and_integer_columns(tmp_path, survey, analyst_home):
    d, _ = survey
    sql = ("SELECT rate_marriage, COUNT(*) AS n, SUM(affairs) AS s, AVG(affairs) AS a, VARIANCE(affairs) AS v, "
           "STDDEV(affairs) AS sd, AVG(age) AS age, VAR_SAMP(yrs_married) AS ym FROM survey GROUP BY rate_marriage")
    with node(tmp_path, d, mode="dp", home=analyst_home) as (n, _, _):  # the product's default terms
        df = n.query(sql, purpose="research")
        explained = n.explain(sql, purpose="research")
    assert df.attrs["disclosure"] == "dp" and df.attrs["epsilon"] == 0.5
    assert {a["column"] for a in explained["accuracy"]} == {"n", "s", "a", "v", "sd", "age", "ym"}
    assert {c: a["error_bound_95"] for c, a in df.attrs["noise"].items()} == \
        {a["column"]: a["error_bound_95"] for a in explained["accuracy"]}
    released = df[~df["suppressed"]]
    assert len(released) >= 4
    truth = d.groupby("rate_marriage")
    for row in released.itertuples():
        g = truth.get_group(row.rate_marriage)
        assert 0 <= row.a <= 60 and 0 <= row.v <= 60 * 60 / 2 and 0 <= row.sd <= 60  # clamped to what is possible
        # Within a very wide bound of the truth (the reported 95 % bound, times 20): catches a
        # wrong scale by orders of magnitude, never fails on honest noise.
        assert abs(row.n - len(g)) <= 20 * df.attrs["noise"]["n"]["error_bound_95"]
        assert abs(row.s - g["affairs"].sum()) <= 20 * df.attrs["noise"]["s"]["error_bound_95"]


# -- 1 again, under DP: how often can the oracle's attacker be right? -----------------------------


def test_dp_attribute_oracle_is_bounded_by_epsilon(tmp_path, survey, analyst_home):
    """The attacker of item 1, with DP: it asks COUNT(B) and COUNT(B and religious <> 4) and
    guesses "hers is 4" when the difference is at least 1, on the real table (she is 4) and on
    the neighbour (she is not). Each trial spends at most ε = 2 x 0.5 = 1 on her row, so no rule
    can be right more often than e / (1 + e) = 0.731 on balance. 150 trials per table: the
    balanced accuracy's standard deviation is under 0.03, so the 0.88 threshold is 5 of them away
    from 0.731 (a chance failure below 1e-6); without noise the rule is right every time."""
    d, t = survey
    trials = 150

    def right_guesses(folder, data, want_four: bool) -> int:
        with node(folder, data, mode="dp", dp=BIG_DP, home=analyst_home, extra=FAST) as (n, _, _):
            hits = 0
            for _ in range(trials):
                whole = n.query(f"SELECT COUNT(*) AS c FROM survey WHERE {t.where()}", purpose="research")["c"][0]
                rest = n.query(f"SELECT COUNT(*) AS c FROM survey WHERE {t.where()} AND religious <> {t.religious}",
                               purpose="research")["c"][0]
                guess_four = (whole - rest) >= 1
                hits += guess_four == want_four
            return hits

    real = right_guesses(tmp_path / "a", d, True)
    neighbour = right_guesses(tmp_path / "b", variant(d, t, religious=t.other_religious), False)
    balanced = (real + neighbour) / (2 * trials)
    assert balanced < 0.88, balanced


# -- refusals are charged and remembered -------------------------------------------------------------


def test_refusals_count_toward_a_quota_and_show_in_the_usage_report(tmp_path, survey, analyst_home):
    d, _ = survey
    with node(tmp_path, d, home=analyst_home, extra="[disclosure]\nrefusals_per_day = 5\n") as (n, running, tokens):
        for i in range(5):
            assert ask(n, f"SELECT COUNT(*) FROM survey WHERE affairs > {i}.5") == "EXACT_FILTER_NOT_ALIGNED"
        # The sixth submission is refused whatever it is, naming the quota.
        assert ask(n, "SELECT COUNT(*) FROM survey") == "REFUSAL_QUOTA_EXCEEDED"
        with veil.connect(running.target, token=tokens["olivia"], home=analyst_home) as owner:
            rows = [r for r in owner.usage() if r.principal == "alice"]
        log = running.node.audit.log.entries(0)
    assert sum(r.queries_refused for r in rows) == 5  # the quota's own refusal is not charged
    reasons = {e.details.get("reason") for e in log if e.principal == "alice" and e.outcome != "ok"}
    assert {"EXACT_FILTER_NOT_ALIGNED", "REFUSAL_QUOTA_EXCEEDED"} <= reasons  # each refusal is in the log

    ledger.record("attack", "disclosure-refusals", "probing refusals: counted, quota, usage report, log", ASKED["n"])