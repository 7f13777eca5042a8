"""The database that holds a node's own state: SQLite (embedded default) or PostgreSQL (replicas).

Every component that keeps state (queries, grants, reviews, the registry, budgets, the ledger,
the release history, the audit log) writes SQL in one portable dialect: ``?`` placeholders,
``INSERT ... ON CONFLICT``, ``INTEGER``/``BLOB`` column types. :class:`StateDatabase` runs it on
either engine; for PostgreSQL the text is rewritten once per statement (placeholders, and in DDL
``BIGINT``, ``BYTEA``, ``BIGSERIAL``) and cached.

**One writer at a time, on both engines.** Components read, decide and write inside one
transaction (a budget's ``spent + ε <= limit`` then its debit; a grant's ``used < max`` then its
count; a query's state check then its move). SQLite gives that by ``BEGIN IMMEDIATE``: the
write lock is taken when the transaction starts. On PostgreSQL the same guarantee comes from a
transaction-scoped advisory lock taken right after ``BEGIN`` (:meth:`begin`), so replicas that
share one database serialise their state changes exactly as threads of one node serialise on
SQLite's lock: no check can be overtaken by another replica between read and write. Lock waits
are bounded (``lock_timeout``), so a stuck peer surfaces as UNAVAILABLE rather than a hang.
Transactions here are short (no engine scan runs inside one), which keeps this cheap.

:meth:`named_lock` is a lock held *across* transactions (the differencing audit of one analyst's
release, first-start bootstrap): a ``threading.Lock`` inside the process and, on PostgreSQL, a
session advisory lock on a connection of its own, so a waiting thread never blocks the shared
connection.

Durability: SQLite in WAL with ``synchronous=FULL``; PostgreSQL commits are durable with its
defaults (``synchronous_commit=on``), which the node checks at connect and refuses to run without.

Credentials: the PostgreSQL conninfo comes from config or ``$VEIL_STATE_CONNINFO`` and never carries
a password (libpq reads it from ``PGPASSWORD`` or the password file); errors name host and database
at most, never the conninfo.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..extras import require

SQLITE = "sqlite"
POSTGRES = "postgres"
# Advisory lock keys are (namespace, key) int4 pairs; the namespace says "Veil", the key which lock.
_LOCK_NAMESPACE = 0x5645494C  # "VEIL" in ASCII, an int4
WRITE_LOCK = "state.write"
LOCK_TIMEOUT_MS = 30_000
CONNECT_TIMEOUT_S = 10
SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,47}$")


class StateUnavailable(ConnectionError):
    """The state database cannot be reached or refuses this node; the message names the
    database and host, never the conninfo's other parts."""


@dataclass(frozen=True)
class StateSettings:
    """``[state]`` of the node config: where the node keeps its own state."""

    backend: str = SQLITE  # "sqlite" (files in state_dir) or "postgres"
    conninfo: str = ""  # libpq conninfo without a password ("" = libpq's PG* variables)
    schema: str = "veil"  # PostgreSQL schema of this node's tables (the audit log's: schema + "_audit")
    replica: str = ""  # this replica's stable name (default: host name and process id)

    @property
    def shared(self) -> bool:
        """True when other replicas may use the same state (PostgreSQL)."""
        return self.backend == POSTGRES


class StateDatabase:
    """One connection and its dialect. Not thread-safe by itself: callers hold their own lock
    around a transaction (the state store and the audit log each do)."""

    kind: str
    errors: tuple[type[BaseException], ...]
    integrity_errors: tuple[type[BaseException], ...]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        raise NotImplementedError

    def script(self, ddl: str) -> None:
        """Run ``;``-separated DDL (``CREATE ... IF NOT EXISTS``) in the current transaction."""
        for statement in split_script(ddl):
            self.execute(self.ddl(statement))

    def ddl(self, statement: str) -> str:
        return statement

    def begin(self, lock: str = WRITE_LOCK) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        self.execute("COMMIT")

    def rollback(self) -> None:
        self.execute("ROLLBACK")

    @property
    def in_transaction(self) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def named_lock(self, name: str) -> Iterator[None]:
        with _process_lock(self.identity, name):
            yield

    identity: str = ""  # what names "the same database" for in-process locks

    def notify(self, topic: str, payload: str) -> None:
        """Tell other replicas, when the current transaction commits (nothing to do on SQLite:
        one process, which signals its own waiters)."""

    def listen(self, topic: str, callback: Callable[[str], None], stop: threading.Event) -> threading.Event:
        """Call ``callback(payload)`` for each notification on ``topic`` until ``stop`` is set
        (a background thread; nothing to do on SQLite). Returns an event set while listening."""
        return threading.Event()


