"""The audit log is for auditors: every other role is refused every auditor method, and each
refusal (and every failed authentication) lands in the log itself."""

from __future__ import annotations

import grpc
import pytest

from veil.v1 import audit_pb2, audit_pb2_grpc
from veil_server.access.auth import METHOD_ROLES
from veil_server.config import Role

AUDITOR_ONLY = sorted(m for m, roles in METHOD_ROLES.items()
                      if m.startswith("/veil.v1.AuditService/") and roles == frozenset({Role.AUDITOR}))
REQUESTS = {
    "ListAuditEvents": audit_pb2.ListAuditEventsRequest(),
    "GetCheckpoint": audit_pb2.GetCheckpointRequest(),
    "ListCheckpoints": audit_pb2.ListCheckpointsRequest(),
    "GetInclusionProof": audit_pb2.GetInclusionProofRequest(index=0),
    "GetConsistencyProof": audit_pb2.GetConsistencyProofRequest(old_size=1),
    "ExportAuditLog": audit_pb2.ExportAuditLogRequest(),
}


def call(stub, name: str, token: str | None):
    md = [("authorization", f"Bearer {token}")] if token else []
    response = getattr(stub, name)(REQUESTS[name], metadata=md, timeout=10)
    return list(response) if name == "ExportAuditLog" else response  # a stream fails on first read


def test_only_auditors_read_the_log_and_every_refusal_is_logged(demo_node):
    assert len(AUDITOR_ONLY) == len(REQUESTS) == 6
    log = demo_node.running.node.audit.log
    start = log.tree_size
    with grpc.insecure_channel(demo_node.target) as ch:
        stub = audit_pb2_grpc.AuditServiceStub(ch)
        for who in ("alice", "olivia", "adam"):  # analyst, owner, admin
            for method in AUDITOR_ONLY:
                name = method.rsplit("/", 1)[1]
                with pytest.raises(grpc.RpcError) as e:
                    call(stub, name, demo_node.tokens[who])
                assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED, (who, name)
        for token in (None, "not-a-token"):
            with pytest.raises(grpc.RpcError) as e:
                call(stub, "ExportAuditLog", token)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        for method in AUDITOR_ONLY:  # the auditor is let in everywhere
            call(stub, method.rsplit("/", 1)[1], demo_node.tokens["audra"])
        for who in ("alice", "olivia", "adam", "audra", "bob"):
            key = stub.GetNodeKey(audit_pb2.GetNodeKeyRequest(), metadata=[
                ("authorization", f"Bearer {demo_node.tokens[who]}")], timeout=10)
            assert key.key_id == demo_node.running.node.audit.key.key_id

    denials = [e for e in log.entries(start) if e.kind == "auth.failure"]
    logged = {(e.principal, e.details["method"], e.details["reason"]) for e in denials}
    for who in ("alice", "olivia", "adam"):
        for method in AUDITOR_ONLY:
            assert (who, method, "ROLE_NOT_ALLOWED") in logged
    assert ("anonymous", "/veil.v1.AuditService/ExportAuditLog", "MISSING_CREDENTIALS") in logged
    assert ("anonymous", "/veil.v1.AuditService/ExportAuditLog", "INVALID_TOKEN") in logged
    assert all(e.outcome == "denied" for e in denials)
    # The auditor sees those denials through the service itself.
    with grpc.insecure_channel(demo_node.target) as ch:
        page = audit_pb2_grpc.AuditServiceStub(ch).ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(kind="auth.failure", principal="olivia", page_size=1000),
            metadata=[("authorization", f"Bearer {demo_node.tokens['audra']}")], timeout=10)
    assert {e.details_json for e in page.events if "ROLE_NOT_ALLOWED" in e.details_json}
    assert len([e for e in page.events if e.index >= start]) == len(AUDITOR_ONLY)
