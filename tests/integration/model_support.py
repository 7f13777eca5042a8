"""A node serving Fair's 1978 survey (statsmodels.datasets.fair, 6,366 women; real public data)
for the model tests (issue 18): the same rows as an exact-mode dataset, a DP dataset with a large
budget, and three DP datasets with a large budget (for the noise test), a DP dataset whose analyst budget runs out
after two releases, and 100 of the rows (for the parameters-per-row rule)."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from pathlib import Path
from typing import Iterator

import pandas as pd

from veil_server.api.server import run_server
from veil_server.config import load_config

# Declared ranges cover the survey's values, so clamping changes nothing and the exact fits must
# equal statsmodels' on the raw rows.
COLUMNS = """
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
  controls = ["aggregate"]
  range = [17.5, 42]
  scale = 1
  [[datasets.columns]]
  name = "yrs_married"
  type = "decimal"
  controls = ["aggregate"]
  range = [0.5, 23]
  scale = 1
  [[datasets.columns]]
  name = "children"
  type = "decimal"
  controls = ["aggregate"]
  range = [0, 5.5]
  scale = 1
  [[datasets.columns]]
  name = "religious"
  type = "integer"
  controls = ["group"]
  categories = [1, 2, 3, 4]
  [[datasets.columns]]
  name = "educ"
  type = "integer"
  controls = ["aggregate"]
  range = [9, 20]
  [[datasets.columns]]
  name = "occupation"
  type = "integer"
  controls = ["filter"]
  range = [1, 6]
  [[datasets.columns]]
  name = "affairs"
  type = "decimal"
  controls = ["aggregate"]
  range = [0, 58]
  scale = 6
  [[datasets.columns]]
  name = "affairs_n"
  type = "integer"
  controls = ["aggregate"]
  range = [0, 60]
  [[datasets.columns]]
  name = "had_affair"
  type = "integer"
  controls = ["aggregate"]
  range = [0, 1]
"""


def survey() -> pd.DataFrame:
    import statsmodels.api as sm

    d = sm.datasets.fair.load_pandas().data.reset_index(drop=True)
    d.insert(0, "pid", range(1, len(d) + 1))
    for c in ("rate_marriage", "religious", "educ", "occupation", "occupation_husb"):
        d[c] = d[c].astype(int)
    d["had_affair"] = (d["affairs"] > 0).astype(int)
    d["affairs_n"] = d["affairs"].round().astype(int)  # a count, for Poisson regression
    return d


def _dataset(name: str, disclosure: str, source: str = "", grant: str = "", owners: str = '"olivia"') -> str:
    return f"""
[[datasets]]
name = "{name}"
{source or f'source = "{name}.csv"'}
purposes = ["research"]
owners = [{owners}]
classification = "public"
min_group_size = 10
max_rows = 100000
{disclosure}
{COLUMNS}
[[grants]]
principal = "alice"
dataset = "{name}"
purpose = "research"
{grant}"""


EXACT = 'disclosure = "exact"\nexact_reason = "a public survey, published in full (tests)"'


def dp(epsilon: float, budget: float, most: float | None = None) -> str:
    return (f'disclosure = "dp"\ndp = {{ epsilon_per_query = {epsilon}, max_epsilon_per_query = {most or epsilon}, '
            f'analyst_budget = {budget}, dataset_budget = {budget} }}')


@contextlib.contextmanager
def survey_node(folder: Path, *, dp_epsilon: float = 1.0, postgres: str = "") -> \
        Iterator[tuple[object, str, pd.DataFrame]]:
    """Yields (the running node, alice's token, the raw rows). ``postgres``: a conninfo whose
    database gets the rows as table survey.fair, served as the exact-mode dataset fair_pg."""
    d = survey()
    for name in ("fair", "fair_dp", "fair_dp2", "fair_dp3", "fair_small", "fair_quota", "fair_cells", "fair_review"):  # one source is listed once: a file each
        d.to_csv(folder / f"{name}.csv", index=False)
    d.head(100).to_csv(folder / "fair_tiny.csv", index=False)
    # affairs missing in every row of religious = 1 but one (the model attack on missing values)
    nulls = d.copy()
    one = nulls.index[nulls["religious"] == 1]
    nulls.loc[one[1:], "affairs"] = None
    nulls.to_csv(folder / "fair_nulls.csv", index=False)
    extra = ""
    if postgres:
        import pyarrow as pa

        from tests.integration.engine_support import load_table

        load_table(postgres, "survey.fair", pa.Table.from_pandas(d, preserve_index=False))
        extra = _dataset("fair_pg", EXACT, f'format = "postgres"\ntable = "survey.fair"\nconninfo = "{postgres}"')
    token = secrets.token_urlsafe(24)
    digest = hashlib.sha256(token.encode()).hexdigest()
    owner = secrets.token_urlsafe(24)
    (folder / "olivia.token").write_text(owner)  # the datasets' owner, for ListModelReleases
    second = secrets.token_urlsafe(24)
    (folder / "oskar.token").write_text(second)  # fair_review's second owner (two approvals)
    (folder / "veil.toml").write_text(f"""[node]
name = "model-node"
state_dir = "state"
min_group_size = 10
dev_mode = true
[limits]
requests_per_second = 100000
burst = 100000
[disclosure]
refusals_per_day = 100000
[[principals]]
name = "alice"
role = "analyst"
token_sha256 = "{digest}"
[[principals]]
name = "olivia"
role = "owner"
token_sha256 = "{hashlib.sha256(owner.encode()).hexdigest()}"
[[principals]]
name = "oskar"
role = "owner"
token_sha256 = "{hashlib.sha256(second.encode()).hexdigest()}"
""" + _dataset("fair", EXACT) + _dataset("fair_dp", dp(dp_epsilon, 1000.0, 10.0))
        + _dataset("fair_dp2", dp(dp_epsilon, 1000.0, 10.0)) + _dataset("fair_dp3", dp(dp_epsilon, 1000.0, 10.0)) + _dataset("fair_small", dp(1.0, 2.5).replace("dataset_budget = 2.5", "dataset_budget = 10.0"))
        + _dataset("fair_tiny", EXACT) + _dataset("fair_quota", EXACT, grant="quota = { queries_per_day = 2 }\n")
        + _dataset("fair_cells", EXACT) + _dataset("fair_nulls", EXACT)
        + _dataset("fair_review", EXACT + "\nauto_approve = false\napprovals_required = 2",
                   owners='"olivia", "oskar"')
        + extra)
    with run_server(load_config(folder / "veil.toml", env={}), listen="127.0.0.1:0", grace=0.5) as running:
        yield running, token, d
