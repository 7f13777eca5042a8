"""A small node for the metering tests: 40 people, one of them planted (the only one in dept D
aged 77), served twice: ``people`` (exact mode) and ``people_dp`` (DP, ε 0.5 per query,
analyst budget 3)."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

ROWS = 40
K = 5
PLANTED_PID = 40


def people_rows(seed: int = 7) -> list[dict]:
    import numpy as np  # data only (synthetic), never noise

    gen = np.random.Generator(np.random.PCG64(seed))
    rows = []
    for pid in range(1, ROWS):
        rows.append({"pid": pid, "dept": "ABC"[pid % 3], "age": int(gen.integers(20, 70)),
                     "secret": int(gen.integers(0, 2)), "salary": int(gen.integers(20_000, 90_000))})
    rows.append({"pid": PLANTED_PID, "dept": "D", "age": 77, "secret": 1, "salary": 60_000})
    for i in range(1, 8):  # dept D has 8 people; only the planted one is 77
        rows[i - 1]["dept"] = "D"
    return rows


def write_node(folder: Path, *, quota: str = "") -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    rows = people_rows()
    text = "pid,dept,age,secret,salary\n" + "".join(
        f"{r['pid']},{r['dept']},{r['age']},{r['secret']},{r['salary']}\n" for r in rows)
    for name in ("people", "people_dp"):  # one source per dataset: a source is listed once
        (folder / f"{name}.csv").write_text(text)
    tokens = {n: secrets.token_urlsafe(24) for n in ("alice", "bob", "olivia", "adam")}
    roles = {"alice": "analyst", "bob": "analyst", "olivia": "owner", "adam": "admin"}
    lines = ["[node]", 'name = "disclosure-node"', 'state_dir = "state"', f"min_group_size = {K}",
             "workers = 2", "dev_mode = true", ""]
    for n, t in tokens.items():
        lines += ["[[principals]]", f'name = "{n}"', f'role = "{roles[n]}"',
                  f'token_sha256 = "{hashlib.sha256(t.encode()).hexdigest()}"', ""]
    exact = 'disclosure = "exact"\nexact_reason = "a planted test table; exact figures are expected"'
    for name, extra in (("people", exact), ("people_dp", "dp = { epsilon_per_query = 0.5, analyst_budget = 3.0 }")):
        lines += ["[[datasets]]", f'name = "{name}"', f'source = "{name}.csv"', 'purposes = ["research"]',
                  'owners = ["olivia"]', 'classification = "public"', "max_rows = 1000", extra, "",
                  "  [[datasets.columns]]", '  name = "pid"', '  type = "integer"', '  controls = ["filter"]', "",
                  "  [[datasets.columns]]", '  name = "dept"', '  type = "text"', '  controls = ["filter", "group"]',
                  '  categories = ["A", "B", "C", "D"]', "",
                  "  [[datasets.columns]]", '  name = "age"', '  type = "integer"', '  controls = ["filter"]', "",
                  "  [[datasets.columns]]", '  name = "secret"', '  type = "integer"', '  controls = ["aggregate"]',
                  "  range = [0, 1]", "",
                  "  [[datasets.columns]]", '  name = "salary"', '  type = "integer"', '  controls = ["aggregate"]',
                  "  range = [0, 200000]", "  dominance = { n = 1, percent = 60 }", ""]
        for who in ("alice", "bob"):
            lines += ["[[grants]]", f'principal = "{who}"', f'dataset = "{name}"', 'purpose = "research"',
                      quota if who == "bob" else "", ""]
    (folder / "veil.toml").write_text("\n".join(lines))
    return tokens
