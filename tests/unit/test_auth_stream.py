"""The interceptor's server-streaming wrapper: the principal is visible to the servicer across
every ``yield``, whichever thread asks for the next item, and never leaks into a worker thread's
own context, even when a stream is abandoned half-way (gRPC's sync server drives a stream with
``next()`` from its worker pool, and a cancelled stream is closed later, possibly elsewhere)."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import pytest

from veil_server.access.auth import AuthInterceptor, TokenAuthenticator, _current, current_principal
from veil_server.config import Principal, Role

ANA = Principal("ana", Role.AUDITOR, hashlib.sha256(b"tok").hexdigest())


class Aborted(Exception):
    pass


class Context:
    def __init__(self, token: str | None) -> None:
        self.md = [("authorization", f"Bearer {token}")] if token else []

    def invocation_metadata(self):
        return self.md

    def abort_with_status(self, status):
        raise Aborted(status)


def servicer(request, context):
    for i in range(4):
        yield (i, current_principal().name)


def handler(on_denied=None):
    icpt = AuthInterceptor(TokenAuthenticator([ANA]), on_denied=on_denied)
    return icpt._wrap_stream("/veil.v1.AuditService/ExportAuditLog", frozenset({Role.AUDITOR}), servicer)


def test_principal_is_seen_across_yields_from_any_thread_and_never_leaks():
    stream = handler()(None, Context("tok"))
    with ThreadPoolExecutor(2) as pool:
        seen = [pool.submit(next, stream).result() for _ in range(4)]
        with pytest.raises(StopIteration):
            pool.submit(next, stream).result()
        assert all(pool.submit(_current.get).result() is None for _ in range(8))
    assert seen == [(i, "ana") for i in range(4)]
    assert _current.get() is None


def test_an_abandoned_stream_closes_cleanly_elsewhere():
    stream = handler()(None, Context("tok"))
    assert next(stream) == (0, "ana")
    assert _current.get() is None  # not set in this thread between items
    with ThreadPoolExecutor(1) as pool:
        pool.submit(stream.close).result()  # gRPC may close it from another thread: no error


def test_a_refused_stream_aborts_and_reports_the_denial():
    denied = []
    stream = handler(on_denied=lambda *a: denied.append(a))(None, Context("wrong"))
    with pytest.raises(Aborted):
        next(stream)
    assert denied and denied[0][0] == "/veil.v1.AuditService/ExportAuditLog" and denied[0][1] is None
