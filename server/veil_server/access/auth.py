"""Who is calling, and may they call this method? Deny by default.

Every RPC is listed in :data:`METHOD_ROLES` with the roles allowed to call it. A method that is
not listed is refused for everybody, so a method added to the proto without a rule cannot be
called (and a test that enumerates the service descriptors fails). Health checking and
reflection are public so that generic tools and load balancers can use them.

The interceptor also maps the node's exception tree to gRPC statuses with a
``google.rpc.ErrorInfo`` detail, in one place, so servicers stay thin.

Bearer tokens (``authorization: Bearer <token>``) are looked up by their SHA-256, so the node
never stores a token. Transport security (TLS/mTLS) wraps this layer without changing it.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import threading
from typing import Any, Callable, Iterable

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from ..config import Principal, Role
from .memory import large_body_seen
from ..errors import ERROR_DOMAIN, Internal, PermissionDenied, ResourceExhausted, Unauthenticated, VeilError
from ..telemetry.calls import note_principal

log = logging.getLogger("veil.auth")

ANALYST, OWNER, AUDITOR, ADMIN, REVIEWER = Role.ANALYST, Role.OWNER, Role.AUDITOR, Role.ADMIN, Role.REVIEWER
ANYONE = frozenset(Role)


class _PeerSigned(frozenset):
    """Federation (issue 6): node-to-node methods. No role may call them with a token; the
    request's Ed25519-signed envelope, checked against the peer keys pinned in [federation], is
    the credential (veil_server.federation.envelope), and the servicer maps its own errors."""


PEER_SIGNED: frozenset[Role] = _PeerSigned()

METHOD_ROLES: dict[str, frozenset[Role]] = {
    "/veil.v1.CatalogService/ListDatasets": ANYONE,
    "/veil.v1.CatalogService/GetDataset": ANYONE,
    "/veil.v1.QueryService/SubmitQuery": frozenset({ANALYST}),
    "/veil.v1.QueryService/GetQuery": frozenset({ANALYST, OWNER, ADMIN}),
    "/veil.v1.QueryService/ListQueries": frozenset({ANALYST, OWNER, ADMIN}),
    "/veil.v1.QueryService/CancelQuery": frozenset({ANALYST}),
    "/veil.v1.QueryService/GetQueryResult": frozenset({ANALYST}),
    "/veil.v1.QueryService/StreamQueryResult": frozenset({ANALYST}),
    "/veil.v1.QueryService/WaitQuery": frozenset({ANALYST, OWNER, ADMIN}),
    "/veil.v1.QueryService/ExplainQuery": frozenset({ANALYST}),
    # Issue 4: an analyst reads its own budget; the usage report is scoped by the node per role.
    "/veil.v1.QueryService/GetBudget": frozenset({ANALYST}),
    "/veil.v1.QueryService/GetUsageReport": frozenset({ANALYST, OWNER, ADMIN, AUDITOR}),
    # Issue 18: each call is one release of a model's statistics, under the same rules as a query.
    "/veil.v1.ModelService/ComputeModelStatistics": frozenset({ANALYST}),
    "/veil.v1.ModelService/GetModelReceipt": frozenset({ANALYST}),
    "/veil.v1.ModelService/ListModelReleases": frozenset({OWNER, ADMIN, AUDITOR}),
    # Owner review of models: owners decide on datasets they own (checked by the servicer).
    "/veil.v1.ModelService/ListModelReviews": frozenset({OWNER, ADMIN}),
    "/veil.v1.ModelService/ApproveModel": frozenset({OWNER}),
    "/veil.v1.ModelService/RejectModel": frozenset({OWNER}),
    # Governance (issue 3): who may drive which step; ownership and separation of duties are
    # checked by the steward on top of these roles.
    "/veil.v1.GovernanceService/RegisterDataset": frozenset({OWNER}),
    "/veil.v1.GovernanceService/SubmitDatasetForReview": frozenset({OWNER}),
    "/veil.v1.GovernanceService/ApproveListing": frozenset({REVIEWER}),
    "/veil.v1.GovernanceService/RejectListing": frozenset({REVIEWER}),
    "/veil.v1.GovernanceService/SuspendDataset": frozenset({OWNER, ADMIN}),
    "/veil.v1.GovernanceService/ResumeDataset": frozenset({OWNER, ADMIN}),
    "/veil.v1.GovernanceService/DelistDataset": frozenset({OWNER, ADMIN}),
    "/veil.v1.GovernanceService/ListDatasetVersions": frozenset({OWNER, REVIEWER, ADMIN}),
    "/veil.v1.GovernanceService/GetCertificate": ANYONE,
    "/veil.v1.GovernanceService/CreateGrant": frozenset({OWNER}),
    "/veil.v1.GovernanceService/ListGrants": frozenset({OWNER, ADMIN, ANALYST}),
    "/veil.v1.GovernanceService/RevokeGrant": frozenset({OWNER}),
    "/veil.v1.ReviewService/ListPendingQueries": frozenset({OWNER, ADMIN}),
    "/veil.v1.ReviewService/GetPendingQuery": frozenset({OWNER}),
    "/veil.v1.ReviewService/ApproveQuery": frozenset({OWNER}),
    "/veil.v1.ReviewService/RejectQuery": frozenset({OWNER}),
    # The log is for auditors. Anyone may fetch the key that signs it (to pin it and verify
    # receipts); an analyst may fetch the receipts of their own queries (the node checks).
    "/veil.v1.AuditService/ListAuditEvents": frozenset({AUDITOR}),
    "/veil.v1.AuditService/GetCheckpoint": frozenset({AUDITOR}),
    "/veil.v1.AuditService/ListCheckpoints": frozenset({AUDITOR}),
    "/veil.v1.AuditService/GetInclusionProof": frozenset({AUDITOR}),
    "/veil.v1.AuditService/GetConsistencyProof": frozenset({AUDITOR}),
    "/veil.v1.AuditService/ExportAuditLog": frozenset({AUDITOR}),
    "/veil.v1.AuditService/GetNodeKey": ANYONE,
    "/veil.v1.AuditService/GetReceipt": frozenset({ANALYST, AUDITOR}),
    "/veil.v1.AuditService/GetSubjectStatement": frozenset({Role.SUBJECT_AGENT}),
    # Federation (issue 6). Analysts run federated queries at any member; peers call PeerService.
    "/veil.v1.FederationService/ListFederatedDatasets": ANYONE,
    "/veil.v1.FederationService/RunFederatedQuery": frozenset({ANALYST}),
    "/veil.v1.PeerService/PrepareFederatedQuery": PEER_SIGNED,
    "/veil.v1.PeerService/ContributePartial": PEER_SIGNED,
    "/veil.v1.PeerService/AggregateShares": PEER_SIGNED,
    "/veil.v1.PeerService/ReleasePartial": PEER_SIGNED,
    "/veil.v1.PeerService/AbortFederatedQuery": PEER_SIGNED,
}

PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/",
                   "/grpc.reflection.v1.ServerReflection/")

_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("veil_principal", default=None)


def current_principal() -> Principal:
    p = _current.get()
    if p is None:  # only reachable if a servicer is called outside the interceptor
        raise Unauthenticated("no authenticated principal", reason="UNAUTHENTICATED")
    return p


class TokenAuthenticator:
    def __init__(self, principals: Iterable[Principal]) -> None:
        self._by_digest = {p.token_sha256: p for p in principals}

    def authenticate(self, metadata: Iterable[tuple[str, Any]] | None, context: Any = None) -> Principal:
        token = None
        for key, value in metadata or ():
            if key == "authorization" and isinstance(value, str):
                scheme, _, rest = value.partition(" ")
                if scheme.lower() == "bearer" and rest.strip():
                    token = rest.strip()
        if token is None:
            raise Unauthenticated(
                "no bearer token: send metadata 'authorization: Bearer <token>'", reason="MISSING_CREDENTIALS"
            )
        principal = self._by_digest.get(hashlib.sha256(token.encode()).hexdigest())
        if principal is None:
            raise Unauthenticated("the token is not valid on this node; ask the owner for one",
                                  reason="INVALID_TOKEN")
        return principal


def to_status(err: VeilError) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(reason=err.reason, domain=ERROR_DOMAIN, metadata=err.metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    details = [detail]
    # Issue 20: a refusal that says when to come back carries google.rpc.RetryInfo, which gRPC
    # clients and proxies understand; ErrorInfo's retry_after_ms stays for older clients.
    retry_ms = err.metadata.get("retry_after_ms", "")
    if retry_ms.isdigit():
        delay = duration_pb2.Duration(seconds=int(retry_ms) // 1000, nanos=int(retry_ms) % 1000 * 1_000_000)
        retry = any_pb2.Any()
        retry.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        details.append(retry)
    return rpc_status.to_status(
        status_pb2.Status(code=err.code.value[0], message=err.message, details=details)
    )


class AuthInterceptor(grpc.ServerInterceptor):
    def __init__(
        self,
        authenticator: TokenAuthenticator,
        on_denied: Callable[[str, str | None, VeilError], None] | None = None,
        on_data_loss: Callable[[str], None] | None = None,
        preauth_slots: int = 0,
        client_certs: bool = True,
    ) -> None:
        self._auth = authenticator
        self._on_denied = on_denied
        # Issue 15: calls whose metadata identifies nobody share this many slots while their
        # bodies are read (0: no pre-read check); without an mTLS port they are refused unread.
        self._preauth = threading.BoundedSemaphore(preauth_slots) if preauth_slots else None
        self._client_certs = client_certs
        # Issue 15: a service that hit damaged state is reported NOT_SERVING (health), while the
        # rest of the node serves on.
        self._on_data_loss = on_data_loss

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        handler = continuation(handler_call_details)
        if method.startswith(PUBLIC_PREFIXES) or handler is None:
            return handler
        roles = METHOD_ROLES.get(method)
        # Issue 15: decide on the metadata alone, before the body is read, whether this caller
        # may make the node read up to max_message_bytes.
        early, release = self._before_reading(method, handler_call_details.invocation_metadata)
        if early is not None:
            return _refuse_unread(handler, early, lambda: self._deny(method, None, early))
        if release is not None:
            handler = _releasing(handler, release)
        if roles is PEER_SIGNED:  # federation: the signed envelope is checked by the servicer
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap(method, roles, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, roles, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return None  # streaming requests are not part of the contract: UNIMPLEMENTED

    def _before_reading(self, method: str, metadata) -> tuple[VeilError | None, Callable[[], None] | None]:
        """(refusal, None) to refuse without reading the body; (None, release) when the call
        takes one of the few slots for callers not identified by their metadata (anonymous,
        client certificate, peer envelope); (None, None) for a caller whose bearer token checks."""
        if self._preauth is None:
            return None, None
        token = any(k == "authorization" for k, _ in metadata or ())
        if token:
            try:
                self._auth.authenticate(metadata, None)
                return None, None
            except VeilError as e:
                return e, None  # a bad token is refused whatever port it came on
        if not self._client_certs and METHOD_ROLES.get(method) is not PEER_SIGNED:
            return Unauthenticated("no credentials: send metadata 'authorization: Bearer <token>'",
                                   reason="MISSING_CREDENTIALS"), None
        if not self._preauth.acquire(blocking=False):
            return ResourceExhausted(
                "too many calls without a bearer token are being read at once; retry shortly",
                reason="PREAUTH_CONCURRENCY", metadata={"retry_after_ms": "200"}), None
        return None, self._preauth.release

    def _deny(self, method: str, principal: str | None, e: VeilError) -> None:
        if self._on_denied is not None:
            try:
                self._on_denied(method, principal, e)
            except Exception:  # pragma: no cover - the denial stands either way
                log.exception("could not record a denial")

    def _admit(self, method: str, roles: frozenset[Role] | None, context: grpc.ServicerContext) -> Principal:
        principal = None
        try:
            # The context carries the verified client certificate on the mTLS port (issue 8).
            principal = self._auth.authenticate(context.invocation_metadata(), context)
            note_principal(principal.name)  # for the call's log line (issue 20)
            if roles is None or principal.role not in roles:
                raise PermissionDenied(
                    f"role '{principal.role.value}' may not call {method.rsplit('/', 1)[-1]}",
                    reason="ROLE_NOT_ALLOWED",
                    metadata={"method": method, "role": principal.role.value},
                )
            return principal
        except VeilError as e:
            if self._on_denied is not None:
                try:
                    self._on_denied(method, principal.name if principal else None, e)
                except Exception:  # pragma: no cover - the denial stands either way
                    log.exception("could not record a denial")
            raise

    def _wrap(self, method: str, roles: frozenset[Role] | None, behavior: Callable) -> Callable:
        def handle(request, context):
            failure: VeilError | None = None
            token = None
            try:
                token = _current.set(self._admit(method, roles, context))
                return behavior(request, context)
            except VeilError as e:
                failure = e
            except Exception:
                log.exception("unhandled error in %s", method)
                failure = Internal("the node hit an internal error; the operator has the details")
            finally:
                if token is not None:
                    _current.reset(token)
            self._report(method, failure)
            context.abort_with_status(to_status(failure))

        return handle

    def _report(self, method: str, failure: VeilError) -> None:
        if failure.code is grpc.StatusCode.DATA_LOSS and self._on_data_loss is not None:
            log.error("damaged state behind %s: %s", method, failure.private or failure.message)
            self._on_data_loss(method.split("/")[1])

    def _wrap_stream(self, method: str, roles: frozenset[Role] | None, behavior: Callable) -> Callable:
        """Server streaming. The principal cannot be set in the worker thread's context around
        ``yield``: between two ``next()`` calls that context belongs to whatever the thread does
        next, and a stream abandoned mid-way would leave it set (or be reset from another thread,
        which raises). So the servicer's generator runs in a private copy of the context, one
        ``next()`` at a time, and the worker's own context is never touched."""

        def handle(request, context):
            failure: VeilError | None = None
            steps = None
            try:
                principal = self._admit(method, roles, context)
                own = contextvars.copy_context()
                own.run(_current.set, principal)
                steps = own.run(behavior, request, context)
                while True:
                    try:
                        item = own.run(next, steps)
                    except StopIteration:
                        return
                    yield item
            except VeilError as e:
                failure = e
            except Exception:
                log.exception("unhandled error in %s", method)
                failure = Internal("the node hit an internal error; the operator has the details")
            finally:
                if steps is not None and hasattr(steps, "close"):
                    own.run(steps.close)  # runs the servicer's cleanup in its own context
            context.abort_with_status(to_status(failure))

        return handle


