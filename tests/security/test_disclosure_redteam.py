"""Findings of an outside red team against disclosure control, each replayed as it was found
(on real public data: the 2003 MEPS Medicare extract statsmodels ships, and Fair's survey) and
now defended. Each test states the finding; where an attack recovered a value, the same attack
must now recover nothing.

- D2: a query that *fails* for a data-dependent reason (a text cell, NaN or an outlier in a
  number column) was a free, noiseless oracle;
- E1: a filter at a bin edge compared the raw value while bins used the rounded one;
- E2: missing values bypassed the k rule (an encrypted score; a population released before was
  not re-checked for the new query's columns), and E3 the same skip undid dominance;
- F1: a federated analyst had one budget per coordinator, and no grant was checked;
- D1: an ε below half a millionth was charged nothing;
- M1: a DP dataset's certificate stated its exact size;
- E4: one file listed as two datasets had two histories.

A second round (the same team, after those fixes):

- E5-E7: a population released for ``COUNT(*)`` only was taken as known for every column, so it
  tiled its parent for a later ``SUM`` (two or three queries, one analyst or two) and stopped the
  dominance check at it; the history now keeps one family per column;
- E8: an encrypted-input sum keyed by a category skipped the k rule on its value column in the
  sub-cells' remainders, and E9 their dominance;
- E10: an integer column whose source holds fractions compared the raw value in filters while
  bins rounded it;
- L1: a value outside a category column's declared set passed exact mode's completeness check;
- M2: the certificate any analyst reads carried an unkeyed hash of the source file.
"""

from __future__ import annotations

import contextlib
from decimal import Decimal
import hashlib
import secrets
from pathlib import Path

import pytest
import statsmodels

import veil
from veil_server.api.server import run_server
from veil_server.config import load_config

from .survey_support import K

MEPS = Path(statsmodels.__file__).parent / "sandbox/regression/tests/racd10data_with_transformed.csv"
BOX = "female = 1 AND age >= 80 AND age < 85"


def meps_rows():
    import pandas as pd

    d = pd.read_csv(MEPS)
    d.insert(0, "pid", range(1, len(d) + 1))
    return d[["pid", "female", "age", "totchr", "income", "docvis", "linc"]]


def meps_toml(name: str, source: str, *, mode: str = "exact", income_scale: int = 3, bin_width: int = 1,
              dp: str = "", linc_type: str = "decimal") -> str:
    disclosure = ('disclosure = "exact"\nexact_reason = "a public-use survey extract released as exact tables"'
                  if mode == "exact" else f'disclosure = "dp"\n{dp}')
    return f"""
[[datasets]]
name = "{name}"
source = "{source}"
purposes = ["research"]
owners = ["olivia"]
classification = "public"
min_group_size = {K}
max_rows = 100000
{disclosure}
  [[datasets.columns]]
  name = "pid"
  type = "integer"
  controls = ["hidden"]
  [[datasets.columns]]
  name = "female"
  type = "integer"
  controls = ["filter", "group"]
  categories = [0, 1]
  [[datasets.columns]]
  name = "age"
  type = "integer"
  controls = ["filter", "group", "aggregate"]
  range = [65, 90]
  bin_width = 5
  [[datasets.columns]]
  name = "totchr"
  type = "integer"
  controls = ["filter", "group"]
  categories = [0, 1, 2, 3, 4, 5, 6, 7, 8]
  [[datasets.columns]]
  name = "income"
  type = "decimal"
  controls = ["filter", "group", "aggregate"]
  range = [-1, 320]
  scale = {income_scale}
  bin_width = {bin_width}
  [[datasets.columns]]
  name = "docvis"
  type = "integer"
  controls = ["filter", "aggregate"]
  range = [0, 60]
  [[datasets.columns]]
  name = "linc"
  type = "{linc_type}"
  controls = ["aggregate"]
  range = [-5, 6]
  scale = 6
"""


