"""The owner's disclosure choices, per dataset, and the node's grant quotas.

A dataset's policy travels with the dataset (its ``[[datasets]]`` table or registered spec), is
part of the schema-and-rules hash, and is named in the data asset certificate::

    [[datasets]]
    disclosure = "dp"             # the default: differential privacy on every released number
    dp = { epsilon_per_query = 1.0, max_epsilon_per_query = 2.0,
           analyst_budget = 10.0, dataset_budget = 100.0, per = "analyst" }
    # or, where the classification allows it (public, internal), and with a recorded reason:
    disclosure = "exact"
    exact_reason = "published tables of the statistics office; no individual data"
      [[datasets.columns]]
      dominance = { n = 2, percent = 85 }   # exact mode: suppress cells dominated by n contributors

``analyst_budget`` caps what one analyst can spend on the dataset (per purpose with
``per = "analyst_purpose"``); ``dataset_budget`` caps what all analysts together can ever spend on
it, so colluding analysts cannot multiply the first. An analyst may ask a query for any ε up to
``max_epsilon_per_query`` (default 1.0, within the analyst's budget, and never below
``epsilon_per_query``). ε values that are not finite, not
positive or absurd (see MAX_*) are refused here and again wherever an ε enters the budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

MAX_EPSILON_PER_QUERY = 10.0  # beyond this the noise protects nobody
# Below this a query's ε would round away in the accounting (kept in millionths): refused.
MIN_EPSILON_PER_QUERY = 0.001
MAX_EPSILON_BUDGET = 1000.0
# Defaults, and what they allow a determined analyst (measured by simulation with the node's own
# sampler, on one person's yes/no attribute): one analyst spending the whole analyst budget (10
# counts at ε 0.5) guesses it right 72 % of the time, against 50 % by chance; colluding analysts
# spending the whole dataset budget, 95 %. ε-DP bounds any test by e^ε / (1 + e^ε). The dataset
# budget is the owner's real lever: lower it for sensitive data, raise it knowingly.
DEFAULT_EPSILON_PER_QUERY = 0.5
DEFAULT_MAX_EPSILON_PER_QUERY = 1.0
DEFAULT_ANALYST_BUDGET = 5.0
DEFAULT_DATASET_BUDGET = 20.0
DEFAULT_REFUSALS_PER_DAY = 100
MODES = ("dp", "exact")
QUOTA_NAMES = ("queries_per_day", "rows_scanned", "epsilon")
DP_KEYS = ("epsilon_per_query", "max_epsilon_per_query", "analyst_budget", "budget", "dataset_budget", "per")


def check_epsilon(value: Any, where: str, *, high: float, error=ValueError) -> float:
    """A finite ε in (0, high]; anything else (negative, zero, NaN, inf, absurd, bool) raises."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error(f"{where} must be a number")
    v = float(value)
    if not math.isfinite(v) or v <= 0 or v > high:
        raise error(f"{where} must be a finite number in (0, {high}]")
    return v


@dataclass(frozen=True)
class DisclosurePolicy:
    """How a dataset releases numbers: ``dp`` (default) or ``exact`` (the owner's recorded choice)."""

    mode: str = "dp"
    exact_reason: str = ""
    epsilon_per_query: float = DEFAULT_EPSILON_PER_QUERY
    max_epsilon_per_query: float = DEFAULT_MAX_EPSILON_PER_QUERY
    analyst_budget: float = DEFAULT_ANALYST_BUDGET
    dataset_budget: float = DEFAULT_DATASET_BUDGET
    per: str = "analyst"  # "analyst" (x dataset) or "analyst_purpose"

    @property
    def dp(self) -> bool:
        return self.mode == "dp"

    def budget_purpose(self, purpose: str) -> str:
        return purpose if self.per == "analyst_purpose" else ""

    def epsilon_for(self, asked: float, error=ValueError) -> float:
        """The ε a query runs at: the dataset's default when the analyst asks for none (0)."""
        if asked == 0:
            return self.epsilon_per_query
        eps = check_epsilon(asked, "epsilon", high=MAX_EPSILON_PER_QUERY, error=error)
        if eps < MIN_EPSILON_PER_QUERY:
            raise error(f"epsilon must be at least {MIN_EPSILON_PER_QUERY:g}")
        if eps > self.max_epsilon_per_query:
            raise error(f"epsilon {eps:g} is above this dataset's maximum per query "
                        f"({self.max_epsilon_per_query:g}); ask for less")
        return eps

    def to_dict(self) -> dict[str, Any]:
        """The shape of the ``[[datasets]]`` keys (for the registry, the rules hash and the certificate)."""
        if not self.dp:
            return {"disclosure": "exact", "exact_reason": self.exact_reason}
        return {"disclosure": "dp", "dp": {
            "epsilon_per_query": self.epsilon_per_query, "max_epsilon_per_query": self.max_epsilon_per_query,
            "analyst_budget": self.analyst_budget, "dataset_budget": self.dataset_budget, "per": self.per}}


