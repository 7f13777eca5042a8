"""Where disclosure control and metering meet the query lifecycle (called by :mod:`veil_server.node`).

- submission (inside the query's creation transaction): DP-supported aggregates, budget and
  quota checks (nothing reserved), ledger ``submitted``;
- approval (inside the approval transaction): ledger ``approved``;
- execution, before encryption: DP noise, or (without DP) dominance suppression;
- release: the differencing audit (without DP) under a per analyst × dataset lock held until
  the release commits (shared by replicas: :meth:`StateStore.named_lock`), so two racing
  queries are audited against each other, whichever replica runs them; then, inside the
  SUCCEEDED transaction, the ε debit, the release history and the ledger ``released`` row.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

from ..query.catalog import Dataset
from ..query.engine import AggregateResult, DuckDBEngine
from ..query.plan import QueryPlan
from ..state.store import QueryRecord, StateStore
from . import differencing, dominance, dp
from .budget import BudgetState, PrivacyBudget
from .metering import Ledger
from .settings import DisclosureSettings

log = logging.getLogger("veil.disclosure")


class DisclosureControl:
    def __init__(self, store: StateStore, engine, settings: DisclosureSettings | None) -> None:
        self.settings = settings or DisclosureSettings()
        self.engine = engine
        self.budget = PrivacyBudget(store)
        self.ledger = Ledger(store)
        self.history = differencing.ReleaseHistory(store)
        self.store = store

    # -- policy ---------------------------------------------------------------------------

    def epsilon(self, ds: Dataset) -> float:
        s = self.settings.for_dataset(ds.name).dp
        return s.epsilon_per_query if s else 0.0

    def budget_state(self, principal: str, ds: Dataset, purpose: str = "") -> BudgetState | None:
        s = self.settings.for_dataset(ds.name).dp
        if s is None:
            return None
        return self.budget.state(principal, ds.name.lower(), s.budget_purpose(purpose), s.budget)

    def admit(self, rec: QueryRecord, plan: QueryPlan, ds: Dataset, *, weighted: bool, rows: int) -> None:
        """In the submission's transaction: refuse what cannot be released; count the query."""
        s = self.settings.for_dataset(ds.name).dp
        eps = 0.0
        if s is not None:
            dp.check_supported(plan, weighted=weighted)
            eps = s.epsilon_per_query
            self.budget.check(rec.principal, ds.name.lower(), s.budget_purpose(rec.purpose), epsilon=eps,
                              limit=s.budget)
        self.ledger.check_quota(self.settings.quota(rec.principal, ds.name, rec.purpose), principal=rec.principal,
                                dataset=ds.name, purpose=rec.purpose, rows=rows, epsilon=eps)
        self.ledger.record("submitted", principal=rec.principal, dataset=ds.name, purpose=rec.purpose,
                           query_id=rec.id, submitted=1)

    def approved(self, rec: QueryRecord) -> None:
        self.ledger.record("approved", principal=rec.principal, dataset=rec.dataset, purpose=rec.purpose,
                           query_id=rec.id, approved=1)

    # -- execution ------------------------------------------------------------------------

    def _duckdb(self, ds: Dataset) -> DuckDBEngine | None:
        eng = self.engine.engine_for(ds) if hasattr(self.engine, "engine_for") else self.engine
        return eng if isinstance(eng, DuckDBEngine) else None

    def prepare(self, plan: QueryPlan, ds: Dataset, stats: AggregateResult) -> tuple[AggregateResult, set]:
        """Statistics to release and groups to suppress beyond k: noise with DP, dominance without."""
        conf = self.settings.for_dataset(ds.name)
        if conf.dp is not None:
            return dp.noisy_result(plan, ds, stats, conf.dp.epsilon_per_query), set()
        if conf.dominance:
            eng = self._duckdb(ds)
            if eng is None:
                log.warning("dominance rule on %s skipped: not a DuckDB source", ds.name)
                return stats, set()
            return stats, dominance.dominated_groups(eng, ds, plan, dict(conf.dominance))
        return stats, set()

    @contextmanager
    def releasing(self, rec: QueryRecord, plan: QueryPlan, ds: Dataset, keys: list[tuple[str, ...]],
                  certificate: str = "") -> Iterator[None]:
        """Audit the release (without DP) and hold the analyst × dataset lock until it commits."""
        conf = self.settings.for_dataset(ds.name)
        # Held across the audit and the release's commit, by every replica sharing the state.
        with self.store.named_lock(f"release:{rec.principal}:{ds.name.lower()}"):
            if conf.dp is None and conf.differencing:
                eng = self._duckdb(ds)
                if eng is None:
                    log.warning("differencing audit on %s skipped: not a DuckDB source", ds.name)
                else:
                    new = differencing.Release(plan, keys, certificate)
                    history = self.history.recent(rec.principal, ds.name, conf.history)
                    # A repeat of a remembered release on the same data reveals nothing new: no scan.
                    if not any(new.repeats(h) for h in history):
                        differencing.audit(eng, ds, new, history, k=ds.min_group_size, strict=conf.strict,
                                           linear=conf.linear)
            yield

    def released(self, rec: QueryRecord, plan: QueryPlan, ds: Dataset, keys: list[tuple[str, ...]], *,
                 counters: dict[str, int], rows: int, ciphertexts: int, certificate: str = "") -> None:
        """In the SUCCEEDED transaction: debit ε (raises if the budget is gone), remember, meter."""
        s = self.settings.for_dataset(ds.name).dp
        eps = 0.0
        if s is not None:
            eps = s.epsilon_per_query
            self.budget.debit(rec.id, rec.principal, ds.name.lower(), s.budget_purpose(rec.purpose), epsilon=eps,
                              limit=s.budget)
        self.history.add(rec.id, rec.principal, ds.name, plan, keys, certificate)
        cells_per_group = max(1, len(plan.aggregates))
        self.ledger.record("released", principal=rec.principal, dataset=ds.name, purpose=rec.purpose,
                           query_id=rec.id, released=1, rows_scanned=rows,
                           cells_released=counters.get("cells", 0),
                           cells_suppressed=counters.get("groups_suppressed", 0) * cells_per_group,
                           micro_epsilon=round(eps * 1_000_000), ciphertexts=ciphertexts)


def released_keys(plan: QueryPlan, result) -> list[tuple[str, ...]]:
    """The released groups of a result, as key tuples in the plan's group-key order."""
    groups = [o for o in plan.output if o.kind == "group"]
    out = []
    for row in result.rows:
        if row.suppressed:
            continue
        t: list[str] = [""] * len(plan.group_keys)
        for o, v in zip(groups, row.keys):
            t[o.index] = v
        out.append(tuple(t))
    return out
