"""The auditor's pages: the log, searchable and paged; each entry's inclusion proof checked here
against the latest signed checkpoint; the checkpoint history; one-click export and the node key
for offline verification.

Every figure comes from ``AuditService`` RPCs (auditors only). The proof is verified with the
library's offline verifier (:mod:`veil.audit`), the same code ``veil audit verify`` runs: the
checkpoint's Ed25519 signature against the node key, the entry's leaf hash, and the RFC 6962 path
from the leaf to the checkpoint's root.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from veil.audit import merkle
from veil.audit.records import Checkpoint, Entry
from veil.v1 import audit_pb2

from .calls import Refusal
from .httpd import App, Request, Response
from .witnesses import cosignatures

PAGE_SIZE = 50
FILTERS = ("principal", "dataset", "kind", "outcome", "query", "since", "until")
OFFLINE = ("veil audit key --out node.pub",
           "veil audit verify {file} --key node.pub --checkpoint kept.json")


def _when(text: str, field: str) -> Timestamp | None:
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise Refusal(None, "INVALID_TIME", f"{field} must be a date and time (YYYY-MM-DDTHH:MM, UTC)",
                      http_status=400) from None
    ts = Timestamp()
    ts.FromDatetime(at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at)
    return ts


def _key(app: App, req: Request) -> Any:
    return app.rpc(req, "/veil.v1.AuditService/GetNodeKey", audit_pb2.GetNodeKeyRequest())


def log_page(app: App, req: Request) -> Response:
    f = {k: req.arg(k) for k in FILTERS}
    r = audit_pb2.ListAuditEventsRequest(kind=f["kind"], principal=f["principal"],
                                         dataset=f["dataset"].removeprefix("datasets/"), outcome=f["outcome"],
                                         query=f["query"].removeprefix("queries/"), page_size=PAGE_SIZE,
                                         page_token=req.arg("page_token"))
    for name in ("since", "until"):
        ts = _when(f[name], name)
        if ts is not None:
            getattr(r, name).CopyFrom(ts)
    out = app.rpc(req, "/veil.v1.AuditService/ListAuditEvents", r)
    latest = app.rpc(req, "/veil.v1.AuditService/GetCheckpoint", audit_pb2.GetCheckpointRequest())
    rows = [{"e": e, "details": _summary(e.details_json)} for e in out.events]
    given = {k: v for k, v in f.items() if v}
    return app.render(req, "audit.html", title="Audit log", filters=f, rows=rows, tree_size=out.tree_size,
                      next_token=out.next_page_token, given=given, latest=latest, first_page=not req.arg("page_token"))


def _summary(details_json: str, limit: int = 160) -> str:
    try:
        details = json.loads(details_json or "{}")
    except ValueError:
        return ""
    text = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False, sort_keys=True)}" for k, v in sorted(details.items()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def entry_page(app: App, req: Request) -> Response:
    index = int(req.params["index"])
    key = _key(app, req)
    proof = app.rpc(req, "/veil.v1.AuditService/GetInclusionProof", audit_pb2.GetInclusionProofRequest(index=index))
    checks, entry, cp = verify_inclusion(proof, key.public_key)
    return app.render(req, "entry.html", title=f"Audit entry {index}", index=index, entry=entry, checkpoint=cp,
                      proof=proof, checks=checks, verified=all(ok for _, ok, _ in checks),
                      details=json.dumps(entry.details if entry else {}, indent=2, sort_keys=True, ensure_ascii=False),
                      key=key, offline=[c.format(file="audit.jsonl") for c in OFFLINE])


def verify_inclusion(proof: Any, public_key: bytes) -> tuple[list[tuple[str, bool, str]], Entry | None, Any]:
    """Each step of the check, as (what, passed, detail): signature, size, leaf, path to the root."""
    checks: list[tuple[str, bool, str]] = []
    entry = cp = None
    try:
        entry = Entry.from_bytes(proof.entry)
        checks.append(("The entry is canonical and is entry " + str(proof.index), entry.index == proof.index,
                       f"kind {entry.kind}, by {entry.principal}"))
    except Exception as e:  # noqa: BLE001 - any decoding failure is a failed check, shown as such
        checks.append(("The entry is canonical", False, type(e).__name__))
    if not proof.HasField("checkpoint"):
        checks.append(("A signed checkpoint covers the entry", False, "the node returned no checkpoint"))
        return checks, entry, None
    try:
        cp = Checkpoint.from_signed_bytes(proof.checkpoint.body, proof.checkpoint.signature)
        cp.verify(public_key)
        checks.append(("The checkpoint's Ed25519 signature verifies against the node key", True,
                       f"key {cp.key_id[:16]}…, signed {cp.time}"))
    except Exception as e:  # noqa: BLE001
        checks.append(("The checkpoint's Ed25519 signature verifies against the node key", False, str(e)))
        return checks, entry, cp
    checks.append(("The checkpoint covers the entry", cp.tree_size == proof.tree_size and proof.index < cp.tree_size,
                   f"tree size {cp.tree_size}"))
    try:
        merkle.verify_inclusion(merkle.leaf_hash(proof.entry), proof.index, proof.tree_size, list(proof.hashes),
                                cp.root_hash)
        checks.append(("The inclusion proof leads from the entry to the signed root", True,
                       f"{len(proof.hashes)} hashes to root {cp.root_hash.hex()[:16]}…"))
    except merkle.VerificationError as e:
        checks.append(("The inclusion proof leads from the entry to the signed root", False, str(e)))
    return checks, entry, cp


def checkpoints_page(app: App, req: Request) -> Response:
    key = _key(app, req)
    out = app.rpc(req, "/veil.v1.AuditService/ListCheckpoints",
                  audit_pb2.ListCheckpointsRequest(page_size=PAGE_SIZE, page_token=req.arg("page_token")))
    rows = []
    for c in out.checkpoints:
        try:
            Checkpoint.from_signed_bytes(c.body, c.signature).verify(key.public_key)
            ok = True
        except Exception:  # noqa: BLE001 - shown as not verified
            ok = False
        rows.append({"c": c, "verified": ok, "witnesses": cosignatures(c, app.witness_keys)})
    return app.render(req, "checkpoints.html", title="Checkpoints", rows=rows, next_token=out.next_page_token,
                      key=key, first_page=not req.arg("page_token"))


def export(app: App, req: Request) -> Response:
    stream = app.rpc_stream(req, "/veil.v1.AuditService/ExportAuditLog", audit_pb2.ExportAuditLogRequest())
    first = next(stream, None)  # a refusal raises here, before any byte of the answer is sent

    def chunks():
        if first is not None:
            yield first.data
        for chunk in stream:
            yield chunk.data

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Response(200, content_type="application/x-ndjson", chunks=chunks(), headers=[
        ("Content-Disposition", f'attachment; filename="veil-audit-{stamp}.jsonl"')])


def node_key(app: App, req: Request) -> Response:
    key = _key(app, req)
    return Response(200, key.public_key_pem.encode(), "application/x-pem-file", headers=[
        ("Content-Disposition", 'attachment; filename="node.pub"')])


ROUTES = [
    ("GET", "/audit", log_page),
    ("GET", r"/audit/entries/(?P<index>\d{1,18})", entry_page),
    ("GET", "/audit/checkpoints", checkpoints_page),
    ("POST", "/audit/export", export),
    ("GET", "/audit/key", node_key),
]
