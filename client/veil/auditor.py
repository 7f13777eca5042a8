"""The auditor's calls: ``node.audit.events(...)``, ``.export(path)``, ``.checkpoint()``.

What each party learns: the auditor learns every log entry (names, reasons, canonical SQL,
digests; never a data value). The node learns which auditor read what, and when.

Everything that comes back signed is checked against the node key the SDK trusts (pinned on
first use, or passed explicitly): a checkpoint that does not verify raises
:class:`veil.IntegrityError`. An export is written as received; verify it offline with
``veil.audit.verify_export`` or ``veil audit verify``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from .audit.canonical import parse_time
from .audit.merkle import VerificationError
from .audit.records import Checkpoint
from .audit.verify import verify_checkpoint_consistency
from .errors import IntegrityError, InvalidRequest, from_rpc_error
from .receipts import checkpoint_from_proto
from .v1 import audit_pb2, audit_pb2_grpc

if TYPE_CHECKING:
    from .connection import Connection

EXPORT_TIMEOUT = 600.0


@dataclass(frozen=True)
class AuditEvent:
    index: int
    time: str
    kind: str
    principal: str
    outcome: str
    dataset: str
    query: str
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_proto(cls, e: audit_pb2.AuditEvent) -> "AuditEvent":
        return cls(index=e.index, time=e.time.ToDatetime().strftime("%Y-%m-%dT%H:%M:%S.%fZ"), kind=e.kind,
                   principal=e.principal, outcome=e.outcome, dataset=e.dataset, query=e.query,
                   details=json.loads(e.details_json or "{}"))


def _ts(value: datetime | str | None) -> Timestamp | None:
    if value is None:
        return None
    when = parse_time(value) if isinstance(value, str) else value
    t = Timestamp()
    t.FromDatetime(when)
    return t


class AuditAPI:
    """The AuditService as an auditor uses it. Obtain it as ``node.audit``."""

    def __init__(self, node: "Connection") -> None:
        self._node = node
        self._stub = audit_pb2_grpc.AuditServiceStub(node._channel)

    def events(self, *, kind: str | None = None, principal: str | None = None, dataset: str | None = None,
               outcome: str | None = None, query: str | None = None, since: datetime | str | None = None,
               until: datetime | str | None = None, limit: int = 1000) -> list[AuditEvent]:
        """Entries matching every filter given, oldest first (``kind`` may end in ``.*``)."""
        out: list[AuditEvent] = []
        token = ""
        while len(out) < limit:
            req = audit_pb2.ListAuditEventsRequest(
                kind=kind or "", principal=principal or "", dataset=dataset or "", outcome=outcome or "",
                query=(query or "").removeprefix("queries/"), since=_ts(since), until=_ts(until),
                page_size=min(1000, limit - len(out)), page_token=token)
            resp = self._node._call(self._stub.ListAuditEvents, req, retry=True)
            out += [AuditEvent.from_proto(e) for e in resp.events]
            token = resp.next_page_token
            if not token:
                break
        return out

    def export(self, dest: str | os.PathLike[str] | IO[bytes]) -> int:
        """Stream the JSONL export into ``dest`` (a path or a binary file); returns its size."""
        if isinstance(dest, (str, os.PathLike)):
            with open(dest, "wb") as f:
                return self.export(f)
        written = 0
        try:
            for chunk in self._stub.ExportAuditLog(audit_pb2.ExportAuditLogRequest(),
                                                   metadata=self._node._metadata(), timeout=EXPORT_TIMEOUT):
                dest.write(chunk.data)
                written += len(chunk.data)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        dest.flush()
        return written

    def subject_statement(self, dataset: str, subject_id: str, *, code: str, purpose: str = "") -> dict[str, Any]:
        """The node's signed statement of which releases of ``dataset`` (a consent dataset) were
        computed on a consent snapshot that included ``subject_id`` (for a subject_agent holding
        the subject's statement ``code``), verified against the node key: its content, with the
        raw ``document`` and ``signature`` added for keeping."""
        from .statements import StatementError, verify_statement

        req = audit_pb2.GetSubjectStatementRequest(dataset=f"datasets/{dataset.removeprefix('datasets/')}",
                                                   subject_id=subject_id, purpose=purpose, subject_code=code)
        resp = self._node._call(self._stub.GetSubjectStatement, req)
        try:
            body = verify_statement(resp.document, resp.signature, self._node.node_key())
        except StatementError as e:
            raise IntegrityError(f"the subject statement does not verify: {e}", reason="STATEMENT_INVALID") from None
        return {**body, "document": bytes(resp.document), "signature": resp.signature}

    def _verified(self, cp: audit_pb2.Checkpoint) -> Checkpoint:
        checkpoint = checkpoint_from_proto(cp)
        try:
            checkpoint.verify(self._node.node_key())
        except VerificationError as e:
            raise IntegrityError(f"the checkpoint does not verify: {e}", reason="CHECKPOINT_INVALID") from None
        return checkpoint

    def checkpoint(self, *, sign_now: bool = False) -> Checkpoint:
        """The latest signed checkpoint (``sign_now``: one covering the log as it is now)."""
        return self._verified(self._node._call(
            self._stub.GetCheckpoint, audit_pb2.GetCheckpointRequest(sign_now=sign_now), retry=True))

    def checkpoints(self, *, limit: int = 100) -> list[Checkpoint]:
        resp = self._node._call(self._stub.ListCheckpoints, audit_pb2.ListCheckpointsRequest(page_size=limit),
                                retry=True)
        return [self._verified(c) for c in resp.checkpoints]

    def consistent_with(self, old: Checkpoint) -> Checkpoint:
        """Prove that the log today extends ``old`` (a checkpoint you kept); returns the new
        checkpoint. Raises :class:`IntegrityError` on truncation, rollback or a rewritten past."""
        try:
            resp = self._node._call(self._stub.GetConsistencyProof,
                                    audit_pb2.GetConsistencyProofRequest(old_size=old.tree_size), retry=True)
        except InvalidRequest as e:  # the node has fewer entries than it once signed
            raise IntegrityError(f"the log is shorter than the checkpoint of {old.tree_size} entries: "
                                 f"truncated or rolled back ({e.message})", reason="LOG_ROLLBACK") from None
        new = self._verified(resp.new_checkpoint)
        try:
            verify_checkpoint_consistency(old, new, list(resp.hashes), self._node.node_key())
        except (VerificationError, ValueError) as e:
            raise IntegrityError(f"the log does not extend the checkpoint: {e}", reason="LOG_INCONSISTENT") from None
        return new
