"""The node's own state: queries, their transitions and their encrypted results, in SQLite.

WAL with ``synchronous=FULL``: a call that returned has its rows on disk, so nothing the
service acknowledged vanishes on a crash or power loss. Every state change is a compare-and-set
inside one transaction together with its history row; a result is stored in the same
transaction as the move to SUCCEEDED, so a query is never SUCCEEDED without its result.

Only ciphertexts, group keys from public domains and metadata are stored here: never a
released value in plaintext.

``write_ahead`` hooks run inside a change's transaction, after its checks and before its
commit: the node appends the audit entry there, so a change whose entry could not be made
durable rolls back, and no other change to the query can slip in between entry and change.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..errors import AlreadyExists, FailedPrecondition, QueryNotFound
from .damage import StateCorrupted, check_file, corruption
from .lifecycle import QueryState, can_move
from .statedb import SQLITE, SQLiteDatabase, StateDatabase, check_stored_schema

SCHEMA_VERSION = 1
CHANGED = "query_changed"  # the notification topic of a query's state change

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS queries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    principal TEXT NOT NULL,
    request_id TEXT NOT NULL,
    dataset TEXT NOT NULL,
    purpose TEXT NOT NULL,
    sql TEXT NOT NULL,
    canonical_sql TEXT NOT NULL,
    plan_json TEXT NOT NULL,
    plan_digest TEXT NOT NULL,
    public_key BLOB NOT NULL,
    key_fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    state_reason TEXT NOT NULL,
    state_message TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    updated_us INTEGER NOT NULL,
    inputs BLOB NOT NULL,
    UNIQUE (principal, request_id)
);
CREATE INDEX IF NOT EXISTS queries_by_principal ON queries (principal, seq);
CREATE INDEX IF NOT EXISTS queries_by_state ON queries (state);
CREATE TABLE IF NOT EXISTS transitions (
    query_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    at_us INTEGER NOT NULL,
    PRIMARY KEY (query_id, seq)
);
CREATE TABLE IF NOT EXISTS results (
    query_id TEXT PRIMARY KEY,
    result BLOB NOT NULL,
    digest TEXT NOT NULL,
    created_us INTEGER NOT NULL
);
"""


WriteAhead = Callable[["QueryRecord"], object]


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class Transition:
    from_state: QueryState | None
    to_state: QueryState
    reason: str
    message: str
    at_us: int


@dataclass(frozen=True)
class QueryRecord:
    seq: int
    id: str
    principal: str
    request_id: str
    dataset: str
    purpose: str
    sql: str
    canonical_sql: str
    plan_json: str
    plan_digest: str
    public_key: bytes
    key_fingerprint: str
    state: QueryState
    state_reason: str
    state_message: str
    created_us: int
    updated_us: int
    inputs: bytes = b""

    @property
    def resource_name(self) -> str:
        return f"queries/{self.id}"


@dataclass(frozen=True)
class NewQuery:
    principal: str
    request_id: str
    dataset: str
    purpose: str
    sql: str
    canonical_sql: str
    plan_json: str
    plan_digest: str
    public_key: bytes
    key_fingerprint: str
    inputs: bytes = b""  # serialised encrypted inputs (ciphertexts only), empty if none