def parse_policy(d: Mapping[str, Any], where: str, *, error=ValueError) -> DisclosurePolicy:
    """The disclosure keys of one ``[[datasets]]`` table."""
    if "differencing" in d:
        raise error(f"{where}.differencing is no longer a setting: exact-mode datasets are audited across all "
                    "analysts with no window, and DP datasets need no audit; remove it")
    mode = d.get("disclosure", "dp")
    if mode not in MODES:
        raise error(f"{where}.disclosure must be \"dp\" (differential privacy, the default) or \"exact\"")
    if mode == "exact":
        reason = d.get("exact_reason")
        if not isinstance(reason, str) or len(reason.strip()) < 8:
            raise error(f"{where}.exact_reason must say why this dataset releases exact figures "
                        "(a sentence; it is recorded in the certificate)")
        if d.get("dp") is not None:
            raise error(f"{where}.dp is for disclosure = \"dp\"; remove it or the exact mode")
        return DisclosurePolicy(mode="exact", exact_reason=reason.strip())
    spec = d.get("dp") or {}
    if not isinstance(spec, Mapping):
        raise error(f"{where}.dp must be a table: {{ epsilon_per_query = 1.0, analyst_budget = 10.0 }}")
    unknown = sorted(set(spec) - set(DP_KEYS))
    if unknown:
        raise error(f"{where}.dp has unknown key(s) {unknown}; known: {', '.join(k for k in DP_KEYS if k != 'budget')}")
    if "budget" in spec and "analyst_budget" in spec:
        raise error(f"{where}.dp: budget is the old name of analyst_budget; set one of them")
    eps = check_epsilon(spec.get("epsilon_per_query", DEFAULT_EPSILON_PER_QUERY), f"{where}.dp.epsilon_per_query",
                        high=MAX_EPSILON_PER_QUERY, error=error)
    if eps < MIN_EPSILON_PER_QUERY:
        raise error(f"{where}.dp.epsilon_per_query must be at least {MIN_EPSILON_PER_QUERY:g}")
    analyst = check_epsilon(spec.get("analyst_budget", spec.get("budget", DEFAULT_ANALYST_BUDGET)),
                            f"{where}.dp.analyst_budget", high=MAX_EPSILON_BUDGET, error=error)
    top = check_epsilon(spec.get("max_epsilon_per_query", max(eps, min(DEFAULT_MAX_EPSILON_PER_QUERY, analyst))),
                        f"{where}.dp.max_epsilon_per_query", high=MAX_EPSILON_PER_QUERY, error=error)
    dataset = check_epsilon(spec.get("dataset_budget", max(DEFAULT_DATASET_BUDGET, analyst)),
                            f"{where}.dp.dataset_budget", high=MAX_EPSILON_BUDGET, error=error)
    if top < eps:
        raise error(f"{where}.dp.max_epsilon_per_query must not be below epsilon_per_query")
    if top > analyst:
        raise error(f"{where}.dp: the ε of one query (up to {top:g}) must not exceed analyst_budget ({analyst:g})")
    if analyst > dataset:
        raise error(f"{where}.dp.analyst_budget must not exceed dataset_budget (what all analysts may spend)")
    per = str(spec.get("per", "analyst"))
    if per not in ("analyst", "analyst_purpose"):
        raise error(f"{where}.dp.per must be 'analyst' or 'analyst_purpose'")
    return DisclosurePolicy("dp", "", eps, top, analyst, dataset, per)


@dataclass(frozen=True)
class Dominance:
    n: int = 2
    percent: float = 85.0


def parse_dominance(spec: Any, where: str, *, error=ValueError) -> Dominance:
    if not isinstance(spec, Mapping) or set(spec) - {"n", "percent"}:
        raise error(f"{where}.dominance must be a table {{ n = 2, percent = 85 }}")
    n, pct = spec.get("n", 2), spec.get("percent", 85)
    if isinstance(n, bool) or not isinstance(n, int) or isinstance(pct, bool) or not isinstance(pct, (int, float)) \
            or not (1 <= n <= 10 and 0 < pct <= 100):
        raise error(f"{where}.dominance needs an integer 1 <= n <= 10 and 0 < percent <= 100")
    return Dominance(int(n), float(pct))


@dataclass(frozen=True)
class DisclosureSettings:
    """The node-wide part: grant quotas, and how many refused submissions an analyst may make per day."""

    # By "principal/dataset/purpose" (a string key: the config is digested as JSON into the audit log).
    quotas: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    refusals_per_day: int = DEFAULT_REFUSALS_PER_DAY

    def quota(self, principal: str, dataset: str, purpose: str) -> Mapping[str, float]:
        return self.quotas.get(f"{principal}/{dataset.lower()}/{purpose}", {})


def parse_disclosure(raw: Mapping[str, Any], *, error=ValueError) -> DisclosureSettings:
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
    section = raw.get("disclosure", {})
    if not isinstance(section, Mapping) or set(section) - {"refusals_per_day"}:
        raise error("[disclosure] may set only refusals_per_day (per-dataset choices go in [[datasets]])")
    refusals = section.get("refusals_per_day", DEFAULT_REFUSALS_PER_DAY)
    if isinstance(refusals, bool) or not isinstance(refusals, int) or not 1 <= refusals <= 1_000_000:
        raise error("disclosure.refusals_per_day must be an integer between 1 and 1000000")
    return DisclosureSettings(quotas, refusals)
