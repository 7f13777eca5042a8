"""The quality profile computed at listing: planted missing values, out-of-range values, unknown
categories and dates are reported within the profile's declared noise (DP) or exactly (exact
mode, with counts below k shown only as "<"); the profile is in the listing queue before
approval, signed into the certificate, shown in the catalog; a changed file makes a new version
with a new profile."""

from __future__ import annotations

import math
import tomllib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

import veil
from veil_server.api.server import run_server
from veil_server.cli.demo import dataset_toml, init_node_folder, patients_table
from veil_server.config import dataset_from_dict, load_config
from veil_server.governance.quality import compute
from veil_server.query.engine import DuckDBEngine

ROWS = 100_000
NOW = datetime.now(timezone.utc).replace(tzinfo=None)
# A log-probability budget: each DP test fails with probability below 1e-6 when the code is right.
FAIL = 1e-6


def planted(rows: int) -> tuple[pa.Table, dict[str, float]]:
    """The demo admissions with defects planted at known rates, and those rates."""
    t = patients_table(rows).to_pydict()
    for i in range(rows):
        if i % 20 == 0:
            t["age"][i] = None  # 5 % missing
        elif i % 25 == 1:
            t["age"][i] = 150  # 4 % above the declared range [0, 104]
        if i % 33 == 2:
            t["region"][i] = "Atlantis"  # unknown category
        if i % 50 == 3:
            t["cost"][i] = float("nan")  # missing
    t["updated_at"] = [NOW - timedelta(days=5 if i % 10 == 0 else 100 if i % 10 in (1, 2) else 800)
                       for i in range(rows)]
    truth = {"age.missing": sum(1 for i in range(rows) if i % 20 == 0) / rows,
             "age.out_of_range": sum(1 for i in range(rows) if i % 20 and i % 25 == 1) / rows,
             "region.out_of_domain": sum(1 for i in range(rows) if i % 33 == 2) / rows,
             "cost.missing": sum(1 for i in range(rows) if i % 50 == 3) / rows,
             "within_30d": sum(1 for i in range(rows) if i % 10 == 0) / rows,
             "within_365d": sum(1 for i in range(rows) if i % 10 in (0, 1, 2)) / rows}
    return pa.table(t), truth


def dataset(path: Path, mode: str):
    raw = tomllib.loads(dataset_toml("patients", str(path), disclosure=mode))["datasets"][0]
    return dataset_from_dict({**raw, "freshness_column": "updated_at"})


def share(text: str) -> float:
    return float(text.lstrip("<"))


@pytest.fixture(scope="module")
def planted_csv(tmp_path_factory):
    table, truth = planted(ROWS)
    path = tmp_path_factory.mktemp("quality") / "patients.csv"
    pacsv.write_csv(table, path)
    return path, truth


def test_exact_profile_reports_the_planted_defects_exactly(planted_csv):
    path, truth = planted_csv
    ds = dataset(path, "exact")
    p = compute(DuckDBEngine([ds]), ds, freshness_column="updated_at")
    cols = p["columns"]
    assert p["rows"] == ROWS and p["mode"] == "exact"
    assert share(cols["age"]["missing"]) == pytest.approx(truth["age.missing"], abs=1e-4)
    assert share(cols["age"]["out_of_range"]) == pytest.approx(truth["age.out_of_range"], abs=1e-4)
    assert share(cols["region"]["out_of_domain"]) == pytest.approx(truth["region.out_of_domain"], abs=1e-4)
    assert share(cols["cost"]["missing"]) == pytest.approx(truth["cost.missing"], abs=1e-4)
    # clean columns report nothing
    assert cols["sex"]["missing"] == cols["sex"]["out_of_domain"] == "0.0000"
    assert cols["length_of_stay"]["out_of_range"] == "0.0000"
    assert cols["sex"]["distinct"] == "2-9" and cols["region"]["distinct"] == "2-9"
    assert cols["postcode"]["distinct"] == "10000-99999"
    assert "patient_id" not in cols  # hidden: not profiled
    assert share(p["freshness"]["within_30d"]) == pytest.approx(truth["within_30d"], abs=1e-4)
    assert share(p["freshness"]["within_365d"]) == pytest.approx(truth["within_365d"], abs=1e-4)


def test_exact_profile_shows_fewer_than_k_only_as_a_bound(tmp_path):
    t = patients_table(2_000).to_pydict()
    for i in range(3):  # three unknown categories: fewer than k = 10
        t["region"][i] = "Atlantis"
    path = tmp_path / "p.csv"
    pacsv.write_csv(pa.table(t), path)
    raw = tomllib.loads(dataset_toml("patients", str(path), disclosure="exact"))["datasets"][0]
    ds = dataset_from_dict(raw)
    p = compute(DuckDBEngine([ds]), ds)
    assert p["columns"]["region"]["out_of_domain"] == "<0.0050"  # k / rows, never 3 / rows