_PROCESS_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_PROCESS_GUARD = threading.Lock()


def _process_lock(identity: str, name: str) -> threading.Lock:
    with _PROCESS_GUARD:
        return _PROCESS_LOCKS.setdefault((identity, name), threading.Lock())


def create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists: state names principals and holds
    ciphertexts, and a umask of 022 would leave it readable by every local user."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


def private_dir(path: Path) -> None:
    """Create the state directory 0700 whatever the umask (an existing one keeps its mode: the
    operator may share it between replicas' users on purpose)."""
    if not path.exists():
        path.mkdir(parents=True, mode=0o700)
        os.chmod(path, 0o700)


def split_script(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


# -- SQLite -----------------------------------------------------------------------------------


class SQLiteDatabase(StateDatabase):
    kind = SQLITE
    errors = (sqlite3.Error,)
    integrity_errors = (sqlite3.IntegrityError,)

    def __init__(self, conn: sqlite3.Connection, *, identity: str = "") -> None:
        self.conn = conn
        self.identity = identity or f"sqlite:{id(conn)}"

    @classmethod
    def open(cls, path: Path, *, timeout: float = 10.0) -> "SQLiteDatabase":
        """A file in WAL mode with ``synchronous=FULL`` (a commit is on disk when it returns),
        created 0600 whatever the umask (SQLite gives its -wal and -shm files the same mode)."""
        create_private(Path(path))
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=timeout)
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            conn.close()
            raise sqlite3.OperationalError(f"{path}: journal_mode is {mode}, WAL is required")
        conn.execute("PRAGMA synchronous=FULL")
        return cls(conn, identity=f"sqlite:{Path(path).resolve()}")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    def begin(self, lock: str = WRITE_LOCK) -> None:
        # One write lock per file whatever ``lock`` names: SQLite has no finer one.
        self.conn.execute("BEGIN IMMEDIATE")

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def close(self) -> None:
        self.conn.close()


# -- PostgreSQL -------------------------------------------------------------------------------


def lock_key(name: str) -> int:
    """A stable int4 for a lock name (the second half of the advisory lock's key)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big", signed=True)


@functools.lru_cache(maxsize=2048)
def to_postgres(sql: str) -> str:
    """``?`` placeholders to ``%s`` (outside string literals and quoted names); a literal ``%``
    becomes ``%%`` as psycopg requires."""
    out, quote = [], ""
    for ch in sql:
        if quote:
            out.append("%%" if ch == "%" else ch)
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


_DDL_RULES = (
    (re.compile(r"\bINTEGER\s+PRIMARY\s+KEY\s+AUTOINCREMENT\b", re.I), "BIGSERIAL PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b", re.I), "BIGINT"),  # microsecond times do not fit PostgreSQL's int4
    (re.compile(r"\bBLOB\b", re.I), "BYTEA"),
    (re.compile(r"\)\s*WITHOUT\s+ROWID\s*$", re.I), ")"),
)


@functools.lru_cache(maxsize=256)
def ddl_to_postgres(statement: str) -> str:
    for pattern, replacement in _DDL_RULES:
        statement = pattern.sub(replacement, statement)
    return statement


def describe_conninfo(conninfo: str) -> str:
    """Host and database of a conninfo, for messages: never the user's password or options."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        d = conninfo_to_dict(conninfo)
    except Exception:
        return "the configured PostgreSQL server"
    host = d.get("host") or "the local socket"
    return f"database {d.get('dbname') or '(default)'} on {host}:{d.get('port') or 5432}"


