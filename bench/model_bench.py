"""Models (issue 18): OLS over ``--rows`` rows (10M by default) on one node, end to end through
gRPC (the node builds the design in DuckDB, encrypts X'X, X'y, y'y, n; the SDK decrypts and
solves), side by side with computing the same X'X in plain DuckDB and in numpy; and logistic
regression with 10 features over ``--logit-rows`` rows (Newton steps, one release each), on one
node and over three federated member nodes of ``--fed-rows`` rows each.

Data: 10 numeric features and a response, derived from the row number by hashing (synthetic, no
randomness needed), written once to Parquet. Exact mode (the cost of DP noise is a few draws).
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FEATURES = [f"x{i}" for i in range(10)]


def write_data(path: Path, rows: int, *, binary: bool, first: int = 0) -> None:
    import duckdb

    cols = ", ".join(f"CAST(hash((i + {first}) * {11 + k}) % 1000 AS DOUBLE) / 100.0 AS x{k}" for k in range(10))
    lin = " + ".join(f"{(k % 3) - 1} * x{k}" for k in range(10))
    y = (f"CASE WHEN (({lin}) + CAST(hash(i * 7) % 1000 AS DOUBLE) / 100.0) > 5 THEN 1 ELSE 0 END" if binary
         else f"({lin}) + CAST(hash(i * 7) % 1000 AS DOUBLE) / 100.0")
    with duckdb.connect() as con:
        con.execute(f"COPY (SELECT *, {y} AS y FROM (SELECT i, {cols} FROM range({rows}) t(i))) "
                    f"TO '{path}' (FORMAT parquet)")


def dataset_block(name: str, source: str, y_range: str, n: int) -> str:
    cols = "".join(f"""
  [[datasets.columns]]
  name = "{c}"
  type = "decimal"
  controls = ["aggregate"]
  range = [0, 10]
  scale = 2""" for c in FEATURES)
    return f"""
[[datasets]]
name = "{name}"
source = "{source}"
purposes = ["research"]
classification = "public"
max_rows = {max(n, 1) * 2}
disclosure = "exact"
exact_reason = "synthetic benchmark data"
{cols}
  [[datasets.columns]]
  name = "y"
  type = "decimal"
  controls = ["aggregate"]
  range = {y_range}
  scale = 2
[[grants]]
principal = "alice"
dataset = "{name}"
purpose = "research"
"""


def federated_logit(rows: int, home: Path) -> tuple[float, int]:
    """Logistic regression, 10 features, over 3 member nodes of ``rows`` rows each (loopback)."""
    import contextlib

    import veil
    from veil_server.api.server import run_server
    from veil_server.cli.federation_demo import init_federation
    from veil_server.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        members = init_federation(Path(tmp), rows=(100, 100, 100), protocols=("paillier",))
        for i, m in enumerate(members.values()):
            write_data(m.folder / "part.parquet", rows, binary=True, first=i * rows)
            text = m.config.read_text().replace('local = "patients"', 'local = "part"')
            m.config.write_text(text + dataset_block("part", "part.parquet", "[0, 1]", rows))
        with contextlib.ExitStack() as stack:
            for m in members.values():
                stack.enter_context(run_server(load_config(m.config, env={}), grace=0.2))
            first = next(iter(members.values()))
            with veil.connect(first.target, token=first.tokens["alice"], home=home) as node:
                t = time.perf_counter()
                res = node.fit("y ~ " + " + ".join(FEATURES), dataset="admissions", purpose="research",
                               family="binomial")
                return time.perf_counter() - t, res.iterations


def config(folder: Path, token: str, rows: int, logit_rows: int) -> Path:
    cols = "".join(f"""
  [[datasets.columns]]
  name = "{c}"
  type = "decimal"
  controls = ["aggregate"]
  range = [0, 10]
  scale = 2""" for c in FEATURES)

    def ds(name: str, source: str, y_range: str, n: int) -> str:
        return f"""
[[datasets]]
name = "{name}"
source = "{source}"
purposes = ["bench"]
classification = "public"
max_rows = {max(n, 1) * 2}
disclosure = "exact"
exact_reason = "synthetic benchmark data"
{cols}
  [[datasets.columns]]
  name = "y"
  type = "decimal"
  controls = ["aggregate"]
  range = {y_range}
  scale = 2
