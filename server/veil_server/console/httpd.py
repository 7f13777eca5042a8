"""The console's HTTP(S) server: transport, sessions, CSRF, security headers, and page dispatch.

Standard library only (``http.server`` with one thread per connection, bounded): the console is a
handful of people's tool, and every page is rendered here, so there is no front-end build and no
script at all (the Content-Security-Policy allows none).

Transport as on the gRPC port: TLS with the node's ``[tls]`` certificate (TLS 1.2 at least; a
client certificate chained to ``[tls] ca`` is asked for, optional, and signs its holder in), or
plaintext on loopback in explicit development mode. The TLS handshake runs in the connection's
own thread with a time limit, so a slow client holds one slot, not the listener.

Every response carries the headers in :data:`SECURITY_HEADERS` and ``Server-Timing`` (the
server's own time for the page, which the tests and ``bench/console_bench.py`` read).
"""

from __future__ import annotations

import http.server
import logging
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http import cookies
from typing import Any, Callable, Iterator, Protocol

from .calls import Credential, Refusal
from .sessions import COOKIE, LOGIN_COOKIE, Session

log = logging.getLogger("veil.console")

_HTTP = None  # Refusal.code for refusals the console itself makes (no gRPC status involved)
MAX_BODY = 64 * 1024  # forms only: a reason, a grant, a search
MAX_DRAIN = 1024 * 1024  # a larger body is not read at all: the connection is closed
MAX_FIELDS = 64
CONNECTION_TIMEOUT = 30.0
MAX_CONNECTIONS = 64
SLOW_PAGE_MS = 300.0

CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),  # no-referrer would make Origin "null" on our own forms
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()"),
    ("Cache-Control", "no-store"),
)


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    # A generator of body chunks instead of ``body`` (downloads of unbounded size).
    chunks: Any = None

    def cookie(self, name: str, value: str, *, max_age: int | None = None) -> "Response":
        attrs = f"{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict"
        if max_age is not None:
            attrs += f"; Max-Age={max_age}"
        self.headers.append(("Set-Cookie", attrs))
        return self


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    cookies: dict[str, str]
    headers: Any
    peer: str
    certificate: Credential | None  # the connection's verified client certificate, if any
    session: Session | None = None
    session_expired: bool = False
    params: dict[str, str] = field(default_factory=dict)  # from the route's pattern

    def arg(self, name: str, default: str = "") -> str:
        return self.query.get(name, default).strip()


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "veil-console"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = CONNECTION_TIMEOUT
    app: Any = None  # the Console, set on the subclass made per server

    def setup(self) -> None:
        self.request.settimeout(CONNECTION_TIMEOUT)
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()  # in this thread, bounded by the timeout above
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        # The request line would carry search terms: log the path's first segment only.
        log.debug("console %s %s", self.command, urllib.parse.urlsplit(self.path).path.split("/")[1:2])

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _certificate(self) -> Credential | None:
        if not isinstance(self.connection, ssl.SSLSocket):
            return None
        info = self.connection.getpeercert()
        der = self.connection.getpeercert(binary_form=True)
        if not info or not der:  # no certificate, or one the handshake did not verify
            return None
        names = tuple(str(v) for kind, v in info.get("subjectAltName", ()) if kind in ("DNS", "URI", "IP Address"))
        return Credential(certificate_pem=ssl.DER_cert_to_PEM_cert(der).encode(), certificate_names=names)

    def _read_form(self) -> dict[str, str]:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            if self.command == "POST":
                raise Refusal(_HTTP, "LENGTH_REQUIRED", "send the form with a Content-Length", http_status=411)
            return {}
        if int(length) > MAX_BODY:
            if int(length) <= MAX_DRAIN:  # read what was sent, so the client reads the refusal, not a reset
                self.rfile.read(int(length))
            raise Refusal(_HTTP, "BODY_TOO_LARGE", f"a console form is at most {MAX_BODY} bytes", http_status=413)
        raw = self.rfile.read(int(length))
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if self.command == "POST" and ctype != "application/x-www-form-urlencoded":
            raise Refusal(_HTTP, "UNSUPPORTED_FORM", "send forms as application/x-www-form-urlencoded",
                          http_status=415)
        try:
            pairs = urllib.parse.parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS)
        except (UnicodeDecodeError, ValueError):
            raise Refusal(_HTTP, "MALFORMED_FORM", "the form is not valid UTF-8 form data", http_status=400) from None
        return {k: v for k, v in pairs if "\x00" not in k + v}

    def _handle(self) -> None:
        started = time.perf_counter()
        try:
            response = self._respond()
        except Exception:  # pragma: no cover - a bug: never a traceback on the page
            log.exception("console page failed")
            response = self.app.error_page(None, Refusal(_HTTP, "INTERNAL",
                                                         "the console hit an internal error; the operator has the details",
                                                         http_status=500))
        elapsed = (time.perf_counter() - started) * 1000
        if elapsed > SLOW_PAGE_MS and response.chunks is None:
            log.warning("console page %s took %.0f ms", urllib.parse.urlsplit(self.path).path.split("/")[1:2], elapsed)
        self._send(response, elapsed)

    def _respond(self) -> Response:
        url = urllib.parse.urlsplit(self.path)
        try:
            query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=False, max_num_fields=MAX_FIELDS))
        except ValueError:
            query = {}
        jar = cookies.SimpleCookie()
        try:
            jar.load(self.headers.get("Cookie") or "")
        except cookies.CookieError:
            pass
        request = Request(self.command, url.path, query, {}, {k: m.value for k, m in jar.items()}, self.headers,
                          self.client_address[0], self._certificate())
        try:
            request.form = self._read_form()
        except Refusal as r:
            self.close_connection = True
            return self.app.error_page(request, r)
        return self.app.dispatch(request)

    def _send(self, response: Response, elapsed_ms: float) -> None:
        self.send_response(response.status)
        for name, value in SECURITY_HEADERS:
            self.send_header(name, value)
        if self.app.tls:
            self.send_header("Strict-Transport-Security", "max-age=31536000")
        self.send_header("Server-Timing", f"app;dur={elapsed_ms:.1f}")
        self.send_header("Content-Type", response.content_type)
        for name, value in response.headers:
            self.send_header(name, value)
        if response.chunks is not None:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if self.command != "HEAD":
                for chunk in response.chunks:
                    if chunk:
                        self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)


class ConsoleHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False  # a console port in use is an error, as the gRPC port's is

    def __init__(self, address: tuple[str, int], handler: type[Handler], tls: ssl.SSLContext | None) -> None:
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):  # more connections than slots: drop the newest
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        # Handshake failures, resets and timeouts are the client's business, not a traceback.
        log.debug("console connection from %s ended with an error", client_address[0])


def tls_context(cert: Any, key: Any, ca: Any | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    if ca is not None:
        ctx.load_verify_locations(str(ca))
        ctx.verify_mode = ssl.CERT_OPTIONAL  # a certificate is one way to sign in; a token is the other
    return ctx


def serve(address: str, app: Any, tls: ssl.SSLContext | None) -> tuple[ConsoleHTTPServer, threading.Thread]:
    host, _, port = address.rpartition(":")
    handler = type("ConsoleHandler", (Handler,), {"app": app})
    server = ConsoleHTTPServer((host.strip("[]"), int(port)), handler, tls)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="veil-console",
                              daemon=True)
    thread.start()
    return server, thread


class App(Protocol):
    """What a page handler uses of the console (:class:`veil_server.console.app.Console`)."""

    witness_keys: tuple  # the [witness] keys the checkpoint page verifies cosignatures against
    settings: Any
    sessions: Any
    throttle: Any
    on_session: Any

    def rpc(self, request: Request, method: str, message: Any) -> Any: ...

    def rpc_stream(self, request: Request, method: str, message: Any) -> Iterator[Any]: ...

    def render(self, request: Request | None, template: str, *, status: int = 200, title: str,
               headers: Any = (), **context: Any) -> Response: ...

    def redirect(self, request: Request, to: str, message: str | None = None) -> Response: ...

    def nav(self, session: Session | None, path: str) -> list[dict[str, Any]]: ...

    def sign_in(self, request: Request, credential: Credential, via: str) -> Session: ...


Route = tuple[str, str, Callable[[App, Request], Response]]
