"""The request guard: the interceptor that runs after authentication, before any servicer.

It answers four threats the servicers should not each have to think about:

* **Malformed bytes.** gRPC deserialises the request before any application code runs and
  answers a parse failure with INTERNAL, which reads as a node bug and hides the caller's
  mistake. The guard swaps in a deserialiser that never raises (it returns :class:`Malformed`)
  and refuses such a request with INVALID_ARGUMENT / ``MALFORMED_REQUEST`` -- after the
  authentication interceptor has run, so an unauthenticated caller learns nothing more.
* **Load.** Per-principal rate and concurrency limits (:mod:`veil_server.access.limits`); refusals are
  RESOURCE_EXHAUSTED and are audited, at most one entry per principal per second (with the
  number of refusals coalesced into it), so a flood cannot turn into a flood of fsyncs.
* **Storage.** New work is refused with UNAVAILABLE while the state directory is low on space or
  unwritable (:mod:`veil_server.state.storage`), and storage errors that escape a servicer become
  UNAVAILABLE rather than INTERNAL.
* **Shutdown.** Once the node starts draining, new calls get UNAVAILABLE / ``NODE_STOPPING``
  (clients retry elsewhere) while calls already admitted run to completion.

Ordering: this interceptor is listed *after* ``AuthInterceptor``, so its handlers run inside
the authenticated call, with ``current_principal()`` set, and raise ``VeilError`` for the auth
interceptor to map. Methods the auth interceptor passes through unauthenticated (health,
reflection, node-to-node) have no principal: for those the guard aborts with the status itself.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import grpc

from .auth import current_principal, to_status
from ..errors import InvalidArgument, ResourceExhausted, Unauthenticated, Unavailable, VeilError
from .limits import Limiter
from .memory import LARGE_BODY, large_body_seen
from ..state.damage import corruption
from ..state.storage import StorageMonitor, storage_error

log = logging.getLogger("veil.guard")

# google.protobuf's own bounds: outside them ToDatetime()/ToMicroseconds() raise ValueError in
# the servicer, which would read as a node bug (INTERNAL) rather than the caller's.
_TIMESTAMP_SECONDS = (-62135596800, 253402300799)
_DURATION_SECONDS = 315576000000


class Unimplemented(VeilError):
    code = grpc.StatusCode.UNIMPLEMENTED
    default_reason = "METHOD_NOT_IMPLEMENTED"


def invalid_well_known(msg: Any, depth: int = 0) -> str | None:
    """The path of the first out-of-range Timestamp or Duration in ``msg``, else None."""
    bad = _first_invalid(msg, depth)
    return None if bad is None or bad[1] != "range" else bad[0]


def invalid_field(msg: Any) -> tuple[str, str] | None:
    """(path, problem) of the first field no Veil call accepts: ``range`` for an out-of-range
    Timestamp or Duration, ``nul`` for text carrying a NUL character (never meaningful in a
    name, id, reason or SQL, and refused by PostgreSQL, which may hold the node's state)."""
    return _first_invalid(msg, 0)


def _first_invalid(msg: Any, depth: int) -> tuple[str, str] | None:
    if depth > 32 or not hasattr(msg, "ListFields"):
        return None
    name = msg.DESCRIPTOR.full_name
    if name == "google.protobuf.Timestamp":
        ok = _TIMESTAMP_SECONDS[0] <= msg.seconds <= _TIMESTAMP_SECONDS[1] and 0 <= msg.nanos < 10**9
        return None if ok else ("timestamp", "range")
    if name == "google.protobuf.Duration":
        ok = abs(msg.seconds) <= _DURATION_SECONDS and abs(msg.nanos) < 10**9 and msg.seconds * msg.nanos >= 0
        return None if ok else ("duration", "range")
    for field, value in msg.ListFields():
        repeated = getattr(field, "is_repeated", False)
        if field.type == field.TYPE_STRING:
            if any("\x00" in v for v in (value if repeated else [value])):
                return field.name, "nul"
            continue
        if field.type != field.TYPE_MESSAGE:
            continue
        if field.message_type.GetOptions().map_entry:
            items = list(value.values())
            if any("\x00" in k for k in value.keys() if isinstance(k, str)) or any(
                    isinstance(v, str) and "\x00" in v for v in items):
                return field.name, "nul"
        else:
            items = list(value) if repeated else [value]
        for item in items:
            bad = _first_invalid(item, depth + 1)
            if bad is not None:
                return f"{field.name}.{bad[0]}", bad[1]
    return None

# Verbs that start or change work: refused while storage is low. Reads go on (they fail closed
# on their own if even their audit entry cannot be written).
MUTATING_VERBS = ("Submit", "Run", "Create", "Register", "Approve", "Reject", "Grant", "Revoke", "Update",
                  "Delete", "Cancel", "Decide", "Review", "Certify", "Set", "Add", "Remove", "Retire", "Withdraw")
_UNGUARDED = ("/grpc.health.v1.Health/", "/grpc.reflection.")  # never drained (malformed bytes still refused)


class Malformed:
    """Stands in for a request whose bytes did not parse."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        if len(data) >= LARGE_BODY:
            large_body_seen()  # its transport buffers are handed back once freed (access.memory)
        try:
            return deserializer(data)
        except Exception:  # DecodeError, RecursionError on deep nesting, invalid UTF-8, ...
            return Malformed(len(data))

    return parse


def _principal_or_none():
    try:
        return current_principal()
    except Unauthenticated:
        return None


class RequestGuard(grpc.ServerInterceptor):
    def __init__(self, limiter: Limiter, storage: StorageMonitor,
                 on_denied: Callable[[str, str | None, VeilError], None] | None = None) -> None:
        self.limiter = limiter
        self.storage = storage
        self._on_denied = on_denied
        self._draining = threading.Event()
        self._lock = threading.Lock()
        self._last_logged: dict[str, tuple[float, int]] = {}

    def drain(self) -> None:
        """From now on, refuse new calls with UNAVAILABLE (graceful shutdown)."""
        self._draining.set()

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.request_streaming:
            return handler
        deserializer = _tolerant(handler.request_deserializer)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(self._unary(method, handler.unary_unary),
                                                       request_deserializer=deserializer,
                                                       response_serializer=handler.response_serializer)
        return grpc.unary_stream_rpc_method_handler(self._stream(method, handler.unary_stream),
                                                    request_deserializer=deserializer,
                                                    response_serializer=handler.response_serializer)

    # -- admission ---------------------------------------------------------------------------

    def _admit(self, method: str, request: Any, principal) -> Callable[[], None]:
        # Health must keep answering (NOT_SERVING) while the node drains.
        if self._draining.is_set() and not method.startswith(_UNGUARDED):
            raise Unavailable("the node is shutting down; retry shortly", reason="NODE_STOPPING")
        if isinstance(request, Malformed):
            raise InvalidArgument(f"the request is not a valid {method.rsplit('/', 1)[-1]} message "
                                  f"({request.size} bytes did not parse)", reason="MALFORMED_REQUEST")
        bad = invalid_field(request)
        if bad is not None and bad[1] == "range":
            raise InvalidArgument(f"field {bad[0]} is out of the range protobuf allows", reason="INVALID_ARGUMENT",
                                  metadata={"field": bad[0]})
        if bad is not None:
            raise InvalidArgument(f"field {bad[0]} contains a NUL character; remove it (text fields never carry one)",
                                  reason="INVALID_TEXT", metadata={"field": bad[0]})
        if principal is None:
            return lambda: None
        try:
            release = self.limiter.admit(principal.name, method)
        except ResourceExhausted as e:
            self._record_refusal(method, principal.name, e)
            raise
        try:
            if method.rsplit("/", 1)[-1].startswith(MUTATING_VERBS):
                self.storage.check()
        except BaseException:
            release()
            raise
        return release

    def _record_refusal(self, method: str, principal: str, err: VeilError) -> None:
        if self._on_denied is None:
            return
        now = time.monotonic()
        with self._lock:
            last, coalesced = self._last_logged.get(principal, (-1e9, 0))
            if now - last < 1.0:
                self._last_logged[principal] = (last, coalesced + 1)
                return
            self._last_logged[principal] = (now, 0)
        err.metadata["refusals_coalesced"] = str(coalesced)
        try:
            self._on_denied(method, principal, err)
        except Exception:  # pragma: no cover - the refusal stands either way
            log.exception("could not record a refusal")

    @staticmethod
    def _mapped(exc: BaseException) -> BaseException:
        # A damaged state file or row is DATA_LOSS naming the fix, never INTERNAL (issue 15).
        return storage_error(exc) or corruption(exc, "the node's state") or exc

    def _fail(self, principal, context: grpc.ServicerContext, err: BaseException):
        """Under the auth interceptor, raise for it to map; otherwise answer with the status here."""
        if principal is None and isinstance(err, VeilError):
            context.abort_with_status(to_status(err))
        raise err

    # -- handlers ----------------------------------------------------------------------------

    def _unary(self, method: str, behavior: Callable) -> Callable:
        def handle(request, context):
            principal = _principal_or_none()
            try:
                release = self._admit(method, request, principal)
            except VeilError as e:
                return self._fail(principal, context, e)
            try:
                return behavior(request, context)
            except NotImplementedError:  # a generated base method nobody overrode (e.g. Health.List)
                return self._fail(principal, context, Unimplemented(f"{method} is not implemented by this node"))
            except Exception as e:
                mapped = self._mapped(e)
                if mapped is e:
                    raise
                return self._fail(principal, context, mapped)
            finally:
                release()

        return handle

    def _stream(self, method: str, behavior: Callable) -> Callable:
        def handle(request, context):
            principal = _principal_or_none()
            try:
                release = self._admit(method, request, principal)
            except VeilError as e:
                self._fail(principal, context, e)
                return
            try:
                yield from behavior(request, context)
            except Exception as e:
                mapped = self._mapped(e)
                if mapped is e:
                    raise
                self._fail(principal, context, mapped)
            finally:
                release()  # also when the client goes away and the stream is closed

        return handle
