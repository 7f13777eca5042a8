"""The noise a DP release carries is the noise it declares, for every aggregate, on integer and
decimal columns, on one node and across three federation members (through real gRPC).

Each released cell's error (released minus the exact figure from DuckDB on the raw data) is
divided by the standard deviation the declared noise implies for that cell: exactly, for COUNT
and SUM (a sum of discrete Laplace draws); to first order, for AVG and VAR_SAMP (the delta method
at the cell's true count and moments: the groups here hold thousands of rows, so second-order
terms are negligible). The mean of the squared ratios must be near 1.

Sizing: at least 960 ratios per aggregate. Their squares have a relative standard deviation of
at most sqrt(5 / 960) = 7.2 % (discrete Laplace kurtosis is at most 6), so the accepted band
[0.6, 1.6] lies 5.5 and 8 standard deviations from 1: correct code fails less than once in
10^7 runs, while noise of twice or half the declared scale (variance x4 or x0.25) fails always.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import secrets
from pathlib import Path

import duckdb
import numpy as np
import pytest

import veil
from veil.accuracy import Noise
from veil_server.api.server import run_server
from veil_server.config import load_config

EPS = 10.0  # the largest ε a dataset may allow: noise small next to the groups, any scale tested
DP = f"dp = {{ epsilon_per_query = {EPS}, max_epsilon_per_query = {EPS}, analyst_budget = 1000.0, dataset_budget = 1000.0 }}"
LOW, HIGH = 0.6, 1.6


def write_table(path: Path, rows: int, seed: int) -> None:
    gen = np.random.Generator(np.random.PCG64(seed))  # data only, never noise
    with duckdb.connect() as con:
        con.execute(f"""COPY (SELECT ['A','B','C','D','E','F','G','H'][1 + (i % 8)] AS g1,
                               ['x','y'][1 + ((i // 8) % 2)] AS g2,
                               CAST(xi AS BIGINT) AS xi, CAST(xd AS DECIMAL(6,2)) AS xd
                        FROM (SELECT unnest(range({rows})) AS i, unnest(?) AS xi, unnest(?) AS xd))
                        TO '{path}' (HEADER)""",
                    [gen.integers(0, 101, rows).tolist(), np.round(gen.uniform(0, 10, rows), 2).tolist()])


def node_config(folder: Path, token: str) -> None:
    digest = hashlib.sha256(token.encode()).hexdigest()
    (folder / "veil.toml").write_text(f"""[node]
name = "noise-node"
state_dir = "state"
min_group_size = 10
dev_mode = true
[limits]
requests_per_second = 100000
burst = 100000
[[principals]]
name = "alice"
role = "analyst"
token_sha256 = "{digest}"
[[datasets]]
name = "t"
source = "t.csv"
purposes = ["research"]
classification = "public"
max_rows = 1000000
{DP}
  [[datasets.columns]]
  name = "g1"
  type = "text"
  controls = ["group"]
  categories = ["A", "B", "C", "D", "E", "F", "G", "H"]
  [[datasets.columns]]
  name = "g2"
  type = "text"
  controls = ["group"]
  categories = ["x", "y"]
  [[datasets.columns]]
  name = "xi"
  type = "integer"
  controls = ["aggregate"]
  range = [0, 100]
  [[datasets.columns]]
  name = "xd"
  type = "decimal"
  controls = ["aggregate"]
  range = [0, 10]
  scale = 2
[[grants]]
principal = "alice"
dataset = "t"
purpose = "research"
""")


def dl_var(scale: float, terms: int = 1) -> float:
    return Noise(scale, 1, terms).variance()


def predicted_variance(function: str, noise: dict, n: int, mean: float, var: float) -> float:
    """First-order variance of a cell's error from its column's declared noise (value units)."""
    terms = int(noise["terms"])
    vn = dl_var(noise["count_scale"], terms) if noise["count_scale"] else 0.0
    if function == "COUNT":
        return vn
    vs = dl_var(noise["sum_scale"], terms)
    if function == "SUM":
        return vs
    c = noise["centre"] if noise["centred"] else 0.0
    m = mean - c  # the mean about the centre the sums are taken around
    if function == "AVG":  # AVG = c + S / N
        return (vs + m * m * vn) / (n * n)
    vq = dl_var(noise["squares_scale"], terms)
    s, q = n * m, (n - 1) * var + n * m * m  # the sums about the centre
    dq, ds = 1 / (n - 1), -2 * s / (n * (n - 1))
    dn = (s * s / (n * n)) / (n - 1) - (q - s * s / n) / ((n - 1) ** 2)
    return dq * dq * vq + ds * ds * vs + dn * dn * vn


def check(ratios: dict[str, list[float]]) -> None:
    for name, zs in ratios.items():
        assert len(zs) >= 960, name
        mean_square = float(np.mean(np.square(zs)))
        assert LOW < mean_square < HIGH, (name, mean_square)


QUERIES = {
    "SELECT g1, g2, COUNT(*) AS n, SUM(xi) AS s_i, SUM(xd) AS s_d, AVG(xi) AS a_i, VAR_SAMP(xi) AS v_i FROM t GROUP BY g1, g2":
        {"n": ("COUNT", None), "s_i": ("SUM", "xi"), "s_d": ("SUM", "xd"), "a_i": ("AVG", "xi"), "v_i": ("VAR_SAMP", "xi")},
    "SELECT g1, g2, AVG(xd) AS a_d, VAR_SAMP(xd) AS v_d FROM t GROUP BY g1, g2":
        {"a_d": ("AVG", "xd"), "v_d": ("VAR_SAMP", "xd")},
}


def truth(csv: str):
    return {(r[0], r[1]): r for r in duckdb.sql(
        f"SELECT g1, g2, COUNT(*), SUM(xi), SUM(xd), AVG(xi), VAR_SAMP(xi), AVG(xd), VAR_SAMP(xd) "
        f"FROM read_csv_auto('{csv}') GROUP BY ALL").fetchall()}


def ratios_of(frames, ref) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    index = {("COUNT", None): 2, ("SUM", "xi"): 3, ("SUM", "xd"): 4, ("AVG", "xi"): 5, ("VAR_SAMP", "xi"): 6,
             ("AVG", "xd"): 7, ("VAR_SAMP", "xd"): 8}
    for sql, df in frames:
        for row in df[~df["suppressed"]].to_dict(orient="records"):
            r = ref[(row["g1"], row["g2"])]
            n = r[2]
            for col, (function, column) in QUERIES[sql].items():
                true = float(r[index[(function, column)]])
                mean = float(r[5] if column == "xi" else r[7]) if column else 0.0
                var = float(r[6] if column == "xi" else r[8]) if column else 0.0
                pv = predicted_variance(function, df.attrs["noise"][col], n, mean, var)
                out.setdefault(f"{function}({column or '*'})", []).append((float(row[col]) - true) / math.sqrt(pv))
    return out


def test_single_node_noise_matches_its_declared_scale(tmp_path, analyst_home):
    write_table(tmp_path / "t.csv", 200_000, seed=11)
    token = secrets.token_urlsafe(24)
    node_config(tmp_path, token)
    frames = []
    with run_server(load_config(tmp_path / "veil.toml", env={}), listen="127.0.0.1:0", grace=0.5) as running:
        with veil.connect(running.target, token=token, home=analyst_home) as alice:
            for _ in range(60):  # 16 groups each: 960 ratios per aggregate
                for sql in QUERIES:
                    frames.append((sql, alice.query(sql, purpose="research", epsilon=EPS / 2)))  # within 1000
    assert all(df.attrs["disclosure"] == "dp" for _, df in frames)
    check(ratios_of(frames, truth(str(tmp_path / "t.csv"))))


FED_QUERY = ("SELECT region, sex, COUNT(*) AS n, SUM(cost) AS s_d, SUM(length_of_stay) AS s_i, AVG(age) AS a_i, "
             "VAR_SAMP(age) AS v_i FROM admissions GROUP BY region, sex")
FED_COLUMNS = {"n": ("COUNT", None, 2), "s_d": ("SUM", "cost", 3), "s_i": ("SUM", "length_of_stay", 4),
               "a_i": ("AVG", "age", 5), "v_i": ("VAR_SAMP", "age", 6)}


def test_federated_noise_matches_its_declared_scale(tmp_path, analyst_home):
    from tests.integration.federation_cluster import federation

    fed_dp = DP
    frames = []
    with federation(tmp_path, rows=(40_000, 30_000, 30_000), dp_terms=fed_dp) as c:
        ref = {(r[0], r[1]): r for r in c.union(
            "SELECT region, sex, COUNT(*), SUM(cost), SUM(length_of_stay), AVG(age), VAR_SAMP(age) FROM {t} "
            "GROUP BY ALL").itertuples(index=False)}
        with c.connect("north", analyst_home) as node:
            for i in range(60):  # 16 groups each: 960 ratios per aggregate
                frames.append(node.federated_query(FED_QUERY, purpose="research", epsilon=EPS,
                                                   protocol="paillier" if i % 2 else "sharing"))
    ratios: dict[str, list[float]] = {}
    for df in frames:
        assert all(n["terms"] == 3 for n in df.attrs["noise"].values())
        for row in df[~df["suppressed"]].to_dict(orient="records"):
            r = ref[(row["region"], row["sex"])]
            for col, (function, column, i) in FED_COLUMNS.items():
                pv = predicted_variance(function, df.attrs["noise"][col], r[2], float(r[5]), float(r[6]))
                ratios.setdefault(f"{function}({column or '*'})", []).append((float(row[col]) - float(r[i]))
                                                                             / math.sqrt(pv))
    check(ratios)
