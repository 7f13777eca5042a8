"""Node state on SQLite vs PostgreSQL (issue 9): what keeping the state shareable by replicas costs.

Every node here is a real `veil node serve` process on a loopback port, serving the same small
demo table (4,000 rows, so the engine's share is small and the state layer shows), queried over
real gRPC by analysts holding 2048-bit keys. Side by side in one run:

- **latency**: one analyst, submit → approved by policy → run → released → decrypted DataFrame,
  median of ``--repeat``;
- **throughput**: ``--clients`` analysts' threads submitting and waiting for ``--queries`` queries
  in all, spread over the node's processes: one SQLite node, one PostgreSQL replica, two
  PostgreSQL replicas. On this 2-core machine a second replica shares the same cores, so the
  figure shows the price of the cross-replica write lock, not added capacity.

PostgreSQL is the local server (``$VEIL_BENCH_POSTGRES``, as for the scale bench); each node gets a
schema of its own in a scratch database, dropped at the end.

    python bench/state_bench.py [--repeat 15] [--queries 60] [--clients 6]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

import veil  # noqa: E402
from tests.conftest import write_home  # noqa: E402
from tests.integration.replica_process import start  # noqa: E402  (the launcher the replica tests use)
from veil.crypto import generate_keypair  # noqa: E402
from veil_server.cli.demo import init_node_folder  # noqa: E402

ADMIN = os.environ.get("VEIL_BENCH_POSTGRES", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
SQL = "SELECT region, COUNT(*) AS n, AVG(cost) AS c FROM patients GROUP BY region"


def node_folder(base: Path, conninfo: str | None) -> tuple[Path, dict[str, str]]:
    folder = base / ("pg" if conninfo else "sqlite")
    tokens = init_node_folder(folder, rows=4_000, disclosure="exact")
    cfg = folder / "veil.toml"
    text = cfg.read_text().replace("workers = 4", "workers = 2")
    if conninfo:
        text = text.replace("[node]", f'[state]\nbackend = "postgres"\nconninfo = "{conninfo}"\n'
                                      f'schema = "bench_{secrets.token_hex(4)}"\n\n[node]', 1)
    # A load test, not an abuse test: lift the per-analyst limits that would refuse it.
    cfg.write_text(text + "\n[limits]\nrequests_per_second = 10000\nburst = 10000\nmax_concurrent_calls = 1000\n"
                          "max_open_queries = 10000\n")
    return folder, tokens


def latency(target: str, token: str, home: Path, repeat: int) -> float:
    samples = []
    with veil.connect(target, token=token, home=home) as alice:
        alice.query(SQL, purpose="research")  # warm-up: connection, fixed-base table for the key
        for _ in range(repeat):
            t0 = time.perf_counter()
            alice.query(SQL, purpose="research")
            samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def throughput(targets: list[str], token: str, home: Path, queries: int, clients: int) -> float:
    def one(i: int) -> None:
        with veil.connect(targets[i % len(targets)], token=token, home=home) as alice:
            alice.query(SQL, purpose="research")

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(clients)))  # warm-up
        t0 = time.perf_counter()
        list(pool.map(one, range(queries)))
        return queries / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--clients", type=int, default=6)
    args = ap.parse_args(argv)

    db = "veil_state_bench_" + secrets.token_hex(3)
    try:
        with psycopg.connect(ADMIN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{db}"')
    except psycopg.Error as e:
        print(f"state bench skipped: no PostgreSQL server reachable ({type(e).__name__})")
        return
    conninfo = psycopg.conninfo.make_conninfo(ADMIN, dbname=db)
    print("Node state: SQLite (one process) vs PostgreSQL (replicas), real `veil node serve` processes, "
          "4,000 rows, 2048-bit keys")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp)
            _, sk = generate_keypair(bits=2048)
            home = write_home(base / "home", sk)
            os.environ["VEIL_KNOWN_NODES"] = str(base / "known_nodes")
            rows = []
            sq_folder, sq_tokens = node_folder(base, None)
            pg_folder, pg_tokens = node_folder(base, conninfo)
            (sq,) = start(sq_folder, "sqlite")
            try:
                sq_lat = latency(sq.target, sq_tokens["alice"], home, args.repeat)
                sq_tp = throughput([sq.target], sq_tokens["alice"], home, args.queries, args.clients)
            finally:
                sq.stop()
            a, b = start(pg_folder, "a", "b")
            try:
                pg_lat = latency(a.target, pg_tokens["alice"], home, args.repeat)
                pg1_tp = throughput([a.target], pg_tokens["alice"], home, args.queries, args.clients)
                pg2_tp = throughput([a.target, b.target], pg_tokens["alice"], home, args.queries, args.clients)
            finally:
                a.stop()
                b.stop()
            rows = [("SQLite, 1 process", sq_lat, sq_tp), ("PostgreSQL, 1 replica", pg_lat, pg1_tp),
                    ("PostgreSQL, 2 replicas", None, pg2_tp)]
            print(f"{'state':<26}{'latency (median)':>18}{'vs SQLite':>11}{'queries/s':>12}{'vs SQLite':>11}")
            for name, lat, tp in rows:
                lat_s = f"{lat * 1000:.1f} ms" if lat is not None else "-"
                lat_r = f"{lat / sq_lat:.2f}x" if lat is not None else "-"
                print(f"{name:<26}{lat_s:>18}{lat_r:>11}{tp:>12.1f}{tp / sq_tp:>10.2f}x")
            print(f"({args.queries} queries from {args.clients} client threads per throughput row; "
                  f"latency over {args.repeat} queries after a warm-up)")
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