def _refuse_unread(handler, err: VeilError, record: Callable[[], None]):
    """A handler that answers ``err`` without reading the request: declared client-streaming,
    so gRPC reads nothing until asked (the same bytes on the wire as a unary call); the refusal
    is audited on the worker thread, not on the thread that accepts calls."""
    def refuse(_requests, context):
        large_body_seen()  # gRPC may have buffered part of the unread body
        record()
        context.abort_with_status(to_status(err))

    def refuse_stream(_requests, context):
        record()
        context.abort_with_status(to_status(err))
        yield  # pragma: no cover - abort raises

    if handler.unary_stream is not None or handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(refuse_stream, response_serializer=handler.response_serializer)
    return grpc.stream_unary_rpc_method_handler(refuse, response_serializer=handler.response_serializer)


def _releasing(handler, release: Callable[[], None]):
    """``handler`` whose behaviour gives its pre-authentication slot back when the call ends
    (for a stream, when it is exhausted or closed)."""
    if handler.unary_unary is not None:
        inner = handler.unary_unary

        def unary(request, context):
            try:
                return inner(request, context)
            finally:
                release()

        return grpc.unary_unary_rpc_method_handler(unary, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)
    if handler.unary_stream is not None:
        inner_stream = handler.unary_stream

        def stream(request, context):
            try:
                yield from inner_stream(request, context)
            finally:
                release()

        return grpc.unary_stream_rpc_method_handler(stream, request_deserializer=handler.request_deserializer,
                                                    response_serializer=handler.response_serializer)
    release()
    return handler
