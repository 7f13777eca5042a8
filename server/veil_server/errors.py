"""The node's one exception tree.

Every refusal the node makes is a :class:`VeilError` subclass that names its gRPC status code
and a stable UPPER_SNAKE ``reason`` (sent as ``google.rpc.ErrorInfo``). The ``message`` is what
the caller sees: it names the rule and the fix, and it never carries a data value. ``private``
is for the owner's logs only (it may name internals, never row values either).

The SDK maps reasons back to typed exceptions (``veil.errors``); reasons are part of the wire
contract and are never renamed.
"""

from __future__ import annotations

import grpc

ERROR_DOMAIN = "veil.dev"


class VeilError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    default_reason = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
        private: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})
        self.private = private

    def __str__(self) -> str:  # pragma: no cover - trivial
        return f"{self.reason}: {self.message}"


class InvalidArgument(VeilError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class QueryRejected(VeilError):
    """The SQL is malformed or outside the supported subset (INVALID_ARGUMENT)."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "QUERY_REJECTED"


class PolicyViolation(VeilError):
    """The SQL is well formed but breaks a column control or policy rule (PERMISSION_DENIED)."""

    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "POLICY_VIOLATION"


class Unauthenticated(VeilError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(VeilError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class NotFound(VeilError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class DatasetNotFound(NotFound):
    default_reason = "DATASET_NOT_FOUND"


class QueryNotFound(NotFound):
    default_reason = "QUERY_NOT_FOUND"


class AlreadyExists(VeilError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(VeilError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class NotReady(FailedPrecondition):
    """The query exists but has no result (yet, or ever)."""

    default_reason = "RESULT_NOT_READY"


class ResourceExhausted(VeilError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(VeilError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class DataLoss(VeilError):
    """Stored bytes the node needs are damaged or missing (a corrupt page, a row that does not
    decode, state and log that disagree). Never retried blindly: the operator must act."""

    code = grpc.StatusCode.DATA_LOSS
    default_reason = "DATA_LOSS"


class Internal(VeilError):
    code = grpc.StatusCode.INTERNAL
    default_reason = "INTERNAL"
