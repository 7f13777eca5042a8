"""Where disclosure control and metering meet the query lifecycle (called by :mod:`veil_server.node`).

- submission (inside the query's creation transaction): the refusal quota, then per mode --
  DP: the query's ε (the dataset's default, or what the analyst asked up to the dataset's
  maximum) and both budgets (analyst, dataset), nothing reserved; exact: the plan's populations
  must be boxes of the declared domains and must not cross the dataset's history (structural
  refusals only) -- then grant quotas and the ledger's ``submitted``;
- approval (inside the approval transaction): ledger ``approved``;
- execution, before anything is encrypted: DP noise on every statistic, encrypted-input
  sub-cells included; exact mode: the dominance rule;
- release: exact mode runs its audit under a per-dataset lock held until the release commits
  (shared by replicas: :meth:`StateStore.named_lock`), so two racing releases on one dataset are
  audited against each other whoever asked them; then, inside the SUCCEEDED transaction, the ε
  debits (DP) or the history's new populations (exact), and the ledger's ``released``.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

from ..query.catalog import Dataset
from ..query.domain import group_domain
from ..query.stats import AggregateResult
from ..errors import InvalidArgument, PolicyViolation, ResourceExhausted, VeilError
from ..query.encrypted_input import statistics_plan
from ..query.plan import QueryPlan
from ..state.store import QueryRecord, StateStore
from . import dominance, dp, history, lattice
from .budget import BudgetState, PrivacyBudget, to_micro
from .metering import DAY_US, Ledger
from .settings import DisclosureSettings

if TYPE_CHECKING:
    from ..config import Principal

log = logging.getLogger("veil.disclosure")

# Refusals that say nothing of the analyst's intent are not charged to the refusal quota.
UNCHARGED = {"REFUSAL_QUOTA_EXCEEDED", "RATE_LIMITED", "AUDIT_UNAVAILABLE", "STORAGE_FULL", "CONCURRENCY_LIMIT"}


class RefusalQuotaExceeded(ResourceExhausted):
    default_reason = "REFUSAL_QUOTA_EXCEEDED"


@dataclass
class Prepared:
    """What execution hands to the release: the statistics to release and how."""

    epsilon: float = 0.0
    dp: dp.DpRelease | None = None
    weighted: list = field(default_factory=list)  # [(WeightedSpec, AggregateResult)] (noisy under DP)
    dominated: set = field(default_factory=set)  # exact mode: cells the dominance rule suppresses
    zero: set = field(default_factory=set)  # exact mode: encrypted-input sub-cells it leaves out


@dataclass
class Audited:
    """The exact-mode audit's outcome: what to suppress, and the populations to record."""

    suppress: set = field(default_factory=set)
    zero: set = field(default_factory=set)  # encrypted-input sub-cells (group keys + category) left out
    populations: list = field(default_factory=list)
    cell_flags: list = field(default_factory=list)  # each plan cell released, in plan order (the log keeps it)


