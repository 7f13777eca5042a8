"""``veil node init``: a ready-to-serve node folder with a synthetic hospital dataset.

The rows are synthetic (no real person is in them) and generated from a fixed seed with
numpy's PCG64 so that demos and benchmarks are reproducible; benchmark sizes too large to hold
in memory are streamed to Parquet in chunks (:func:`write_patients_parquet`). This generator
makes *data*, never keys, masks or shares: those come from ``secrets`` / ``os.urandom`` only.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as papq

from .provision import provision

REGIONS = ["North", "South", "East", "West", "Central", "Coast", "Highlands", "Islands"]
DIAGNOSES = ["cardio", "respiratory", "oncology", "orthopedic", "neuro", "renal", "digestive",
             "infectious", "metabolic", "maternity"]
PRINCIPALS = [("alice", "analyst"), ("bob", "analyst"), ("olivia", "owner"), ("otto", "owner"),
              ("rita", "reviewer"), ("audra", "auditor"), ("adam", "admin")]
# Which analyst may use the demo dataset for which purpose: no grant, no query.
DEMO_GRANTS = [("alice", "research"), ("alice", "planning"), ("bob", "research")]


def patients_table(rows: int, seed: int = 20261123) -> pa.Table:
    """Synthetic admissions; every value inside the ranges the demo config declares."""
    return _admissions(np.random.Generator(np.random.PCG64(seed)), first_id=1, rows=rows)


def _admissions(gen: np.random.Generator, *, first_id: int, rows: int) -> pa.Table:
    """``rows`` admissions drawn from ``gen``, ids from ``first_id``: the one distribution behind
    both the in-memory table and the chunked file."""
    region_p = np.array([0.2, 0.18, 0.15, 0.14, 0.12, 0.1, 0.07, 0.04])
    region = gen.choice(len(REGIONS), size=rows, p=region_p / region_p.sum())
    sex = gen.integers(0, 2, size=rows)
    age = np.clip(gen.gamma(4.0, 11.0, size=rows), 0, 104).astype(np.int64)
    diagnosis = gen.integers(0, len(DIAGNOSES), size=rows)
    stay = np.clip(gen.poisson(2 + age / 15 + diagnosis % 3, size=rows), 0, 365).astype(np.int64)
    cents = np.clip(gen.lognormal(8.3, 0.9, size=rows) * 100 * (1 + stay / 4), 0, 50_000_000).astype(np.int64)
    # Postcodes are 10000..99998: five digits already, so the decimal string is the zero-padded
    # one (a C cast instead of a Python loop: 20x faster, the same strings).
    postcode = pc.cast(pa.array(gen.integers(10000, 99999, size=rows)), pa.string())
    return pa.table({
        "patient_id": np.arange(first_id, first_id + rows, dtype=np.int64),
        "region": pa.array(np.array(REGIONS)[region]),
        "sex": pa.array(np.array(["F", "M"])[sex]),
        "age": age,
        "diagnosis": pa.array(np.array(DIAGNOSES)[diagnosis]),
        "postcode": postcode,
        "admitted_year": gen.integers(2015, 2026, size=rows),
        "length_of_stay": stay,
        # Two decimal places exactly, as money is kept.
        "cost": pa.array(cents / 100.0),
    })


def write_patients_parquet(rows: int, path: Path, *, seed: int = 20261123, chunk_rows: int = 1_000_000) -> None:
    """``rows`` synthetic admissions streamed to Parquet ``chunk_rows`` at a time (one row group
    each), so memory stays bounded whatever ``rows`` is (100M rows: ~1.6 GB on disk, ~0.2 GB of
    memory at a time).

    Same distribution as :func:`patients_table`, not the same draw: chunk i has its own generator,
    spawned from ``seed`` (numpy's ``SeedSequence``), so ``patients_table(n)`` and this file differ
    row by row. The file is written next to ``path`` and renamed at the end (removed if the run is
    interrupted), so a short file is never left behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    chunks = -(-rows // chunk_rows)
    streams = np.random.SeedSequence(seed).spawn(chunks)
    try:
        with papq.ParquetWriter(tmp, _admissions(np.random.Generator(np.random.PCG64(0)), first_id=1, rows=0).schema) as writer:
            for i, stream in enumerate(streams):
                first = i * chunk_rows
                part = _admissions(np.random.Generator(np.random.PCG64(stream)), first_id=first + 1,
                                   rows=min(chunk_rows, rows - first))
                writer.write_table(part, row_group_size=chunk_rows)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def write_table(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        papq.write_table(table, path)
    else:
        pacsv.write_csv(table, path)


def grants_toml(dataset: str, grants: list[tuple[str, str]]) -> str:
    return "".join(f'\n[[grants]]\nprincipal = "{p}"\ndataset = "{dataset}"\npurpose = "{purpose}"\n'
                   for p, purpose in grants)


DISCLOSURE_TOML = {
    "dp": """# Disclosure: differential privacy (the default). Each query spends epsilon (at most
# max_epsilon_per_query, default epsilon_per_query) from the analyst's budget and from the
# dataset's total budget across all analysts.
disclosure = "dp"
dp = { epsilon_per_query = 0.5, max_epsilon_per_query = 1.0, analyst_budget = 5.0, dataset_budget = 20.0 }
""",
    "exact": """# Disclosure: exact figures, the owner's recorded choice (allowed for public and internal data).
# Filters must follow the declared domains, and released tables must nest (see the README).
disclosure = "exact"
exact_reason = "synthetic demonstration data; exact figures are checked against the raw file"
""",
}


def _disclosure(mode: str, dp_terms: str | None) -> str:
    text = DISCLOSURE_TOML[mode]
    if dp_terms is not None:
        text = "\n".join(dp_terms if line.startswith("dp = ") else line for line in text.splitlines()) + "\n"
    return text


def dataset_toml(name: str, source: str, *, min_group_size: int = 10, owners: tuple[str, ...] = (),
                 disclosure: str = "dp", dp_terms: str | None = None) -> str:
    """A ``[[datasets]]`` table of the demo schema; ``dp_terms`` replaces the default ``dp = {...}``."""
    cats = lambda xs: "[" + ", ".join(f'"{x}"' for x in xs) + "]"  # noqa: E731
    owner_line = f"owners = {cats(owners)}\n" if owners else ""
    return f"""
[[datasets]]
name = "{name}"
source = "{source}"
description = "Synthetic hospital admissions: one row per admission."
purposes = ["research", "planning"]
# Governance: classification (public | internal | sensitive | core), declared rights, approval.
classification = "internal"
rights = ["holding", "processing"]
auto_approve = true
{owner_line}
min_group_size = {min_group_size}
{_disclosure(disclosure, dp_terms)}max_groups = 2000
# Declared upper bound on the table's size: it bounds counts and sums, and so ciphertext slots.
max_rows = 100000000

  [[datasets.columns]]
  name = "patient_id"
  type = "integer"
  controls = ["hidden"]

  [[datasets.columns]]
  name = "region"
  type = "text"
  controls = ["group", "filter"]
  categories = {cats(REGIONS)}

  [[datasets.columns]]
  name = "sex"
  type = "text"
  controls = ["group", "filter"]
  categories = ["F", "M"]

  [[datasets.columns]]
  name = "age"
  type = "integer"
  controls = ["filter", "group", "aggregate"]
  range = [0, 110]
  bin_width = 5

  [[datasets.columns]]
  name = "diagnosis"
  type = "text"
  controls = ["group", "filter"]
  categories = {cats(DIAGNOSES)}

  [[datasets.columns]]
  name = "postcode"
  type = "text"
  controls = ["filter"]
  description = "Filter only: too fine-grained to group by."

  [[datasets.columns]]
  name = "admitted_year"
  type = "integer"
  controls = ["filter"]

  [[datasets.columns]]
  name = "length_of_stay"
  type = "integer"
  controls = ["aggregate"]
  range = [0, 365]

  [[datasets.columns]]
  name = "cost"
  type = "decimal"
  controls = ["aggregate"]
  range = [0, 500000]
  scale = 2
"""


def init_node_folder(folder: Path, *, rows: int = 100_000, listen: str = "127.0.0.1:50051",
                     data_format: str = "csv", force: bool = False, tls: bool = False,
                     disclosure: str = "dp", node_name: str = "demo-node", shared_ca=None,
                     seed: int = 20261123) -> dict[str, str]:
    """Write ``veil.toml``, the demo data and one token per demo principal. Returns the tokens.

    ``tls=True`` (what ``veil node init`` does) adds a development CA, certificates and signed
    tokens (:mod:`veil_server.cli.provision`); otherwise the node is in explicit development mode:
    plaintext on loopback, static tokens (what the test suite's in-process nodes use)."""
    folder = folder.resolve()
    config = folder / "veil.toml"
    if config.exists() and not force:
        raise FileExistsError(f"{config} exists; pass --force to overwrite it")
    folder.mkdir(parents=True, exist_ok=True)
    source = f"data/patients.{data_format}"
    write_table(patients_table(rows, seed=seed), folder / source)
    tokens: dict[str, str] = {}
    lines = ["# Veil node configuration. Paths are relative to this file.",
             "# Principals' bearer tokens are in tokens/: signed by state/token_key.pem, or (dev_mode only)"
             " static, with token_sha256 their SHA-256.",
             "[node]", f'name = "{node_name}"', f'listen = "{listen}"', 'state_dir = "state"',
             "min_group_size = 10", "workers = 4", f"dev_mode = {'false' if tls else 'true'}", ""]
    signed = provision(folder, node_name=node_name, listen=listen, principals=PRINCIPALS,
                       shared_ca=shared_ca) if tls else None
    token_dir = folder / "tokens"
    token_dir.mkdir(exist_ok=True)
    os.chmod(token_dir, 0o700)
    for name, role in PRINCIPALS:
        token = signed.tokens[name] if signed else secrets.token_urlsafe(32)
        tokens[name] = token
        path = token_dir / f"{name}.token"
        path.write_text(token + "\n", encoding="utf-8")
        os.chmod(path, 0o600)
        digest = hashlib.sha256(token.encode()).hexdigest()
        lines += ["[[principals]]", f'name = "{name}"', f'role = "{role}"']
        lines += [""] if signed else [f'token_sha256 = "{digest}"', ""]  # static tokens: dev mode only
    config.write_text("\n".join(lines) + dataset_toml("patients", source, owners=("olivia", "otto"),
                                                     disclosure=disclosure)
                      + grants_toml("patients", DEMO_GRANTS) + (signed.toml if signed else ""), encoding="utf-8")
    return tokens
