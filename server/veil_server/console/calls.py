"""The console's only way into the node: the node's own gRPC handlers, called in-process through
the node's own interceptors.

There is no second policy path. Every console action is one of the node's RPCs, named by its
method (``/veil.v1.ReviewService/ApproveQuery``), with the request message the RPC takes. It goes
through exactly the chain a remote call goes through -- the authentication interceptor (who is
calling, from the session's token or the connection's verified client certificate; the role
table ``METHOD_ROLES``; every refusal audited), the request guard (per-principal rate and
concurrency limits, storage, draining), then the servicer and the node behind it (ownership,
separation of duties, N of M, budgets). Only the transport differs: no HTTP/2 frame, no
serialisation. A refusal comes back as :class:`Refusal`, with the gRPC status the remote caller
would get and the node's ``ErrorInfo`` reason, message and metadata.

The credential is re-checked on every call, so a token revoked or expired after sign-in stops
working at the next click, as it would over gRPC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

# gRPC status -> HTTP status of the page that shows the refusal.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.ALREADY_EXISTS: 409, grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.UNIMPLEMENTED: 501, grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504, grpc.StatusCode.DATA_LOSS: 500, grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNKNOWN: 500,
}
_BY_VALUE = {c.value[0]: c for c in grpc.StatusCode}


class Refusal(Exception):
    """A refused action: what a remote caller would have received, and the page's HTTP status."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str,
                 metadata: Mapping[str, str] | None = None, *, http_status: int | None = None) -> None:
        super().__init__(f"{reason}: {message}")
        self.code, self.reason, self.message = code, reason, message
        self.metadata = dict(metadata or {})
        self.http_status = http_status or HTTP_STATUS.get(code, 500)


@dataclass(frozen=True)
class Credential:
    """What identifies the caller of one console request, held by the session (never shown)."""

    token: str | None = None  # a bearer token given at sign-in
    # The connection's client certificate, verified by the TLS handshake against [tls] ca.
    certificate_pem: bytes | None = None
    certificate_names: tuple[str, ...] = ()

    def __repr__(self) -> str:  # a credential never reaches a log through repr()
        return "Credential(token)" if self.token else "Credential(certificate)"


@dataclass(frozen=True)
class _CallDetails(grpc.HandlerCallDetails):
    method: str
    invocation_metadata: tuple[tuple[str, str], ...]


class _Aborted(Exception):
    def __init__(self, status: grpc.Status) -> None:
        super().__init__("aborted")
        self.status = status


@dataclass
class CallContext:
    """The part of ``grpc.ServicerContext`` the interceptors and servicers read."""

    credential: Credential
    peer_address: str
    timeout: float = 30.0
    callbacks: list[Callable[[], None]] = field(default_factory=list)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        if self.credential.token is None or self.credential.certificate_pem is not None:
            return ()
        return (("authorization", f"Bearer {self.credential.token}"),)

    def auth_context(self) -> dict[str, list[bytes]]:
        # The same shape gRPC gives for a verified peer on the mutual-TLS port.
        if self.credential.certificate_pem is None:
            return {}
        return {"x509_pem_cert": [self.credential.certificate_pem],
                "x509_subject_alternative_name": [n.encode() for n in self.credential.certificate_names]}

    def abort_with_status(self, status: grpc.Status) -> None:
        raise _Aborted(status)

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Refusal(code, "ABORTED", details)

    def peer(self) -> str:
        return f"console:{self.peer_address}"

    def time_remaining(self) -> float:
        return self.timeout

    def is_active(self) -> bool:
        return True

    def add_callback(self, callback: Callable[[], None]) -> bool:
        self.callbacks.append(callback)
        return True

    def set_code(self, code: grpc.StatusCode) -> None:  # pragma: no cover - servicers do not use it
        pass

    def set_details(self, details: str) -> None:  # pragma: no cover
        pass

    def set_trailing_metadata(self, metadata: Any) -> None:  # pragma: no cover
        pass

    def send_initial_metadata(self, metadata: Any) -> None:  # pragma: no cover
        pass


