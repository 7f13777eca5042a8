"""`make bench`: every benchmark, side by side in one run. Pass --quick for a short smoke run,
--keep-postgres to keep the scale bench's PostgreSQL tables (100M rows take minutes to load), and
--only SECTION[,SECTION] to run some sections only (`--only perf`: issue 22's four ratios;
`make bench BENCH_ARGS="--only perf"`). Sections: query, crypto, perf, federation, scale, state,
sdk, disclosure, console, model, consent."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import consent_bench  # noqa: E402  (the consent filter's cost, issue 21)
import console_bench  # noqa: E402  (the web console's page times on a 100,000-entry log, issue 19)
import crypto_bench  # noqa: E402
import disclosure_bench  # noqa: E402  (disclosure control's cost and DP's accuracy, issue 14)
import federation_bench  # noqa: E402  (federation, issue 6)
import model_bench  # noqa: E402  (regression inside a node, issue 18)
import perf_bench  # noqa: E402  (issue 22: many analysts, key tables, big results, federation over gRPC)
import query_bench  # noqa: E402
import scale_bench  # noqa: E402  (engines and crypto workers beyond one machine, issue 9)
import sdk_bench  # noqa: E402  (the analyst's install: size and import time, issue 16)
import state_bench  # noqa: E402  (node state on SQLite vs PostgreSQL replicas, issue 9)


def sections(quick: bool, keep: list[str]) -> dict:
    """Name -> what runs it, in the order `make bench` prints them."""
    return {
        "query": lambda: query_bench.main(["--rows", "1000000", "--repeat", "3"] if quick else []),
        "crypto": lambda: crypto_bench.main(["--quick"] if quick else []),
        # Issue 22's four ratios (it runs bench/keys_bench.py's measure as its ratio (b)).
        "perf": lambda: perf_bench.main(["--quick"] if quick else []),
        "federation": lambda: federation_bench.main(["--quick"] if quick else []),  # issue 6
        "scale": lambda: scale_bench.main((["--rows", "1000000", "--repeat", "1", "--crypto-count", "1024"]
                                           if quick else []) + keep),
        "state": lambda: state_bench.main(["--repeat", "5", "--queries", "20"] if quick else []),
        "sdk": lambda: sdk_bench.main(["--repeat", "5"] if quick else []),
        "disclosure": lambda: disclosure_bench.main(["--repeat", "5", "--accuracy-repeat", "10"] if quick else []),
        "console": lambda: console_bench.main(["--entries", "20000", "--repeat", "3"] if quick else []),
        "model": lambda: model_bench.main(["--rows", "1000000", "--logit-rows", "100000", "--repeat", "1"]
                                          if quick else []),
        "consent": lambda: consent_bench.main(["--rows", "200000", "--repeat", "3"] if quick else []),
    }


def main() -> None:
    quick = "--quick" in sys.argv
    keep = ["--keep-postgres"] if "--keep-postgres" in sys.argv else []
    table = sections(quick, keep)
    chosen = list(table)
    if "--only" in sys.argv:
        at = sys.argv.index("--only")
        chosen = [s.strip() for s in (sys.argv[at + 1] if at + 1 < len(sys.argv) else "").split(",") if s.strip()]
        unknown = [s for s in chosen if s not in table]
        if unknown or not chosen:
            sys.exit(f"bench/run.py: --only takes sections from {', '.join(table)}; got {unknown or 'nothing'}")
    print("=" * 100)
    print("Veil benchmarks" + (" (quick)" if quick else "") + ("" if chosen == list(table) else f": {', '.join(chosen)}"))
    print("=" * 100)
    for i, name in enumerate(chosen):
        if i:
            print()
        table[name]()


if __name__ == "__main__":
    main()
