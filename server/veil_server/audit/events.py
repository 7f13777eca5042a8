"""The node's audit vocabulary: one method per security-relevant event, each one durable entry.

What an auditor learns from an entry: who did what, when, to which dataset and query, with
which outcome and why (rule names, reason codes), the canonical SQL, and the digests of plans
and encrypted results. Never a data value: no result cell, no exact count of the rows a filter
matched (``rows_scanned_approx`` is the table size rounded as the public catalog rounds it), no
key material beyond public fingerprints.

Ordering, fail closed: each method returns only once its entry is durable and raises
:class:`AuditUnavailable` otherwise. Callers log *before* they act (inside the state store's
transaction, see ``StateStore.transition(write_ahead=...)``), so an action never happens without
its entry. The converse does not hold after a crash: the log may show a submission with no
query, or a release of a query that was still RUNNING and runs again (a second release entry
with another digest). Entries say what was decided and about to happen; the state store says
what happened. Refusals, denials and failures are logged best-effort: refusing does not need
permission. The entries of one step (a submission and its decision; an execution, its release
and the checkpoint over them) are appended in one transaction: all durable, or none.

``principal`` is whoever caused the event: the caller for requests, ``"node"`` for start, stop
and key creation, ``"anonymous"`` for a request without a valid token, and the query's owner
for what the node does on its own with a query (approval by policy, execution, release,
failure). Approvers are named in ``details.approvers``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import json
import logging
import os
import unicodedata
from decimal import Decimal
from pathlib import Path
from typing import Any

from veil.audit import merkle
from veil.audit.records import RESULT_DIGEST, Receipt, release_details

from ..config import NodeConfig, Principal
from ..errors import FailedPrecondition, VeilError
from ..access.node_key import NodeKey
from ..state.anchor import Anchor, StateAnchor, state_digest
from ..state.statedb import StateDatabase
from ..state.store import StateStore
from .anchoring import STATE_DIGEST, STATE_SEQ, LogReading, StartRefused, check_at_start, next_seq
from .errors import AuditUnavailable
from .log import AuditLog, Event
from .witnessing import Witnesses, WitnessSettings

log = logging.getLogger("veil.audit")

LOG_FILE = "audit.db"
PUBLIC_KEY_FILE = "node_key.pub"
SYSTEM = "node"
ANONYMOUS = "anonymous"
# Characters of free text (SQL) kept per field; digests cover the rest. With control characters
# replaced, a field is at most 4 bytes a character even escaped, so an entry stays well under
# the log's 64 KiB limit whatever an analyst sends.
MAX_TEXT = 4000
SOFTWARE = "veil 0.1.0"
# Refusals that say "you may not" are `denied`; the node failing to serve is `error`.
_ERROR_CODES = {"UNAVAILABLE", "INTERNAL", "UNKNOWN", "DEADLINE_EXCEEDED"}


def node_id_for(key: NodeKey) -> str:
    """The log's identity, from its key: renaming a node keeps its log; a new key is a new log."""
    return f"veil-{key.key_id[:16]}"


def public_key_path(state_dir: Path) -> Path:
    return Path(state_dir) / PUBLIC_KEY_FILE


_CONTROLS = {c: "\ufffd" for c in range(32) if chr(c) not in "\t\n"}


def _text(value: str, limit: int = MAX_TEXT) -> str:
    """Canonical JSON takes NFC strings only; analysts send anything. Normalise, then cap."""
    # Cut first (normalising never makes a string more than a few times shorter): a 15 MiB SQL
    # text is not copied three times over to keep 4000 characters of it.
    value = value[: limit * 4]
    clean = unicodedata.normalize("NFC", value.encode("utf-8", "replace").decode("utf-8"))
    return clean[:limit].translate(_CONTROLS)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (set, frozenset)):
        return sorted(_plain(x) for x in obj)
    if isinstance(obj, (list, tuple)):
        return [_plain(x) for x in obj]
    if isinstance(obj, (Decimal, Path)):
        return str(obj)
    return obj


def config_digest(config: NodeConfig) -> str:
    """SHA-256 of the effective configuration (file plus environment overrides), so an auditor
    sees every restart that changed a rule, a principal or a dataset."""
    effective = _plain(dataclasses.replace(config, source=None))
    return hashlib.sha256(json.dumps(effective, sort_keys=True, default=str).encode()).hexdigest()


