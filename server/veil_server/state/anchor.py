"""The state's half of the state ↔ log anchor: which log position each state transaction was
written with.

Threat: the node's two files replaced or damaged while it is stopped -- ``state.db`` restored
from an older copy (budgets and grant uses spent since can be spent again, released queries
vanish), deleted, or edited (a released query set back to APPROVED runs again); ``audit.db``
deleted, truncated or restored. Each file is consistent with itself, so only the other file can
tell. So they name each other:

* every state transaction that appends to the audit log stores, in the same transaction, a
  counter ``seq`` (one more than the last) and the log position it was written with (the log's
  size after the append and the leaf hash of its last entry): :class:`Anchor`;
* the entries appended in that transaction carry ``details.state_seq = seq`` (see
  :mod:`veil_server.audit.anchoring`), and the entry a clean stop writes also carries a digest of
  the whole state (:func:`state_digest`), so a change made while the node is stopped is seen even
  where no row contradicts the log.

The check at start (:mod:`veil_server.audit.anchoring`) compares the two. Here: the table, its
reads and writes, and the digest. Nothing here imports the audit package.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .statedb import SQLITE, StateDatabase
from .store import StateStore, now_us

TABLE = "log_anchor"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    log_size INTEGER NOT NULL,
    log_leaf TEXT NOT NULL,
    at_us INTEGER NOT NULL
)
"""


@dataclass(frozen=True)
class Anchor:
    """The last anchored state transaction: its number and the log position it was written with."""

    seq: int
    log_size: int
    log_leaf: str  # hex leaf hash of entry log_size - 1


class StateAnchor:
    def __init__(self, store: StateStore) -> None:
        self.store = store
        store.ensure_schema(_SCHEMA)

    def read(self, db: StateDatabase | None = None) -> Anchor | None:
        sql = f"SELECT seq, log_size, log_leaf FROM {TABLE} WHERE id = 1"
        if db is not None:
            row = db.execute(sql).fetchone()
        else:
            with self.store.reading() as rdb:
                row = rdb.execute(sql).fetchone()
        return None if row is None else Anchor(int(row[0]), int(row[1]), str(row[2]))

    @staticmethod
    def write(db: StateDatabase, anchor: Anchor) -> None:
        """In the caller's (the anchored transaction's) open transaction."""
        db.execute(
            f"INSERT INTO {TABLE} (id, seq, log_size, log_leaf, at_us) VALUES (1, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, log_size = excluded.log_size, "
            "log_leaf = excluded.log_leaf, at_us = excluded.at_us",
            (anchor.seq, anchor.log_size, anchor.log_leaf, now_us()))

    def query_count(self) -> int:
        with self.store.reading() as db:
            return int(db.execute("SELECT COUNT(*) FROM queries").fetchone()[0])


def _tables(db: StateDatabase) -> list[str]:
    if db.kind == SQLITE:
        rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    else:
        rows = db.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
                          "AND table_type = 'BASE TABLE'")
    return sorted(str(r[0]) for r in rows.fetchall() if r[0] != TABLE)


def _encode(value: object) -> bytes:
    """A value with its type, so 1, '1' and b'1' hash differently."""
    if value is None:
        return b"n"
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        return b"b" + len(raw).to_bytes(8, "big") + raw
    text = str(value).encode("utf-8")
    tag = b"i" if isinstance(value, int) else b"f" if isinstance(value, float) else b"s"
    return tag + len(text).to_bytes(8, "big") + text


def state_digest(db: StateDatabase) -> str:
    """SHA-256 over every row of every state table but the anchor itself, in a fixed order:
    what a clean stop records in the log, and the start compares. Decoding every row also finds
    a damaged page or text column (raised as the storage error it is)."""
    h = hashlib.sha256()
    for table in _tables(db):
        cur = db.execute(f'SELECT * FROM "{table}"')
        width = len(cur.description)
        h.update(b"T" + table.encode() + b"\0")
        rows = [b"".join(_encode(v) for v in row) for row in cur.fetchall()]
        for row in sorted(rows):  # independent of physical order (a VACUUM keeps the digest)
            h.update(width.to_bytes(2, "big") + row)
    return h.hexdigest()
