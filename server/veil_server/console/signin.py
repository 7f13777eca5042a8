"""Signing in and out, and the overview page.

Sign-in takes a node token (pasted; never echoed back, never logged) or the client certificate
the TLS handshake verified, and asks the node's own authenticator, as the gRPC port does:
expiry, revocation, issuer and the principal's declared role all apply, and a refused sign-in is
an ``auth.failure`` entry in the audit log. Failed attempts are limited per client address
(:class:`.sessions.SignInThrottle`) so a flood of bad tokens cannot become a flood of audit entries.
"""

from __future__ import annotations

from veil.v1 import audit_pb2

from .calls import Credential, Refusal
from .httpd import App, Request, Response
from .sessions import COOKIE, LOGIN_COOKIE

def login_page(app: App, req: Request, *, status: int = 200, refusal: Refusal | None = None) -> Response:
    nonce = app.sessions.new_nonce()
    cert = req.certificate
    response = app.render(req, "login.html", status=status, title="Sign in", nonce=nonce, refusal=refusal,
                          certificate_names=list(cert.certificate_names) if cert else [],
                          headers=[("X-Veil-Reason", refusal.reason)] if refusal else [])
    return response.cookie(LOGIN_COOKIE, nonce, max_age=600)


def get_login(app: App, req: Request) -> Response:
    if req.session is not None:
        return app.redirect(req, "/")
    return login_page(app, req)


def post_login(app: App, req: Request) -> Response:
    if not app.sessions.take_nonce(req.cookies.get(LOGIN_COOKIE), req.form.get("nonce")):
        return login_page(app, req, status=403, refusal=Refusal(
            None, "CSRF_TOKEN_INVALID", "the sign-in form is stale or was not sent from this console: "
            "sign in again from this page", http_status=403))
    try:
        if app.throttle.blocked(req.peer):
            raise Refusal(None, "SIGN_IN_RATE_LIMITED", f"more than {app.throttle.per_minute} failed sign-ins a minute "
                          "from this address; wait a minute and try again", http_status=429)
        if req.form.get("with") == "certificate":
            if req.certificate is None:
                raise Refusal(None, "MISSING_CREDENTIALS", "no verified client certificate on this connection: "
                              "present one issued by the node's CA, or sign in with a token", http_status=401)
            credential, via = req.certificate, "certificate"
        else:
            token = req.form.get("token", "").strip()
            if not token:
                raise Refusal(None, "MISSING_CREDENTIALS", "paste your node token (`veil token issue` gives one)",
                              http_status=401)
            credential, via = Credential(token=token), "token"
        if req.session is not None:  # a new sign-in never reuses a session id
            app.sessions.end(req.session.id)
        try:
            session = app.sign_in(req, credential, via)
        except Refusal:
            app.throttle.failed(req.peer)
            raise
    except Refusal as r:
        return login_page(app, req, status=r.http_status, refusal=r)
    response = Response(303, b"", headers=[("Location", "/")])
    response.cookie(COOKIE, session.id)
    return response.cookie(LOGIN_COOKIE, "", max_age=0)


def post_logout(app: App, req: Request) -> Response:
    assert req.session is not None
    if app.on_session is not None:
        try:
            app.on_session("signout", req.session.principal, {"via": req.session.via, "peer": req.peer})
        except Exception:  # noqa: BLE001 - signing out must work even when the log cannot be written
            pass
    app.sessions.end(req.session.id)
    req.session = None
    response = app.render(req, "signed_out.html", title="Signed out")
    return response.cookie(COOKIE, "", max_age=0)


def overview(app: App, req: Request) -> Response:
    if req.session is None:
        if req.session_expired:
            return login_page(app, req, status=401, refusal=Refusal(
                None, "SESSION_EXPIRED", "your session expired: sign in again", http_status=401))
        return app.redirect(req, "/login")
    key = app.rpc(req, "/veil.v1.AuditService/GetNodeKey", audit_pb2.GetNodeKeyRequest())
    s = req.session
    return app.render(req, "overview.html", title="Overview", key_id=key.key_id, node_id=key.node_id,
                      idle_minutes=app.settings.session_idle_minutes, max_hours=app.settings.session_max_hours,
                      pages=[i for i in app.nav(s, req.path) if i["href"] != "/"])


ROUTES = [
    ("GET", "/", overview, False),
    ("GET", "/login", get_login, False),
    ("POST", "/login", post_login, False),
    ("POST", "/logout", post_logout),
]
