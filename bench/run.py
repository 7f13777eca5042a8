"""`make bench`: every benchmark, side by side in one run. Pass --quick for a short smoke run, and
--keep-postgres to keep the scale bench's PostgreSQL tables (100M rows take minutes to load)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import consent_bench  # noqa: E402  (the consent filter's cost, issue 21)
import console_bench  # noqa: E402  (the web console's page times on a 100,000-entry log, issue 19)
import crypto_bench  # noqa: E402
import disclosure_bench  # noqa: E402  (disclosure control's cost and DP's accuracy, issue 14)
import federation_bench  # noqa: E402  (federation, issue 6)
import keys_bench  # noqa: E402  (analyst keys under churn: the table cache, issue 22)
import model_bench  # noqa: E402  (regression inside a node, issue 18)
import query_bench  # noqa: E402
import scale_bench  # noqa: E402  (engines and crypto workers beyond one machine, issue 9)
import sdk_bench  # noqa: E402  (the analyst's install: size and import time, issue 16)
import state_bench  # noqa: E402  (node state on SQLite vs PostgreSQL replicas, issue 9)


def main() -> None:
    quick = "--quick" in sys.argv
    print("=" * 100)
    print("Veil benchmarks" + (" (quick)" if quick else ""))
    print("=" * 100)
    query_bench.main(["--rows", "1000000", "--repeat", "3"] if quick else [])
    print()
    crypto_bench.main(["--quick"] if quick else [])
    print()
    keys_bench.main(["--keys", "16", "--queries", "100", "--rounds", "1"] if quick else [])
    print()
    federation_bench.main(["--quick"] if quick else [])  # federation (issue 6)
    print()
    keep = ["--keep-postgres"] if "--keep-postgres" in sys.argv else []
    scale_bench.main((["--rows", "1000000", "--repeat", "1", "--crypto-count", "1024"] if quick else []) + keep)
    print()
    state_bench.main(["--repeat", "5", "--queries", "20"] if quick else [])
    print()
    sdk_bench.main(["--repeat", "5"] if quick else [])
    print()
    disclosure_bench.main(["--repeat", "5", "--accuracy-repeat", "10"] if quick else [])
    print()
    console_bench.main(["--entries", "20000", "--repeat", "3"] if quick else [])
    print()
    model_bench.main(["--rows", "1000000", "--logit-rows", "100000", "--repeat", "1"] if quick else [])
    consent_bench.main(["--rows", "200000", "--repeat", "3"] if quick else [])


if __name__ == "__main__":
    main()
