"""The privacy budget: ε per analyst × dataset (× purpose when the dataset says so), persistent.

A debit is written in the same SQLite transaction that moves the query to SUCCEEDED and stores
its result (the node's release ``write_ahead``): the debit commits iff the result is released,
and a result is never released without its debit. The check ``spent + ε <= limit`` and the
update run under the store's write lock inside that transaction, so queries racing for the
last of a budget cannot overspend. A refund marks a debit refunded and is allowed only for a
query whose result never left the node (no stored result). ε is kept in micro-ε integers so
sums are exact.
"""

from __future__ import annotations

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
CREATE INDEX IF NOT EXISTS dp_debits_by_account ON dp_debits (principal, dataset, purpose)
"""


class BudgetExhausted(ResourceExhausted):
    default_reason = "PRIVACY_BUDGET_EXHAUSTED"


def to_micro(eps: float) -> int:
    return round(eps * MICRO)


@dataclass(frozen=True)
class BudgetState:
    principal: str
    dataset: str
    purpose: str  # "" when the budget is per analyst × dataset
    limit: float
    spent: float

    @property
    def remaining(self) -> float:
        return max(0.0, (to_micro(self.limit) - to_micro(self.spent)) / MICRO)


class PrivacyBudget:
    def __init__(self, store: StateStore) -> None:
        self.store = store
        store.ensure_schema(_SCHEMA)

    def spent_micro(self, principal: str, dataset: str, purpose: str) -> int:
        with self.store.reading() as db:
            (n,) = db.execute("SELECT COALESCE(SUM(micro_epsilon), 0) FROM dp_debits WHERE principal=? AND "
                              "dataset=? AND purpose=? AND refunded=0", (principal, dataset.lower(), purpose)).fetchone()
        return int(n)

    def state(self, principal: str, dataset: str, purpose: str, limit: float) -> BudgetState:
        return BudgetState(principal, dataset, purpose, limit, self.spent_micro(principal, dataset, purpose) / MICRO)

    def check(self, principal: str, dataset: str, purpose: str, *, epsilon: float, limit: float) -> None:
        """Refuse now if the budget cannot cover ``epsilon`` (nothing is reserved)."""
        eps, lim = _valid(epsilon, limit)
        if self.spent_micro(principal, dataset, purpose) + eps > lim:
            raise _exhausted(dataset, purpose, lim - self.spent_micro(principal, dataset, purpose))

    def debit(self, query_id: str, principal: str, dataset: str, purpose: str, *, epsilon: float,
              limit: float) -> None:
        """Charge ``epsilon`` for ``query_id``; joins the caller's transaction (the release)."""
        eps, lim = _valid(epsilon, limit)
        with self.store.joined_tx() as db:
            row = db.execute("SELECT refunded FROM dp_debits WHERE query_id=?", (query_id,)).fetchone()
            if row is not None:
                raise FailedPrecondition("this query was already charged", reason="ALREADY_CHARGED")
            spent = self.spent_micro(principal, dataset, purpose)
            if spent + eps > lim:
                raise _exhausted(dataset, purpose, lim - spent)
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


def _exhausted(dataset: str, purpose: str, left_micro: int) -> BudgetExhausted:
    return BudgetExhausted(
        f"the privacy budget on datasets/{dataset} cannot cover this query ({max(0, left_micro) / MICRO:g} ε left)",
        metadata={"dataset": dataset, "quota": "epsilon_budget", **({"purpose": purpose} if purpose else {})})
