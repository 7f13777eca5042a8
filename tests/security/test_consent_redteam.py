"""Consent (issue 21), as an outside red team attacked it: each test replays one finding against
the engine or a real node and fails on the code before its fix.

- F1: an exact consent dataset's quality profile and size counted every row (people without
  consent included) exactly; differenced against a later exact release over the consenting rows
  they gave a withdrawn person's missing values. Now noised, as under DP.
- F2: on a host outside UTC, DuckDB compared consent times in the host's zone: a lapsed consent
  stayed valid (east of UTC) or a future grant counted (west). Now every engine compares in UTC.
- F3: only an exact "withdrawn" revoked; "withdrawn ", "revoked", "expired", a purpose differing
  in case, an id "019" for 19 all left the subject counted. Now "expired" ends consent too and
  any record the node could misread refuses the dataset (CONSENT_SOURCE_INVALID).
- F5: the snapshot digest was an unkeyed SHA-256 of the consenting ids: an analyst enumerating ids
  found who withdrew offline. Now keyed (tests/unit/test_consent_rules.py).
- F7: a consent record of someone without rows changed the snapshot (and so refused every earlier
  exact population); a CSV whose expires_at is empty in every row failed every query.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
import tomllib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

import veil
from tests.integration.consent_support import PAST, Record, consent_records, write_consent_csv
from tests.integration.test_consent import consent_folder
from veil_server.api.server import run_server
from veil_server.cli.demo import dataset_toml, patients_table
from veil_server.config import dataset_from_dict, load_config
from veil_server.errors import FailedPrecondition
from veil_server.query.consent import now_scope
from veil_server.query.engine import DuckDBEngine

ROWS = 300


def consent_dataset(folder: Path, consent_file: Path) -> object:
    data = folder / "patients.csv"
    if not data.exists():
        pacsv.write_csv(patients_table(ROWS), data)
    raw = tomllib.loads(dataset_toml("patients", str(data), disclosure="exact"))["datasets"][0]
    raw["purposes"] = ["research", "marketing"]
    return dataset_from_dict({**raw, "basis": "consent",
                              "consent": {"source": str(consent_file), "subject_column": "patient_id"}})


def subjects(ds, purpose: str = "research") -> set[int]:
    engine = DuckDBEngine([ds])
    return {int(s) for s in engine.consent_subjects(dataclasses.replace(ds, consent_scope=now_scope(purpose)))}


def write_rows(path: Path, rows: list[tuple]) -> Path:
    lines = ["subject_id,purpose,status,granted_at,expires_at"] + [",".join(map(str, r)) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def everyone(rows: int = ROWS) -> list[tuple]:
    return [(i, "research", "granted", "2020-01-01T00:00:00Z", "") for i in range(1, rows + 1)]


# -- F3 -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("record", [
    (7, "research", "withdrawn ", "2020-01-01T00:00:00Z", ""),
    (7, "research", "revoked", "2020-01-01T00:00:00Z", ""),
    (7, "Research", "withdrawn", "2020-01-01T00:00:00Z", ""),
    (7, "research ", "withdrawn", "2020-01-01T00:00:00Z", ""),
    ("019", "research", "withdrawn", "2020-01-01T00:00:00Z", ""),
    (" 7", "research", "withdrawn", "2020-01-01T00:00:00Z", ""),
    # second round (after the first fixes): purposes are a closed set, whatever the characters
    (7, "research\t", "withdrawn", "2020-01-01T00:00:00Z", ""),
    (7, "research\u200b", "withdrawn", "2020-01-01T00:00:00Z", ""),
    (7, "r\u0435search", "withdrawn", "2020-01-01T00:00:00Z", ""),  # a Cyrillic e
    (7, "\uff52\uff45\uff53\uff45\uff41\uff52\uff43\uff48", "withdrawn", "2020-01-01T00:00:00Z", ""),  # fullwidth
    (7, "re\u00adsearch", "withdrawn", "2020-01-01T00:00:00Z", ""),  # a soft hyphen
], ids=["status-space", "unknown-status", "purpose-case", "purpose-space", "leading-zero", "id-space",
        "purpose-tab", "purpose-zero-width", "purpose-cyrillic", "purpose-fullwidth", "purpose-soft-hyphen"])
def test_a_record_meant_to_withdraw_never_leaves_the_subject_counted(tmp_path, record):
    """Either the withdrawal is read as meant (the subject is out) or the dataset is refused until
    the owner corrects the table; never the subject counted."""
    subject = int(str(record[0]))
    ds = consent_dataset(tmp_path, write_rows(tmp_path / "consent.csv", everyone() + [record]))
    try:
        counted = subjects(ds)
    except FailedPrecondition as e:
        assert e.reason == "CONSENT_SOURCE_INVALID" and str(record[0]).strip() not in e.message  # never a value
        return
    assert subject not in counted and len(counted) == ROWS - 1


@pytest.mark.parametrize("bad", ["019", "a7", "7.0", "+7"])
def test_ids_not_in_canonical_integer_text_refuse_an_integer_keyed_dataset(tmp_path, bad):
    """Text ids (the column read as text): for a dataset keyed by integers, an id that is not an
    integer's canonical text would match no row ("019" for 19: a withdrawal that revokes
    nothing), so the table is refused until corrected."""
    rows = everyone()
    rows.append((bad, "research", "withdrawn", "2020-01-01T00:00:00Z", ""))
    ds = consent_dataset(tmp_path, write_rows(tmp_path / "consent.csv", rows))
    with pytest.raises(FailedPrecondition) as e:
        subjects(ds)
    assert e.value.reason == "CONSENT_SOURCE_INVALID"


def test_withdrawn_and_expired_records_end_consent_in_any_case(tmp_path):
    rows = everyone() + [(7, "research", "withdrawn", "2020-01-01T00:00:00Z", ""),
                         (8, "research", "WITHDRAWN", "2020-01-01T00:00:00Z", ""),
                         (9, "research", "expired", "2020-01-01T00:00:00Z", "2021-01-01T00:00:00Z"),
                         (10, "marketing", "withdrawn", "2020-01-01T00:00:00Z", "")]  # another purpose
    ds = consent_dataset(tmp_path, write_rows(tmp_path / "consent.csv", rows))
    assert subjects(ds) == set(range(1, ROWS + 1)) - {7, 8, 9}


@pytest.mark.parametrize("bad", ["P0137\t", "P0137\u200b", "p0137", "P0137 ", "P0137\u00a0"])
def test_a_text_keyed_datasets_withdrawal_in_another_spelling_never_leaves_the_subject_counted(tmp_path, bad):
    """A text subject column (ids P0001..): a withdrawal for a tab-, zero-width- or case-variant of
    a row's id is refused (CONSENT_SOURCE_INVALID), never silently ignored; the exact id works."""
    import pyarrow.compute as pc

    table = patients_table(ROWS)
    ids = pa.array([f"P{i:04d}" for i in table.column("patient_id").to_pylist()])
    pacsv.write_csv(table.set_column(table.schema.get_field_index("patient_id"), "patient_id", ids),
                    tmp_path / "patients.csv")
    rows = [(f"P{i:04d}", "research", "granted", "2020-01-01T00:00:00Z", "") for i in range(1, ROWS + 1)]
    raw = tomllib.loads(dataset_toml("patients", str(tmp_path / "patients.csv"), disclosure="exact"))["datasets"][0]
    raw["purposes"] = ["research", "marketing"]
    for col in raw["columns"]:
        if col["name"] == "patient_id":
            col["type"] = "text"

    def dataset(consent_rows):
        return dataset_from_dict({**raw, "basis": "consent", "consent": {
            "source": str(write_rows(tmp_path / "consent.csv", consent_rows)), "subject_column": "patient_id"}})

    engine_subjects = lambda ds: DuckDBEngine([ds]).consent_subjects(  # noqa: E731
        dataclasses.replace(ds, consent_scope=now_scope("research")))
    assert len(engine_subjects(dataset(rows))) == ROWS and pc is not None
    exact = engine_subjects(dataset(rows + [("P0137", "research", "withdrawn", "2020-01-01T00:00:00Z", "")]))
    assert "P0137" not in exact and len(exact) == ROWS - 1  # control: the exact id withdraws
    with pytest.raises(FailedPrecondition) as e:
        engine_subjects(dataset(rows + [(bad, "research", "withdrawn", "2020-01-01T00:00:00Z", "")]))
    assert e.value.reason == "CONSENT_SOURCE_INVALID"