class StateStore:
    """Thread-safe: one connection, serialised by a lock; across replicas on PostgreSQL, every
    transaction also holds the database's write lock (:mod:`veil_server.state.statedb`)."""

    def __init__(self, path_or_db: Path | StateDatabase) -> None:
        if isinstance(path_or_db, StateDatabase):
            self.path: Path | None = None
            self._db = path_or_db
        else:
            path_or_db.parent.mkdir(parents=True, exist_ok=True)
            self.path = path_or_db
            try:
                self._db = SQLiteDatabase.open(path_or_db)
                self._db.execute("PRAGMA foreign_keys=ON")
                check_file(self._db, path_or_db)
            except (sqlite3.Error, UnicodeDecodeError) as exc:
                raise corruption(exc, str(path_or_db)) or type(exc)(f"{path_or_db}: {exc}") from exc
        self._lock = threading.RLock()
        self._owner: int | None = None  # the thread whose write transaction is open
        # SQLite: reads from other threads go through connections of their own (issue 22), so a
        # read never waits for a writer's commit and its fsync; WAL gives each read block a
        # snapshot of committed state, as holding the writer's lock did. Inside a thread's own
        # write transaction, reads stay on the writer's connection and see the transaction.
        self._readers: list[SQLiteDatabase] = []  # idle reader connections
        self._readers_lock = threading.Lock()
        self._reading = threading.local()
        self._closed = False
        with self._tx() as db:
            db.script(_SCHEMA)
            if db.kind == SQLITE:
                check_stored_schema(db, _SCHEMA, str(self.path or "state.db"))
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise RuntimeError(f"the state store has schema {row[0]}; this node expects {SCHEMA_VERSION}")

    @property
    def database(self) -> StateDatabase:
        return self._db

    @property
    def shared(self) -> bool:
        """True when other replicas may change this state (PostgreSQL)."""
        return self._db.kind != "sqlite"

    def close(self) -> None:
        with self._lock:
            self._db.close()
            with self._readers_lock:
                self._closed = True
                for reader in self._readers:
                    reader.close()
                self._readers.clear()

    # -- transactions ------------------------------------------------------------------------

    class _Tx:
        def __init__(self, store: "StateStore") -> None:
            self.store = store

        def __enter__(self) -> StateDatabase:
            self.store._lock.acquire()
            try:
                self.store._db.begin()
            except BaseException as exc:
                self.store._lock.release()
                raise self.store.damaged(exc) from exc
            self.store._owner = threading.get_ident()
            return self.store._db

        def __exit__(self, exc_type, exc, tb) -> None:
            self.store._owner = None
            try:
                if exc_type:
                    self.store._db.rollback()
                else:
                    self.store._db.commit()
            finally:
                self.store._lock.release()
            if exc is not None:
                damaged = self.store.damaged(exc)
                if damaged is not exc:
                    raise damaged from exc

    def _tx(self) -> "StateStore._Tx":
        return StateStore._Tx(self)

    def ensure_schema(self, script: str) -> None:
        """Create the tables of a component sharing this database (``;``-separated DDL), then
        check the stored definitions of those tables (SQLite: a flipped byte in the stored CREATE
        text renames a column or a table without failing SQLite's integrity check)."""
        with self.joined_tx() as db:
            db.script(script)
            if db.kind == SQLITE:
                check_stored_schema(db, script, str(self.path or "state.db"))

    @contextlib.contextmanager
    def joined_tx(self) -> Iterator[StateDatabase]:
        """A transaction for other components sharing this database (governance): joins the
        calling thread's open transaction if there is one, so a check and the change it guards
        (e.g. a grant's use and the query it admits) commit together."""
        with self._lock:
            if self._db.in_transaction:
                yield self._db
            else:
                with self._tx() as db:
                    yield db

    @contextlib.contextmanager
    def reading(self) -> Iterator[StateDatabase]:
        """Reads: one statement at a time under the connection's lock, no write lock (each
        statement sees committed state; inside a transaction, the transaction's). A read that
        decides a write belongs in the writer's transaction (``joined_tx``), not here.

        SQLite: a block read from a thread with no write transaction open runs on a reader
        connection of its own, in one read transaction (a WAL snapshot of committed state: what
        the writer's lock gave it, without waiting for a commit's fsync). Writes are refused on
        it (``query_only``). Costs nothing in guarantees: reads saw committed state before too."""
        mine = self._owner == threading.get_ident()  # this thread's write transaction is open
        nested = getattr(self._reading, "db", None)
        if nested is not None and not mine:
            yield nested  # a read block inside a read block: the same snapshot
            return
        reader = None
        if self.path is not None and not mine:
            reader = self._reader()
        if reader is None:
            with self._lock:
                try:
                    yield self._db
                except Exception as exc:
                    damaged = self.damaged(exc)
                    if damaged is exc:
                        raise
                    raise damaged from exc
            return
        self._reading.db = reader
        try:
            reader.execute("BEGIN")
            try:
                yield reader
            finally:
                reader.execute("COMMIT")  # read-only: ends the snapshot, writes nothing
        except Exception as exc:
            if isinstance(exc, sqlite3.Error):
                reader.close()  # in doubt, not reused
                reader = None
            damaged = self.damaged(exc)
            if damaged is exc:
                raise
            raise damaged from exc
        finally:
            self._reading.db = None
            if reader is not None:
                with self._readers_lock:
                    if self._closed or len(self._readers) >= 32:
                        reader.close()
                    else:
                        self._readers.append(reader)

    def _reader(self) -> "SQLiteDatabase | None":
        """An idle reader connection to the state file, or a new one (None once closed)."""
        with self._readers_lock:
            if self._closed:
                return None
            if self._readers:
                return self._readers.pop()
        assert self.path is not None
        try:
            conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=10.0)
            conn.execute("PRAGMA query_only=ON")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise self.damaged(exc) from exc
        return SQLiteDatabase(conn, identity=self._db.identity)

    def open_transaction(self) -> StateDatabase | None:
        """The database, if the calling thread holds this store's open write transaction (the
        audit log anchors the entries it appends there, :mod:`veil_server.state.anchor`)."""
        return self._db if self._owner == threading.get_ident() and self._db.in_transaction else None

    def damaged(self, exc: BaseException) -> BaseException:
        """``exc`` as :class:`StateCorrupted` when it says the stored bytes are damaged (a page
        SQLite cannot read, text that is not UTF-8, a value no row may hold), else ``exc``."""
        return corruption(exc, self.location) or exc

    @property
    def location(self) -> str:
        """What an operator should look at: the file, or the database schema."""
        return str(self.path) if self.path is not None else f"schema {getattr(self._db, 'schema', '?')} " \
            "of the state database"

    def on_change(self, callback, stop) -> threading.Event:
        """``callback(query_id)`` when another replica changes a query's state (PostgreSQL).
        Returns an event set while the subscription is live."""
        return self._db.listen(CHANGED, callback, stop)

    def named_lock(self, name: str):
        """A lock held across transactions, shared by every replica of this state."""
        return self._db.named_lock(name)

    # -- queries -----------------------------------------------------------------------------

    def create_query(self, q: NewQuery, reason: str, message: str, *,
                     write_ahead: WriteAhead | None = None) -> tuple[QueryRecord, bool]:
        """Insert a query in PENDING_APPROVAL. Idempotent on (principal, request_id): a retry
        with the same request returns the existing query and ``False``; the same request_id
        with a different request is refused. ``write_ahead(new_record)`` runs before the commit
        of a new query; if it raises, nothing is stored."""
        with self._tx() as db:
            row = db.execute(
                "SELECT * FROM queries WHERE principal=? AND request_id=?", (q.principal, q.request_id)
            ).fetchone()
            if row is not None:
                existing = _record(row)
                if (existing.sql, existing.purpose, existing.public_key, existing.inputs) != (
                    q.sql, q.purpose, q.public_key, q.inputs):
                    raise AlreadyExists(
                        "request_id was already used for a different query; use a new request_id for a new query",
                        reason="REQUEST_ID_REUSED",
                    )
                return existing, False
            qid = secrets.token_hex(8)
            t = now_us()
            state = QueryState.PENDING_APPROVAL
            db.execute(
                "INSERT INTO queries (id, principal, request_id, dataset, purpose, sql, canonical_sql,"
                " plan_json, plan_digest, public_key, key_fingerprint, state, state_reason,"
                " state_message, created_us, updated_us, inputs) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (qid, q.principal, q.request_id, q.dataset, q.purpose, q.sql, q.canonical_sql, q.plan_json,
                 q.plan_digest, q.public_key, q.key_fingerprint, state.value, reason, message, t, t, q.inputs),
            )
            db.execute(
                "INSERT INTO transitions VALUES (?, 0, NULL, ?, ?, ?, ?)", (qid, state.value, reason, message, t)
            )
            created = self._get(db, qid)
            if write_ahead is not None:
                write_ahead(created)
            return created, True

    def get(self, query_id: str) -> QueryRecord:
        with self.reading() as db:
            return self._get(db, query_id)

    def _get(self, db: StateDatabase, query_id: str) -> QueryRecord:
        row = db.execute("SELECT * FROM queries WHERE id=?", (query_id,)).fetchone()
        if row is None:
            raise QueryNotFound(f"no query named queries/{query_id}; list yours with ListQueries")
        return _record(row)

    def history(self, query_id: str) -> list[Transition]:
        with self.reading() as db:
            rows = db.execute(
                "SELECT from_state, to_state, reason, message, at_us FROM transitions WHERE query_id=? ORDER BY seq",
                (query_id,),
            ).fetchall()
        return [
            Transition(QueryState(f) if f else None, QueryState(t), r, m, at) for f, t, r, m, at in rows
        ]

    def list_for(self, principal: str, *, page_size: int, before_seq: int | None) -> list[QueryRecord]:
        with self.reading() as db:
            rows = db.execute(
                "SELECT * FROM queries WHERE principal=? AND seq < ? ORDER BY seq DESC LIMIT ?",
                (principal, before_seq if before_seq is not None else 2**62, page_size),
            ).fetchall()
        return [_record(r) for r in rows]

    def in_states(self, states: Iterable[QueryState]) -> list[QueryRecord]:
        states = [s.value for s in states]
        with self.reading() as db:
            rows = db.execute(
                f"SELECT * FROM queries WHERE state IN ({','.join('?' * len(states))}) ORDER BY seq", states
            ).fetchall()
        return [_record(r) for r in rows]

    def transition(
        self,
        query_id: str,
        to: QueryState,
        reason: str,
        message: str,
        *,
        expect: Iterable[QueryState] | None = None,
        result: tuple[bytes, str] | None = None,
        write_ahead: WriteAhead | None = None,
    ) -> QueryRecord:
        """Move a query to ``to`` if the lifecycle allows it (and, if given, only from one of
        ``expect``). ``result`` (serialised result, digest) is stored in the same transaction.
        ``write_ahead(current_record)`` runs once the move is allowed, before anything changes;
        if it raises, nothing does."""
        with self._tx() as db:
            cur = self._get(db, query_id)
            allowed = set(expect) if expect is not None else None
            if (allowed is not None and cur.state not in allowed) or not can_move(cur.state, to):
                raise FailedPrecondition(
                    f"query is {cur.state.value}; it cannot become {to.value}",
                    reason="INVALID_STATE_TRANSITION",
                    metadata={"state": cur.state.value},
                )
            if write_ahead is not None:
                write_ahead(cur)
            t = now_us()
            n = db.execute("SELECT COUNT(*) FROM transitions WHERE query_id=?", (query_id,)).fetchone()[0]
            db.execute(
                "UPDATE queries SET state=?, state_reason=?, state_message=?, updated_us=? WHERE id=?",
                (to.value, reason, message, t, query_id),
            )
            db.execute(
                "INSERT INTO transitions VALUES (?, ?, ?, ?, ?, ?, ?)",
                (query_id, n, cur.state.value, to.value, reason, message, t),
            )
            if result is not None:
                db.execute("INSERT INTO results VALUES (?, ?, ?, ?)", (query_id, result[0], result[1], t))
            db.notify(CHANGED, query_id)  # wakes waiters on other replicas once this commits
            return self._get(db, query_id)

    def result(self, query_id: str) -> bytes | None:
        with self.reading() as db:
            row = db.execute("SELECT result FROM results WHERE query_id=?", (query_id,)).fetchone()
        return None if row is None else bytes(row[0])


_COLUMNS = (
    "seq id principal request_id dataset purpose sql canonical_sql plan_json plan_digest public_key "
    "key_fingerprint state state_reason state_message created_us updated_us inputs"
).split()


def _record(row: tuple) -> QueryRecord:
    d = dict(zip(_COLUMNS, row))
    try:
        d["state"] = QueryState(d["state"])
    except ValueError:
        raise StateCorrupted("STATE_ROW_UNREADABLE", "", f"query {d.get('id')!r} holds an unknown state") from None
    d["public_key"] = bytes(d["public_key"])
    d["inputs"] = bytes(d["inputs"])
    return QueryRecord(**d)

