"""The dataset registry: DRAFT -> UNDER_REVIEW -> LISTED <-> SUSPENDED -> DELISTED.

*No scenario, no registration; no registration, no trade; no compliance review, no listing.*
A dataset is registered by an owner with its rules, purposes (scenarios), classification and
declared rights; a second principal with the reviewer role lists it (the registrant never can);
on listing the node issues a signed data asset certificate. Only LISTED datasets accept queries;
SUSPENDED ones stay visible to analysts as suspended. Registering an existing name makes a new
version in DRAFT; the listed version keeps serving until the new one is listed.

Datasets declared in the node's TOML file are the operator's: they are registered and listed on
first start by the operator (principal ``config``), with a certificate like any other.

State lives in the node's SQLite store, in the same transactions as the queries it governs.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any, Iterable

from ..query.catalog import Dataset
from ..config import dataset_from_dict, dataset_to_dict
from ..errors import DatasetNotFound, FailedPrecondition, PermissionDenied
from ..state.store import StateStore, now_us

OPERATOR = "config"

DRAFT, UNDER_REVIEW, LISTED, SUSPENDED, DELISTED = "DRAFT", "UNDER_REVIEW", "LISTED", "SUSPENDED", "DELISTED"
MOVES = {
    "submit": ({DRAFT}, UNDER_REVIEW),
    "approve": ({UNDER_REVIEW}, LISTED),
    "reject": ({UNDER_REVIEW}, DRAFT),
    "suspend": ({LISTED}, SUSPENDED),
    "resume": ({SUSPENDED}, LISTED),
    "delist": ({DRAFT, UNDER_REVIEW, LISTED, SUSPENDED}, DELISTED),
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    state TEXT NOT NULL,
    owners TEXT NOT NULL,
    spec TEXT NOT NULL,
    governance TEXT NOT NULL,
    registered_by TEXT NOT NULL,
    listed_by TEXT,
    certificate BLOB,
    fingerprint TEXT,
    file_stamp TEXT,
    created_us INTEGER NOT NULL,
    updated_us INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS dataset_transitions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    principal TEXT NOT NULL,
    reason TEXT NOT NULL,
    at_us INTEGER NOT NULL
)
"""


@dataclass(frozen=True)
class Governance:
    """The owner's governance choices for a dataset, checked against its classification."""

    classification: str = "internal"
    rights: tuple[str, ...] = ("holding", "processing")
    auto_approve: bool = True
    approvals_required: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"classification": self.classification, "rights": list(self.rights),
                "auto_approve": self.auto_approve, "approvals_required": self.approvals_required}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Governance":
        return cls(d["classification"], tuple(d["rights"]), bool(d["auto_approve"]), int(d["approvals_required"]))


@dataclass(frozen=True)
class DatasetRecord:
    name: str
    version: int
    state: str
    owners: tuple[str, ...]
    dataset: Dataset
    governance: Governance
    registered_by: str
    listed_by: str | None
    certificate: bytes | None
    fingerprint: str | None
    file_stamp: str | None
    created_us: int
    updated_us: int

    def owned_by(self, principal: str) -> bool:
        return principal in self.owners