class PostgresDatabase(StateDatabase):
    kind = POSTGRES

    def __init__(self, conninfo: str, schema: str, *, application: str = "veil-node-state") -> None:
        require("psycopg", 'the state backend "postgres"')
        import psycopg

        if not SCHEMA_RE.match(schema):
            raise ValueError(f"state schema {schema!r} must be a lower-case SQL name")
        self.conninfo = conninfo
        self.schema = schema
        self.application = application
        self.identity = f"postgres:{hashlib.sha256(conninfo.encode()).hexdigest()[:16]}:{schema}"
        self.errors = (psycopg.Error,)
        self.integrity_errors = (psycopg.IntegrityError,)
        self._psycopg = psycopg
        self._in_tx = False
        self.conn = self._connect()
        self._idle_lock_conns: list[Any] = []
        self._guard = threading.Lock()

    def _connect(self) -> Any:
        psycopg = self._psycopg
        try:
            conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                                   application_name=self.application)
        except psycopg.OperationalError as exc:
            first = (str(exc).strip().splitlines() or ["no answer"])[0]
            raise StateUnavailable(f"cannot connect to the state database ({describe_conninfo(self.conninfo)}): "
                                   f"{first}; check [state] conninfo and that the server is up") from None
        try:
            conn.adapters.register_loader("numeric", _integral_numeric_loader())
            if conn.execute("SHOW synchronous_commit").fetchone()[0] == "off":
                raise RuntimeError("the state database has synchronous_commit=off: an acknowledged change could "
                                   "be lost on a crash; turn it on for this database or role")
            conn.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
            conn.execute("SET TIME ZONE 'UTC'")
            # Creating the schema races between replicas starting together: under a lock.
            conn.execute("SELECT pg_advisory_lock(%s, %s)", (_LOCK_NAMESPACE, lock_key("schema")))
            try:
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", (_LOCK_NAMESPACE, lock_key("schema")))
            conn.execute(f'SET search_path TO "{self.schema}"')
        except BaseException:
            conn.close()
            raise
        return conn

    def _live(self) -> Any:
        """The connection, reopened if the server dropped it (between transactions only)."""
        if self.conn.closed or self.conn.broken:
            if self.in_transaction:
                raise self._psycopg.OperationalError("the state database connection was lost mid-transaction")
            self.conn = self._connect()
        return self.conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._live().execute(to_postgres(sql), tuple(params) if params else None)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = [tuple(r) for r in rows]
        if rows:
            with self.conn.cursor() as cur:
                cur.executemany(to_postgres(sql), rows)

    def ddl(self, statement: str) -> str:
        return ddl_to_postgres(statement)

    def begin(self, lock: str = WRITE_LOCK) -> None:
        conn = self._live()
        conn.execute("BEGIN")
        self._in_tx = True
        try:
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_NAMESPACE, lock_key(lock)))
        except BaseException:
            self.rollback()
            raise

    def commit(self) -> None:
        from psycopg.pq import TransactionStatus

        try:
            if self.conn.info.transaction_status == TransactionStatus.INERROR:
                # PostgreSQL answers COMMIT of a failed transaction with a silent ROLLBACK.
                self.conn.execute("ROLLBACK")
                raise self._psycopg.OperationalError("a statement of the transaction failed; nothing was committed")
            self.conn.execute("COMMIT")
        finally:
            self._in_tx = False

    def rollback(self) -> None:
        try:
            if not self.conn.closed and not self.conn.broken:
                self.conn.execute("ROLLBACK")
        finally:
            self._in_tx = False

    @property
    def in_transaction(self) -> bool:
        return self._in_tx

    def close(self) -> None:
        self.conn.close()
        with self._guard:
            for c in self._idle_lock_conns:
                c.close()
            self._idle_lock_conns.clear()

    def _channel(self, topic: str) -> str:
        return f"veil_{self.schema}_{topic}"[:63]

    def notify(self, topic: str, payload: str) -> None:
        # pg_notify inside the transaction: delivered only if, and when, it commits.
        self.execute("SELECT pg_notify(?, ?)", (self._channel(topic), payload))

    def listen(self, topic: str, callback: Callable[[str], None], stop: threading.Event) -> threading.Event:
        """A LISTEN connection of its own, reopened after an error; waiters fall back on polling
        meanwhile, so a lost notification delays, never loses, an answer."""
        channel = self._channel(topic)
        listening = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                try:
                    with self._psycopg.connect(self.conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                                               application_name=self.application + "-listen") as conn:
                        conn.execute(f'LISTEN "{channel}"')
                        listening.set()
                        while not stop.is_set():
                            for n in conn.notifies(timeout=1.0):
                                callback(n.payload)
                except self._psycopg.Error:
                    listening.clear()
                    stop.wait(1.0)

        threading.Thread(target=loop, name=f"veil-listen-{topic}", daemon=True).start()
        return listening

    @contextlib.contextmanager
    def named_lock(self, name: str) -> Iterator[None]:
        """Across replicas: a session advisory lock on a connection of its own (released by the
        server if this process dies, so a crashed replica never leaves it held)."""
        with _process_lock(self.identity, name):
            with self._guard:
                conn = self._idle_lock_conns.pop() if self._idle_lock_conns else None
            if conn is None or conn.closed or conn.broken:
                conn = self._psycopg.connect(self.conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                                             application_name=self.application)
                conn.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
            key = (_LOCK_NAMESPACE, lock_key(name))
            conn.execute("SELECT pg_advisory_lock(%s, %s)", key)
            try:
                yield
            finally:
                try:
                    conn.execute("SELECT pg_advisory_unlock(%s, %s)", key)
                    with self._guard:
                        self._idle_lock_conns.append(conn)
                except self._psycopg.Error:
                    conn.close()  # closing the session releases the lock


