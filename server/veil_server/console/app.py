"""The console: routes, sessions, CSRF and rendering around the node's RPCs.

Pages live in one module per concern (:mod:`.signin`, :mod:`.datasets`, :mod:`.reviews`,
:mod:`.grants`, :mod:`.usage`, :mod:`.audit_pages`); each handler turns a request into one or a
few of the node's RPCs (:class:`.calls.NodeCalls`) and renders what they answer. What a page shows
is what the RPC returned to this principal; what an action may do is what the RPC allows. The
navigation hides links a role cannot use (read from the node's own role table), but that is
only a courtesy: the RPC behind each page and action is what refuses.
"""

from __future__ import annotations

import logging
import re
import ssl
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Iterable

import jinja2
from google.protobuf.message import Message

from ..config import Role
from ..errors import PermissionDenied, VeilError
from . import audit_pages, datasets, grants, reviews, signin, usage
from .calls import CallContext, Credential, NodeCalls, Refusal
from .roles import may_call
from .httpd import ConsoleHTTPServer, Request, Response, serve, tls_context
from .sessions import COOKIE, Session, SessionLimit, Sessions, SignInThrottle
from .settings import ConsoleSettings

log = logging.getLogger("veil.console")

HERE = Path(__file__).resolve().parent
STATIC = {"console.css": "text/css; charset=utf-8"}

# (label, path, the RPC whose roles decide whether the link is shown)
NAV = (
    ("Datasets", "/datasets", "/veil.v1.GovernanceService/ListDatasetVersions"),
    ("Listing queue", "/listings", "/veil.v1.GovernanceService/ListDatasetVersions"),
    ("Pending queries", "/reviews", "/veil.v1.ReviewService/ListPendingQueries"),
    ("Grants", "/grants", "/veil.v1.GovernanceService/CreateGrant"),
    ("Usage and budgets", "/usage", "/veil.v1.QueryService/GetUsageReport"),
    ("Audit log", "/audit", "/veil.v1.AuditService/ListAuditEvents"),
    ("Checkpoints", "/audit/checkpoints", "/veil.v1.AuditService/ListCheckpoints"),
)
# The console serves the roles it was built for; analysts use the SDK and are refused at sign-in
# (and every page's RPCs would refuse or scope them anyway).
SIGN_IN = "/veil.console/SignIn"  # how refused sign-ins are named in the audit log
CONSOLE_ROLES = frozenset({Role.OWNER, Role.REVIEWER, Role.AUDITOR, Role.ADMIN})


