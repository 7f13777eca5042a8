"""Human review of queries: what a reviewer needs to decide, and N-of-M approvals.

When policy sends a query to review, the decision's context is stored with it (rules that fired,
columns touched, expected number of groups, approvals required, expiry), so an owner sees exactly
why. Approvers must own the dataset and may not approve their own query; each owner counts once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import AlreadyExists
from ..state.store import StateStore, now_us

_SCHEMA = """
CREATE TABLE IF NOT EXISTS query_reviews (
    query_id TEXT PRIMARY KEY,
    rules TEXT NOT NULL,
    columns TEXT NOT NULL,
    expected_groups INTEGER NOT NULL,
    approvals_required INTEGER NOT NULL,
    expires_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS query_approvals (
    query_id TEXT NOT NULL,
    approver TEXT NOT NULL,
    reason TEXT NOT NULL,
    at_us INTEGER NOT NULL,
    PRIMARY KEY (query_id, approver)
)
"""


@dataclass(frozen=True)
class ReviewContext:
    query_id: str
    rules: tuple[tuple[str, str], ...]  # (rule, message)
    columns: tuple[str, ...]
    expected_groups: int
    approvals_required: int
    expires_us: int
    approvals: tuple[tuple[str, str, int], ...] = ()  # (approver, reason, at_us)


class Reviews:
    def __init__(self, store: StateStore) -> None:
        self.store = store
        store.ensure_schema(_SCHEMA)

    def open(self, query_id: str, *, rules: list[tuple[str, str]], columns: list[str], expected_groups: int,
             approvals_required: int, ttl_us: int) -> None:
        with self.store.joined_tx() as db:
            db.execute("INSERT INTO query_reviews VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                       (query_id, json.dumps(rules), json.dumps(columns), expected_groups, approvals_required,
                        now_us() + ttl_us))

    def context(self, query_id: str) -> ReviewContext | None:
        with self.store.reading() as db:
            row = db.execute("SELECT * FROM query_reviews WHERE query_id=?", (query_id,)).fetchone()
            approvals = db.execute("SELECT approver, reason, at_us FROM query_approvals WHERE query_id=? "
                                   "ORDER BY at_us", (query_id,)).fetchall()
        if row is None:
            return None
        return ReviewContext(row[0], tuple(tuple(r) for r in json.loads(row[1])), tuple(json.loads(row[2])),
                             row[3], row[4], row[5], tuple(tuple(a) for a in approvals))

    def approve(self, query_id: str, approver: str, reason: str) -> int:
        """Record one owner's approval; returns the number of distinct approvals so far."""
        with self.store.joined_tx() as db:
            try:
                db.execute("INSERT INTO query_approvals VALUES (?,?,?,?)", (query_id, approver, reason, now_us()))
            except db.integrity_errors:  # this owner already approved (the transaction is lost with it)
                raise AlreadyExists("you have already approved this query; another owner must approve it",
                                    reason="ALREADY_APPROVED") from None
            return db.execute("SELECT COUNT(*) FROM query_approvals WHERE query_id=?", (query_id,)).fetchone()[0]

    def expired(self, at_us: int) -> list[str]:
        with self.store.reading() as db:
            return [r[0] for r in db.execute(
                "SELECT r.query_id FROM query_reviews r JOIN queries q ON q.id = r.query_id "
                "WHERE q.state = 'PENDING_APPROVAL' AND r.expires_us <= ?", (at_us,)).fetchall()]
