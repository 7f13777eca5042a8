"""The node's append-only, tamper-evident audit log (RFC 6962 Merkle tree, signed checkpoints).

What it guarantees, and against whom:

* **Fail closed.** ``append`` returns only after the entry is committed and fsynced
  (SQLite WAL, ``synchronous=FULL``); on any storage error it raises :class:`AuditUnavailable`
  and the caller must not perform the action. An action without an entry does not happen.
* **Against the operator rewriting history** (the one party DESIGN.md trusts with the data but
  not with the past): every entry is a leaf of a Merkle tree whose roots the node signs
  (:meth:`AuditLog.checkpoint`). Anyone holding an earlier signed checkpoint detects an edited,
  deleted, reordered or truncated entry, a rollback to a backup, or a fork: the later log is not
  consistent with the checkpoint (``veil.audit.verify_export(..., old_checkpoint=...)`` or a
  consistency proof). Auditors should keep the checkpoints they see, and receipts carry one.
* **Without any checkpoint** a verifier can only check internal consistency (canonical entries,
  contiguous indices, the hash chain, signatures and roots of the checkpoints present): an
  operator who holds the signing key can rebuild a whole, shorter or different, log that is
  consistent with itself. Signed checkpoints held by others are what make history fixed.
* **Against accidents and naive tampering** (a flipped byte, a deleted or swapped row, a
  truncation that leaves its checkpoints behind): opening the log recomputes every leaf, the
  chain, the stored subtree hashes and the stored checkpoints, and refuses to start
  (:class:`AuditCorrupted`) naming the first bad entry. A restored backup is consistent with
  itself: only a checkpoint held outside the node reveals it.
* Entries after the latest checkpoint are covered by no signature yet: sign checkpoints often
  (``export`` and ``receipt`` sign one when they need it).

Entries hold names, counts, reasons and digests, never a data value: the log is read by
auditors who must not see the data either.

Several writers: the node's replicas may share one log in PostgreSQL (:mod:`veil_server.state.statedb`).
Each append and checkpoint runs in a transaction holding the log's own lock, first reading what
other replicas appended since (:func:`store.catch_up` checks those entries as the open check does),
so the log stays one hash chain and one tree, whoever writes. On SQLite, one process per file.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from veil.audit import merkle
from veil.audit.canonical import format_time
from veil.audit.records import (
    DATASET_CERTIFICATE,
    QUERY_DIGEST,
    RESULT_DIGEST,
    Checkpoint,
    Entry,
    Receipt,
    is_known_kind,
)

from ..errors import InvalidArgument
from ..access.node_key import NodeKey
from ..state.statedb import POSTGRES, SQLITE, SQLiteDatabase, StateDatabase, check_stored_schema
from . import export as _export
from . import search as _search
from . import store
from .errors import AuditCorrupted, AuditUnavailable
from .search import SearchPage

AUDIT_LOCK = "audit.append"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Event:
    """One entry to append (see :meth:`AuditLog.append`)."""

    kind: str
    principal: str
    outcome: str
    dataset: str | None = None
    query: str | None = None
    details: Mapping[str, Any] | None = None


class AuditLog:
    """``AuditLog(path, key, node_id=...)`` opens (or creates) the log and checks it end to end.
    ``path`` is a SQLite file, or a :class:`StateDatabase` (PostgreSQL, shared by replicas)."""

    def __init__(
        self,
        path: Path | StateDatabase,
        key: NodeKey,
        *,
        node_id: str,
        clock: Callable[[], datetime] = _utcnow,
        visit: Callable[[Entry, bytes], None] | None = None,
    ) -> None:
        if isinstance(path, StateDatabase):
            self.path = Path(f"<{path.identity}>")
            conn: StateDatabase = path
        else:
            self.path = Path(path)
            try:
                conn = SQLiteDatabase(store.connect(self.path), identity=f"sqlite:{self.path.resolve()}")
            except AuditCorrupted as exc:
                exc.where = str(self.path)
                raise
        self.key = key
        self.node_id = node_id
        self._clock = clock
        self._lock = threading.RLock()
        self._shared = conn.kind == POSTGRES
        self._conn: StateDatabase | None = conn
        # Called with each new signed checkpoint once it is durable (witnesses, issue 15).
        self.on_checkpoint: Callable[[Checkpoint], None] | None = None
        try:
            if not self._shared:  # every page and index of the file, before its entries are trusted
                row = conn.execute("PRAGMA integrity_check(1)").fetchone()
                if row is None or row[0] != "ok":
                    raise AuditCorrupted("FILE_DAMAGED", None, f"SQLite integrity check: {row[0] if row else '?'}")
            self._init_meta()
            self._tail = store.check(
                self._conn, node_id=node_id, public_key=key.public_key_bytes, visit=visit
            )
        except AuditCorrupted as exc:
            self.close()
            exc.where = str(self.path)
            raise
        except (UnicodeDecodeError, ValueError) as exc:  # bytes that no longer decode: a damaged file
            self.close()
            damaged = AuditCorrupted("FILE_DAMAGED", None, f"a stored value does not decode: {type(exc).__name__}")
            damaged.where = str(self.path)
            raise damaged from None
        except (*conn.errors, OSError) as exc:
            self.close()
            if type(exc).__name__ == "DatabaseError" or "malformed" in str(exc) or "not a database" in str(exc):
                damaged = AuditCorrupted("FILE_DAMAGED", None, f"SQLite: {exc}")
                damaged.where = str(self.path)
                raise damaged from None
            raise AuditUnavailable(f"cannot read {self.path}: {exc}") from exc
        except BaseException:
            self.close()
            raise

    def _init_meta(self) -> None:
        conn = self._db()
        want = {
            "schema": store.SCHEMA_VERSION, "node_id": self.node_id, "key_id": self.key.key_id,
            "public_key": base64.b64encode(self.key.public_key_bytes).decode(),
        }
        conn.begin(AUDIT_LOCK)
        try:
            conn.script(store.DDL)
            if conn.kind == SQLITE:
                check_stored_schema(conn, store.DDL, str(self.path))
            have = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            for k, v in want.items():
                if k not in have:
                    conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (k, v))
                elif have[k] != v:
                    raise AuditUnavailable(f"{self.path}: log has {k}={have[k]!r}, node has {v!r}")
            # A write at every open: a log we cannot write to is refused now, not at the
            # first action.
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('opened', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (format_time(self._clock()),),
            )
            conn.commit()
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise

    # --- lifecycle ----------------------------------------------------------------------------

    def _db(self) -> StateDatabase:
        if self._conn is None:
            raise AuditUnavailable(f"{self.path}: the log is closed")
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _refresh(self) -> None:
        """Shared log: take in what other replicas appended (checked) before answering."""
        if self._shared:
            try:
                self._tail = store.catch_up(self._db(), self._tail)
            except (*self._db().errors, OSError) as exc:
                raise AuditUnavailable(f"audit log read failed: {exc}") from exc

    @property
    def tree_size(self) -> int:
        with self._lock:
            self._refresh()
            return self._tail.range.size

    @property
    def root_hash(self) -> bytes:
        with self._lock:
            self._refresh()
            return self._tail.range.root()

    # --- writing ------------------------------------------------------------------------------

    def append(
        self,
        kind: str,
        *,
        principal: str,
        outcome: str,
        dataset: str | None = None,
        query: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> int:
        """Log one event and return its index once it is durable.

        Raises :class:`AuditUnavailable` if it could not be made durable (the caller must then
        not perform the action), ``ValueError``/``TypeError`` for an unknown kind or outcome or
        a value canonical JSON does not allow (floats, None, bytes: convert them first).
        """
        (index,), _ = self.append_many([Event(kind, principal=principal, outcome=outcome, dataset=dataset,
                                              query=query, details=details)])
        return index

    def append_many(self, events: list[Event], *, checkpoint: bool = False,
                    leaves: list[bytes] | None = None) -> tuple[list[int], Checkpoint | None]:
        """Log several events, in order, and (``checkpoint``) sign a checkpoint covering them, all
        in one transaction: one commit and one fsync, and either all of it is durable or none
        is. Returns their indices (and the checkpoint) once durable, and adds their leaf hashes
        to ``leaves`` if given; raises as :meth:`append` does, in which case none of them was
        logged."""
        for ev in events:
            if not is_known_kind(ev.kind):
                raise ValueError(f"unknown audit kind {ev.kind!r}")
        with self._lock:
            conn = self._db()
            try:
                conn.begin(AUDIT_LOCK)
            except (*conn.errors, OSError) as exc:
                raise AuditUnavailable(f"append failed: {exc}") from exc
            indices: list[int] = []
            new_leaves: list[bytes] = []
            try:
                # What other writers (replicas) appended since, or what a failed commit left.
                tail = store.catch_up(conn, self._tail)
                self._tail = tail
                for ev in events:
                    entry = Entry(
                        index=tail.range.size,
                        time=max(format_time(self._clock()), tail.last_time),  # never goes back
                        kind=ev.kind, principal=ev.principal, outcome=ev.outcome, prev=tail.last_leaf,
                        dataset=ev.dataset, query=ev.query, details=dict(ev.details or {}),
                    )
                    indices.append(entry.index)
                    body = entry.to_bytes()
                    leaf = merkle.leaf_hash(body)
                    new_range = tail.range.copy()
                    nodes = [(lvl, i, h) for lvl, i, h in new_range.append(leaf) if lvl > 0]
                    conn.execute(
                        f"INSERT INTO entry ({store.ENTRY_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
                        store.entry_row(entry, body, leaf),
                    )
                    conn.executemany("INSERT INTO node (level, idx, hash) VALUES (?, ?, ?)", nodes)
                    tail = store.Tail(new_range, leaf, entry.time)
                    new_leaves.append(leaf)
                cp = self._sign_checkpoint(conn, tail) if checkpoint else None
                conn.commit()
            except (*conn.errors, OSError) as exc:
                # The commit may or may not have happened: the next append's catch-up reads it.
                self._rollback(conn)
                what = (f"entries {indices[0]}-{indices[-1]}" if len(indices) > 1
                        else f"entry {indices[0]}" if indices else "an entry")
                raise AuditUnavailable(f"append of {what} failed: {exc}") from exc
            except BaseException:
                self._rollback(conn)
                raise
            self._tail = tail
            if leaves is not None:
                leaves.extend(new_leaves)
            if cp is not None and self.on_checkpoint is not None:
                self.on_checkpoint(cp)
            return indices, cp

    def _sign_checkpoint(self, conn: StateDatabase, tail: store.Tail) -> Checkpoint:
        """In the caller's transaction: the stored checkpoint for ``tail``'s size, or a new one."""
        size, root = tail.range.size, tail.range.root()
        row = conn.execute("SELECT body, signature FROM checkpoint WHERE tree_size = ?", (size,)).fetchone()
        if row is not None:
            return Checkpoint.from_signed_bytes(bytes(row[0]), bytes(row[1]))
        cp = Checkpoint(
            origin=self.node_id, tree_size=size, root_hash=root, key_id=self.key.key_id,
            time=max(format_time(self._clock()), tail.last_time),
        )
        cp = cp.with_signature(self.key.sign(cp.signed_bytes()))
        conn.execute(
            "INSERT INTO checkpoint (tree_size, body, signature) VALUES (?, ?, ?)",
            (size, cp.signed_bytes(), cp.signature),
        )
        return cp

    @staticmethod
    def _rollback(conn: StateDatabase) -> None:
        try:
            if conn.in_transaction:
                conn.rollback()
        except (*conn.errors, OSError):
            pass

    def checkpoint(self) -> Checkpoint:
        """Sign and store a checkpoint of the whole log as it is now (or return the stored one
        for this size). Raises :class:`AuditUnavailable` if it cannot be stored."""
        with self._lock:
            conn = self._db()
            size = self._tail.range.size
            try:
                conn.begin(AUDIT_LOCK)
                self._tail = store.catch_up(conn, self._tail)
                size = self._tail.range.size
                cp = self._sign_checkpoint(conn, self._tail)
                conn.commit()
                if self.on_checkpoint is not None:
                    self.on_checkpoint(cp)
                return cp
            except (*conn.errors, OSError) as exc:
                self._rollback(conn)
                raise AuditUnavailable(f"checkpoint at {size} failed: {exc}") from exc
            except BaseException:
                self._rollback(conn)
                raise

    # --- witnesses' cosignatures (issue 15) ----------------------------------------------------

    def add_cosignature(self, tree_size: int, witness: str, line: bytes) -> None:
        with self._lock:
            conn = self._db()
            try:
                conn.begin(AUDIT_LOCK)
                conn.execute("INSERT INTO cosignature (tree_size, witness, line) VALUES (?, ?, ?) "
                             "ON CONFLICT (tree_size, witness) DO UPDATE SET line = excluded.line",
                             (tree_size, witness, line))
                conn.commit()
            except (*conn.errors, OSError) as exc:
                self._rollback(conn)
                raise AuditUnavailable(f"storing a cosignature failed: {exc}") from exc

    def cosignatures(self, tree_size: int) -> list[bytes]:
        rows = self._read(lambda c: c.execute(
            "SELECT line FROM cosignature WHERE tree_size = ? ORDER BY witness", (tree_size,)).fetchall())
        return [bytes(r[0]) for r in rows]

    def cosigners(self, tree_size: int) -> list[str]:
        rows = self._read(lambda c: c.execute(
            "SELECT witness FROM cosignature WHERE tree_size = ?", (tree_size,)).fetchall())
        return [str(r[0]) for r in rows]

    def witnessed_size(self, witness: str) -> int:
        """The largest size ``witness`` cosigned for this log, as far as this log knows."""
        row = self._read(lambda c: c.execute(
            "SELECT MAX(tree_size) FROM cosignature WHERE witness = ?", (witness,)).fetchone())
        return int(row[0]) if row and row[0] is not None else 0

    # --- reading ------------------------------------------------------------------------------

    def _read(self, fn: Callable[[StateDatabase], Any]) -> Any:
        with self._lock:
            conn = self._db()
            try:
                return fn(conn)
            except (*conn.errors, OSError) as exc:
                raise AuditUnavailable(f"audit log read failed: {exc}") from exc

    def latest_checkpoint(self) -> Checkpoint | None:
        cps = self.checkpoints(limit=1)
        return cps[0] if cps else None

    def checkpoints(self, *, limit: int | None = None) -> list[Checkpoint]:
        """Stored checkpoints, newest first."""
        sql = "SELECT body, signature FROM checkpoint ORDER BY tree_size DESC"
        rows = self._read(lambda c: c.execute(
            sql if limit is None else sql + " LIMIT ?", () if limit is None else (limit,)
        ).fetchall())
        return [Checkpoint.from_signed_bytes(bytes(b), bytes(s)) for b, s in rows]

    def _check_size(self, name: str, value: int, *, low: int = 0) -> int:
        size = self.tree_size
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= size:
            raise InvalidArgument(f"{name} must be an integer in [{low}, {size}], got {value!r}")
        return value

    def inclusion_proof(self, index: int, tree_size: int | None = None) -> list[bytes]:
        """RFC 6962 PATH for entry ``index`` in the tree of ``tree_size`` (default: now)."""
        size = self._check_size("tree_size", self.tree_size if tree_size is None else tree_size)
        if not isinstance(index, int) or not 0 <= index < size:
            raise InvalidArgument(f"index must be in [0, {size}), got {index!r}")
        return self._read(lambda c: merkle.inclusion_proof_from(
            lambda a, b: store.subtree_hash(c, a, b), index, size))

    def consistency_proof(self, old: int, new: int | None = None) -> list[bytes]:
        """RFC 6962 PROOF that the tree of ``old`` entries is a prefix of the tree of ``new``."""
        new = self._check_size("new", self.tree_size if new is None else new)
        old = self._check_size("old", old)
        if old > new:
            raise InvalidArgument(f"old size {old} is larger than new size {new}")
        return self._read(lambda c: merkle.consistency_proof_from(
            lambda a, b: store.subtree_hash(c, a, b), old, new))

    def entries(self, start: int, end: int | None = None) -> list[Entry]:
        """Entries ``[start, end)``; ``end`` defaults to the end of the log."""
        end = self._check_size("end", self.tree_size if end is None else end)
        start = self._check_size("start", start)
        rows = self._read(lambda c: c.execute(
            "SELECT body FROM entry WHERE idx >= ? AND idx < ? ORDER BY idx", (start, end)
        ).fetchall())
        return [Entry.from_bytes(bytes(r[0])) for r in rows]

    def search(
        self,
        kind: str | None = None,
        principal: str | None = None,
        dataset: str | None = None,
        outcome: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        page_size: int = _search.DEFAULT_PAGE_SIZE,
        page_token: str = "",
        query: str | None = None,
    ) -> SearchPage:
        """Entries matching every filter given, oldest first, a page at a time (AIP-158).
        ``kind`` may end in ``.*`` (``"admin.*"``); ``since`` is inclusive, ``until`` exclusive.
        Raises ``InvalidArgument`` for a bad page size or a token from another search."""
        q = _search.build(kind, principal, dataset, outcome, since, until, page_size, page_token,
                          query)
        return q.page(self._read(lambda c: c.execute(q.sql, q.args).fetchall()))

    # --- export and receipts ------------------------------------------------------------------

    def export(self, fileobj: IO[bytes]) -> Checkpoint:
        """Write the JSONL export (``veil.audit.verify`` documents it) to a binary file.

        Signs a checkpoint of the current size first, so every exported entry is covered;
        returns it. Entries are read in batches, so appends continue meanwhile.
        """
        cp = self.checkpoint()
        header = _export.header(self.node_id, self.key.public_key_bytes, cp.tree_size)

        def batches() -> Iterator[list[tuple[int, bytes]]]:
            for start in range(0, cp.tree_size, _export.BATCH):
                end = min(start + _export.BATCH, cp.tree_size)
                yield self._read(lambda c: c.execute(
                    "SELECT idx, body FROM entry WHERE idx >= ? AND idx < ? ORDER BY idx",
                    (start, end),
                ).fetchall())

        cps = [c for c in self.checkpoints() if c.tree_size <= cp.tree_size]
        _export.write(fileobj, header, batches(), cps)
        return cp

    def receipt(self, index: int, *, checkpoint: Checkpoint | None = None) -> Receipt:
        """A :class:`Receipt` for the ``query.release`` entry at ``index``, proven against
        ``checkpoint`` (default: the latest stored one covering it, else a new one)."""
        entry = self.entries(self._check_size("index", index), index + 1)
        if not entry or entry[0].kind not in ("query.release", "model.release") or entry[0].query is None:
            raise InvalidArgument(f"entry {index} is not a query release")
        e = entry[0]
        missing = {QUERY_DIGEST, DATASET_CERTIFICATE, RESULT_DIGEST} - e.details.keys()
        if missing:
            raise InvalidArgument(f"release entry {index} lacks {sorted(missing)}")
        if checkpoint is None:
            latest = self.latest_checkpoint()
            checkpoint = latest if latest and latest.tree_size > index else self.checkpoint()
        if checkpoint.tree_size <= index:
            raise InvalidArgument(
                f"checkpoint of size {checkpoint.tree_size} does not cover entry {index}"
            )
        return Receipt(
            query_id=e.query, query_digest=bytes.fromhex(e.details[QUERY_DIGEST]),
            dataset_certificate_id=e.details[DATASET_CERTIFICATE],
            result_digest=bytes.fromhex(e.details[RESULT_DIGEST]), log_index=index,
            entry=e.to_bytes(), inclusion_proof=self.inclusion_proof(index, checkpoint.tree_size),
            checkpoint=checkpoint,
        )


export_raw = _export.export_raw

__all__ = ["AuditLog", "AuditUnavailable", "AuditCorrupted", "SearchPage", "export_raw"]
