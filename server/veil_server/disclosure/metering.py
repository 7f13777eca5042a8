"""Metering: a ledger per principal × dataset × purpose, quotas per grant, and the usage report.

Each ledger row is written in the transaction of the step it counts (submission, approval,
release), so the ledger counts exactly what happened: a step that rolled back left no row.
Rows scanned are the catalog's rounded table size (the same figure the audit log carries), so
the ledger never holds an exact row count; ε is kept in micro-ε integers.

Quotas (from the operator's ``[[grants]] quota = {...}``) are checked in the submission's own
transaction: ``queries_per_day`` (UTC calendar day), ``rows_scanned`` (total over the grant's
life, including this query) and ``epsilon`` (total ε, including this query). A query over a
quota is refused with RESOURCE_EXHAUSTED, reason ``QUOTA_EXCEEDED`` and the quota's name in
the message and in ``metadata["quota"]``.

Refused submissions are ledger rows too (event ``refused``, no counts): they make the analyst's
refusal quota (:mod:`.control`) and show owners a possible probing pattern in the usage report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

from ..errors import ResourceExhausted
from ..state.store import StateStore, now_us
from .budget import MICRO, to_micro

DAY_US = 86_400 * 1_000_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage_ledger (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at_us INTEGER NOT NULL,
    principal TEXT NOT NULL,
    dataset TEXT NOT NULL,
    purpose TEXT NOT NULL,
    query_id TEXT NOT NULL,
    event TEXT NOT NULL,
    submitted INTEGER NOT NULL DEFAULT 0,
    approved INTEGER NOT NULL DEFAULT 0,
    released INTEGER NOT NULL DEFAULT 0,
    rows_scanned INTEGER NOT NULL DEFAULT 0,
    cells_released INTEGER NOT NULL DEFAULT 0,
    cells_suppressed INTEGER NOT NULL DEFAULT 0,
    micro_epsilon INTEGER NOT NULL DEFAULT 0,
    ciphertexts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS usage_by_account ON usage_ledger (principal, dataset, purpose, at_us);
CREATE INDEX IF NOT EXISTS usage_by_time ON usage_ledger (at_us)
"""

_SUMS = ("submitted", "approved", "released", "rows_scanned", "cells_released", "cells_suppressed",
         "micro_epsilon", "ciphertexts")


class QuotaExceeded(ResourceExhausted):
    default_reason = "QUOTA_EXCEEDED"


@dataclass(frozen=True)
class UsageRow:
    principal: str
    dataset: str
    purpose: str
    queries_submitted: int
    queries_approved: int
    queries_released: int
    rows_scanned: int
    cells_released: int
    cells_suppressed: int
    epsilon_spent: float
    ciphertexts: int
    queries_refused: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class Ledger:
    def __init__(self, store: StateStore) -> None:
        self.store = store
        store.ensure_schema(_SCHEMA)

    def record(self, event: str, *, principal: str, dataset: str, purpose: str, query_id: str, **counts: int) -> None:
        """Append one ledger row; joins the caller's transaction."""
        cols = {k: int(counts.get(k, 0)) for k in _SUMS}
        with self.store.joined_tx() as db:
            db.execute(f"INSERT INTO usage_ledger (at_us, principal, dataset, purpose, query_id, event, "
                       f"{', '.join(_SUMS)}) VALUES (?,?,?,?,?,?,{','.join('?' * len(_SUMS))})",
                       (now_us(), principal, dataset.lower(), purpose, query_id, event, *cols.values()))

    def _sum(self, column: str, principal: str, dataset: str, purpose: str, since_us: int = 0) -> int:
        with self.store.reading() as db:
            (n,) = db.execute(f"SELECT COALESCE(SUM({column}), 0) FROM usage_ledger WHERE principal=? AND "
                              "dataset=? AND purpose=? AND at_us >= ?",
                              (principal, dataset.lower(), purpose, since_us)).fetchone()
        return int(n)

    def refusals_since(self, principal: str, since_us: int) -> int:
        with self.store.reading() as db:
            (n,) = db.execute("SELECT COUNT(*) FROM usage_ledger WHERE principal=? AND event='refused' AND at_us >= ?",
                              (principal, since_us)).fetchone()
        return int(n)

    def check_quota(self, quota: Mapping[str, float], *, principal: str, dataset: str, purpose: str,
                    rows: int, epsilon: float) -> None:
        """Refuse a submission that would go over one of its grant's quotas."""
        if not quota:
            return
        now = now_us()
        checks = []
        if "queries_per_day" in quota:
            day = now - now % DAY_US
            checks.append(("queries_per_day", self._sum("submitted", principal, dataset, purpose, day) + 1,
                           quota["queries_per_day"]))
        if "rows_scanned" in quota:
            checks.append(("rows_scanned", self._sum("rows_scanned", principal, dataset, purpose) + rows,
                           quota["rows_scanned"]))
        if "epsilon" in quota and epsilon:
            checks.append(("epsilon", self._sum("micro_epsilon", principal, dataset, purpose) + to_micro(epsilon),
                           to_micro(quota["epsilon"])))
        for name, would_be, limit in checks:
            if would_be > limit:
                raise QuotaExceeded(
                    f"quota {name} of the grant for datasets/{dataset} ({purpose}) is used up; ask the owner to raise it",
                    metadata={"quota": name, "dataset": dataset, "purpose": purpose})

    def report(self, *, since_us: int = 0, until_us: int = 0, principal: str | None = None,
               datasets: set[str] | None = None) -> list[UsageRow]:
        """Totals per principal × dataset × purpose over [since, until) (0: open end)."""
        sql = (f"SELECT principal, dataset, purpose, {', '.join(f'SUM({c})' for c in _SUMS)}, "
               "SUM(CASE WHEN event = 'refused' THEN 1 ELSE 0 END) FROM usage_ledger WHERE at_us >= ? AND at_us < ?")
        args: list = [since_us, until_us or 2**62]
        if principal is not None:
            sql, args = sql + " AND principal=?", args + [principal]
        with self.store.reading() as db:
            rows = db.execute(sql + " GROUP BY principal, dataset, purpose ORDER BY principal, dataset, purpose",
                              args).fetchall()
        out = []
        for p, d, pur, sub, app, rel, scanned, cr, cs, meps, ct, refused in rows:
            if datasets is not None and d not in datasets:
                continue
            out.append(UsageRow(p, d, pur, sub, app, rel, scanned, cr, cs, meps / MICRO, ct, int(refused or 0)))
        return out
