"""The web console's security properties, over real HTTPS against a real node (no browser needed):
cookies, headers, CSRF on every state-changing route, origins, sessions that end, identities
exactly as on the gRPC port (tokens, client certificates, revocation), refusals with a status, a
reason and a fix, and no token or data value in a page or a log."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time

import grpc
import pytest

from veil.v1 import audit_pb2, governance_pb2, query_pb2
from veil_server.console.calls import Credential, Refusal
from veil_server.console.app import NAV
from veil_server.access.auth import METHOD_ROLES

from tests.integration.console_support import Client, console_node

from . import ledger

_csrf_attempts: dict[str, int] = {}

# Every state-changing route, with a form that would otherwise be accepted or refused later.
POSTS = [
    ("/logout", {}),
    ("/grants", {"principal": "bob", "dataset": "patients", "purpose": "research"}),
    ("/grants/anything/revoke", {"reason": "r"}),
    ("/reviews/abc/approve", {"reason": "r"}),
    ("/reviews/abc/reject", {"reason": "r"}),
    ("/datasets/patients/suspend", {"reason": "r"}),
    ("/datasets/patients/approve", {"reason": "r"}),
    ("/audit/export", {}),
]
PAGES = ["/datasets", "/datasets/patients", "/listings", "/reviews", "/grants", "/usage", "/usage.csv", "/audit",
         "/audit/entries/0", "/audit/checkpoints", "/audit/key"]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with console_node(tmp_path_factory.mktemp("console-sec") / "node") as n:
        yield n


def signed_in(node, who: str) -> Client:
    c = Client(node)
    r = c.sign_in(who)
    assert r.status == 303, (r.status, r.reason)
    return c


def test_cookies_and_headers(node):
    c = Client(node)
    page = c.get("/login")
    signin = page.headers.get_all("Set-Cookie")[0]
    assert signin.startswith("__Host-veil-signin=")
    r = c.sign_in("olivia")
    cookie = next(x for x in r.headers.get_all("Set-Cookie") if x.startswith("__Host-veil-session="))
    for attr in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/"):
        assert attr in cookie
    assert "Domain" not in cookie and node.tokens["olivia"] not in cookie
    page = c.get("/datasets")
    h = page.headers
    csp = h["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "form-action 'self'" in csp
    assert h["X-Content-Type-Options"] == "nosniff" and h["X-Frame-Options"] == "DENY"
    assert h["Cache-Control"] == "no-store" and h["Strict-Transport-Security"].startswith("max-age=")
    assert re.fullmatch(r"app;dur=\d+\.\d", h["Server-Timing"])
    assert "<script" not in page.body and " style=" not in page.body  # nothing inline for the CSP to allow


@pytest.mark.parametrize("path, form", POSTS)
def test_every_state_changing_route_needs_the_sessions_csrf_token(node, path, form):
    c = signed_in(node, "olivia")
    for bad in ({}, {"csrf": "forged"}, {"csrf": signed_in(node, "otto").csrf()}):  # absent, forged, another session's
        r = c.post(path, {**form, **bad})
        assert (r.status, r.reason) == (403, "CSRF_TOKEN_INVALID"), path
        assert "reload the page" in r.body
        _csrf_attempts[f"{path}:{len(bad) and bad['csrf'][:6]}"] = 1
    assert c.get("/").status == 200  # the session itself was not harmed
    ledger.record("attack", "console-csrf", "console: every state-changing route posted with an absent, a forged "
                  "and another session's CSRF token", sum(_csrf_attempts.values()))


def test_cross_origin_posts_are_refused_even_with_the_token(node):
    c = signed_in(node, "olivia")
    token = c.csrf("/grants")
    form = {"csrf": token, "principal": "bob", "dataset": "patients", "purpose": "research"}
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        r = c.post("/grants", form, headers=headers)
        assert (r.status, r.reason) == (403, "CROSS_ORIGIN_REQUEST")
    r = c.post("/grants", form, headers={"Origin": f"https://127.0.0.1:{node.running.console.port}"})
    assert r.status == 303  # the console's own origin


def test_sign_in_needs_the_pages_nonce(node):
    c = Client(node)
    r = c.post("/login", {"nonce": "made-up", "with": "token", "token": node.tokens["olivia"]})
    assert (r.status, r.reason) == (403, "CSRF_TOKEN_INVALID")
    page = c.get("/login")
    nonce = page.field("nonce")
    assert c.post("/login", {"nonce": nonce, "token": node.tokens["olivia"]}).status == 303
    c2 = Client(node)
    c2.jar["__Host-veil-signin"] = nonce  # a nonce is good once
    assert c2.post("/login", {"nonce": nonce, "token": node.tokens["olivia"]}).reason == "CSRF_TOKEN_INVALID"


def test_refusals_name_the_reason_and_never_echo_the_token(node, caplog):
    caplog.set_level(logging.DEBUG)
    c = Client(node)
    page = c.get("/login")
    bad = node.tokens["olivia"][:-4] + "AAAA"
    r = c.post("/login", {"nonce": page.field("nonce"), "token": bad})
    assert r.status == 401 and r.reason and r.reason.isupper() and "HTTP 401" in r.body
    assert bad not in r.body and node.tokens["olivia"] not in r.body
    c = Client(node)  # an analyst: refused at sign-in; every page's RPCs would refuse or scope them too
    r = c.sign_in("alice")
    assert (r.status, r.reason) == (403, "ROLE_NOT_ALLOWED") and "SDK" in r.body
    assert "__Host-veil-session" not in c.jar
    for path in PAGES + ["/"]:
        r = c.get(path)
        assert r.status in (303, 401) and (r.status == 303 or r.reason == "NOT_SIGNED_IN"), path
    for record in caplog.records:
        assert node.tokens["alice"] not in record.getMessage() and bad not in record.getMessage()


def test_refused_sign_ins_and_sign_ins_are_audited(node):
    log = node.running.node.audit.log
    Client(node).sign_in("alice")
    denied = log.search(kind="auth.failure", principal="alice").entries
    assert denied and denied[-1].details["method"] == "/veil.console/SignIn"
    assert denied[-1].details["reason"] == "ROLE_NOT_ALLOWED"
    signed_in(node, "audra")
    assert log.search(kind="admin.console.signin", principal="audra").entries[-1].details["via"] == "token"


def test_roles_are_the_rpcs(node):
    """Each page's RPCs through the console's call path refuse an analyst exactly as gRPC does,
    and what the role table allows is what the navigation offers."""
    calls = node.running.console.calls
    alice = Credential(token=node.tokens["alice"])
    for method, message in [
        ("/veil.v1.GovernanceService/ListDatasetVersions", governance_pb2.ListDatasetVersionsRequest()),
        ("/veil.v1.ReviewService/ListPendingQueries", governance_pb2.ListPendingQueriesRequest()),
        ("/veil.v1.ReviewService/ApproveQuery", governance_pb2.ReviewQueryRequest(name="queries/x", reason="r")),
        ("/veil.v1.GovernanceService/CreateGrant", governance_pb2.CreateGrantRequest()),
        ("/veil.v1.GovernanceService/ApproveListing", governance_pb2.DatasetActionRequest(name="datasets/patients")),
        ("/veil.v1.AuditService/ListAuditEvents", audit_pb2.ListAuditEventsRequest()),
        ("/veil.v1.AuditService/GetInclusionProof", audit_pb2.GetInclusionProofRequest()),
        ("/veil.v1.AuditService/ListCheckpoints", audit_pb2.ListCheckpointsRequest()),
        ("/veil.v1.AuditService/ExportAuditLog", audit_pb2.ExportAuditLogRequest()),
    ]:
        with pytest.raises(Refusal) as e:
            if method.endswith("Export" "AuditLog"):
                next(calls.stream(method, message, alice))
            else:
                calls.call(method, message, alice)
        assert (e.value.code, e.value.reason, e.value.http_status) == \
            (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED", 403), method
    # The gRPC port says the same for the same call.
    import veil
    with veil.connect(node.target, token=node.tokens["alice"], ca=node.ca) as alice_sdk:
        with pytest.raises(veil.PermissionDenied):
            alice_sdk.audit.events()
    for _, _, method in NAV:
        assert method in METHOD_ROLES
    ledger.record("attack", "console-roles", "console: an analyst's credential on the RPC of every owner and "
                  "auditor page and action (refused as over gRPC)", 9)


def test_owner_and_reviewer_are_held_to_their_roles_and_the_stewards_rules(node):
    rita = signed_in(node, "rita")  # a reviewer: no grants, no query review
    csrf = rita.csrf()
    r = rita.post("/grants", {"csrf": csrf, "principal": "bob", "dataset": "patients", "purpose": "research"})
    assert (r.status, r.reason) == (403, "ROLE_NOT_ALLOWED")
    audra = signed_in(node, "audra")
    r = audra.post("/datasets/patients/suspend", {"csrf": audra.csrf(), "reason": "no"})
    assert (r.status, r.reason) == (403, "ROLE_NOT_ALLOWED")
    olivia = signed_in(node, "olivia")
    r = olivia.post("/grants", {"csrf": olivia.csrf(), "principal": "nobody", "dataset": "patients",
                                "purpose": "research"})
    assert (r.status, r.reason) == (400, "UNKNOWN_PRINCIPAL") and "not a principal" in r.body
    r = olivia.post("/reviews/abc/approve", {"csrf": olivia.csrf(), "reason": ""})
    assert (r.status, r.reason) == (400, "REASON_REQUIRED")


def test_a_revoked_token_ends_the_session_at_the_next_click(node):
    c = signed_in(node, "otto")
    assert c.get("/datasets").status == 200
    cfg = node.folder / "veil.toml"
    out = subprocess.run([sys.executable, "-m", "veil.cli", "token", "revoke", "--principal", "otto", "--config",
                          str(cfg)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    r = c.get("/datasets")
    assert r.status == 401 and r.reason in ("TOKEN_REVOKED",), r.reason
    assert c.get("/datasets").reason == "NOT_SIGNED_IN"  # the session is gone, not just refused once


def test_sessions_expire(node):
    console = node.running.console
    c = signed_in(node, "olivia")
    sid = c.jar["__Host-veil-session"]
    console.sessions._by_id[sid].last_seen -= console.sessions.idle_seconds + 1
    r = c.get("/datasets")
    assert (r.status, r.reason) == (401, "SESSION_EXPIRED")
    c = signed_in(node, "olivia")
    console.sessions._by_id[c.jar["__Host-veil-session"]].created -= console.sessions.max_seconds + 1
    assert c.get("/datasets").reason == "SESSION_EXPIRED"
    c = signed_in(node, "olivia")
    c.post("/logout", {"csrf": c.csrf()})
    assert c.get("/datasets").reason == "NOT_SIGNED_IN"


def test_a_client_certificate_signs_in_as_on_the_mutual_tls_port(node):
    tls = node.folder / "tls"
    c = Client(node, cert=(tls / "client-audra.pem", tls / "client-audra.key"))
    page = c.get("/login")
    assert "Sign in with this certificate" in page.body
    r = c.post("/login", {"nonce": page.field("nonce"), "with": "certificate"})
    assert r.status == 303
    assert "audra (auditor), with a certificate" in c.get("/").body
    assert c.get("/audit").status == 200
    # The same session cookie on a connection without that certificate ends the session.
    other = Client(node)
    other.jar = dict(c.jar)
    r = other.get("/audit")
    assert (r.status, r.reason) == (401, "CERTIFICATE_CHANGED")
    assert c.get("/audit").reason == "NOT_SIGNED_IN"
    plain = Client(node)
    r = plain.post("/login", {"nonce": plain.get("/login").field("nonce"), "with": "certificate"})
    assert (r.status, r.reason) == (401, "MISSING_CREDENTIALS")


def test_forms_are_bounded(node):
    c = signed_in(node, "olivia")
    r = c.post("/grants", {"csrf": c.csrf(), "principal": "x" * 70_000})
    assert (r.status, r.reason) == (413, "BODY_TOO_LARGE")
    assert (c.get("/nowhere").status, c.get("/nowhere").reason) == (404, "PAGE_NOT_FOUND")
    assert (c.get("/reviews/abc/approve").status, c.get("/reviews/abc/approve").reason) == (405, "METHOD_NOT_ALLOWED")


def test_console_is_off_by_default_and_plaintext_only_on_loopback_in_dev_mode(tmp_path):
    from veil_server.api.server import run_server
    from veil_server.cli.demo import init_node_folder
    from veil_server.config import ConfigError, load_config

    init_node_folder(tmp_path / "dev", rows=500)  # development mode: plaintext on loopback
    config = load_config(tmp_path / "dev" / "veil.toml", env={})
    assert config.console.enabled is False
    with run_server(config, listen="127.0.0.1:0", grace=0.5) as running:
        assert running.console is None
    config = load_config(tmp_path / "dev" / "veil.toml", env={"VEIL_CONSOLE_ENABLED": "1",
                                                              "VEIL_CONSOLE_LISTEN": "0.0.0.0:0"})
    with pytest.raises(ConfigError, match="loopback"):
        with run_server(config, listen="127.0.0.1:0", grace=0.5):
            pass
    config = load_config(tmp_path / "dev" / "veil.toml", env={"VEIL_CONSOLE_ENABLED": "1",
                                                              "VEIL_CONSOLE_LISTEN": "127.0.0.1:0"})
    with run_server(config, listen="127.0.0.1:0", grace=0.5) as running:
        assert running.console.url.startswith("http://127.0.0.1:")


def test_the_one_click_export_verifies_offline_with_the_downloaded_key(node, tmp_path):
    from veil.audit import verify_export

    audra = signed_in(node, "audra")
    r = audra.post("/audit/export", {"csrf": audra.csrf("/audit")})
    assert r.status == 200 and "attachment" in r.headers["Content-Disposition"]
    export = tmp_path / "audit.jsonl"
    export.write_text(r.body)
    key = audra.get("/audit/key")
    assert key.status == 200 and key.body.startswith("-----BEGIN PUBLIC KEY-----")
    report = verify_export(export, key.body.encode())
    assert report.ok and report.tree_size >= 1, report.problems
    olivia = signed_in(node, "olivia")
    r = olivia.post("/audit/export", {"csrf": olivia.csrf()})
    assert (r.status, r.reason) == (403, "ROLE_NOT_ALLOWED")  # refused before a byte of the log is sent
