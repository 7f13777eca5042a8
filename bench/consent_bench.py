"""What consent costs a query (issue 21): the same aggregates on the same Parquet file with and
without the consent filter (the engine's semi-join on the valid subjects of a consent table of one record
per subject and purpose, plus withdrawals), and the consent snapshot read (the set of consenting
ids and its digest) that every execution on a consent dataset adds, twice. DuckDB, side by side
in one run; the median of ``--repeat`` runs."""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUERIES = [
    ("COUNT(*) by region", "SELECT region, COUNT(*) AS n FROM patients GROUP BY region"),
    ("SUM, AVG by region, sex", "SELECT region, sex, SUM(cost) AS c, AVG(age) AS a FROM patients GROUP BY region, sex"),
]


def timed(fn, repeat: int) -> float:
    fn()  # warm
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> None:
    from tests.integration.consent_support import consent_records, write_consent_csv
    from veil_server.cli.demo import dataset_toml, write_patients_parquet
    from veil_server.config import dataset_from_dict
    from veil_server.query.catalog import Catalog
    from veil_server.query.consent import now_scope, snapshot_digest
    from veil_server.query.engine import DuckDBEngine
    from veil_server.query.planner import plan_query

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        import pyarrow.parquet as pq

        from tests.integration.consent_support import arrow_table

        data = Path(tmp) / "patients.parquet"
        write_patients_parquet(args.rows, data)
        records = consent_records(args.rows)
        csv, parquet = Path(tmp) / "consent.csv", Path(tmp) / "consent.parquet"
        write_consent_csv(records, csv)
        pq.write_table(arrow_table(records), parquet)
        raw = tomllib.loads(dataset_toml("patients", str(data)))["datasets"][0]
        plain = dataset_from_dict(raw)
        engine = DuckDBEngine([plain])
        engine.range_proofs.settle_seconds = 0
        print(f"Consent filter, DuckDB, {args.rows:,} rows, consent table of {len(records):,} records "
              f"(median of {args.repeat})")
        print(f"{'query':28} {'consent source':>15} {'no consent (s)':>15} {'consent (s)':>12} {'ratio':>7}")
        for source in (csv, parquet):
            gated = dataset_from_dict({**raw, "basis": "consent",
                                       "consent": {"source": str(source), "subject_column": "patient_id"}})
            bound = dataclasses.replace(gated, consent_scope=now_scope("research"))
            kind = source.suffix.lstrip(".")
            for name, sql in QUERIES:
                p = plan_query(sql, Catalog([plain]))
                a = timed(lambda: engine.aggregate(p, plain), args.repeat)
                b = timed(lambda: engine.aggregate(p, bound), args.repeat)
                print(f"{name:28} {kind:>15} {a:15.3f} {b:12.3f} {b / a:7.2f}")
            s = timed(lambda: snapshot_digest("research", engine.consent_subjects(bound), b"k" * 32), args.repeat)
            print(f"{'snapshot read + digest':28} {kind:>15} {'':15} {s:12.3f}   (twice per execution)")


if __name__ == "__main__":
    main()