# -- F7 -------------------------------------------------------------------------------------------

def test_consent_of_someone_without_rows_changes_nothing(tmp_path):
    ds = consent_dataset(tmp_path, write_rows(tmp_path / "consent.csv", everyone()))
    before = subjects(ds)
    write_rows(tmp_path / "consent.csv", everyone() + [(ROWS + 500, "research", "granted", "2020-01-01T00:00:00Z", "")])
    assert subjects(ds) == before == set(range(1, ROWS + 1))


def test_a_csv_without_any_expiry_is_read(tmp_path):
    # every expires_at empty: typed as text by sniffing, which failed every query
    ds = consent_dataset(tmp_path, write_rows(tmp_path / "consent.csv", everyone()[:50]))
    assert subjects(ds) == set(range(1, 51))


# -- F2 -------------------------------------------------------------------------------------------

SCRIPT = textwrap.dedent("""
    import dataclasses, json, sys
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from tests.security.test_consent_redteam import consent_dataset, subjects
    print(json.dumps(sorted(subjects(consent_dataset(Path({folder!r}), Path({consent!r}))))))
""")


@pytest.mark.parametrize("zone", ["Asia/Shanghai", "America/New_York"])
def test_consent_times_are_utc_whatever_the_hosts_zone(tmp_path, zone):
    """Subject 7's consent lapsed three hours ago, subject 8's starts in three hours: neither
    counts, on a host eight hours east of UTC or five west (a fresh process, so the zone is the
    one DuckDB starts with)."""
    import json

    now = datetime.now(timezone.utc)
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    rows = [r for r in everyone() if r[0] not in (7, 8)] + [
        (7, "research", "granted", "2020-01-01T00:00:00Z", (now - timedelta(hours=3)).strftime(fmt)),
        (8, "research", "granted", (now + timedelta(hours=3)).strftime(fmt), "")]
    consent = write_rows(tmp_path / "consent.csv", rows)
    consent_dataset(tmp_path, consent)  # writes the data file
    root = str(Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(root=root, folder=str(tmp_path), consent=str(consent))],
                         env={**os.environ, "TZ": zone}, capture_output=True, text=True, timeout=120, cwd=root)
    assert out.returncode == 0, out.stderr[-2000:]
    got = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert got == set(range(1, ROWS + 1)) - {7, 8}