def _integral_numeric_loader() -> type:
    """PostgreSQL's SUM over BIGINT is NUMERIC; the state holds integers only (micro-ε, counts),
    so integral values come back as ``int`` as they do from SQLite."""
    from psycopg.types.numeric import NumericLoader

    class IntegralNumericLoader(NumericLoader):
        def load(self, data: Any) -> Any:
            value = super().load(data)
            if value.is_finite() and value == value.to_integral_value():
                return int(value)
            return value

    return IntegralNumericLoader


def open_database(settings: StateSettings, *, sqlite_path: Path, audit: bool = False) -> StateDatabase:
    """The state database of a node (``audit=True``: the audit log's, a schema of its own on
    PostgreSQL and its own file on SQLite)."""
    if settings.backend == POSTGRES:
        schema = f"{settings.schema}_audit" if audit else settings.schema
        return PostgresDatabase(settings.conninfo, schema,
                                application="veil-node-audit" if audit else "veil-node-state")
    return SQLiteDatabase.open(sqlite_path)


_CREATE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+)\s*\((.*)\)\s*$", re.S)
_CONSTRAINTS = ("PRIMARY", "UNIQUE", "FOREIGN", "CHECK", "CONSTRAINT")


def _declared(script: str) -> dict[str, set[str]]:
    """Table -> column names, from a component's ``CREATE TABLE IF NOT EXISTS`` statements."""
    out: dict[str, set[str]] = {}
    for statement in split_script(script):
        m = _CREATE.match(statement.strip())
        if m is None:
            continue
        depth, item, items = 0, "", []
        for ch in m.group(2):
            depth += ch == "("
            depth -= ch == ")"
            if ch == "," and depth == 0:
                items.append(item)
                item = ""
            else:
                item += ch
        items.append(item)
        names = {i.split()[0].strip('"').lower() for i in items if i.split() and i.split()[0].upper() not in _CONSTRAINTS}
        out[m.group(1).lower()] = names
    return out


def check_stored_schema(db: Any, script: str, where: str) -> None:
    """Refuse (STATE_FILE_DAMAGED) when a declared table holds a column the node never declared,
    or when a table's name is one character away from a declared one: a flipped byte in the
    stored schema (columns added by later migrations are declared in the scripts too)."""
    declared = _declared(script)
    if not declared:
        return
    stored = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()]
    for name in stored:
        n = str(name).lower()
        if n in declared or n.startswith("sqlite_"):
            continue
        if any(len(n) == len(d) and sum(a != b for a, b in zip(n, d)) == 1 for d in declared):
            raise _corrupted("STATE_FILE_DAMAGED", where, f"a table's stored name is damaged ({n!r})")
    for table, columns in declared.items():
        have = {str(r[1]).lower() for r in db.execute(f'PRAGMA table_info("{table}")').fetchall()}
        if have - columns:
            raise _corrupted("STATE_FILE_DAMAGED", where, f"table {table} stores an undeclared column")


def _corrupted(problem: str, where: str, detail: str) -> Exception:
    from .damage import StateCorrupted

    return StateCorrupted(problem, where, detail)
