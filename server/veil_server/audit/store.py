"""The audit log's SQLite file: schema, connection settings, and the integrity check run at open.

Tables::

    meta(key, value)                 node_id, key_id, public_key (base64), schema
    entry(idx, body, leaf_hash, …)   body = canonical entry bytes; the other columns are copies
                                     of entry fields, indexed for search (checked against body)
    node(level, idx, hash)           every complete subtree of 2**level leaves (level >= 1), so a
                                     proof is O(log² n) lookups and never rehashes entries
    checkpoint(tree_size, body, signature)
    cosignature(tree_size, witness, line)   witnesses' C2SP cosignature lines (issue 15); each is
                                     checked by whoever relies on it, so it is not re-checked here

WAL with ``synchronous=FULL``: a commit returns only after the WAL is fsynced, so an entry is
durable when ``append`` returns. The same tables can live in PostgreSQL (replicas sharing one
log, :mod:`veil_server.state.statedb`); the SQL here is the portable dialect that module runs.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veil.audit import merkle
from veil.audit.canonical import NonCanonical
from veil.audit.records import GENESIS_PREV, Checkpoint, Entry, SignatureError

from ..state.statedb import StateDatabase
from .errors import AuditCorrupted, AuditUnavailable

SCHEMA_VERSION = "1"

DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entry (
    idx INTEGER PRIMARY KEY,
    body BLOB NOT NULL,
    leaf_hash BLOB NOT NULL,
    time TEXT NOT NULL,
    kind TEXT NOT NULL,
    principal TEXT NOT NULL,
    outcome TEXT NOT NULL,
    dataset TEXT,
    query TEXT
);
CREATE INDEX IF NOT EXISTS entry_kind ON entry (kind, idx);
CREATE INDEX IF NOT EXISTS entry_principal ON entry (principal, idx);
CREATE INDEX IF NOT EXISTS entry_dataset ON entry (dataset, idx);
CREATE INDEX IF NOT EXISTS entry_time ON entry (time);
CREATE INDEX IF NOT EXISTS entry_query ON entry (query, idx);
CREATE TABLE IF NOT EXISTS node (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoint (
    tree_size INTEGER PRIMARY KEY,
    body BLOB NOT NULL,
    signature BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS cosignature (
    tree_size INTEGER NOT NULL,
    witness TEXT NOT NULL,
    line BLOB NOT NULL,
    PRIMARY KEY (tree_size, witness)
);
"""

ENTRY_COLUMNS = "idx, body, leaf_hash, time, kind, principal, outcome, dataset, query"


def connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """Open the log file with the settings durability depends on; errors are AuditUnavailable."""
    try:
        if read_only:
            conn = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
                check_same_thread=False,
            )
        else:
            if not path.exists():  # private from the first byte: entries name principals
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            conn = sqlite3.connect(
                str(path), isolation_level=None, check_same_thread=False, timeout=5.0
            )
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                conn.close()
                raise AuditUnavailable(f"{path}: journal_mode is {mode}, WAL is required")
            conn.execute("PRAGMA synchronous=FULL")
        return conn
    except UnicodeDecodeError:
        raise AuditCorrupted("FILE_DAMAGED", None, f"{path}: its header or settings do not decode") from None
    except sqlite3.DatabaseError as exc:
        if type(exc) is sqlite3.DatabaseError or "malformed" in str(exc) or "not a database" in str(exc):
            raise AuditCorrupted("FILE_DAMAGED", None, f"{path}: SQLite: {exc}") from None
        raise AuditUnavailable(f"cannot open {path}: {exc}") from exc
    except OSError as exc:
        raise AuditUnavailable(f"cannot open {path}: {exc}") from exc


def entry_row(entry: Entry, body: bytes, leaf: bytes) -> tuple[object, ...]:
    return (
        entry.index, body, leaf, entry.time, entry.kind, entry.principal, entry.outcome,
        entry.dataset, entry.query,
    )


def subtree_hash(conn: StateDatabase, start: int, end: int) -> bytes:
    """MTH of leaves [start, end) from stored hashes (``merkle.SubtreeHash`` over the store)."""
    n = end - start
    if n & (n - 1) == 0 and start % n == 0:
        level = n.bit_length() - 1
        if level == 0:
            row = conn.execute("SELECT leaf_hash FROM entry WHERE idx = ?", (start,)).fetchone()
        else:
            row = conn.execute(
                "SELECT hash FROM node WHERE level = ? AND idx = ?", (level, start >> level)
            ).fetchone()
        if row is None:
            raise AuditCorrupted("NODE_MISSING", start, f"no stored hash for [{start}, {end})")
        return bytes(row[0])
    k = 1 << ((n - 1).bit_length() - 1)
    left, right = subtree_hash(conn, start, start + k), subtree_hash(conn, start + k, end)
    return merkle.node_hash(left, right)


@dataclass
class Tail:
    """What ``append`` needs in memory: the frontier, the last leaf hash and the last time."""

    range: merkle.CompactRange
    last_leaf: bytes = GENESIS_PREV
    last_time: str = ""


def load_checkpoints(conn: StateDatabase) -> list[Checkpoint]:
    rows = conn.execute("SELECT tree_size, body, signature FROM checkpoint ORDER BY tree_size")
    out = []
    for size, body, sig in rows:
        try:
            cp = Checkpoint.from_signed_bytes(bytes(body), bytes(sig))
        except NonCanonical as exc:
            raise AuditCorrupted("CHECKPOINT_INVALID", None, f"checkpoint {size}: {exc}") from None
        if cp.tree_size != size:
            raise AuditCorrupted("CHECKPOINT_INVALID", None, f"checkpoint row {size} is misfiled")
        out.append(cp)
    return out