def _write_public_key(state_dir: Path, key: NodeKey) -> None:
    """``state_dir/node_key.pub``: what the operator hands auditors out of band."""
    path = public_key_path(state_dir)
    if path.exists() and path.read_bytes() == key.public_key_pem:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # 0600 like every file here
    with os.fdopen(fd, "wb") as f:
        f.write(key.public_key_pem)
    os.replace(tmp, path)


class AuditTrail:
    """Wraps the node's :class:`AuditLog` with the events the node records."""

    def __init__(self, audit_log: AuditLog, reading: LogReading | None = None) -> None:
        self.log = audit_log
        self.key = audit_log.key
        self._reading = reading  # what the open check read, until the state is anchored
        self._anchor: StateAnchor | None = None
        self.witnesses: Witnesses | None = None

    @classmethod
    def open(cls, state_dir: Path, *, database: StateDatabase | None = None) -> AuditTrail:
        """Load (or create) the node key and open the log (``state_dir/audit.db``, or
        ``database`` shared by replicas), checking it end to end; a log that cannot be opened or
        fails its check keeps the node from starting."""
        try:
            key = NodeKey.load_or_create(Path(state_dir))
        except BaseException:
            if database is not None:
                database.close()
            raise
        reading = LogReading()
        trail = cls(AuditLog(database if database is not None else Path(state_dir) / LOG_FILE, key,
                             node_id=node_id_for(key), visit=reading.visit), reading)
        try:
            _write_public_key(Path(state_dir), key)
            if key.created or trail.log.tree_size == 0:
                trail._append("admin.key.create", SYSTEM, "ok", details={
                    "key_id": key.key_id, "algorithm": "Ed25519",
                    "public_key_file": str(public_key_path(state_dir))})
        except BaseException:
            trail.close()
            raise
        return trail

    @property
    def node_id(self) -> str:
        return self.log.node_id

    def close(self) -> None:
        if self.witnesses is not None:
            self.witnesses.close()
        self.log.close()

    def start_witnessing(self, settings: WitnessSettings) -> None:
        """Send checkpoints to ``settings``' witnesses from now on; refuse to start
        (:class:`StartRefused`) if one of them holds a checkpoint this log contradicts."""
        self.witnesses = Witnesses(self.log, settings)
        latest = self.log.latest_checkpoint()
        if latest is not None:
            self.witnesses.check_at_start(latest)

    def anchor_to(self, store: StateStore, *, recovering: bool = False) -> tuple[LogReading, StartRefused | None]:
        """Check that ``store`` and this log vouch for each other (:mod:`.anchoring`; raises
        :class:`StartRefused`), then anchor every later entry written inside a state transaction.
        ``recovering`` (``veil node recover``): return the refusal instead, with the log as read."""
        anchor = StateAnchor(store)
        reading, self._reading = self._reading or LogReading(), None
        refusal = None
        # Under the state's write lock: with replicas sharing PostgreSQL, no other replica commits
        # a state change (nor its anchored entries) while this one compares; what they appended
        # since this log was opened is read in first.
        with store.joined_tx():
            if store.shared:
                for entry in self.log.entries(reading.size):
                    reading.visit(entry, merkle.leaf_hash(entry.to_bytes()))
            try:
                check_at_start(reading, store, anchor, log_where=str(self.log.path), state_where=store.location)
            except StartRefused as e:
                if not recovering:
                    raise
                refusal = e
        self._anchor = anchor
        return reading, refusal

    def _append(self, kind: str, principal: str, outcome: str, *, dataset: str | None = None,
                query: str | None = None, details: dict[str, Any] | None = None) -> int:
        return self._write([Event(kind, principal, outcome, dataset, query, details)])[0]

    def _append_all(self, events: list[Event], *, checkpoint: bool = False) -> None:
        """Several entries (and a checkpoint over them) in one transaction: all durable or none."""
        self._write(events, checkpoint=checkpoint)

    def _write(self, events: list[Event], *, checkpoint: bool = False) -> list[int]:
        """Append; inside the state store's open transaction (a ``write_ahead``), the entries carry
        the transaction's ``state_seq`` and the state records the log position, in that
        transaction (the state ↔ log anchor)."""
        db = self._anchor.store.open_transaction() if self._anchor is not None else None
        seq = next_seq(self._anchor.read(db)) if db is not None else 0
        clean = [Event(e.kind, _text(e.principal, 200), e.outcome, e.dataset, e.query,
                       {**(e.details or {}), STATE_SEQ: seq} if seq else e.details) for e in events]
        leaves: list[bytes] = []
        indices, _ = self.log.append_many(clean, checkpoint=checkpoint, leaves=leaves)
        if db is not None:
            self._anchor.write(db, Anchor(seq, indices[-1] + 1, leaves[-1].hex()))
        return indices

    def _best_effort(self, what: str, fn, *args, **kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except AuditUnavailable as e:
            log.error("could not log %s: %s", what, e.private)

    # -- the node ---------------------------------------------------------------------------

    def node_started(self, config: NodeConfig) -> None:
        """Anchored: the state records the log position of every start."""
        with self._state_transaction():
            self._append_all([Event("admin.node.start", SYSTEM, "ok", details={
                "node_name": _text(config.name), "config_digest": config_digest(config),
                "datasets": sorted(d.name for d in config.datasets),
                "principals": len(config.principals), "software": SOFTWARE})], checkpoint=True)

    def node_stopping(self) -> None:
        """Anchored, and on a state of its own (SQLite) with a digest of the whole state: a change
        made while the node is stopped is refused at the next start."""
        def stop() -> None:
            with self._state_transaction() as db:
                details = {}
                if db is not None and not self._anchor.store.shared:
                    details[STATE_DIGEST] = state_digest(db)
                self._append_all([Event("admin.node.stop", SYSTEM, "ok", details=details)], checkpoint=True)

        self._best_effort("node stop", stop)

    @contextlib.contextmanager
    def _state_transaction(self):
        if self._anchor is None:
            yield None
            return
        with self._anchor.store.joined_tx() as db:
            yield db

    def already_released(self, query_id: str) -> int | None:
        """The index of a logged release of ``query_id``, if any: whatever the state says, a
        query is released at most once."""
        page = self.log.search(kind="query.release", query=query_id, outcome="ok", page_size=1)
        return page.entries[0].index if page.entries else None

    # -- requests ---------------------------------------------------------------------------

    def denied(self, method: str, principal: str | None, err: VeilError) -> None:
        """An authentication failure or a role refusal at the door (the interceptor's hook)."""
        self._best_effort("a denial", self._append, "auth.failure", principal or ANONYMOUS, "denied",
                          details={"method": _text(method, 200), "reason": err.reason,
                                   "code": err.code.name})

    def catalog_read(self, principal: Principal, method: str, dataset: str | None = None, *,
                     error: VeilError | None = None) -> None:
        """Before the catalog answers: no entry, no answer. A refused read is logged best-effort."""
        if error is None:
            self._append("catalog.read", principal.name, "ok", dataset=dataset, details={"method": method})
            return
        self._best_effort("a refused catalog read", self._append, "catalog.read", principal.name, "denied",
                          dataset=_text(dataset.removeprefix("datasets/"), 200) if dataset else None,
                          details={"method": method, "reason": error.reason})

    # -- queries ----------------------------------------------------------------------------

    def refused(self, principal: Principal, err: VeilError, *, sql: str, purpose: str,
                request_id: str, plan=None, decision=None) -> None:
        """A submission refused before any query existed (bad request, SQL or policy)."""
        outcome = "error" if err.code.name in _ERROR_CODES else "denied"
        details: dict[str, Any] = {
            "reason": err.reason, "code": err.code.name, "purpose": _text(purpose, 200),
            "request_id": _text(request_id, 200), "sql_sha256": _sha256(sql), "sql": _text(sql),
        }
        kind = "query.submit"
        if plan is not None:
            details |= {"canonical_sql": _text(plan.canonical_sql()), "plan_digest": plan.digest()}
        if decision is not None and decision.rejected is not None and decision.rejected.reason == err.reason:
            kind = "query.decision"
            details |= {"decision": "reject", "rules": _rules(decision)}
        self._best_effort("a refused submission", self._append, kind, principal.name, outcome,
                          dataset=plan.dataset if plan is not None else None, details=details)

    def submitted(self, rec, decision) -> None:
        """The submission and the policy's decision on it, before the query is stored."""
        self._append_all([
            Event("query.submit", rec.principal, "ok", dataset=rec.dataset, query=rec.id, details={
                "purpose": rec.purpose, "request_id": _text(rec.request_id, 200),
                "canonical_sql": _text(rec.canonical_sql), "plan_digest": rec.plan_digest,
                "sql_sha256": _sha256(rec.sql), "key_fingerprint": rec.key_fingerprint,
                # The plan digest covers the SQL only; encrypted inputs (ciphertexts) get their own.
                "inputs_sha256": hashlib.sha256(getattr(rec, "inputs", b"") or b"").hexdigest()}),
            Event("query.decision", rec.principal, "ok", dataset=rec.dataset, query=rec.id, details={
                "decision": "auto_approve" if decision.auto_approve else "pending_approval",
                "rules": _rules(decision), "summary": _text(decision.summary(), 2000)}),
        ])

    def approved(self, rec, *, approvers: list[str], reason: str) -> None:
        """Before the move to APPROVED; a signed checkpoint covers every approval (same commit)."""
        self._append_all([Event("query.approve", rec.principal, "ok", dataset=rec.dataset, query=rec.id,
                                details={"approvers": approvers, "reason": _text(reason, 2000),
                                         "plan_digest": rec.plan_digest})], checkpoint=True)

    def released(self, rec, result, counters: dict[str, int], *, rows_scanned_approx: int,
                 exact_cells: list[bool] | None = None) -> None:
        """Before the move to SUCCEEDED: the execution, then the release (a digest of the
        encrypted result, never a value), then a signed checkpoint covering both; one commit.
        Refused (``ALREADY_RELEASED``) if the log already holds a release of the query, whatever
        the state says (a state set back, or a release whose state commit was lost)."""
        earlier = self.already_released(rec.id)
        if earlier is not None:
            raise FailedPrecondition(
                "this query's result was already released once; it is not released again",
                reason="ALREADY_RELEASED", private=f"query {rec.id}: release at log entry {earlier}")
        self._append_all([
            Event("query.execute", rec.principal, "ok", dataset=rec.dataset, query=rec.id, details={
                "rows_scanned_approx": rows_scanned_approx,
                "groups_released": counters.get("groups_released", 0),
                "groups_suppressed": counters.get("groups_suppressed", 0), "cells": counters.get("cells", 0)}),
            Event("query.release", rec.principal, "ok", dataset=rec.dataset, query=rec.id,
                  details=release_details(
                      rec.plan_digest, getattr(result, "certificate_id", ""), result.result_digest,
                      key_fingerprint=rec.key_fingerprint,
                      # The ε this release spends: what `veil node recover` debits if the state is lost.
                      epsilon_micro=round(getattr(result, "epsilon", 0.0) * 1_000_000),
                      ciphertexts=len(result.cells.ciphertexts) + len(getattr(result, "weighted_cells", ())),
                      # Exact mode: which of the plan's cells were released (structure, no value;
                      # what `veil node recover` rebuilds the release history from).
                      **({} if exact_cells is None else {"exact_released": pack_flags(exact_cells)}),
                      # A consent dataset: the digest of the consent set the result was computed on.
                      **({"consent_snapshot": result.consent_snapshot}
                         if getattr(result, "consent_snapshot", "") else {}))),
        ], checkpoint=True)

    # -- models (issue 18) ------------------------------------------------------------------

    def model_released(self, principal: str, dataset: str, release: str, details: dict[str, Any]) -> None:
        """Before one model release leaves (in the transaction that charges it): what was fitted
        (formula, terms, family, iteration) and a digest of the encrypted statistics, never a value.
        ``release`` is the entry's ``query`` field (so a receipt can name it)."""
        self._append_all([Event("model.release", principal, "ok", dataset=dataset, query=release, details=details)],
                         checkpoint=True)

    def model_receipt(self, principal: str, release: str) -> Receipt | None:
        """The receipt of ``principal``'s model release ``release`` (None: no such release of theirs)."""
        page = self.log.search(kind="model.release", query=release, outcome="ok", page_size=1)
        if not page.entries:  # a federated model's release to the analyst, logged by its coordinator
            page = self.log.search(kind="query.release", query=release, outcome="ok", page_size=1)
            if page.entries and not page.entries[0].details.get("federation", {}).get("model"):
                return None
        if not page.entries or page.entries[0].principal != principal:
            return None
        receipt = self.log.receipt(page.entries[0].index)
        if self.witnesses is None or not self.witnesses.settings.witnesses:
            return receipt
        self.witnesses.ensure(receipt.checkpoint)
        return dataclasses.replace(receipt, witness_note=self.witnesses.note(receipt.checkpoint))

    def model_refused(self, principal: str, err: VeilError, details: dict[str, Any]) -> None:
        """A model release refused (bad request or a rule); best effort, like refused queries."""
        outcome = "error" if err.code.name in _ERROR_CODES else "denied"
        self._best_effort("a refused model release", self._append, "model.refuse", principal, outcome,
                          details={**details, "reason": err.reason, "code": err.code.name})

    def rejected(self, rec, principal: Principal, reason: str, code: str) -> None:
        """Before the move to REJECTED (by a reviewing owner) or EXPIRED (nobody decided in time)."""
        self._append("query.reject", principal.name if principal else SYSTEM, "ok", dataset=rec.dataset,
                     query=rec.id, details={"reason": code, "message": _text(reason, 2000)})

    def partial_approval(self, rec, principal: Principal, reason: str, have: int, need: int) -> None:
        """One owner's approval of a query that needs more than one."""
        self._append_all([Event("query.approve", principal.name, "ok", dataset=rec.dataset, query=rec.id,
                                details={"approvers": [principal.name], "reason": _text(reason, 2000),
                                         "plan_digest": rec.plan_digest, "approvals": have,
                                         "approvals_required": need})], checkpoint=True)

    def admin(self, kind: str, principal: str, *, dataset: str | None = None,
              details: dict[str, Any] | None = None) -> None:
        """An administrative change (datasets, grants, listings): logged before it is made."""
        self._append(f"admin.{kind}", principal, "ok", dataset=dataset, details=details or {})

    def cancelled(self, rec, principal: Principal) -> None:
        """Before the move to CANCELLED."""
        self._append("query.cancel", principal.name, "ok", dataset=rec.dataset, query=rec.id,
                     details={"from_state": rec.state.value, "owner": rec.principal})

    def failed(self, rec, reason: str) -> None:
        self._best_effort("a failure", self._append, "query.fail", rec.principal, "error",
                          dataset=rec.dataset, query=rec.id,
                          details={"reason": reason, "from_state": rec.state.value})

    # -- receipts ---------------------------------------------------------------------------

    def receipt(self, query_id: str, result_digest: str) -> Receipt | None:
        """The receipt of the release entry of ``query_id`` whose digest is ``result_digest``
        (a query that ran again after a crash has several release entries; the stored result
        is the last). ``None`` if the log has no such entry."""
        index, token = None, ""
        while True:
            page = self.log.search(kind="query.release", query=query_id, outcome="ok",
                                   page_token=token)
            for e in page.entries:
                if e.details.get(RESULT_DIGEST) == result_digest:
                    index = e.index
            token = page.next_page_token
            if not token:
                break
        if index is None:
            return None
        receipt = self.log.receipt(index)
        if self.witnesses is None or not self.witnesses.settings.witnesses:
            return receipt
        self.witnesses.ensure(receipt.checkpoint)
        return dataclasses.replace(receipt, witness_note=self.witnesses.note(receipt.checkpoint))


def _rules(decision) -> list[dict[str, str]]:
    return [{"rule": r.name, "message": _text(r.message, 1000)} for r in decision.rules]


def pack_flags(flags: list[bool]) -> str:
    """Flags as base64 of a bitmap, first flag in the high bit of the first byte."""
    import base64

    data = bytearray((len(flags) + 7) // 8)
    for i, f in enumerate(flags):
        if f:
            data[i // 8] |= 0x80 >> (i % 8)
    return f"{len(flags)}:" + base64.b64encode(bytes(data)).decode("ascii")


def unpack_flags(text: str) -> list[bool] | None:
    """``pack_flags``' inverse; None if ``text`` is not one."""
    import base64
    import binascii

    try:
        count, _, b64 = text.partition(":")
        n = int(count)
        data = base64.b64decode(b64, validate=True)
    except (ValueError, binascii.Error):
        return None
    if n < 0 or len(data) != (n + 7) // 8:
        return None
    return [bool(data[i // 8] & (0x80 >> (i % 8))) for i in range(n)]