def write(folder: Path, datasets: str, extra: str = "") -> dict[str, str]:
    tokens = {n: secrets.token_urlsafe(24) for n in ("alice", "bob", "olivia")}
    roles = {"alice": "analyst", "bob": "analyst", "olivia": "owner"}
    text = ('[node]\nname = "rt"\nstate_dir = "state"\nmin_group_size = 10\ndev_mode = true\n'
            '[limits]\nrequests_per_second = 100000\nburst = 100000\n' + extra)
    for n, t in tokens.items():
        text += (f'[[principals]]\nname = "{n}"\nrole = "{roles[n]}"\n'
                 f'token_sha256 = "{hashlib.sha256(t.encode()).hexdigest()}"\n')
    text += datasets
    for name in {line.split('"')[1] for line in datasets.splitlines() if line.startswith("name = ")}:
        for who in ("alice", "bob"):
            text += f'[[grants]]\nprincipal = "{who}"\ndataset = "{name}"\npurpose = "research"\n'
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "veil.toml").write_text(text)
    return tokens


@contextlib.contextmanager
def serve(folder: Path, home: Path, who: str = "alice"):
    tokens = {}
    for line in (folder / "tokens.txt").read_text().splitlines():
        n, t = line.split(" ", 1)
        tokens[n] = t
    with run_server(load_config(folder / "veil.toml", env={}), listen="127.0.0.1:0", grace=0.5) as running:
        with veil.connect(running.target, token=tokens[who], home=home) as node:
            yield node, running, tokens


def setup(folder: Path, frame, datasets: str, extra: str = "", na: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "data.csv", index=False, na_rep=na)
    tokens = write(folder, datasets, extra)
    (folder / "tokens.txt").write_text("\n".join(f"{n} {t}" for n, t in tokens.items()))
    return folder


def first(n, sql, **kw):
    try:
        df = n.query(sql, purpose="research", exact=True, **kw)
    except veil.VeilError as e:
        return e.reason
    if df["suppressed"][0]:
        return None
    v = df.iloc[0, 0]
    return v.item() if hasattr(v, "item") else v


# -- D2: no query fails for what the data holds --------------------------------------------------


def test_d2_missing_value_tokens_and_outliers_never_fail_a_query(tmp_path, analyst_home):
    d = meps_rows()
    d = d.astype({"docvis": float})
    d.loc[d.index[0], "docvis"] = 1e30  # an absurd outlier: clamped, never an overflow
    folder = setup(tmp_path / "a", d, meps_toml("t", "data.csv", mode="dp",
                                                dp="dp = { epsilon_per_query = 0.5, analyst_budget = 100, "
                                                   "dataset_budget = 100 }"), na="NA")
    with serve(folder, analyst_home) as (n, running, _):
        states = []
        for where in ("income < 0.5", "income >= 0.5", "female = 1", "docvis > 1000"):
            info = n.submit(f"SELECT COUNT(*) AS c, SUM(linc) AS s, SUM(docvis) AS v FROM t WHERE {where}",
                            purpose="research", epsilon=0.01)
            states.append(n._wait_finished(info.name, 60).state)
    assert states == ["SUCCEEDED"] * 4  # R's "NA" is missing; 1e30 is clamped to the range


def test_d2_a_text_cell_in_a_number_column_refuses_listing(tmp_path):
    d = meps_rows().astype({"linc": object})
    d.loc[d.index[3], "linc"] = "unknown"
    folder = setup(tmp_path, d, meps_toml("t", "data.csv", mode="dp"))
    with pytest.raises(Exception) as e:
        with run_server(load_config(folder / "veil.toml", env={}), listen="127.0.0.1:0", grace=0.5):
            pass
    assert getattr(e.value, "reason", "") == "COLUMN_TYPE_MISMATCH" and "linc" in str(e.value)


# -- E1: a filter and the bins see the same value -------------------------------------------------


def test_e1_filters_at_bin_edges_select_the_bins_rows(tmp_path, analyst_home):
    d = meps_rows()
    # income kept to whole thousands (scale 0): 29.912 is in the bin of 30 and not below 30.
    folder = setup(tmp_path, d, meps_toml("t", "data.csv", income_scale=0, bin_width=10))
    with serve(folder, analyst_home) as (n, _, _):
        where = "female = 1 AND age >= 65 AND age < 70"
        filtered = first(n, f"SELECT COUNT(*) FROM t WHERE {where} AND income >= 0 AND income < 30")
        binned = n.query(f"SELECT FLOOR(income / 30) * 30 AS b, COUNT(*) AS c FROM t WHERE {where} "
                         "GROUP BY FLOOR(income / 30) * 30", purpose="research", exact=True)
    row = binned[binned["b"] == 0]
    assert not row["suppressed"].iloc[0] and int(row["c"].iloc[0]) == filtered  # the same population


