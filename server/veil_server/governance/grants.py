"""Grants: *authorised* use. A grant binds principal x dataset x purpose, optionally to a column
subset, a validity window and a maximum number of queries. No grant, no query.

A query is charged against its grant in the same transaction that records the query, so two
racing submissions can never both take the last allowed query. Revocation takes effect for every
query not yet released: the node checks the grant again just before a result is stored.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Iterable

from ..errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from ..state.store import StateStore, now_us

_SCHEMA = """
CREATE TABLE IF NOT EXISTS grants (
    id TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    dataset TEXT NOT NULL,
    purpose TEXT NOT NULL,
    columns TEXT NOT NULL,
    valid_from_us INTEGER NOT NULL,
    valid_until_us INTEGER NOT NULL,
    max_queries INTEGER NOT NULL,
    used INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    revoked_us INTEGER,
    revoked_by TEXT,
    revoke_reason TEXT
);
CREATE INDEX IF NOT EXISTS grants_lookup ON grants (principal, dataset, purpose);
CREATE TABLE IF NOT EXISTS query_grants (query_id TEXT PRIMARY KEY, grant_id TEXT NOT NULL)
"""


@dataclass(frozen=True)
class Grant:
    id: str
    principal: str
    dataset: str
    purpose: str
    columns: tuple[str, ...]  # empty: every column the dataset's rules allow
    valid_from_us: int
    valid_until_us: int  # 0: no end
    max_queries: int  # 0: no limit
    used: int
    created_by: str
    created_us: int
    revoked_us: int | None = None
    revoked_by: str | None = None
    revoke_reason: str | None = None

    @property
    def resource_name(self) -> str:
        return f"grants/{self.id}"

    def problem(self, at_us: int) -> tuple[str, str] | None:
        """(reason, message) if the grant cannot admit a query at ``at_us``."""
        if self.revoked_us is not None:
            return "GRANT_REVOKED", f"grant {self.id} was revoked by the owner"
        if at_us < self.valid_from_us:
            return "GRANT_NOT_YET_VALID", f"grant {self.id} is not valid yet"
        if self.valid_until_us and at_us >= self.valid_until_us:
            return "GRANT_EXPIRED", f"grant {self.id} has expired; ask the owner to renew it"
        return None


class Grants:
    def __init__(self, store: StateStore) -> None:
        self.store = store
        store.ensure_schema(_SCHEMA)

    def add(self, *, principal: str, dataset: str, purpose: str, created_by: str, columns: Iterable[str] = (),
            valid_from_us: int = 0, valid_until_us: int = 0, max_queries: int = 0) -> Grant:
        if max_queries < 0 or valid_from_us < 0 or valid_until_us < 0:
            raise InvalidArgument("max_queries and validity times must not be negative", reason="INVALID_GRANT")
        if valid_until_us and valid_until_us <= valid_from_us:
            raise InvalidArgument("a grant must end after it starts", reason="INVALID_GRANT")
        gid = secrets.token_hex(8)
        t = now_us()
        with self.store.joined_tx() as db:
            db.execute("INSERT INTO grants VALUES (?,?,?,?,?,?,?,?,0,?,?,NULL,NULL,NULL)",
                       (gid, principal, dataset, purpose, json.dumps(sorted(set(columns))), valid_from_us,
                        valid_until_us, max_queries, created_by, t))
        return self.get(gid)

    def get(self, grant_id: str) -> Grant:
        with self.store.reading() as db:
            row = db.execute("SELECT * FROM grants WHERE id=?", (grant_id.removeprefix("grants/"),)).fetchone()
        if row is None:
            raise NotFound(f"no grant named grants/{grant_id.removeprefix('grants/')}", reason="GRANT_NOT_FOUND")
        return _grant(row)

    def list(self, *, dataset: str | None = None, principal: str | None = None) -> list[Grant]:
        sql, args = "SELECT * FROM grants WHERE 1=1", []
        if dataset:
            sql, args = sql + " AND lower(dataset)=lower(?)", args + [dataset]
        if principal:
            sql, args = sql + " AND principal=?", args + [principal]
        with self.store.reading() as db:
            return [_grant(r) for r in db.execute(sql + " ORDER BY created_us", args).fetchall()]

    def revoke(self, grant_id: str, *, by: str, reason: str) -> Grant:
        g = self.get(grant_id)
        if g.revoked_us is not None:
            raise FailedPrecondition(f"grant {g.id} is already revoked", reason="GRANT_ALREADY_REVOKED")
        with self.store.joined_tx() as db:
            db.execute("UPDATE grants SET revoked_us=?, revoked_by=?, revoke_reason=? WHERE id=?",
                       (now_us(), by, reason, g.id))
        return self.get(g.id)

    def find(self, *, principal: str, dataset: str, purpose: str, columns: Iterable[str]) -> Grant:
        """The grant that would admit this query now (nothing is charged); raises like charge()."""
        return self._admit(None, principal, dataset, purpose, columns)

    def charge(self, *, query_id: str, principal: str, dataset: str, purpose: str, columns: Iterable[str]) -> Grant:
        """Find a grant that admits this query now, count the query against it, and remember
        which grant admitted it. Run inside the query's own creation transaction."""
        return self._admit(query_id, principal, dataset, purpose, columns)

    def _admit(self, query_id: str | None, principal: str, dataset: str, purpose: str,
               columns: Iterable[str]) -> Grant:
        at = now_us()
        cols = set(columns)
        best_problem: tuple[str, str] | None = None
        with self.store.joined_tx() as db:
            rows = db.execute("SELECT * FROM grants WHERE principal=? AND lower(dataset)=lower(?) AND purpose=? "
                              "ORDER BY created_us", (principal, dataset, purpose)).fetchall()
            for g in map(_grant, rows):
                problem = g.problem(at)
                if problem is None and g.max_queries and g.used >= g.max_queries:
                    problem = ("GRANT_EXHAUSTED", f"grant {g.id} allowed {g.max_queries} queries; all are used")
                if problem is None and g.columns and not cols <= set(g.columns):
                    outside = sorted(cols - set(g.columns))
                    problem = ("GRANT_COLUMNS", f"grant {g.id} does not cover column(s) {', '.join(outside)}")
                if problem is not None:
                    best_problem = problem  # the newest grant's problem is the one to report
                    continue
                if query_id is not None:
                    db.execute("UPDATE grants SET used = used + 1 WHERE id=?", (g.id,))
                    db.execute("INSERT INTO query_grants VALUES (?, ?)", (query_id, g.id))
                return g
        if best_problem is not None:
            reason, message = best_problem
            raise PermissionDenied(message, reason=reason, metadata={"dataset": dataset, "purpose": purpose})
        raise PermissionDenied(
            f"no grant lets '{principal}' query datasets/{dataset} for purpose '{purpose}'; ask the owner for one",
            reason="NO_GRANT", metadata={"dataset": dataset, "purpose": purpose})

    def grant_of(self, query_id: str) -> Grant | None:
        with self.store.reading() as db:
            row = db.execute("SELECT grant_id FROM query_grants WHERE query_id=?", (query_id,)).fetchone()
        return self.get(row[0]) if row else None


_COLS = ("id principal dataset purpose columns valid_from_us valid_until_us max_queries used created_by created_us "
         "revoked_us revoked_by revoke_reason").split()


def _grant(row: tuple) -> Grant:
    d = dict(zip(_COLS, row))
    d["columns"] = tuple(json.loads(d["columns"]))
    return Grant(**d)
