"""The query lifecycle: states and the transitions allowed between them.

PENDING_APPROVAL -> APPROVED -> RUNNING -> SUCCEEDED | FAILED, or REJECTED, CANCELLED, EXPIRED.
RUNNING -> APPROVED exists only for crash recovery: a query that was running when the node
stopped is re-queued on start, so nothing acknowledged is lost.
"""

from __future__ import annotations

import enum


class QueryState(enum.Enum):
    PENDING_APPROVAL = "PENDING_APPROVAL"
    APPROVED = "APPROVED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset(
    {QueryState.SUCCEEDED, QueryState.FAILED, QueryState.REJECTED, QueryState.CANCELLED, QueryState.EXPIRED}
)

ALLOWED: dict[QueryState | None, frozenset[QueryState]] = {
    None: frozenset({QueryState.PENDING_APPROVAL}),
    QueryState.PENDING_APPROVAL: frozenset(
        {QueryState.APPROVED, QueryState.REJECTED, QueryState.CANCELLED, QueryState.EXPIRED}
    ),
    QueryState.APPROVED: frozenset({QueryState.RUNNING, QueryState.CANCELLED}),
    QueryState.RUNNING: frozenset(
        {QueryState.SUCCEEDED, QueryState.FAILED, QueryState.CANCELLED, QueryState.APPROVED}
    ),
}


def can_move(src: QueryState | None, dst: QueryState) -> bool:
    return dst in ALLOWED.get(src, frozenset())