# -- E2 / E3: missing values and re-released populations -------------------------------------------


def test_e2_an_encrypted_score_needs_k_values_of_its_column(tmp_path, analyst_home):
    d = meps_rows()
    folder = setup(tmp_path, d, meps_toml("t", "data.csv"))
    where = f"{BOX} AND income >= 0 AND income < 1"
    sub = d[(d.female == 1) & (d.age >= 80) & (d.age < 85) & (d.income >= 0) & (d.income < 1)]
    assert len(sub) >= K and sub["linc"].notna().sum() < K  # many rows, few values: the finding's shape
    with serve(folder, analyst_home) as (n, _, _):
        score = veil.WeightedSum.score({"linc": 1}, name="w")
        df = n.query(f"SELECT COUNT(*) AS c FROM t WHERE {where}", purpose="research", weighted_sums=[score],
                     exact=True)
    assert df["suppressed"][0]  # held back, not the one income's logarithm


def test_e2_a_population_released_before_is_checked_again_for_new_columns(tmp_path, analyst_home):
    d = meps_rows()
    folder = setup(tmp_path, d, meps_toml("t", "data.csv"))
    p, c = f"{BOX} AND income >= 0 AND income < 5", f"{BOX} AND income >= 1 AND income < 5"
    with serve(folder, analyst_home) as (n, _, _):
        assert isinstance(first(n, f"SELECT COUNT(*) FROM t WHERE {p}"), int)
        assert isinstance(first(n, f"SELECT COUNT(*) FROM t WHERE {c}"), int)
        whole = first(n, f"SELECT SUM(linc) FROM t WHERE {p}")
        part = first(n, f"SELECT SUM(linc) FROM t WHERE {c}")
    # The remainder P - C holds one linc value: its SUM must not come out as a difference.
    assert whole is None or part is None


def test_e3_dominance_is_checked_again_on_a_re_released_population(tmp_path, analyst_home):
    from .survey_support import dataset_toml, survey_rows

    d = survey_rows()
    folder = setup(tmp_path, d, dataset_toml("survey", "data.csv", mode="exact", dominance=True))
    with serve(folder, analyst_home) as (n, _, _):
        a = "age >= 15 AND age < 20"
        b = f"{a} AND religious <> 4"
        assert isinstance(first(n, f"SELECT COUNT(*) FROM survey WHERE {a}"), int)
        assert isinstance(first(n, f"SELECT COUNT(*) FROM survey WHERE {b}"), int)
        whole = first(n, f"SELECT SUM(affairs) FROM survey WHERE {a}")
        part = first(n, f"SELECT SUM(affairs) FROM survey WHERE {b}")
    inside = d[(d.age < 20) & (d.religious == 4)]
    dominated = inside["affairs"].max() > 0.5 * inside["affairs"].sum() > 0
    assert dominated and (whole is None or part is None)


# -- F1: one analyst, one budget and a grant, across a federation ----------------------------------


def test_f1_a_federated_analyst_has_one_budget_whichever_member_coordinates(tmp_path, analyst_home):
    from veil.federation import FederationFailed
    from tests.integration.federation_cluster import federation

    terms = "dp = { epsilon_per_query = 1.0, analyst_budget = 1.0, dataset_budget = 10.0 }"
    with federation(tmp_path, rows=(2_000, 2_000, 2_000), dp_terms=terms) as c:
        with c.connect("north", analyst_home) as n:
            n.federated_query("SELECT COUNT(*) FROM admissions", purpose="research")
        with c.connect("south", analyst_home) as s, pytest.raises(FederationFailed) as e:
            s.federated_query("SELECT COUNT(*) FROM admissions", purpose="research")
    assert e.value.metadata.get("peer_reason") == "PRIVACY_BUDGET_EXHAUSTED" or \
        e.value.reason == "PRIVACY_BUDGET_EXHAUSTED"


