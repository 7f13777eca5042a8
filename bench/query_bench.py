"""End-to-end latency of grouped aggregates through Veil vs the same SQL in plain DuckDB.

Both run in this process on the same Parquet file, side by side (samples alternate), on the same
machine, with DuckDB's default settings on both sides (threads = the CPUs). Veil's figure is what
an analyst waits for: submit over real gRPC (loopback), policy, execution,
fixed-point encoding, packing, Paillier encryption under a 2048-bit key, storage, fetch and
local decryption into a DataFrame, on a node that was idle before the query (so it had topped up
the key's encryption randomness after the previous release, as a node does between queries;
the bench waits for that before every sample, Veil's and DuckDB's alike). DuckDB's figure is the
bare query returning Python rows.

Also measured: the cost per released encrypted cell (packing + encryption on the node) next to
plain ``phe`` encrypting one cell per ciphertext.

    python bench/query_bench.py [--rows 1000000,10000000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import phe

import veil
from veil.crypto import PackingLayout, encrypt_packed, generate_keypair, wait_for_tables
from veil_server.config import parse_config
from veil_server.cli.demo import dataset_toml, patients_table, write_table
from veil_server.api.server import run_server

DATA = Path(__file__).resolve().parent / ".data"
TOKEN = "bench-token-not-secret"

QUERIES = {
    # name: (Veil SQL, plain DuckDB SQL with {t})
    "80 groups x 3": (
        "SELECT region, diagnosis, COUNT(*) AS n, AVG(cost) AS c, SUM(length_of_stay) AS s FROM {d} "
        "GROUP BY region, diagnosis",
        "SELECT region, diagnosis, COUNT(*) AS n, AVG(cost) AS c, SUM(length_of_stay) AS s FROM {t} "
        "GROUP BY region, diagnosis",
    ),
    "160 groups x 6": (
        "SELECT region, diagnosis, sex, COUNT(*), SUM(cost), AVG(cost), AVG(length_of_stay), STDDEV(cost), "
        "VARIANCE(age) FROM {d} GROUP BY region, diagnosis, sex",
        "SELECT region, diagnosis, sex, COUNT(*), SUM(cost), AVG(cost), AVG(length_of_stay), STDDEV_SAMP(cost), "
        "VAR_SAMP(age) FROM {t} GROUP BY region, diagnosis, sex",
    ),
}


def dataset(rows: int) -> Path:
    path = DATA / f"patients_{rows}.parquet"
    if not path.exists():
        print(f"  generating {rows:,} synthetic rows -> {path}", file=sys.stderr)
        write_table(patients_table(rows), path)
    return path


def node_config(paths: dict[int, Path], state: Path):
    import tomllib

    # Exact mode: the same query is repeated many times (a DP budget would run out); what DP adds
    # is measured by bench/disclosure_bench.py.
    text = "".join(dataset_toml(f"p{rows}", str(p), disclosure="exact") for rows, p in paths.items())
    raw = tomllib.loads(text)
    raw["node"] = {"name": "bench", "state_dir": str(state), "workers": 2, "dev_mode": True}
    raw["principals"] = [{"name": "bench", "role": "analyst",
                          "token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}]
    raw["grants"] = [{"principal": "bench", "dataset": f"p{rows}", "purpose": "research"} for rows in paths]
    return parse_config(raw, base_dir=state)


def side_by_side(veil_fn, duck_fn, repeat: int, idle=lambda: None) -> tuple[float, float]:
    """Median seconds of each, sampled alternately (Veil, DuckDB, DuckDB, Veil, ...) so that a
    change in the machine's load falls on both rather than on whichever ran second. ``idle()``
    runs before every sample, untimed: it waits until the node's background work (topping up
    the analyst key's randomness after a release) is done, so that work lands on neither clock."""
    veil_fn()  # warm-up: file cache, plan caches, the key's fixed-base table
    duck_fn()
    veil_s, duck_s = [], []
    for i in range(repeat):
        for fn, out in ((veil_fn, veil_s), (duck_fn, duck_s))[:: 1 if i % 2 == 0 else -1]:
            idle()
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(veil_s), statistics.median(duck_s)


def cell_cost(cells: int = 960, phe_samples: int = 20) -> tuple[float, float]:
    """Seconds per released cell: Veil (packed, fast randomness) vs phe (one ciphertext a cell)."""
    pk, _ = generate_keypair(bits=2048)
    values = [(i * 7919) % 10**12 for i in range(cells)]
    layout = PackingLayout.for_range(pk, 0, 2 * 10**20)  # as wide as an AVG(cost) cell
    encrypt_packed(pk, values, layout)  # a node's table for a returning analyst's key is warm
    t0 = time.perf_counter()
    encrypt_packed(pk, values, layout)
    veil_per_cell = (time.perf_counter() - t0) / cells
    ppk = phe.PaillierPublicKey(pk.n)
    t0 = time.perf_counter()
    for v in values[:phe_samples]:
        ppk.encrypt(v)
    return veil_per_cell, (time.perf_counter() - t0) / phe_samples


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="1000000,10000000")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.rows.split(",")]
    paths = {n: dataset(n) for n in sizes}
    rows_out = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        config = node_config(paths, Path(tmp) / "state")
        with run_server(config, listen="127.0.0.1:0", grace=1) as running:
            # The SDK's default: the analyst decrypts on every CPU (threads), as the node scans on all.
            with veil.connect(running.target, token=TOKEN, home=home) as node:
                con = duckdb.connect()
                threads = (running.node.engine.duckdb._db.execute("SELECT current_setting('threads')").fetchone()[0],
                           con.execute("SELECT current_setting('threads')").fetchone()[0])
                for n in sizes:
                    for name, (vsql, dsql) in QUERIES.items():
                        v = vsql.format(d=f"p{n}")
                        d = dsql.format(t=f"read_parquet('{paths[n]}')")
                        first = node.query(v, purpose="research")
                        aggregates = int(name.split(" x ")[1])
                        cells = int((~first["suppressed"]).sum()) * aggregates
                        t_veil, t_duck = side_by_side(lambda: node.query(v, purpose="research"),
                                                      lambda: con.execute(d).fetchall(), args.repeat,
                                                      idle=lambda: (running.node.refill.wait_idle(30),
                                                                    wait_for_tables(60)))
                        rows_out.append({"rows": n, "query": name, "veil_s": t_veil, "duckdb_s": t_duck,
                                         "ratio": t_veil / t_duck, "cells": cells})
    per_cell, phe_cell = cell_cost()
    print("\nGrouped aggregate, end to end: Veil (gRPC + encrypted result) vs plain DuckDB, same Parquet file")
    print(f"(DuckDB threads: {threads[0]} in the node, {threads[1]} plain; samples alternate; medians of {args.repeat})")
    print(f"{'rows':>12} {'query':>16} {'cells':>6} {'Veil ms':>10} {'DuckDB ms':>10} {'Veil/DuckDB':>12}")
    for r in rows_out:
        print(f"{r['rows']:>12,} {r['query']:>16} {r['cells']:>6} {r['veil_s'] * 1e3:>10.1f} "
              f"{r['duckdb_s'] * 1e3:>10.1f} {r['ratio']:>11.2f}x")
    print(f"\nCost per released encrypted cell (2048-bit key): Veil {per_cell * 1e6:.1f} us "
          f"vs phe {phe_cell * 1e6:.0f} us (one ciphertext per cell): {phe_cell / per_cell:.0f}x")
    return rows_out


if __name__ == "__main__":
    main()
