"""Typed exceptions for everything a Veil node can refuse.

The node sends every error with a ``google.rpc.ErrorInfo`` whose ``reason`` is a stable
UPPER_SNAKE code; the SDK maps it back to an exception class here, by reason first and by
status code otherwise, so callers never match on message strings.
"""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


class VeilError(Exception):
    """Base class. ``reason`` is the node's machine-readable code, ``message`` names the fix."""

    def __init__(self, message: str, *, reason: str = "", code: grpc.StatusCode | None = None,
                 metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.code = code
        self.metadata = dict(metadata or {})

    def __str__(self) -> str:
        return f"[{self.reason}] {self.message}" if self.reason else self.message


class InvalidRequest(VeilError):
    """A request field is missing or malformed (INVALID_ARGUMENT)."""


class InvalidQuery(InvalidRequest):
    """The SQL is malformed or outside Veil's subset (INVALID_ARGUMENT)."""


class PermissionDenied(VeilError):
    """A column control, purpose, grant or role forbids this (PERMISSION_DENIED)."""


class AuthenticationError(VeilError):
    """No token, or a token the node does not accept (UNAUTHENTICATED)."""


class NotFound(VeilError):
    """No such dataset or query (NOT_FOUND)."""


class AlreadyExists(VeilError):
    """E.g. a request_id reused for a different query (ALREADY_EXISTS)."""


class WrongState(VeilError):
    """The resource is not in a state that allows this, e.g. cancelling a finished query
    (FAILED_PRECONDITION)."""


class NotReady(WrongState):
    """The query has no result (yet); see its state (FAILED_PRECONDITION)."""


class QueryFailed(VeilError):
    """The query ended without a result: FAILED, REJECTED, CANCELLED or EXPIRED."""

    def __init__(self, message: str, *, state: str, reason: str = "") -> None:
        super().__init__(message, reason=reason)
        self.state = state


class QuotaExceeded(VeilError):
    """A quota, budget or rate limit is spent (RESOURCE_EXHAUSTED)."""


class Unavailable(VeilError):
    """The node cannot serve now; retrying later may succeed (UNAVAILABLE)."""


class Timeout(VeilError):
    """The wait or the call ran past its deadline."""


class IntegrityError(VeilError):
    """A result did not match its digest, key or shape: do not trust it."""


class NodeError(VeilError):
    """Anything else the node reported (INTERNAL, UNKNOWN, ...)."""


_BY_CODE: dict[grpc.StatusCode, type[VeilError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: WrongState,
    grpc.StatusCode.RESOURCE_EXHAUSTED: QuotaExceeded,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Timeout,
}

# Reasons under INVALID_ARGUMENT that concern the request rather than the SQL.
_REQUEST_REASONS = {
    "INVALID_PUBLIC_KEY", "PUBLIC_KEY_REQUIRED", "REQUEST_ID_REQUIRED", "INVALID_REQUEST_ID",
    "PURPOSE_REQUIRED", "INVALID_PAGE_TOKEN", "INVALID_PAGE_SIZE", "INVALID_ARGUMENT",
    "INVALID_TIMEOUT", "BELOW_CLASSIFICATION_FLOOR", "INVALID_DATASET_SPEC", "INVALID_CLASSIFICATION",
    "INVALID_RIGHTS", "REASON_REQUIRED", "REASON_TOO_LONG", "UNKNOWN_PRINCIPAL", "INVALID_GRANT",
    "PURPOSE_NOT_ALLOWED",
}


def from_rpc_error(err: grpc.RpcError) -> VeilError:
    """Turn a gRPC error into the matching typed exception."""
    code = err.code() if hasattr(err, "code") else None
    message = err.details() if hasattr(err, "details") else str(err)
    reason, metadata = "", {}
    try:
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
    except (ValueError, AttributeError):
        status = None
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, metadata = info.reason, dict(info.metadata)
        for detail in status.details:  # google.rpc.RetryInfo (issue 20): when to come back
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR) and "retry_after_ms" not in metadata:
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                metadata["retry_after_ms"] = str(retry.retry_delay.seconds * 1000 + retry.retry_delay.nanos // 1_000_000)
    cls = _BY_CODE.get(code, NodeError)  # type: ignore[arg-type]
    if code == grpc.StatusCode.INVALID_ARGUMENT and reason and reason not in _REQUEST_REASONS:
        cls = InvalidQuery
    if reason in ("RESULT_NOT_READY", "RESULT_MISSING"):
        cls = NotReady
    return cls(message or "", reason=reason, code=code, metadata=metadata)