def test_f1_the_coordinator_checks_its_own_analysts_grant(tmp_path, analyst_home):
    from tests.integration.federation_cluster import federation

    no_grant = ('[[grants]]\nprincipal = "alice"\ndataset = "patients"\npurpose = "research"\n', "")
    with federation(tmp_path, rows=(1_000, 1_000, 1_000), edit={"north": no_grant}) as c:
        with c.connect("north", analyst_home) as n, pytest.raises(veil.VeilError) as e:
            n.federated_query("SELECT COUNT(*) FROM admissions", purpose="research")
    assert "NO_GRANT" in (e.value.reason, e.value.metadata.get("peer_reason"))


# -- D1, M1, E4 ---------------------------------------------------------------------------------------


def test_d1_epsilon_too_small_to_account_is_refused(tmp_path, analyst_home):
    folder = setup(tmp_path, meps_rows(), meps_toml("t", "data.csv", mode="dp"))
    with serve(folder, analyst_home) as (n, _, _):
        assert first(n, "SELECT COUNT(*) FROM t", epsilon=4.9e-7) == "INVALID_EPSILON"
        assert isinstance(first(n, "SELECT COUNT(*) FROM t", epsilon=0.001), int)
        b = n.budget("t")
    assert b.spent >= 0.001  # charged, never rounded away


def test_m1_a_dp_datasets_certificate_states_a_noisy_rounded_size(tmp_path, analyst_home):
    d = meps_rows()
    folder = setup(tmp_path, d, meps_toml("t", "data.csv", mode="dp"))
    with serve(folder, analyst_home) as (n, _, _):
        cert, _ = n.governance.certificate("t")
        ds = n.dataset("t")
        b = n.budget("t")
    assert cert.row_count % 100 == 0 and abs(cert.row_count - len(d)) <= 200  # two significant digits
    assert ds.approximate_row_count == cert.row_count
    # the published size and the quality profile are charged to the dataset
    assert b.dataset_spent == pytest.approx(0.1 + float(cert.quality["epsilon"]))


def test_e4_one_source_is_listed_once(tmp_path):
    d = meps_rows()
    folder = setup(tmp_path, d, meps_toml("a", "data.csv") + meps_toml("b", "data.csv"))
    with pytest.raises(Exception) as e:
        with run_server(load_config(folder / "veil.toml", env={}), listen="127.0.0.1:0", grace=0.5):
            pass
    assert getattr(e.value, "reason", "") == "SOURCE_ALREADY_LISTED"


# -- E5-E9: one history family per column ---------------------------------------------------------


@pytest.mark.parametrize("two_analysts", [False, True])
def test_e7_a_count_only_sibling_does_not_tile_its_parent_for_a_sum(tmp_path, analyst_home, other_home,
                                                                     two_analysts):
    d = meps_rows()
    folder = setup(tmp_path, d, meps_toml("t", "data.csv"))
    b = d[(d.female == 1) & (d.age >= 80) & (d.age < 85)]
    c1 = b[(b.income >= 0) & (b.income < 1)]
    assert len(c1) >= K and c1["linc"].notna().sum() < K  # a box of k rows with fewer than k values
    with serve(folder, analyst_home) as (n, _, _):
        whole = first(n, f"SELECT SUM(linc) FROM t WHERE {BOX} AND income >= 0 AND income < 7")
        assert isinstance(first(n, f"SELECT COUNT(*) FROM t WHERE {BOX} AND income >= 0 AND income < 1"), int)
        if not two_analysts:
            rest = first(n, f"SELECT SUM(linc) FROM t WHERE {BOX} AND income >= 1 AND income < 7")
    if two_analysts:
        with serve(folder, other_home, "bob") as (n, _, _):
            rest = first(n, f"SELECT SUM(linc) FROM t WHERE {BOX} AND income >= 1 AND income < 7")
    assert isinstance(whole, (int, float, Decimal))  # the attack's first step is released ...
    assert rest is None  # ... and the step that would give C1's one value by difference is not