def test_dp_profile_is_within_its_declared_noise_and_charged(planted_csv):
    path, truth = planted_csv
    ds = dataset(path, "dp")
    charged = []
    p = compute(DuckDBEngine([ds]), ds, freshness_column="updated_at", charge=charged.append)
    assert p["mode"] == "dp" and charged == [float(p["epsilon"])]
    scale = float(p["noise_scale"])
    counts = 1 + sum(2 + bool(c.value_range) + bool(c.categories) for c in ds.visible_columns()) + 2
    # discrete Laplace: P(|Z| >= t) <= 2 exp(-t / scale) / (1 + exp(-1 / scale)) < 2 exp(-t / scale);
    # t such that any of the counts exceeds it with probability below FAIL
    t = scale * math.log(2 * counts / FAIL)
    assert abs(p["rows"] - ROWS) <= t
    bound = (2 * t) / (ROWS - t) + 1e-4  # a share of two noisy counts, rounded to 4 digits
    cols = p["columns"]
    for got, want in [(cols["age"]["missing"], truth["age.missing"]),
                      (cols["age"]["out_of_range"], truth["age.out_of_range"]),
                      (cols["region"]["out_of_domain"], truth["region.out_of_domain"]),
                      (cols["cost"]["missing"], truth["cost.missing"]),
                      (cols["sex"]["missing"], 0.0), (cols["sex"]["out_of_domain"], 0.0),
                      (p["freshness"]["within_30d"], truth["within_30d"]),
                      (p["freshness"]["within_365d"], truth["within_365d"])]:
        assert abs(share(got) - want) <= bound
    # planted defects stand out of the noise
    assert share(cols["age"]["missing"]) > bound and share(cols["region"]["out_of_domain"]) > bound


def test_profile_in_queue_certificate_and_catalog_and_new_per_version(tmp_path, analyst_home):
    folder = tmp_path / "node"
    tokens = init_node_folder(folder, rows=20_000)  # DP, the demo's defaults
    with run_server(load_config(folder / "veil.toml", env={}), listen="127.0.0.1:0", grace=1.0) as running:
        def who(name):
            return veil.connect(running.target, token=tokens[name], home=analyst_home)

        with who("alice") as alice:
            info = alice.dataset("patients")
            budget = alice.budget("patients")
        with who("rita") as rita:
            cert, _ = rita.governance.certificate("patients")
        # the configured dataset was profiled at listing; catalog and certificate agree
        assert cert.quality and info.quality == cert.quality and info.basis == cert.basis == ""
        assert cert.quality["mode"] == "dp" and abs(cert.quality["rows"] - 20_000) < 2_000
        assert budget.dataset_spent == pytest.approx(0.1 + float(cert.quality["epsilon"]))
        # A changed file, registered as version 2: profiled at submission, in the queue
        table, _ = planted(20_000)
        new = folder / "data" / "patients_v2.csv"
        pacsv.write_csv(table.drop(["updated_at"]), new)
        spec = tomllib.loads(dataset_toml("patients", str(new)))["datasets"][0]
        spec.update(classification="internal", rights=["holding", "processing"], auto_approve=True)
        with who("olivia") as olivia:
            olivia.governance.register(spec)
            submitted = olivia.governance.submit("patients")
        assert submitted.quality and submitted.quality["columns"]["region"]["out_of_domain"] != "0.0000"
        with who("rita") as rita:
            queue = [v for v in rita.governance.versions("patients") if v.state == "UNDER_REVIEW"]
            assert [v.version for v in queue] == [2] and queue[0].quality == submitted.quality
            rita.governance.approve_listing("patients", "profile reviewed")
            cert2, _ = rita.governance.certificate("patients")
        assert cert2.version == 2 and cert2.quality == submitted.quality != cert.quality
        with who("alice") as alice:
            assert alice.dataset("patients").quality == cert2.quality


def test_the_console_shows_the_profile_in_the_queue_and_on_the_dataset_page(tmp_path, analyst_home):
    import html

    from tests.integration.console_support import Client, console_node

    with console_node(tmp_path / "node") as node:
        table, _ = planted(2_000)
        new = node.folder / "data" / "patients_v2.csv"
        pacsv.write_csv(table.drop(["updated_at"]), new)
        spec = tomllib.loads(dataset_toml("patients", str(new)))["datasets"][0]
        spec.update(classification="internal", rights=["holding", "processing"], auto_approve=True)
        with veil.connect(node.target, token=node.tokens["olivia"], ca=node.ca, home=analyst_home) as olivia:
            olivia.governance.register(spec)
            submitted = olivia.governance.submit("patients")
        rita = Client(node)
        assert rita.sign_in("rita").status == 303
        page = html.unescape(rita.get("/listings").body)
        assert "Quality profile of patients version 2" in page and "Lawful basis" in page
        region = submitted.quality["columns"]["region"]
        assert f"<th scope=\"row\">region</th><td>{region['missing']}</td><td></td><td>{region['out_of_domain']}</td>" \
            in page
        detail = html.unescape(rita.get("/datasets/patients").body)
        assert "Quality profile of version 2" in detail