NODE_ORDER = "((idx + 1) << CAST(level AS INTEGER)), level"  # the order appends complete them


def check(conn: StateDatabase, *, node_id: str, public_key: bytes,
          visit: Callable[[Entry, bytes], None] | None = None) -> Tail:
    """Recompute everything from the stored entries and compare with what is stored; ``visit``
    sees each checked entry with its leaf hash (the state anchor's check reads the log there,
    in the same pass).

    Raises :class:`AuditCorrupted` naming the first bad entry. O(n log n) hashing, one pass.
    """
    cps = load_checkpoints(conn)
    count = conn.execute("SELECT COUNT(*) FROM entry").fetchone()[0]
    for cp in cps:
        try:
            cp.verify(public_key)
        except SignatureError as exc:
            raise AuditCorrupted("CHECKPOINT_INVALID", None, str(exc)) from None
        if cp.origin != node_id:
            raise AuditCorrupted("CHECKPOINT_INVALID", None, f"checkpoint for {cp.origin!r}")
    roots = {cp.tree_size: cp.root_hash for cp in cps}
    nodes = conn.execute(f"SELECT level, idx, hash FROM node ORDER BY {NODE_ORDER}")
    entries = conn.execute(f"SELECT {ENTRY_COLUMNS} FROM entry ORDER BY idx")
    tail = extend(Tail(merkle.CompactRange()), entries, nodes, roots, visit)
    if nodes.fetchone() is not None:
        raise AuditCorrupted("TRUNCATED", count, "subtree hashes remain for removed entries")
    if cps and cps[-1].tree_size > count:
        raise AuditCorrupted(
            "TRUNCATED", count, f"checkpoint signed for {cps[-1].tree_size} entries, {count} remain"
        )
    return tail


def catch_up(conn: StateDatabase, tail: Tail) -> Tail:
    """The tail after the entries another writer (a replica sharing the log) appended beyond
    ``tail``, each checked as :func:`check` checks entries; ``tail`` itself if there are none."""
    rows = conn.execute(
        f"SELECT {ENTRY_COLUMNS} FROM entry WHERE idx >= ? ORDER BY idx", (tail.range.size,)
    ).fetchall()
    if not rows:
        return tail
    end = tail.range.size + len(rows)
    nodes = conn.execute(
        f"SELECT level, idx, hash FROM node WHERE ((idx + 1) << CAST(level AS INTEGER)) > ? "
        f"AND ((idx + 1) << CAST(level AS INTEGER)) <= ? ORDER BY {NODE_ORDER}",
        (tail.range.size, end),
    )
    return extend(tail, rows, nodes, {})


def extend(tail: Tail, entries: Iterable[Sequence[Any]], nodes: Any, roots: dict[int, bytes],
           visit: Callable[[Entry, bytes], None] | None = None) -> Tail:
    """``tail`` (copied) extended by ``entries`` (rows of ``ENTRY_COLUMNS`` in index order),
    checking each against its hash, the chain, its search columns, the stored subtree hashes
    (``nodes``, a cursor in :data:`NODE_ORDER`) and any checkpoint root in ``roots``."""
    tail = Tail(tail.range.copy(), tail.last_leaf, tail.last_time)
    for idx, body, stored_leaf, *columns in entries:
        expected = tail.range.size
        if idx != expected:
            problem = "ENTRY_MISSING" if idx > expected else "ENTRY_OUT_OF_ORDER"
            raise AuditCorrupted(problem, expected, f"expected entry {expected}, found row {idx}")
        body = bytes(body)
        leaf = merkle.leaf_hash(body)
        if leaf != bytes(stored_leaf):
            raise AuditCorrupted("ENTRY_MODIFIED", idx, "entry bytes do not match their hash")
        try:
            entry = Entry.from_bytes(body)
        except NonCanonical as exc:
            raise AuditCorrupted("ENTRY_MALFORMED", idx, str(exc)) from None
        if entry.index != idx:
            raise AuditCorrupted("ENTRY_OUT_OF_ORDER", idx, f"row holds entry {entry.index}")
        if entry.prev != tail.last_leaf:
            raise AuditCorrupted("ENTRY_MODIFIED", idx - 1, f"hash chain breaks at {idx}")
        if entry.time < tail.last_time:
            raise AuditCorrupted("TIME_REVERSED", idx, "dated before the entry preceding it")
        if tuple(columns) != entry_row(entry, body, leaf)[3:]:
            raise AuditCorrupted("INDEX_COLUMNS", idx, "search columns disagree with the entry")
        for level, node_idx, h in tail.range.append(leaf)[1:]:
            row = nodes.fetchone()
            if row is None or (row[0], row[1], bytes(row[2])) != (level, node_idx, h):
                raise AuditCorrupted("NODE_MISMATCH", idx, f"stored subtree ({level}, {node_idx})")
        tail.last_leaf, tail.last_time = leaf, entry.time
        if visit is not None:
            visit(entry, leaf)
        if tail.range.size in roots and roots[tail.range.size] != tail.range.root():
            raise AuditCorrupted(
                "CHECKPOINT_MISMATCH", idx, f"root differs from checkpoint {tail.range.size}"
            )
    return tail