[[grants]]
principal = "alice"
dataset = "{name}"
purpose = "bench"
"""
    path = folder / "veil.toml"
    path.write_text(f"""[node]
name = "model-bench"
state_dir = "state"
dev_mode = true
[[principals]]
name = "alice"
role = "analyst"
token_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"
""" + ds("ols", "ols.parquet", "[-50, 60]", rows) + ds("logit", "logit.parquet", "[0, 1]", logit_rows))
    return path


def plain_duckdb(path: Path) -> float:
    import duckdb

    sums = ["COUNT(*)"] + [f"SUM({a} * {b})" for i, a in enumerate(["1"] + FEATURES)
                           for b in (["1"] + FEATURES)[i:]] + [f"SUM({a} * y)" for a in ["1"] + FEATURES] + ["SUM(y*y)"]
    with duckdb.connect() as con:
        t = time.perf_counter()
        con.execute(f"SELECT {', '.join(sums)} FROM read_parquet('{path}')").fetchone()
        return time.perf_counter() - t


def plain_numpy(path: Path) -> tuple[float, float]:
    """(seconds to read the columns, seconds for X'X, X'y, y'y)."""
    import numpy as np
    import pyarrow.parquet as pq

    t = time.perf_counter()
    table = pq.read_table(path, columns=FEATURES + ["y"])
    x = np.column_stack([np.ones(table.num_rows)] + [table[c].to_numpy() for c in FEATURES])
    y = table["y"].to_numpy()
    read = time.perf_counter() - t
    t = time.perf_counter()
    x.T @ x, x.T @ y, y @ y
    return read, time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--logit-rows", type=int, default=300_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--fed-rows", type=int, default=100_000, help="rows per member of the 3-node logistic fit")
    args = p.parse_args(argv)

    import veil
    from veil.crypto import generate_keypair
    from veil_server.api.server import run_server
    from veil_server.config import load_config
    from tests.conftest import write_home

    formula = "y ~ " + " + ".join(FEATURES)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_data(folder / "ols.parquet", args.rows, binary=False)
        write_data(folder / "logit.parquet", args.logit_rows, binary=True)
        token = secrets.token_urlsafe(24)
        _, sk = generate_keypair(bits=2048)
        home = write_home(folder / "home", sk)
        with run_server(load_config(config(folder, token, args.rows, args.logit_rows), env={}),
                        listen="127.0.0.1:0", grace=0.5) as running:
            with veil.connect(running.target, token=token, home=home) as node:
                node.fit(formula, dataset="ols", purpose="bench")  # warm: view, key checks
                ols, duck, npy, read = [], [], [], []
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    node.fit(formula, dataset="ols", purpose="bench")
                    ols.append(time.perf_counter() - t)
                    duck.append(plain_duckdb(folder / "ols.parquet"))
                    r, n = plain_numpy(folder / "ols.parquet")
                    read.append(r)
                    npy.append(n)
                t = time.perf_counter()
                res = node.fit(formula, dataset="logit", purpose="bench", family="binomial")
                logit = time.perf_counter() - t
        fed_seconds, fed_steps = federated_logit(args.fed_rows, home)
    m = statistics.median
    print(f"Models (issue 18): OLS with 10 features over {args.rows:,} rows, median of {args.repeat}")
    print(f"{'path':58s}{'seconds':>10s}{'ratio':>8s}")
    print(f"{'node.fit end to end (gRPC, DuckDB design, 2048-bit Paillier)':58s}{m(ols):10.3f}{'1.00':>8s}")
    print(f"{'plain DuckDB: the same sums over the Parquet file':58s}{m(duck):10.3f}{m(ols) / m(duck):8.2f}")
    print(f"{'numpy: read the columns + X^T X':58s}{m(read) + m(npy):10.3f}{m(ols) / (m(read) + m(npy)):8.2f}")
    print(f"{'numpy: X^T X on arrays already in memory':58s}{m(npy):10.3f}{m(ols) / m(npy):8.2f}")
    print(f"Logistic regression, 10 features, {args.logit_rows:,} rows, one node: {logit:.2f} s end to end, "
          f"{res.iterations} Newton steps (releases)")
    print(f"Federated logistic regression, 10 features, 3 nodes x {args.fed_rows:,} rows (Paillier, masked): "
          f"{fed_seconds:.2f} s end to end, {fed_steps} Newton steps")


if __name__ == "__main__":
    main()
