"""gRPC adapter for the audit log: translate the request, ask the log, translate the answer.

What each party learns: an auditor, every entry, proof and checkpoint; an analyst, the node's
public key and the receipts of their own released queries (one entry each, plus hashes); the
node, who asked for what (refused calls are logged by the interceptor).

Who may call what is in ``auth.METHOD_ROLES``: auditors read the log, anyone authenticated may
fetch the node's public key, and an analyst may fetch receipts of their own queries (``Node.get``
hides other analysts' queries, exactly as GetQuery does).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from datetime import timezone

from google.protobuf.timestamp_pb2 import Timestamp

from veil.audit.canonical import parse_time
from veil.audit.records import Checkpoint, Entry, Receipt
from veil.v1 import audit_pb2, audit_pb2_grpc

from ..access.auth import current_principal
from ..errors import Internal, InvalidArgument
from ..node import Node, decode_result
from .query_service import decode_token, encode_token, page_size

CHUNK = 64 * 1024


def checkpoint_proto(cp: Checkpoint | None) -> audit_pb2.Checkpoint | None:
    if cp is None:
        return None
    return audit_pb2.Checkpoint(body=cp.signed_bytes(), signature=cp.signature, origin=cp.origin,
                                tree_size=cp.tree_size, root_hash=cp.root_hash, time=cp.time,
                                key_id=cp.key_id)


def event_proto(e: Entry) -> audit_pb2.AuditEvent:
    t = Timestamp()
    t.FromDatetime(parse_time(e.time))
    return audit_pb2.AuditEvent(
        index=e.index, time=t, kind=e.kind, principal=e.principal, outcome=e.outcome,
        dataset=e.dataset or "", query=e.query or "",
        details_json=json.dumps(dict(e.details), sort_keys=True, separators=(",", ":"), ensure_ascii=False),
        entry=e.to_bytes(),
    )


def receipt_proto(r: Receipt) -> audit_pb2.Receipt:
    return audit_pb2.Receipt(
        query=r.query_id, query_digest=r.query_digest, dataset_certificate_id=r.dataset_certificate_id,
        result_digest=r.result_digest, log_index=r.log_index, entry=r.entry,
        inclusion_proof=list(r.inclusion_proof), checkpoint=checkpoint_proto(r.checkpoint),
        witness_note=r.witness_note,
    )


def _opt(value: str) -> str | None:
    return value or None


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, node: Node) -> None:
        self.node = node
        self.log = node.audit.log

    def _stored(self, size: int) -> Checkpoint | None:
        return next((c for c in self.log.checkpoints() if c.tree_size == size), None)

    def _latest(self, covering: int = 0) -> Checkpoint:
        """The latest stored checkpoint if it covers ``covering`` entries, else a new one."""
        cp = self.log.latest_checkpoint()
        return cp if cp is not None and cp.tree_size >= covering else self.log.checkpoint()

    def ListAuditEvents(self, request, context):
        since = request.since.ToDatetime(tzinfo=timezone.utc) if request.HasField("since") else None
        until = request.until.ToDatetime(tzinfo=timezone.utc) if request.HasField("until") else None
        if request.page_size < 0:
            raise InvalidArgument("page_size must not be negative", reason="INVALID_PAGE_SIZE")
        size = self.log.tree_size
        page = self.log.search(
            kind=_opt(request.kind), principal=_opt(request.principal), dataset=_opt(request.dataset),
            outcome=_opt(request.outcome), query=_opt(request.query), since=since, until=until,
            page_size=request.page_size, page_token=request.page_token,
        )
        return audit_pb2.ListAuditEventsResponse(
            events=[event_proto(e) for e in page.entries], next_page_token=page.next_page_token,
            tree_size=size,
        )

    def _witnessed(self, cp: Checkpoint | None) -> audit_pb2.Checkpoint | None:
        """``checkpoint_proto`` with the witnesses' cosignatures the node holds for ``cp``."""
        out = checkpoint_proto(cp)
        witnesses = self.node.audit.witnesses
        if out is not None and witnesses is not None and witnesses.settings.witnesses:
            out.witness_note = witnesses.note(cp)
        return out

    def GetCheckpoint(self, request, context):
        return self._witnessed(self.log.checkpoint() if request.sign_now else self._latest())

    def ListCheckpoints(self, request, context):
        size = page_size(request.page_size)
        start = decode_token("cp", request.page_token) or 0
        cps = self.log.checkpoints(limit=start + size + 1)[start:]
        nxt = encode_token("cp", start + size) if len(cps) > size else ""
        return audit_pb2.ListCheckpointsResponse(
            checkpoints=[self._witnessed(c) for c in cps[:size]], next_page_token=nxt)

    def GetInclusionProof(self, request, context):
        if request.tree_size:
            size, cp = request.tree_size, self._stored(request.tree_size)
        else:
            cp = self._latest(covering=request.index + 1)
            size = cp.tree_size
        hashes = self.log.inclusion_proof(request.index, size)
        (entry,) = self.log.entries(request.index, request.index + 1)
        return audit_pb2.InclusionProof(index=request.index, tree_size=size, hashes=hashes,
                                        entry=entry.to_bytes(), checkpoint=checkpoint_proto(cp))

    def GetConsistencyProof(self, request, context):
        if request.new_size:
            new, new_cp = request.new_size, self._stored(request.new_size)
        else:
            new_cp = self._latest(covering=request.old_size)
            new = new_cp.tree_size
        hashes = self.log.consistency_proof(request.old_size, new)
        return audit_pb2.ConsistencyProof(
            old_size=request.old_size, new_size=new, hashes=hashes,
            old_checkpoint=checkpoint_proto(self._stored(request.old_size)),
            new_checkpoint=checkpoint_proto(new_cp))

    def ExportAuditLog(self, request, context) -> Iterator[audit_pb2.ExportChunk]:
        # The export is written whole before the first chunk goes out, so a slow reader never
        # holds the log (appends continue meanwhile) and the stream is one consistent snapshot.
        with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as buf:
            self.log.export(buf)
            buf.seek(0)
            while chunk := buf.read(CHUNK):
                yield audit_pb2.ExportChunk(data=chunk)

    def GetNodeKey(self, request, context):
        key = self.node.audit.key
        return audit_pb2.NodeKey(public_key=key.public_key_bytes, public_key_pem=key.public_key_pem.decode(),
                                 key_id=key.key_id, node_id=self.node.audit.node_id)

    def GetSubjectStatement(self, request, context):
        document, signature = self.node.subject_statement(current_principal(), request.dataset, request.subject_id,
                                                          request.purpose, request.subject_code)
        return audit_pb2.SubjectStatement(document=document, signature=signature)

    def GetReceipt(self, request, context):
        # Node.result checks ownership (analysts see only their own queries) and the state.
        principal = current_principal()
        result = decode_result(self.node.result(principal, request.name))
        receipt = self.node.audit.receipt(result.query.removeprefix("queries/"), result.result_digest)
        if receipt is None:  # the release entry is written before the result: this is corruption
            raise Internal("the release of this result has no audit entry", reason="RECEIPT_MISSING")
        return receipt_proto(receipt)
