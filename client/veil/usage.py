"""Privacy budgets and metered use, as the analyst and the owner read them (issue 4).

``Node.budget(dataset)`` returns a :class:`Budget`; ``Node.usage(since=, until=)`` a list of
:class:`UsageRow` (one per principal x dataset x purpose), which :func:`usage_table` renders
for the terminal and ``dataclasses.asdict`` turns into JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timezone


@dataclass(frozen=True)
class Budget:
    dataset: str
    principal: str
    purpose: str
    dp_enabled: bool
    limit: float
    spent: float
    remaining: float  # the smaller of the caller's own and the dataset's remainder
    epsilon_per_query: float
    dataset_limit: float = 0.0  # what every analyst together may spend on the dataset
    dataset_spent: float = 0.0
    dataset_remaining: float = 0.0
    max_epsilon_per_query: float = 0.0
    disclosure_mode: str = ""

    @classmethod
    def from_proto(cls, b) -> "Budget":
        return cls(b.dataset, b.principal, b.purpose, b.dp_enabled, b.limit, b.spent, b.remaining,
                   b.epsilon_per_query, b.dataset_limit, b.dataset_spent, b.dataset_remaining,
                   b.max_epsilon_per_query, b.disclosure_mode)


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
    queries_refused: int = 0  # refused submissions: a possible probing pattern

    @classmethod
    def from_proto(cls, r) -> "UsageRow":
        return cls(*(getattr(r, f.name) for f in fields(cls)))


def parse_time(text: str | None) -> datetime | None:
    """ISO 8601 date or date-time (UTC when no zone is given)."""
    if not text:
        return None
    t = datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def usage_table(rows: list[UsageRow]) -> str:
    heads = ["principal", "dataset", "purpose", "submitted", "approved", "released", "rows_scanned",
             "cells_released", "cells_suppressed", "epsilon", "ciphertexts", "refused"]
    data = [[r.principal, r.dataset, r.purpose, r.queries_submitted, r.queries_approved, r.queries_released,
             r.rows_scanned, r.cells_released, r.cells_suppressed, f"{r.epsilon_spent:g}", r.ciphertexts,
             r.queries_refused]
            for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(heads, *data)]
    line = lambda xs: "  ".join(str(x).ljust(w) for x, w in zip(xs, widths)).rstrip()  # noqa: E731
    return "\n".join([line(heads), *(line(d) for d in data)])