def test_e5_tiles_of_a_count_only_box_do_not_give_its_parents_remainder(tmp_path, analyst_home):
    d = meps_rows()
    folder = setup(tmp_path, d, meps_toml("t", "data.csv"))
    with serve(folder, analyst_home) as (n, _, _):
        whole = first(n, f"SELECT SUM(linc) FROM t WHERE {BOX} AND income >= 0 AND income < 7")
        assert isinstance(first(n, f"SELECT COUNT(*) FROM t WHERE {BOX} AND income >= 1 AND income < 7"), int)
        parts = [first(n, f"SELECT SUM(linc) FROM t WHERE {BOX} AND income >= {lo} AND income < {hi}")
                 for lo, hi in ((1, 4), (4, 7))]
    assert isinstance(whole, (int, float, Decimal)) and None in parts


def test_e6_dominance_is_checked_against_the_ancestor_released_with_the_sum(tmp_path, analyst_home):
    from .survey_support import dataset_toml, survey_rows

    d = survey_rows()
    folder = setup(tmp_path, d, dataset_toml("survey", "data.csv", mode="exact", dominance=True))
    inside = d[(d.age >= 15) & (d.age < 20) & (d.religious == 4)]
    assert inside["affairs"].max() > 0.5 * inside["affairs"].sum() > 0  # one woman dominates religious 4
    a = "age >= 15 AND age < 20"
    with serve(folder, analyst_home) as (n, _, _):
        whole = first(n, f"SELECT SUM(affairs) FROM survey WHERE {a}")
        assert isinstance(first(n, f"SELECT COUNT(*) FROM survey WHERE {a} AND religious <> 4"), int)
        r1 = first(n, f"SELECT SUM(affairs) FROM survey WHERE {a} AND religious = 1")
        r23 = first(n, f"SELECT SUM(affairs) FROM survey WHERE {a} AND religious IN (2, 3)")
    assert isinstance(whole, (int, float, Decimal)) and None in (r1, r23)


def test_e8_a_keyed_encrypted_sum_needs_k_values_in_each_sub_cells_remainder(tmp_path, analyst_home):
    d = meps_rows()
    folder = setup(tmp_path, d, meps_toml("t", "data.csv"))
    p = "age >= 70 AND age < 75 AND income >= 0 AND income < 1"
    s = d[(d.age >= 70) & (d.age < 75) & (d.income >= 0) & (d.income < 1)]
    men, women = s[s.female == 0], s[s.female == 1]
    assert men["linc"].notna().sum() < K <= women["linc"].notna().sum()  # the finding's shape
    with serve(folder, analyst_home) as (n, _, _):
        whole = first(n, f"SELECT SUM(linc) FROM t WHERE {p}")
        info = next(x for x in n.datasets() if x.name.endswith("t"))
        ws = veil.WeightedSum.by_category(info, "female", {"1": 1}, value_column="linc", weight_scale=0, name="w")
        df = n.query(f"SELECT COUNT(*) AS c FROM t WHERE {p}", purpose="research", weighted_sums=[ws], exact=True)
    assert isinstance(whole, (int, float, Decimal))
    women_sum = round(float(women["linc"].sum()), 6)
    # The women's sub-cell is held back (counted as zero): their sum would give the man's by difference.
    assert df["suppressed"][0] or round(float(df["w"][0]), 6) != women_sum
    assert df["suppressed"][0] or float(df["w"][0]) == 0


def test_e9_a_keyed_encrypted_sum_is_checked_for_dominance_in_its_remainders(tmp_path, analyst_home):
    from .survey_support import dataset_toml, survey_rows

    d = survey_rows()
    folder = setup(tmp_path, d, dataset_toml("survey", "data.csv", mode="exact", dominance=True))
    p = "age >= 15 AND age < 20 AND religious <> 3"
    s = d[(d.age >= 15) & (d.age < 20)]
    four = s[s.religious == 4]["affairs"]
    assert four.max() > 0.5 * four.sum() > 0
    with serve(folder, analyst_home) as (n, _, _):
        whole = first(n, f"SELECT SUM(affairs) FROM survey WHERE {p}")
        info = next(x for x in n.datasets() if x.name.endswith("survey"))
        ws = veil.WeightedSum.by_category(info, "religious", {"1": 1, "2": 1}, value_column="affairs",
                                          weight_scale=0, name="w")
        df = n.query(f"SELECT COUNT(*) AS c FROM survey WHERE {p}", purpose="research", weighted_sums=[ws],
                     exact=True)
    assert isinstance(whole, (int, float, Decimal))
    recovered = None if df["suppressed"][0] else round(float(whole) - float(df["w"][0]), 6)
    assert recovered != round(float(four.sum()), 6)  # religious 4's total (one woman's) does not come out


