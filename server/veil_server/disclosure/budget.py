"""The privacy budgets: ε per analyst × dataset (× purpose when the dataset says so), and ε per
dataset across every analyst and purpose, persistent.

Accounting is pure ε-differential privacy with basic (additive) composition: a release at ε
adds ε to both budgets, and the guarantee for a dataset is ε-DP with ε = its total debits. We
chose it over zCDP or Rényi accounting because every mechanism Veil releases through is pure
(discrete Laplace, also summed across federation members), for which addition is exact rather
than an upper bound after a conversion; there is no δ to explain, and an owner's ``dataset_budget``
is then literally the ε bound of everything the dataset has ever released to anyone. The dataset
budget is what stops colluding analysts: two analysts each within their own budget together
spend the dataset's.

A debit is written in the same SQLite transaction that moves the query to SUCCEEDED and stores
its result (the node's release ``write_ahead``): the debit commits iff the result is released,
and a result is never released without its debit. The check ``spent + ε <= limit`` and the
update run under the store's write lock inside that transaction, so queries racing for the
last of a budget cannot overspend. A refund marks a debit refunded and is allowed only for a
query whose result never left the node (no stored result). ε is kept in micro-ε integers so
sums are exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from ..state.store import StateStore, now_us
from .settings import MAX_EPSILON_BUDGET, MAX_EPSILON_PER_QUERY, check_epsilon

MICRO = 1_000_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dp_debits (
    query_id TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    dataset TEXT NOT NULL,
    purpose TEXT NOT NULL,
    micro_epsilon INTEGER NOT NULL,
    refunded INTEGER NOT NULL DEFAULT 0,
    at_us INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dp_debits_by_account ON dp_debits (principal, dataset, purpose);
CREATE INDEX IF NOT EXISTS dp_debits_by_dataset ON dp_debits (dataset)
"""


class BudgetExhausted(ResourceExhausted):
    default_reason = "PRIVACY_BUDGET_EXHAUSTED"


def to_micro(eps: float) -> int:
    """ε in millionths, rounded up: the accounting never charges less than was spent."""
    return math.ceil(eps * MICRO - 1e-9)


@dataclass(frozen=True)
class BudgetState:
    principal: str
    dataset: str
    purpose: str  # "" when the budget is per analyst × dataset
    limit: float
    spent: float
    dataset_limit: float = 0.0  # what every analyst together may spend on the dataset
    dataset_spent: float = 0.0

    @property
    def remaining(self) -> float:
        """What this analyst can still spend: the smaller of its own and the dataset's remainder."""
        own = max(0, to_micro(self.limit) - to_micro(self.spent))
        if self.dataset_limit:
            own = min(own, max(0, to_micro(self.dataset_limit) - to_micro(self.dataset_spent)))
        return own / MICRO

    @property
    def dataset_remaining(self) -> float:
        return max(0.0, (to_micro(self.dataset_limit) - to_micro(self.dataset_spent)) / MICRO)


