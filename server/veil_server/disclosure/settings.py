"""The owner's disclosure settings, from the node's TOML (read next to the keys config.py reads):

    [[datasets]]
    dp = { epsilon_per_query = 0.5, budget = 5.0, per = "analyst" }   # or per = "analyst_purpose"
    differencing = { history = 24, strict = true, linear = false }      # or false to switch it off
      [[datasets.columns]]
      dominance = { n = 2, percent = 85 }                               # SUM/AVG cells
    [[grants]]
    quota = { queries_per_day = 100, rows_scanned = 10000000, epsilon = 3.0 }

DP is off unless a dataset sets ``dp``. The differencing defence is on by default whenever DP
is off. ε values that are not finite, not positive or absurd (see MAX_*) are refused here and
again wherever an ε enters the budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

MAX_EPSILON_PER_QUERY = 10.0  # beyond this the noise protects nobody
MAX_EPSILON_BUDGET = 100.0
DEFAULT_HISTORY = 24
QUOTA_NAMES = ("queries_per_day", "rows_scanned", "epsilon")


def check_epsilon(value: Any, where: str, *, high: float, error=ValueError) -> float:
    """A finite ε in (0, high]; anything else (negative, zero, NaN, inf, absurd, bool) raises."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error(f"{where} must be a number")
    v = float(value)
    if not math.isfinite(v) or v <= 0 or v > high:
        raise error(f"{where} must be a finite number in (0, {high}]")
    return v


@dataclass(frozen=True)
class DpSettings:
    epsilon_per_query: float
    budget: float
    per: str = "analyst"  # "analyst" (× dataset) or "analyst_purpose"

    def budget_purpose(self, purpose: str) -> str:
        return purpose if self.per == "analyst_purpose" else ""


@dataclass(frozen=True)
class Dominance:
    n: int = 2
    percent: float = 85.0


@dataclass(frozen=True)
class DatasetDisclosure:
    dp: DpSettings | None = None
    differencing: bool = True
    history: int = DEFAULT_HISTORY
    strict: bool = True  # refuse filter combinations selecting fewer than k rows (see differencing)
    linear: bool = False  # exact-disclosure audit over group cells (opt-in; see differencing)
    dominance: Mapping[str, Dominance] = field(default_factory=dict)  # by lower-case column name


@dataclass(frozen=True)
class DisclosureSettings:
    datasets: Mapping[str, DatasetDisclosure] = field(default_factory=dict)  # by lower-case name
    # By "principal/dataset/purpose" (a string key: the config is digested as JSON into the audit log).
    quotas: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def for_dataset(self, name: str) -> DatasetDisclosure:
        return self.datasets.get(name.lower(), DatasetDisclosure())

    def quota(self, principal: str, dataset: str, purpose: str) -> Mapping[str, float]:
        return self.quotas.get(f"{principal}/{dataset.lower()}/{purpose}", {})


def parse_disclosure(raw: Mapping[str, Any], *, error=ValueError) -> DisclosureSettings:
    datasets: dict[str, DatasetDisclosure] = {}
    for i, d in enumerate(raw.get("datasets", [])):
        where = f"datasets[{i}]"
        dp = None
        if d.get("dp") is not None:
            spec = d["dp"]
            if not isinstance(spec, Mapping):
                raise error(f"{where}.dp must be a table: {{ epsilon_per_query = 0.5, budget = 5.0 }}")
            eps = check_epsilon(spec.get("epsilon_per_query"), f"{where}.dp.epsilon_per_query",
                                high=MAX_EPSILON_PER_QUERY, error=error)
            budget = check_epsilon(spec.get("budget"), f"{where}.dp.budget", high=MAX_EPSILON_BUDGET, error=error)
            if eps > budget:
                raise error(f"{where}.dp.epsilon_per_query must not exceed dp.budget")
            per = str(spec.get("per", "analyst"))
            if per not in ("analyst", "analyst_purpose"):
                raise error(f"{where}.dp.per must be 'analyst' or 'analyst_purpose'")
            dp = DpSettings(eps, budget, per)
        diff = d.get("differencing", {})
        enabled, history, strict, linear = True, DEFAULT_HISTORY, True, False
        if diff is False:
            enabled = False
        elif isinstance(diff, Mapping):
            history = int(diff.get("history", DEFAULT_HISTORY))
            if not 1 <= history <= 256:
                raise error(f"{where}.differencing.history must be between 1 and 256")
            strict = bool(diff.get("strict", True))
            linear = bool(diff.get("linear", False))
        else:
            raise error(f"{where}.differencing must be a table or false")
        dominance = {}
        for j, c in enumerate(d.get("columns", [])):
            spec = c.get("dominance")
            if spec is None:
                continue
            n, pct = int(spec.get("n", 2)), float(spec.get("percent", 85))
            if not (1 <= n <= 10 and 0 < pct <= 100):
                raise error(f"{where}.columns[{j}].dominance needs 1 <= n <= 10 and 0 < percent <= 100")
            dominance[str(c.get("name", "")).lower()] = Dominance(n, pct)
        datasets[str(d.get("name", "")).lower()] = DatasetDisclosure(dp, enabled, history, strict, linear, dominance)
    quotas: dict[str, dict[str, float]] = {}
    for i, g in enumerate(raw.get("grants", [])):
        q = g.get("quota")
        if q is None:
            continue
        where = f"grants[{i}].quota"
        if not isinstance(q, Mapping) or not set(q) <= set(QUOTA_NAMES):
            raise error(f"{where} may set only {', '.join(QUOTA_NAMES)}")
        out: dict[str, float] = {}
        for name, v in q.items():
            if name == "epsilon":
                out[name] = check_epsilon(v, f"{where}.epsilon", high=MAX_EPSILON_BUDGET, error=error)
            elif isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise error(f"{where}.{name} must be a non-negative integer")
            else:
                out[name] = v
        quotas[f"{g.get('principal')}/{str(g.get('dataset', '')).lower()}/{g.get('purpose')}"] = out
    return DisclosureSettings(datasets, quotas)