# -- F1 -------------------------------------------------------------------------------------------

def test_an_exact_consent_datasets_profile_and_size_are_noised(tmp_path, analyst_home):
    """The listing counts every row, people without consent included: exact figures there would
    difference against exact releases over the consenting rows. The profile is the DP one."""
    tokens, config = consent_folder(tmp_path / "node")
    write_consent_csv(consent_records(ROWS), tmp_path / "node" / "data" / "consent.csv")
    with run_server(load_config(config, env={}), listen="127.0.0.1:0", grace=1.0) as running, \
            veil.connect(running.target, token=tokens["alice"], home=analyst_home) as alice:
        info = alice.dataset("patients")
        assert info.disclosure_mode == "exact" if hasattr(info, "disclosure_mode") else True
        quality = info.quality
        assert quality["mode"] == "dp" and float(quality["epsilon"]) > 0 and quality["noise_scale"]
        # the catalog's size is the certificate's noised one, not the raw count rounded (B2a)
        from veil_server.node import _certified_rows

        cert = running.node.steward.registry.serving("patients").certificate
        assert running.node.approximate_rows(running.node.dataset("patients")) == _certified_rows(cert)
        # the exact answer is over the consenting rows only
        df = alice.query("SELECT COUNT(*) AS n FROM patients", purpose="research")
        assert int(df["n"][0]) < 4000
        # a withdrawal, then the same table: refused as another snapshot (exact mode's rule)
        records = consent_records(ROWS) + [Record(1, "research", "withdrawn", PAST)]
        write_consent_csv(records, tmp_path / "node" / "data" / "consent.csv")
        with pytest.raises(veil.QueryFailed) as e:
            alice.query("SELECT COUNT(*) AS n FROM patients", purpose="research")
        assert e.value.reason == "EXACT_CONSENT_CHANGED"