class Console:
    def __init__(self, settings: ConsoleSettings, *, calls: NodeCalls, authenticator: Any,
                 on_denied: Callable[[str, str | None, VeilError], None] | None, node_name: str,
                 tls: Any = None, on_session: Callable[[str, str, dict[str, str]], None] | None = None,
                 witness_keys: tuple = ()) -> None:
        self.settings = settings
        # The witness keys pinned in [witness]: the checkpoint page checks cosignatures against them.
        self.witness_keys = tuple(witness_keys)
        self.calls = calls
        self.authenticator = authenticator
        self.on_denied = on_denied
        # Sign-ins and sign-outs are audited (admin.console.signin / signout) before they take effect.
        self.on_session = on_session
        self.node_name = node_name
        self.tls_settings = tls
        self.tls = tls is not None
        self.sessions = Sessions(idle_seconds=settings.session_idle_minutes * 60,
                                 max_seconds=settings.session_max_hours * 3600, max_sessions=settings.max_sessions)
        self.throttle = SignInThrottle()
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True,
            undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.templates.filters["ts"] = _timestamp
        self.templates.filters["short"] = lambda s, n=12: (s[:n] + "…") if s and len(s) > n else s
        self.templates.filters["eps"] = lambda v: f"{v:.4g}" if v else "0"
        self.templates.filters["num"] = lambda v: f"{v:,}"
        self.routes: list[tuple[str, re.Pattern[str], Callable[[Console, Request], Response], bool]] = []
        for module in (signin, datasets, reviews, grants, usage, audit_pages):
            for method, pattern, handler, *opts in module.ROUTES:
                self.routes.append((method, re.compile(f"^{pattern}$"), handler, not opts or opts[0]))
        self.server: ConsoleHTTPServer | None = None
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, listen: str | None = None) -> int:
        ctx: ssl.SSLContext | None = None
        if self.tls_settings is not None:
            t = self.tls_settings
            ctx = tls_context(t.cert, t.key, t.ca)
        self.server, _ = serve(listen or self.settings.listen, self, ctx)
        self.port = self.server.server_address[1]
        return self.port

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        self.sessions.end_all()

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def url(self) -> str:
        host = self.server.server_address[0] if self.server is not None else "127.0.0.1"
        host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
        return f"{self.scheme}://{host}:{self.port}/"

    # -- the node ----------------------------------------------------------------------------

    def rpc(self, request: Request, method: str, message: Message) -> Any:
        """One of the node's RPCs as the signed-in principal."""
        assert request.session is not None
        return self.calls.call(method, message, request.session.credential, peer=request.peer)

    def rpc_stream(self, request: Request, method: str, message: Message):
        assert request.session is not None
        return self.calls.stream(method, message, request.session.credential, peer=request.peer)

    # -- dispatch ----------------------------------------------------------------------------

    def dispatch(self, request: Request) -> Response:
        if request.path.startswith("/static/"):
            return self._static(request.path.removeprefix("/static/"))
        request.session, request.session_expired = self.sessions.get(request.cookies.get(COOKIE))
        if request.session is not None and not self._same_certificate(request):
            self.sessions.end(request.session.id)
            request.session = None
            return self.error_page(request, Refusal(None, "CERTIFICATE_CHANGED", "this session was signed in with "
                                   "another client certificate; sign in again", http_status=401))
        allowed = []
        for method, pattern, handler, needs_session in self.routes:
            m = pattern.match(request.path)
            if m is None:
                continue
            allowed.append(method)
            if method != request.method and not (method == "GET" and request.method == "HEAD"):
                continue
            request.params = {k: urllib.parse.unquote(v) for k, v in m.groupdict().items()}
            try:
                if request.method == "POST":
                    self._check_post(request, needs_session)
                if needs_session and request.session is None:
                    reason = "SESSION_EXPIRED" if request.session_expired else "NOT_SIGNED_IN"
                    text = ("your session expired" if request.session_expired else "you are not signed in") + \
                        ": sign in with your token or client certificate"
                    raise Refusal(None, reason, text, http_status=401)
                return handler(self, request)
            except Refusal as r:
                if r.http_status == 401 and request.session is not None:  # the node no longer accepts it
                    self.sessions.end(request.session.id)
                    request.session = None
                return self.error_page(request, r)
        if allowed:
            return self.error_page(request, Refusal(None, "METHOD_NOT_ALLOWED", f"use {' or '.join(sorted(set(allowed)))} "
                                                    "on this page", http_status=405))
        return self.error_page(request, Refusal(None, "PAGE_NOT_FOUND", "no such page; start from the overview",
                                                http_status=404))

    def _same_certificate(self, request: Request) -> bool:
        s = request.session
        assert s is not None
        if s.via != "certificate":
            return True
        return request.certificate is not None and request.certificate.certificate_pem == s.credential.certificate_pem

    def _check_post(self, request: Request, needs_session: bool) -> None:
        """Cross-site request forgery: the origin, then the session's token (or the sign-in nonce)."""
        origin = request.headers.get("Origin")
        if origin is not None and origin != self.origin(request):
            raise Refusal(None, "CROSS_ORIGIN_REQUEST", "this form was sent from another site; use the console's own "
                          "pages", http_status=403)
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None and site not in ("same-origin", "none"):
            raise Refusal(None, "CROSS_ORIGIN_REQUEST", "this form was sent from another site; use the console's own "
                          "pages", http_status=403)
        if needs_session and request.session is not None and not request.session.csrf_matches(request.form.get("csrf")):
            raise Refusal(None, "CSRF_TOKEN_INVALID", "the form's CSRF token does not match your session: reload "
                          "the page and submit the form again", http_status=403)

    def origin(self, request: Request) -> str:
        return f"{self.scheme}://{request.headers.get('Host', '')}"

    # -- rendering ---------------------------------------------------------------------------

    def nav(self, session: Session | None, path: str) -> list[dict[str, Any]]:
        if session is None:
            return []
        items = [{"label": "Overview", "href": "/", "current": path == "/"}]
        for label, href, method in NAV:
            if may_call(session.role, method):
                current = path == href or (href != "/audit" and path.startswith(href + "/")) or \
                    (href == "/audit" and path.startswith("/audit/entries"))
                items.append({"label": label, "href": href, "current": current})
        return items

    def render(self, request: Request | None, template: str, *, status: int = 200, title: str,
               headers: Iterable[tuple[str, str]] = (), **context: Any) -> Response:
        session = request.session if request is not None else None
        flash = list(session.flash) if session is not None else []
        if session is not None:
            session.flash.clear()
        body = self.templates.get_template(template).render(
            title=title, node_name=self.node_name, session=session, flash=flash,
            nav=self.nav(session, request.path if request else ""), **context)
        return Response(status, body.encode("utf-8"), headers=list(headers))

    def error_page(self, request: Request | None, r: Refusal) -> Response:
        return self.render(request, "refused.html", status=r.http_status, title="Refused", refusal=r,
                           headers=[("X-Veil-Reason", r.reason)])

    def redirect(self, request: Request, to: str, message: str | None = None) -> Response:
        if message and request.session is not None:
            request.session.flash.append(message)
        return Response(303, b"", headers=[("Location", to)])

    def _static(self, name: str) -> Response:
        if name not in STATIC:
            return Response(404, b"not found", "text/plain; charset=utf-8")
        return Response(200, (HERE / "static" / name).read_bytes(), STATIC[name],
                        headers=[("Cache-Control", "no-cache")])

    # -- sign-in ------------------------------------------------------------------------------

    def sign_in(self, request: Request, credential: Credential, via: str) -> Session:
        """Authenticate as the gRPC port would (the same authenticator; failures audited)."""
        context = CallContext(credential, request.peer)  # what the interceptor hands the authenticator
        principal = None
        try:
            principal = self.authenticator.authenticate(context.invocation_metadata(), context)
            if principal.role not in CONSOLE_ROLES:
                raise PermissionDenied(f"role '{principal.role.value}' has no console: the console is for owners, "
                                       "reviewers, auditors and admins; analysts use the Python SDK or the veil "
                                       "command", reason="ROLE_NOT_ALLOWED", metadata={"role": principal.role.value})
        except VeilError as e:
            if self.on_denied is not None:
                try:
                    self.on_denied(SIGN_IN, principal.name if principal else None, e)
                except Exception:  # pragma: no cover - the refusal stands either way
                    log.exception("could not record a refused sign-in")
            raise Refusal(None, e.reason, e.message, e.metadata,
                          http_status=403 if isinstance(e, PermissionDenied) else 401) from None
        if self.on_session is not None:
            try:
                self.on_session("signin", principal.name, {"via": via, "peer": request.peer})
            except VeilError as e:  # fail closed: no audit entry, no session
                raise Refusal(None, e.reason, e.message, http_status=503) from None
        try:
            return self.sessions.create(principal.name, principal.role.value, credential, via)
        except SessionLimit:
            raise Refusal(None, "TOO_MANY_SESSIONS", "the console has as many sessions as it allows; try again "
                          "later or ask the operator to raise console.max_sessions", http_status=503) from None


def _timestamp(ts: Any) -> str:
    """A protobuf Timestamp (or None) as UTC text."""
    if ts is None or not getattr(ts, "seconds", 0):
        return ""
    return ts.ToDatetime().strftime("%Y-%m-%d %H:%M:%S UTC")