# -- E10: integer columns compare what their bins see ------------------------------------------------


def test_e10_an_integer_filter_selects_its_bins_rows_when_the_source_holds_fractions(tmp_path, analyst_home):
    from .disclosure_support import write_node

    tokens = write_node(tmp_path)
    cfg = (tmp_path / "veil.toml").read_text()
    old = '  name = "age"\n  type = "integer"\n  controls = ["filter"]\n'
    assert old in cfg
    (tmp_path / "veil.toml").write_text(cfg.replace(
        old, '  name = "age"\n  type = "integer"\n  controls = ["filter", "group"]\n  range = [0, 100]\n  bin_width = 10\n'))
    p = tmp_path / "people.csv"
    assert "40,D,77,1,60000" in p.read_text()
    p.write_text(p.read_text().replace("40,D,77,1,60000", "40,D,59.6,1,60000"))  # rounds into the bin of 60
    with run_server(load_config(tmp_path / "veil.toml", env={}), listen="127.0.0.1:0", grace=0.5) as running:
        with veil.connect(running.target, token=tokens["alice"], home=analyst_home) as n:
            g = n.query("SELECT FLOOR(age / 10) * 10 AS b, COUNT(*) AS c, SUM(salary) AS s FROM people "
                        "GROUP BY FLOOR(age / 10) * 10", purpose="research", exact=True)
            f = n.query("SELECT COUNT(*) AS c, SUM(salary) AS s FROM people WHERE age >= 60 AND age < 70",
                        purpose="research", exact=True)
    cell = g[g["b"].astype(float) == 60]
    assert not cell["suppressed"].iloc[0] and not f["suppressed"][0]
    # The cell and the filter are one box to the history: they must be the same rows.
    assert (int(cell["c"].iloc[0]), int(cell["s"].iloc[0])) == (int(f["c"][0]), int(f["s"][0]))


# -- L1: exact mode's completeness check counts the declared domain only -------------------------------


@pytest.mark.parametrize("planted", [",E,77,", ",,77,"])  # a category outside A-D; a NULL (the control)
def test_l1_a_value_outside_the_declared_categories_refuses_exact_listing(tmp_path, planted):
    from .disclosure_support import write_node

    write_node(tmp_path)
    p = tmp_path / "people.csv"
    assert ",D,77," in p.read_text()
    p.write_text(p.read_text().replace(",D,77,", planted))
    with pytest.raises(Exception) as e:
        with run_server(load_config(tmp_path / "veil.toml", env={}), listen="127.0.0.1:0", grace=0.5):
            pass
    assert getattr(e.value, "reason", "") == "EXACT_COLUMNS_INCOMPLETE" and "dept" in str(e.value)


# -- M2: the certificate's content fingerprint is keyed ------------------------------------------------


def test_m2_the_certificates_content_fingerprint_cannot_test_a_guessed_file(tmp_path, analyst_home):
    from .disclosure_support import write_node

    tokens = write_node(tmp_path)
    data = (tmp_path / "people.csv").read_bytes()
    with run_server(load_config(tmp_path / "veil.toml", env={}), listen="127.0.0.1:0", grace=0.5) as running:
        with veil.connect(running.target, token=tokens["alice"], home=analyst_home) as n:
            certs = {name: n.governance.certificate(name)[0] for name in ("people", "people_dp")}
    plain = "sha256:" + hashlib.sha256(data).hexdigest()
    for cert in certs.values():
        # Not a public function of the file: the file itself does not match it ...
        assert cert.content_fingerprint.startswith("hmac-sha256:") and plain not in cert.content_fingerprint
    # ... and the same bytes still give the same value (versions can be compared).
    assert certs["people"].content_fingerprint == certs["people_dp"].content_fingerprint