class Registry:
    def __init__(self, store: StateStore) -> None:
        self.store = store
        store.ensure_schema(_SCHEMA)

    # -- reads ----------------------------------------------------------------------------

    def versions(self, name: str) -> list[DatasetRecord]:
        with self.store.reading() as db:  # a read: inside the caller's transaction if one is open
            rows = db.execute("SELECT * FROM datasets WHERE lower(name)=lower(?) ORDER BY version", (name,)).fetchall()
        return [_record(tuple(r)) for r in rows]

    def serving(self, name: str) -> DatasetRecord | None:
        """The version analysts see: the newest LISTED or SUSPENDED one."""
        live = [r for r in self.versions(name) if r.state in (LISTED, SUSPENDED)]
        return live[-1] if live else None

    def latest(self, name: str) -> DatasetRecord:
        versions = self.versions(name)
        if not versions:
            raise DatasetNotFound(f"no dataset named datasets/{name}", metadata={"dataset": name})
        return versions[-1]

    def all_latest(self) -> list[DatasetRecord]:
        with self.store.reading() as db:
            rows = db.execute(
                "SELECT d.* FROM datasets d JOIN (SELECT name, MAX(version) v FROM datasets GROUP BY name) m "
                "ON d.name = m.name AND d.version = m.v ORDER BY d.name").fetchall()
        return [_record(tuple(r)) for r in rows]

    def all_serving(self) -> list[DatasetRecord]:
        names = {r.name for r in self.all_latest()}
        out = [self.serving(n) for n in sorted(names)]
        return [r for r in out if r is not None]

    def history(self, name: str) -> list[tuple]:
        with self.store.reading() as db:
            return db.execute("SELECT version, from_state, to_state, principal, reason, at_us FROM "
                              "dataset_transitions WHERE lower(name)=lower(?) ORDER BY at_us", (name,)).fetchall()

    # -- writes ---------------------------------------------------------------------------

    def register(self, ds: Dataset, gov: Governance, *, principal: str, owners: Iterable[str] = ()) -> DatasetRecord:
        t = now_us()
        with self.store.joined_tx() as db:
            row = db.execute("SELECT MAX(version), MIN(name) FROM datasets WHERE lower(name)=lower(?)",
                             (ds.name,)).fetchone()
            if row[0] is not None:
                prior = _record(db.execute("SELECT * FROM datasets WHERE name=? AND version=?",
                                           (row[1], row[0])).fetchone())
                if not prior.owned_by(principal) and principal != OPERATOR:
                    raise PermissionDenied(f"datasets/{ds.name} belongs to other owners; only they may register a "
                                           f"new version", reason="NOT_DATASET_OWNER")
                if prior.state in (DRAFT, UNDER_REVIEW):
                    raise FailedPrecondition(f"version {prior.version} of datasets/{ds.name} is still {prior.state};"
                                             " finish or delist it first", reason="VERSION_IN_PROGRESS")
            version = (row[0] or 0) + 1
            name = row[1] or ds.name
            all_owners = tuple(dict.fromkeys([principal, *owners]))
            db.execute("INSERT INTO datasets VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       (name, version, DRAFT, json.dumps(all_owners), json.dumps(dataset_to_dict(ds)),
                        json.dumps(gov.to_dict()), principal, None, None, None, None, t, t))
            db.execute("INSERT INTO dataset_transitions VALUES (?,?,?,?,?,?,?)",
                       (name, version, None, DRAFT, principal, "REGISTERED", t))
        return self.latest(name)

    def move(self, name: str, action: str, *, principal: str, reason: str,
             certificate: bytes | None = None, fingerprint: str | None = None,
             file_stamp: str | None = None) -> DatasetRecord:
        sources, target = MOVES[action]
        t = now_us()
        with self.store.joined_tx() as db:
            rec = self.latest(name) if action not in ("suspend", "resume") else (self.serving(name) or self.latest(name))
            if rec.state not in sources:
                raise FailedPrecondition(
                    f"datasets/{rec.name} version {rec.version} is {rec.state}; it cannot be {action}ed"
                    if action != "submit" else f"datasets/{rec.name} is {rec.state}; only a DRAFT can be submitted",
                    reason="INVALID_DATASET_TRANSITION", metadata={"state": rec.state})
            if target == LISTED and action == "approve":
                # The listed version replaces any older live one.
                db.execute("UPDATE datasets SET state=?, updated_us=? WHERE name=? AND state IN (?, ?)",
                           (DELISTED, t, rec.name, LISTED, SUSPENDED))
                db.execute("UPDATE datasets SET state=?, listed_by=?, certificate=?, fingerprint=?, file_stamp=?, "
                           "updated_us=? WHERE name=? AND version=?",
                           (target, principal, certificate, fingerprint, file_stamp, t, rec.name, rec.version))
            else:
                db.execute("UPDATE datasets SET state=?, updated_us=? WHERE name=? AND version=?",
                           (target, t, rec.name, rec.version))
            db.execute("INSERT INTO dataset_transitions VALUES (?,?,?,?,?,?,?)",
                       (rec.name, rec.version, rec.state, target, principal, reason, t))
        return next(r for r in self.versions(name) if r.version == rec.version)

    def add_owners(self, name: str, owners: Iterable[str]) -> None:
        """Further owners of every version of ``name`` (from the operator's config)."""
        with self.store.joined_tx() as db:
            for rec in self.versions(name):
                merged = tuple(dict.fromkeys([*rec.owners, *owners]))
                db.execute("UPDATE datasets SET owners=? WHERE name=? AND version=?",
                           (json.dumps(merged), rec.name, rec.version))

    def restamp(self, name: str, version: int, file_stamp: str) -> None:
        """Remember the file's (size, mtime, inode) after a successful re-fingerprint."""
        with self.store.joined_tx() as db:
            db.execute("UPDATE datasets SET file_stamp=? WHERE name=? AND version=?", (file_stamp, name, version))


_COLS = ("name version state owners spec governance registered_by listed_by certificate fingerprint file_stamp "
         "created_us updated_us").split()


@functools.lru_cache(maxsize=1024)
def _record(row: tuple) -> DatasetRecord:
    """A stored version as a record. Cached by the row's content: the planner, the catalog and
    every query read the serving version, and rebuilding its Dataset (every column's rules) from
    JSON each time cost more than the read itself. A changed row is a new key."""
    d = dict(zip(_COLS, row))
    return DatasetRecord(
        name=d["name"], version=d["version"], state=d["state"], owners=tuple(json.loads(d["owners"])),
        dataset=dataset_from_dict(json.loads(d["spec"])), governance=Governance.from_dict(json.loads(d["governance"])),
        registered_by=d["registered_by"], listed_by=d["listed_by"],
        certificate=bytes(d["certificate"]) if d["certificate"] is not None else None,
        fingerprint=d["fingerprint"], file_stamp=d["file_stamp"], created_us=d["created_us"],
        updated_us=d["updated_us"])