class DisclosureControl:
    def __init__(self, store: StateStore, engine, settings: DisclosureSettings | None) -> None:
        self.settings = settings or DisclosureSettings()
        self.engine = engine
        self.budget = PrivacyBudget(store)
        self.ledger = Ledger(store)
        self.history = history.ExactHistory(store)
        self.store = store
        self._atoms: dict[tuple[str, str, str], lattice.AtomTable] = {}
        self._atoms_lock = threading.Lock()

    # -- policy ---------------------------------------------------------------------------

    def epsilon(self, ds: Dataset, asked: float = 0.0) -> float:
        """The ε a query on ``ds`` runs at (0 for exact mode)."""
        if not ds.disclosure.dp:
            return 0.0
        return ds.disclosure.epsilon_for(asked, error=lambda m: InvalidArgument(m, reason="INVALID_EPSILON"))

    def budget_state(self, principal: str, ds: Dataset, purpose: str = "") -> BudgetState | None:
        p = ds.disclosure
        if not p.dp:
            return None
        return self.budget.state(principal, ds.name.lower(), p.budget_purpose(purpose), p.analyst_budget,
                                 p.dataset_budget)

    def check_refusals(self, principal: "Principal") -> None:
        """Refuse every submission of an analyst who was refused too often today."""
        if principal.role.value != "analyst":
            return
        if self.ledger.refusals_since(principal.name, _day_start()) >= self.settings.refusals_per_day:
            raise RefusalQuotaExceeded(
                f"{self.settings.refusals_per_day} of your submissions were refused today; the owners can see them "
                "in the usage report. Fix the queries (each refusal names its rule) and try again tomorrow",
                metadata={"quota": "refusals_per_day"})

    def refused(self, principal: str, err: VeilError, *, dataset: str, purpose: str, query_id: str = "") -> None:
        """Count an analyst's refusal toward its quota and the owner's usage report (its own
        transaction, best effort: the audit log has the refusal in any case)."""
        if err.reason in UNCHARGED:
            return
        try:
            with self.store.joined_tx():
                self.ledger.record("refused", principal=principal, dataset=dataset, purpose=purpose,
                                   query_id=query_id)
        except Exception:  # noqa: BLE001 -- the refusal stands; only its count is lost
            log.exception("could not count a refusal")

    def admit(self, rec: QueryRecord, plan: QueryPlan, ds: Dataset, *, weighted: list, rows: int,
              epsilon: float) -> None:
        """In the submission's transaction: refuse what cannot be released; count the query."""
        p = ds.disclosure
        if p.dp:
            self.budget.check(rec.principal, ds.name.lower(), p.budget_purpose(rec.purpose), epsilon=epsilon,
                              limit=p.analyst_budget, dataset_limit=p.dataset_budget)
        else:
            self.check_exact(plan, ds, weighted)
        self.ledger.check_quota(self.settings.quota(rec.principal, ds.name, rec.purpose), principal=rec.principal,
                                dataset=ds.name, purpose=rec.purpose, rows=rows, epsilon=epsilon)
        self.ledger.record("submitted", principal=rec.principal, dataset=ds.name, purpose=rec.purpose,
                           query_id=rec.id, submitted=1)

    def check_exact(self, plan: QueryPlan, ds: Dataset, weighted: list) -> None:
        """Exact mode's structural refusals: boxes only, nesting with the dataset's history."""
        lat = lattice.lattice_for(ds)
        boxes = self._populations(plan, ds, lat, weighted)
        forest = self.history.forest(ds.name, lat)
        history.check_structure(forest, [b for b, _ in boxes])

    def populations(self, plan: QueryPlan, ds: Dataset) -> list:
        """The boxes of a plan's cells (no encrypted-input sub-cells), as the history records them."""
        return [b for b, _ in self._populations(plan, ds, lattice.lattice_for(ds), [])]

    @staticmethod
    def release_columns(plan: QueryPlan) -> frozenset[str]:
        """What a released cell of ``plan`` (no encrypted-input sums) was released for."""
        return frozenset(["", *history.release_columns([(a.function in dominance.REVEALING, a.column)
                                                        for a in plan.aggregates if a.column])])

    def _populations(self, plan: QueryPlan, ds: Dataset, lat: lattice.Lattice, weighted: list):
        """(box, (group keys, category or None)) of every cell and encrypted-input sub-cell."""
        where = lattice.check_plan(plan, ds)
        domain = group_domain(plan, ds)
        cells = lat.group_cells(plan, where, domain)
        out = [(b, (keys, None)) for b, keys in zip(cells, domain)]
        for spec in weighted:
            if spec.key_column:
                lat.column(spec.key_column)
                for b, keys in zip(cells, domain):
                    out += [(lat.refine(b, spec.key_column, cat), (keys, cat)) for cat in spec.categories]
        return out

    def approved(self, rec: QueryRecord) -> None:
        self.ledger.record("approved", principal=rec.principal, dataset=rec.dataset, purpose=rec.purpose,
                           query_id=rec.id, approved=1)

    def accuracy(self, plan: QueryPlan, ds: Dataset, epsilon: float, weighted: list = ()) -> list[dict]:
        """Per aggregate output column, the noise a release at ``epsilon`` would carry (no data read)."""
        if not ds.disclosure.dp:
            return []
        extra = sum(len(dp.weighted_statistics(s)) for s in weighted)
        release = dp.noisy_release(plan, ds, AggregateResult([], 0), epsilon, extra_statistics=extra, sample=False)
        return [dict(column=o.name, function=plan.aggregates[o.index].function.value,
                     **release.column_noise(plan.aggregates[o.index], ds.min_group_size))
                for o in plan.output if o.kind == "aggregate"]

    # -- execution ------------------------------------------------------------------------

    def prepare(self, plan: QueryPlan, ds: Dataset, stats: AggregateResult, weighted: list,
                epsilon: float) -> Prepared:
        """Statistics to release: noisy (DP), or exact with the dominance rule applied."""
        if ds.disclosure.dp:
            specs = [s for s, _ in weighted]
            extra = sum(len(dp.weighted_statistics(s)) for s in specs)
            release = dp.noisy_release(plan, ds, stats, epsilon, extra_statistics=extra)
            noisy = []
            for spec, st in weighted:
                domain = group_domain(plan, ds)
                if spec.key_column:
                    domain = [keys + (cat,) for keys in domain for cat in spec.categories]
                noisy.append((spec, dp.noisy_weighted(spec, plan, ds, st, epsilon / release.m, domain)))
            return Prepared(epsilon, release, noisy)
        dominated = dominance.dominated_groups(self.engine, ds, plan)
        zero: set = set()
        for spec, _ in weighted:  # an encrypted-input sum over a dominated (sub-)cell reveals it too
            cells = dominance.dominated_groups(self.engine, ds, statistics_plan(plan, spec))
            if spec.key_column:
                zero |= cells
            else:
                dominated |= cells
        return Prepared(0.0, None, list(weighted), dominated, zero)

    @contextmanager
    def releasing(self, rec: QueryRecord, plan: QueryPlan, ds: Dataset, stats: AggregateResult,
                  prepared: Prepared, certificate: str = "") -> Iterator[Audited]:
        """Exact mode: audit under the dataset's lock, held until the release commits (yields
        what to suppress). DP: nothing to audit (the budget is debited in the release)."""
        if ds.disclosure.dp:
            yield Audited()
            return
        with self.store.named_lock(f"release:{ds.name.lower()}"):
            try:
                yield self._audit(plan, ds, stats, prepared, certificate)
            except BaseException:
                self.history.forget(ds.name)  # the in-memory family may hold what did not commit
                raise

    def _audit(self, plan: QueryPlan, ds: Dataset, stats: AggregateResult, prepared: Prepared,
               certificate: str) -> Audited:
        lat = lattice.lattice_for(ds)
        populations = self._populations(plan, ds, lat, [s for s, _ in prepared.weighted])
        forest = self.history.forest(ds.name, lat)
        history.check_structure(forest, [b for b, _ in populations])
        if ds.consent_scope is not None and ds.consent_scope.snapshot:
            self.history.check_snapshot(ds.name, ds.consent_scope.snapshot, [b for b, _ in populations], lat)
        atoms = self._atom_table(ds, certificate)
        k = ds.min_group_size
        by_key = {g.keys: g for g in stats.groups}
        # An encrypted-input sum without a key column is a cell of each group too: each of its
        # value columns needs k values there, like an aggregate of the query.
        unkeyed = [c for spec, _ in prepared.weighted if not spec.key_column for c in spec.value_columns]
        keyed = [c for spec, _ in prepared.weighted if spec.key_column for c in spec.value_columns]
        columns = history.release_columns([(a.function in dominance.REVEALING, a.column) for a in plan.aggregates
                                           if a.column] + [(True, c) for c in unkeyed])
        dominated = dominance.remainder_check(self.engine, ds, plan, lat, extra_columns=unkeyed + keyed)
        cells = [(b, keys) for b, (keys, cat) in populations if cat is None]
        scored = [{g.keys: g for g in st.groups} for spec, st in prepared.weighted if not spec.key_column]
        candidates = []
        for b, keys in cells:
            g = by_key.get(keys)
            ok = (g is not None and g.rows >= k and all(c.count >= k for c in g.columns.values())
                  and keys not in prepared.dominated
                  and all((w := s.get(keys)) is not None and all(c.count >= k for c in w.columns.values())
                          for s in scored))
            candidates.append(history.Candidate(b, ok))
        released = history.audit(forest, atoms, candidates, k=k, columns=columns, dominated=dominated)
        told = frozenset(["", *columns])  # what a released cell was released for (the history's columns)
        out = Audited(populations=[(b, told if r else frozenset()) for (b, _), r in zip(cells, released)])
        out.suppress = {keys for (_, keys), r in zip(cells, released) if not r}
        out.cell_flags = list(released)
        # Encrypted-input sub-cells, inside the released cells only (the others release nothing).
        for spec, st in prepared.weighted:
            if not spec.key_column:
                continue
            sub = {g.keys: g for g in st.groups}
            subs = [(b, keys, cat) for b, (keys, cat) in populations if cat is not None]
            live = [(b, keys, cat) for b, keys, cat in subs if keys not in out.suppress]
            # A sub-cell tells its value columns' sums: k rows with a value of each, not dominated,
            # and its remainders checked in those columns' families.
            sub_columns = history.release_columns([(True, c) for c in spec.value_columns])

            def primary(keys: tuple, cat: str) -> bool:
                g = sub.get(keys + (cat,))
                return (g is not None and g.rows >= k and all(c.count >= k for c in g.columns.values())
                        and keys + (cat,) not in prepared.zero)

            flags = history.audit(forest, atoms, [history.Candidate(b, primary(keys, cat), sub_columns)
                                                  for b, keys, cat in live], k=k, columns=columns,
                                  dominated=dominated)
            out.zero |= {keys + (cat,) for (_, keys, cat), r in zip(live, flags) if not r}
            out.populations += [(b, frozenset(["", *sub_columns]) if r else frozenset())
                                for (b, _, _), r in zip(live, flags)]
            for b, keys, cat in subs:
                if keys in out.suppress:
                    forest.insert(b, False)
                    out.populations.append((b, False))
        return out

    @contextmanager
    def model_releasing(self, ds: Dataset, cells: list[tuple[QueryPlan, AggregateResult]],
                        certificate: str = "", columns: list[str] | None = None) -> Iterator[list]:
        """Exact mode, models (issue 18): a model's statistics are aggregates over the cells of
        ``cells`` (each categorical term's levels, and each pair of them crossed; the whole table
        without one). They pass the same structural check and history audit as a query's cells,
        under the dataset's lock held until the release commits; a model cannot suppress a cell,
        so one that would be suppressed refuses the release (``MODEL_CELLS_SUPPRESSED``, the
        k rule's own "< k" signal, as suppression gives). Yields the populations to record.

        ``columns``: the model's columns. Each cell releases sums of them (a NULL counts as the
        declared range's midpoint, a public constant, so the sum is as good as one over the
        non-null values): each cell needs k values of each in every remainder, as a SUM does, and
        is recorded as known for exactly those columns."""
        families = history.release_columns([(True, c) for c in columns or []])
        with self.store.named_lock(f"release:{ds.name.lower()}"):
            try:
                lat = lattice.lattice_for(ds)
                forest = self.history.forest(ds.name, lat)
                atoms = self._atom_table(ds, certificate)
                out: list = []
                for plan, stats in cells:
                    populations = self._populations(plan, ds, lat, [])
                    history.check_structure(forest, [b for b, _ in populations])
                    if ds.consent_scope is not None and ds.consent_scope.snapshot:  # consent changes difference
                        self.history.check_snapshot(ds.name, ds.consent_scope.snapshot, [b for b, _ in populations],
                                                    lat)
                    by_key = {g.keys: g for g in stats.groups}
                    candidates = [history.Candidate(b, (g := by_key.get(keys)) is not None
                                                    and g.rows >= ds.min_group_size)
                                  for b, (keys, _) in populations]
                    released = history.audit(forest, atoms, candidates, k=ds.min_group_size, columns=families)
                    if not all(released):
                        raise PolicyViolation(
                            f"a model on these categories would release a population of datasets/{ds.name} that "
                            "fewer than k rows (or k values of one of its columns) make up, or that released "
                            "tables leave, which exact mode suppresses; use fewer or coarser categorical terms",
                            reason="MODEL_CELLS_SUPPRESSED", metadata={"dataset": ds.name})
                    out += [(b, frozenset(["", *families])) for b, _ in populations]
                yield out
            except BaseException:
                self.history.forget(ds.name)  # the in-memory family may hold what did not commit
                raise

    def _atom_table(self, ds: Dataset, certificate: str) -> lattice.AtomTable:
        # A consent dataset's atoms are those of the consented rows: one table per consent snapshot.
        snapshot = ds.consent_scope.snapshot if ds.consent_scope is not None else ""
        key = (ds.name.lower(), certificate or ds.source, snapshot)
        with self._atoms_lock:
            table = self._atoms.get(key)
        if table is None:
            table = lattice.build_atoms(self.engine, ds)
            with self._atoms_lock:
                if len(self._atoms) > 64:
                    self._atoms.clear()
                self._atoms[key] = table
        return table

    def failed(self, rec: QueryRecord, ds: Dataset | None, reason: str = "") -> None:
        """In the FAILED transaction of a query that reached execution: DP datasets charge its ε
        (beyond the budget if need be: a failure is never a free answer). Not charged: a failure
        whose cause is independent of the rows (the budget ran out between submission and
        release: every charge is a fixed ε, so that says nothing about the data)."""
        if ds is None or not ds.disclosure.dp or reason in FAILURES_INDEPENDENT_OF_DATA:
            return
        from veil.v1 import query_pb2

        asked = query_pb2.SubmitQueryRequest.FromString(rec.inputs).epsilon if rec.inputs else 0.0
        eps = self.epsilon(ds, asked) if asked else ds.disclosure.epsilon_per_query
        self.budget.charge_failure(rec.id, rec.principal, ds.name.lower(), ds.disclosure.budget_purpose(rec.purpose),
                                   epsilon=eps)

    def released(self, rec: QueryRecord, plan: QueryPlan, ds: Dataset, *, prepared: Prepared, audited: Audited,
                 counters: dict[str, int], rows: int, ciphertexts: int) -> None:
        """In the SUCCEEDED transaction: debit ε (raises if a budget is gone) or record the
        populations, and meter."""
        p = ds.disclosure
        if p.dp:
            self.budget.debit(rec.id, rec.principal, ds.name.lower(), p.budget_purpose(rec.purpose),
                              epsilon=prepared.epsilon, limit=p.analyst_budget, dataset_limit=p.dataset_budget)
        else:
            self.history.record(ds.name, rec.id, audited.populations)
            if ds.consent_scope is not None and ds.consent_scope.snapshot:
                self.history.record_snapshot(ds.name, rec.id, ds.consent_scope.snapshot)
        cells_per_group = max(1, len(plan.aggregates))
        self.ledger.record("released", principal=rec.principal, dataset=ds.name, purpose=rec.purpose,
                           query_id=rec.id, released=1, rows_scanned=rows,
                           cells_released=counters.get("cells", 0),
                           cells_suppressed=counters.get("groups_suppressed", 0) * cells_per_group,
                           micro_epsilon=to_micro(prepared.epsilon), ciphertexts=ciphertexts)


# Failure reasons whose occurrence depends on the budgets' state only, never on the rows.
FAILURES_INDEPENDENT_OF_DATA = frozenset({"PRIVACY_BUDGET_EXHAUSTED"})


def _day_start() -> int:
    from ..state.store import now_us

    now = now_us()
    return now - now % DAY_US


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
