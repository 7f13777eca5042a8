"""The analyst's install (issue 16): what `pip install veil` costs, measured side by side in one run.

- **size**: the bytes the ``veil`` wheel and its dependencies add to a fresh virtual environment
  (target: at most 250 MiB), with the largest packages it pulled in;
- **import time**: ``import veil`` against ``import grpc, numpy`` in that same environment, each
  in a fresh interpreter, the two alternated, median of ``--repeat`` (target: at most 1.5x). A
  third row, ``import veil`` plus ``veil.connect(...)`` and the modules a first result loads,
  shows what moves to first use (pandas, the crypto layer, signature checks).

    python bench/sdk_bench.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.distribution_support import analyst_venv, build_wheels, run, tree_bytes  # noqa: E402

LIMIT_MIB = 250
VENV_OWN = {"pip", "setuptools", "_distutils_hack", "pkg_resources"}  # there before veil was installed
RATIO_LIMIT = 1.5
TIMED = "import time; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"
STATEMENTS = {
    "import grpc, numpy": "import grpc, numpy",
    "import veil": "import veil",
    # What a first result loads besides: the channel, the crypto layer, pandas.
    "import veil + connect + first result's modules": "import veil; veil.connect('127.0.0.1:1').close(); "
                                                      "import veil.results, veil.receipts, pandas",
}


def largest(site: Path, top: int = 6) -> list[tuple[str, int]]:
    sizes = {}
    for entry in site.iterdir():
        if entry.is_dir() and not entry.name.endswith((".dist-info", "__pycache__")) and entry.name not in VENV_OWN:
            sizes[entry.name] = tree_bytes(entry)
    return sorted(sizes.items(), key=lambda kv: -kv[1])[:top]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args(argv)
    print("Analyst's install: the veil wheel alone in a fresh virtual environment")
    with tempfile.TemporaryDirectory(prefix="veil-sdk-bench-") as tmp:
        wheels = build_wheels(Path(tmp) / "dist")
        env, added = analyst_venv(Path(tmp) / "venv", wheels)
        site = Path(run(env.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
        mib = added / 2**20
        print(f"  size added: {mib:.1f} MiB (target <= {LIMIT_MIB} MiB: {'met' if mib <= LIMIT_MIB else 'MISSED'})")
        print("  largest:    " + ", ".join(f"{name} {size / 2**20:.0f} MiB" for name, size in largest(site)))
        samples: dict[str, list[float]] = {name: [] for name in STATEMENTS}
        for _ in range(args.repeat):  # alternated, so that drift on a shared machine hits all rows
            for name, stmt in STATEMENTS.items():
                samples[name].append(float(run(env.python, "-c", TIMED.format(stmt=stmt)).stdout))
        base = statistics.median(samples["import grpc, numpy"])
        print(f"  {'import (fresh interpreter, median of ' + str(args.repeat) + ')':<44} {'ms':>8} {'vs grpc+numpy':>14}")
        for name, values in samples.items():
            ms = statistics.median(values) * 1e3
            print(f"  {name:<48} {ms:>8.1f} {ms / (base * 1e3):>13.2f}x")
        ratio = statistics.median(samples["import veil"]) / base
        print(f"  import veil / import grpc, numpy = {ratio:.2f}x (target <= {RATIO_LIMIT}x: "
              f"{'met' if ratio <= RATIO_LIMIT else 'MISSED'})")


if __name__ == "__main__":
    main()
