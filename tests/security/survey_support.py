"""A real public survey for the disclosure attacks: Fair's 1978 extramarital-affairs survey
(Redbook, 6,366 women; shipped with statsmodels as ``statsmodels.datasets.fair``).

Each row gets a hidden unique ``pid``. The attacks target one respondent, chosen from the data
by a rule stated here (not by hand), who is identifiable by public attributes: inside a box ``B``
of four quasi-identifiers holding at least 30 respondents, she is the only one of her
``religious`` value, and every other ``religious`` value of ``B`` is held by at least k + 2 or
at most k - 3 respondents (so moving her between two values never moves a count across k: the
k rule's own threshold leak, which every suppression scheme has, stays out of the picture).

``write_survey_node`` serves the survey as an exact-mode or a DP dataset; ``variant`` changes the
target's secret (her religious value, or her ``affairs`` figure) to make the neighbouring table
an attack must not tell apart from the real one.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path

K = 10
COLUMNS = ("pid", "rate_marriage", "age", "yrs_married", "children", "religious", "educ", "occupation",
           "occupation_husb", "affairs")
QI = {"rate_marriage": 1, "age": 5, "yrs_married": 5, "children": 1}  # box dimensions: category or bin width


@dataclass(frozen=True)
class Target:
    pid: int
    box: dict[str, int]  # column -> value (categories) or bin start
    religious: int
    other_religious: int  # her value in the neighbouring table
    affairs: float
    counts: dict[int, int]  # religious value -> respondents of B

    def where(self) -> str:
        """B as an exact-mode filter: categories by =, bins by [start, start + width)."""
        parts = []
        for col, v in self.box.items():
            w = QI[col]
            parts.append(f"{col} = {v}" if col == "rate_marriage" else f"{col} >= {v} AND {col} < {v + w}")
        return " AND ".join(parts)


def survey_rows():
    import statsmodels.api as sm

    d = sm.datasets.fair.load_pandas().data.reset_index(drop=True)
    d.insert(0, "pid", range(1, len(d) + 1))
    for c in ("rate_marriage", "religious", "educ", "occupation", "occupation_husb"):
        d[c] = d[c].astype(int)
    d["affairs"] = d["affairs"].round(6)
    return d


def find_target(d) -> Target:
    binned = d.copy()
    for col, w in QI.items():
        binned[col] = (d[col] // w * w).astype(int)
    cols = list(QI)
    groups = binned.groupby(cols + ["religious"]).size().unstack(fill_value=0)
    for key, row in sorted(groups.iterrows()):
        if row.sum() < 3 * K:
            continue
        ones = [r for r in row.index if row[r] == 1]
        if len(ones) != 1 or not all(row[r] >= K + 2 or row[r] <= K - 3 for r in row.index if r != ones[0]):
            continue
        members = binned[(binned[cols] == list(key)).all(axis=1) & (binned["religious"] == ones[0])]
        t = d.loc[members.index[0]]
        if t["affairs"] <= 0:
            continue
        other = next(r for r in row.index if r != ones[0] and row[r] >= K + 2)
        return Target(int(t["pid"]), dict(zip(cols, map(int, key))), int(ones[0]), int(other), float(t["affairs"]),
                      {int(r): int(row[r]) for r in row.index})
    raise AssertionError("no respondent fits the target rule")


def variant(d, target: Target, *, religious: int | None = None, affairs: float | None = None):
    out = d.copy()
    i = out.index[out["pid"] == target.pid][0]
    if religious is not None:
        out.loc[i, "religious"] = religious
    if affairs is not None:
        out.loc[i, "affairs"] = affairs
    return out


def dataset_toml(name: str, source: str, *, mode: str, dp: str = "", dominance: bool = False) -> str:
    disclosure = ('disclosure = "exact"\nexact_reason = "a public survey released as exact tables (tests)"'
                  if mode == "exact" else f'disclosure = "dp"\n{dp}')
    dom = "  dominance = { n = 1, percent = 50 }\n" if dominance else ""
    return f"""
[[datasets]]
name = "{name}"
source = "{source}"
purposes = ["research"]
owners = ["olivia"]
classification = "public"
min_group_size = {K}
max_rows = 100000
{disclosure}
  [[datasets.columns]]
  name = "pid"
  type = "integer"
  controls = ["hidden"]
  [[datasets.columns]]
  name = "rate_marriage"
  type = "integer"
  controls = ["filter", "group"]
  categories = [1, 2, 3, 4, 5]
  [[datasets.columns]]
  name = "age"
  type = "decimal"
  controls = ["filter", "group", "aggregate"]
  range = [15, 42]
  scale = 1
  bin_width = 5
  [[datasets.columns]]
  name = "yrs_married"
  type = "decimal"
  controls = ["filter", "group", "aggregate"]
  range = [0, 23]
  scale = 1
  bin_width = 5
  [[datasets.columns]]
  name = "children"
  type = "decimal"
  controls = ["filter", "group", "aggregate"]
  range = [0, 5.5]
  scale = 1
  bin_width = 1
  [[datasets.columns]]
  name = "religious"
  type = "integer"
  controls = ["filter", "group"]
  categories = [1, 2, 3, 4]
  [[datasets.columns]]
  name = "educ"
  type = "integer"
  controls = ["filter", "group"]
  categories = [9, 12, 14, 16, 17, 20]
  [[datasets.columns]]
  name = "occupation"
  type = "integer"
  controls = ["filter", "group"]
  categories = [1, 2, 3, 4, 5, 6]
  [[datasets.columns]]
  name = "occupation_husb"
  type = "integer"
  controls = ["filter", "group"]
  categories = [1, 2, 3, 4, 5, 6]
  [[datasets.columns]]
  name = "affairs"
  type = "decimal"
  controls = ["aggregate", "filter"]
  range = [0, 60]
  scale = 6
{dom}"""


ANALYSTS = ("alice", "bob", "carol")


def write_survey_node(folder: Path, data, *, mode: str, dp: str = "", dominance: bool = False,
                      extra: str = "") -> dict[str, str]:
    """A dev-mode node serving ``data`` as dataset ``survey`` (every analyst granted); tokens by name."""
    folder.mkdir(parents=True, exist_ok=True)
    data.to_csv(folder / "survey.csv", index=False, columns=list(COLUMNS))
    tokens = {n: secrets.token_urlsafe(24) for n in (*ANALYSTS, "olivia", "adam")}
    roles = {**{a: "analyst" for a in ANALYSTS}, "olivia": "owner", "adam": "admin"}
    lines = ["[node]", 'name = "survey-node"', 'state_dir = "state"', f"min_group_size = {K}", "workers = 2",
             "dev_mode = true", ""]
    for n, t in tokens.items():
        lines += ["[[principals]]", f'name = "{n}"', f'role = "{roles[n]}"',
                  f'token_sha256 = "{hashlib.sha256(t.encode()).hexdigest()}"', ""]
    body = "\n".join(lines) + extra + dataset_toml("survey", "survey.csv", mode=mode, dp=dp, dominance=dominance)
    for who in ANALYSTS:
        body += f'\n[[grants]]\nprincipal = "{who}"\ndataset = "survey"\npurpose = "research"\n'
    (folder / "veil.toml").write_text(body)
    return tokens