def _refusal(status: grpc.Status) -> Refusal:
    code = status.code if isinstance(status.code, grpc.StatusCode) else _BY_VALUE.get(status.code, grpc.StatusCode.UNKNOWN)
    reason, metadata = code.name, {}

    class _Call:  # rpc_status.from_call reads these three
        def code(self):
            return code

        def details(self):
            return status.details

        def trailing_metadata(self):
            return status.trailing_metadata

    detail = rpc_status.from_call(_Call())
    for any_ in detail.details if detail is not None else ():
        info = error_details_pb2.ErrorInfo()
        if any_.Unpack(info):
            reason, metadata = info.reason, dict(info.metadata)
    return Refusal(code, reason, status.details, metadata)


class HandlerTable:
    """Stands in for the gRPC server while services are added: forwards to it, and keeps the
    handlers so the console can call them."""

    def __init__(self, server: Any) -> None:
        self._server = server
        self._generic: list[grpc.GenericRpcHandler] = []

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._generic.extend(handlers)
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Any]) -> None:
        self._server.add_registered_method_handlers(service, handlers)

    def find(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        for generic in self._generic:
            handler = generic.service(details)
            if handler is not None:
                return handler
        return None


class NodeCalls:
    """Calls the node's RPCs in-process, through ``interceptors`` in the server's order."""

    def __init__(self, table: HandlerTable, interceptors: Sequence[grpc.ServerInterceptor]) -> None:
        self._table = table
        self._interceptors = tuple(interceptors)

    def _handler(self, details: _CallDetails) -> grpc.RpcMethodHandler | None:
        def chain(i: int) -> Callable[[grpc.HandlerCallDetails], Any]:
            if i == len(self._interceptors):
                return self._table.find
            return lambda d: self._interceptors[i].intercept_service(chain(i + 1), d)

        return chain(0)(details)

    def _prepare(self, method: str, credential: Credential, peer: str) -> tuple[grpc.RpcMethodHandler, CallContext]:
        context = CallContext(credential, peer)
        handler = self._handler(_CallDetails(method, context.invocation_metadata()))
        if handler is None:
            raise Refusal(grpc.StatusCode.UNIMPLEMENTED, "METHOD_NOT_IMPLEMENTED", f"{method} is not served by this node")
        return handler, context

    def call(self, method: str, request: Message, credential: Credential, *, peer: str = "") -> Any:
        """One unary RPC; returns its response message or raises :class:`Refusal`."""
        handler, context = self._prepare(method, credential, peer)
        # A refusal before the request is read (a bad token, no pre-authentication slot) comes as a
        # client-streaming handler that never reads: it gets the request as a one-message stream.
        run = handler.unary_unary or (handler.stream_unary and (lambda r, c: handler.stream_unary(iter((r,)), c)))
        if run is None:
            raise Refusal(grpc.StatusCode.UNIMPLEMENTED, "METHOD_NOT_IMPLEMENTED", f"{method} is not a unary call")
        try:
            return run(request, context)
        except _Aborted as e:
            raise _refusal(e.status) from None
        finally:
            for callback in context.callbacks:
                callback()

    def stream(self, method: str, request: Message, credential: Credential, *, peer: str = "") -> Iterator[Any]:
        """A server-streaming RPC's messages, one at a time; a refusal raises at the first ``next``."""
        handler, context = self._prepare(method, credential, peer)
        run = handler.unary_stream or (handler.stream_stream and (lambda r, c: handler.stream_stream(iter((r,)), c)))
        if run is None:
            raise Refusal(grpc.StatusCode.UNIMPLEMENTED, "METHOD_NOT_IMPLEMENTED", f"{method} is not a stream")
        steps = run(request, context)
        try:
            yield from steps
        except _Aborted as e:
            raise _refusal(e.status) from None
        finally:
            steps.close()
            for callback in context.callbacks:
                callback()
