"""The outermost server interceptor: every RPC is logged and counted once, refusals included.

It wraps the handlers the inner interceptors (authentication, the request guard) return, so it
sees calls they refuse as well as calls that reach a servicer. It reads:

- the method name and the call's final status code, and the ``ErrorInfo`` reason from the
  status details the node attached (:func:`veil_server.access.auth.to_status`);
- the principal, which the authentication interceptor notes in this call's record
  (:func:`note_principal`) once it has verified the caller;
- two identifiers from the messages: ``request_id`` of the request (or the ``x-request-id``
  metadata), and a ``queries/…`` name from the request or the response.

It never reads other metadata (the bearer token is in ``authorization``), request bodies beyond
those two fields, or any response field but ``name``.
"""

from __future__ import annotations

import contextvars
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import grpc
from google.rpc import error_details_pb2, status_pb2

from .metrics import NULL_METRICS

log = logging.getLogger("veil.rpc")
STATUS_DETAILS_KEY = "grpc-status-details-bin"
MAX_ID = 128  # identifiers longer than this are cut: a log line is not a place for a payload


@dataclass
class CallRecord:
    principal: str | None = None


_call: contextvars.ContextVar[CallRecord | None] = contextvars.ContextVar("veil_call", default=None)


def note_principal(name: str) -> None:
    """The authenticated caller of the current RPC (called by the authentication interceptor)."""
    record = _call.get()
    if record is not None:
        record.principal = name


class CallInterceptor(grpc.ServerInterceptor):
    def __init__(self, metrics: Any = NULL_METRICS) -> None:
        self._metrics = metrics

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        header_id = next((str(v) for k, v in handler_call_details.invocation_metadata or ()
                          if k == "x-request-id"), None)
        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            inner = getattr(handler, kind)
            if inner is not None:
                wrap = self._unary if kind.endswith("unary") else self._stream
                factory = getattr(grpc, f"{kind}_rpc_method_handler")
                return factory(wrap(method, header_id, inner, reads_one=kind.startswith("unary")),
                               request_deserializer=handler.request_deserializer,
                               response_serializer=handler.response_serializer)
        return handler

    def _unary(self, method: str, header_id: str | None, inner: Callable, *, reads_one: bool) -> Callable:
        def handle(request, context):
            record, token, start = CallRecord(), None, time.perf_counter()
            response = failed = None
            try:
                token = _call.set(record)
                response = inner(request, context)
                return response
            except BaseException as e:
                failed = e
                raise
            finally:
                if token is not None:
                    _call.reset(token)
                self._finish(method, context, record, start, request if reads_one else None, response,
                             header_id, failed)

        return handle

    def _stream(self, method: str, header_id: str | None, inner: Callable, *, reads_one: bool) -> Callable:
        def handle(request, context):
            record, start = CallRecord(), time.perf_counter()
            failed = None
            # The inner stream runs in a copy of this context that carries the record, one item
            # at a time (as the authentication interceptor does), so nothing leaks into the
            # worker thread's own context between items.
            own = contextvars.copy_context()
            own.run(_call.set, record)
            try:
                steps = own.run(inner, request, context)
                while True:
                    try:
                        item = own.run(next, steps)
                    except StopIteration:
                        return
                    yield item
            except BaseException as e:
                failed = e
                raise
            finally:
                self._finish(method, context, record, start, request if reads_one else None, None,
                             header_id, failed)

        return handle

    def _finish(self, method: str, context: Any, record: CallRecord, start: float, request: Any, response: Any,
                header_id: str | None, failed: BaseException | None) -> None:
        try:
            seconds = time.perf_counter() - start
            # A status the call aborted with: on the gRPC context, or (the console's in-process
            # calls) on the exception that carried it.
            status = getattr(failed, "status", None)
            code = _code(context, failed, status)
            reason = _reason(context, status) if code != "OK" else None
            self._metrics.rpc(method, code, seconds, reason)
            if log.isEnabledFor(logging.INFO):
                query_id = _field(response, "name", "queries/") or _field(request, "name", "queries/")
                request_id = _field(request, "request_id") or (header_id[:MAX_ID] if header_id else None)
                short = method.rsplit(".", 1)[-1]
                log.info("rpc %s %s %.1f ms%s", short, code, seconds * 1000, f" {reason}" if reason else "",
                         extra={"event": "rpc", "method": method, "principal": record.principal,
                                "query_id": query_id, "request_id": request_id,
                                "duration_ms": round(seconds * 1000, 3), "outcome": "ok" if code == "OK" else "refused",
                                "code": code, "reason": reason})
        except Exception:  # pragma: no cover - observing a call never fails it
            log.debug("could not record an RPC", exc_info=True)


def _code(context: Any, failed: BaseException | None, status: Any) -> str:
    code = getattr(status, "code", None) or (context.code() if hasattr(context, "code") else None)
    if code is None:
        return "UNKNOWN" if failed is not None and not isinstance(failed, GeneratorExit) else "OK"
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


def _reason(context: Any, status: Any) -> str | None:
    """The ``ErrorInfo`` reason of the status the call ended with, if the node attached one."""
    if status is not None:
        trailing = getattr(status, "trailing_metadata", None) or ()
    else:
        trailing = (context.trailing_metadata() or ()) if hasattr(context, "trailing_metadata") else ()
    for key, value in trailing:
        if key == STATUS_DETAILS_KEY:
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    return info.reason
    return None


def _field(message: Any, name: str, prefix: str = "") -> str | None:
    if message is None or not hasattr(message, "DESCRIPTOR") or name not in message.DESCRIPTOR.fields_by_name:
        return None
    value = getattr(message, name)
    if not isinstance(value, str) or not value or not value.startswith(prefix):
        return None
    return value[:MAX_ID]