class PrivacyBudget:
    def __init__(self, store: StateStore) -> None:
        self.store = store
        store.ensure_schema(_SCHEMA)

    def spent_micro(self, principal: str, dataset: str, purpose: str) -> int:
        with self.store.reading() as db:
            (n,) = db.execute("SELECT COALESCE(SUM(micro_epsilon), 0) FROM dp_debits WHERE principal=? AND "
                              "dataset=? AND purpose=? AND refunded=0", (principal, dataset.lower(), purpose)).fetchone()
        return int(n)

    def dataset_spent_micro(self, dataset: str) -> int:
        with self.store.reading() as db:
            (n,) = db.execute("SELECT COALESCE(SUM(micro_epsilon), 0) FROM dp_debits WHERE dataset=? AND refunded=0",
                              (dataset.lower(),)).fetchone()
        return int(n)

    def state(self, principal: str, dataset: str, purpose: str, limit: float,
              dataset_limit: float = 0.0) -> BudgetState:
        return BudgetState(principal, dataset, purpose, limit, self.spent_micro(principal, dataset, purpose) / MICRO,
                           dataset_limit, self.dataset_spent_micro(dataset) / MICRO if dataset_limit else 0.0)

    def check(self, principal: str, dataset: str, purpose: str, *, epsilon: float, limit: float,
              dataset_limit: float | None = None) -> None:
        """Refuse now if either budget cannot cover ``epsilon`` (nothing is reserved)."""
        self._check(principal, dataset, purpose, *_valid(epsilon, limit), _valid_total(dataset_limit))

    def _check(self, principal: str, dataset: str, purpose: str, eps: int, lim: int, total: int | None) -> None:
        spent = self.spent_micro(principal, dataset, purpose)
        if spent + eps > lim:
            raise _exhausted(dataset, purpose, lim - spent, "analyst")
        if total is not None:
            used = self.dataset_spent_micro(dataset)
            if used + eps > total:
                raise _exhausted(dataset, "", total - used, "dataset")

    def debit(self, query_id: str, principal: str, dataset: str, purpose: str, *, epsilon: float,
              limit: float, dataset_limit: float | None = None) -> None:
        """Charge ``epsilon`` for ``query_id`` to the analyst's and the dataset's budgets; joins
        the caller's transaction (the release), whose write lock orders it against every other debit."""
        eps, lim = _valid(epsilon, limit)
        total = _valid_total(dataset_limit)
        with self.store.joined_tx() as db:
            row = db.execute("SELECT refunded FROM dp_debits WHERE query_id=?", (query_id,)).fetchone()
            if row is not None:
                raise FailedPrecondition("this query was already charged", reason="ALREADY_CHARGED")
            self._check(principal, dataset, purpose, eps, lim, total)
            db.execute("INSERT INTO dp_debits VALUES (?,?,?,?,?,0,?)",
                       (query_id, principal, dataset.lower(), purpose, eps, now_us()))

    def charge_failure(self, query_id: str, principal: str, dataset: str, purpose: str, *, epsilon: float) -> None:
        """Charge a query that failed after it ran, whatever the budgets have left (joins the
        failure's transaction; a query charged already is not charged twice)."""
        eps, _ = _valid(epsilon, MAX_EPSILON_BUDGET)
        with self.store.joined_tx() as db:
            if db.execute("SELECT 1 FROM dp_debits WHERE query_id=?", (query_id,)).fetchone() is None:
                db.execute("INSERT INTO dp_debits VALUES (?,?,?,?,?,0,?)",
                           (query_id, principal, dataset.lower(), purpose, eps, now_us()))

    def refund(self, query_id: str) -> bool:
        """Refund a debit whose query released nothing. Returns False if there was nothing to refund."""
        with self.store.joined_tx() as db:
            row = db.execute("SELECT refunded FROM dp_debits WHERE query_id=?", (query_id,)).fetchone()
            if row is None or row[0]:
                return False
            released = db.execute("SELECT 1 FROM results WHERE query_id=?", (query_id,)).fetchone()
            if released is not None:
                raise FailedPrecondition("a result left the node: its ε is spent for good", reason="NOT_REFUNDABLE")
            db.execute("UPDATE dp_debits SET refunded=1 WHERE query_id=?", (query_id,))
            return True

    def debits(self) -> list[tuple[str, str, str, str, int, int]]:
        with self.store.reading() as db:
            return db.execute("SELECT query_id, principal, dataset, purpose, micro_epsilon, refunded "
                              "FROM dp_debits ORDER BY at_us").fetchall()


def _valid(epsilon: float, limit: float) -> tuple[int, int]:
    def err(msg: str) -> InvalidArgument:
        return InvalidArgument(msg, reason="INVALID_EPSILON")

    eps = check_epsilon(epsilon, "epsilon", high=MAX_EPSILON_PER_QUERY, error=err)
    lim = check_epsilon(limit, "budget", high=MAX_EPSILON_BUDGET, error=err)
    return to_micro(eps), to_micro(lim)


def _valid_total(dataset_limit: float | None) -> int | None:
    if dataset_limit is None:
        return None
    return to_micro(check_epsilon(dataset_limit, "dataset budget", high=MAX_EPSILON_BUDGET,
                                  error=lambda m: InvalidArgument(m, reason="INVALID_EPSILON")))


def _exhausted(dataset: str, purpose: str, left_micro: int, which: str) -> BudgetExhausted:
    whose = ("your privacy budget" if which == "analyst"
             else "the dataset's total privacy budget (what all analysts together may spend)")
    fix = ("ask for a smaller epsilon, or ask the owner for more budget" if which == "analyst"
           else "the owner alone can raise it; nothing more can be released from this dataset until then")
    return BudgetExhausted(
        f"{whose} on datasets/{dataset} cannot cover this query ({max(0, left_micro) / MICRO:g} ε left); {fix}",
        metadata={"dataset": dataset, "quota": "epsilon_budget", "budget": which,
                  **({"purpose": purpose} if purpose else {})})
