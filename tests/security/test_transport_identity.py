"""Transport and identity, over real TLS on loopback: the certificate matrix and the token attacks.

Each credential below is refused; the refusal is UNAUTHENTICATED (or, for a handshake the node
never completes, UNAVAILABLE on the client: the node answered nothing at all), carries no data,
and every refusal that reaches the node is in its audit log.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time

import grpc
import pytest

import veil
from veil.v1 import audit_pb2, catalog_pb2, query_pb2
from veil_server.access import tokens
from veil_server.config import ConfigError, load_config
from veil_server.access.dev_ca import DevCA
from veil_server.cli.provision import client_name
from veil_server.api.server import run_server
from veil.cli import main as veil_main

from . import ledger
from .conftest import bearer, set_config

LIST = "/veil.v1.CatalogService/ListDatasets"
EVENTS = "/veil.v1.AuditService/ListAuditEvents"
UNAVAILABLE, UNAUTH, DENIED = grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED, \
    grpc.StatusCode.PERMISSION_DENIED


def list_datasets(channel: grpc.Channel, token: str | None = None):
    call = channel.unary_unary(LIST, request_serializer=catalog_pb2.ListDatasetsRequest.SerializeToString,
                               response_deserializer=catalog_pb2.ListDatasetsResponse.FromString)
    return call(catalog_pb2.ListDatasetsRequest(), metadata=bearer(token), timeout=5)


def refused(fn) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        fn()
    return e.value


def test_certificate_matrix(tls_node, tmp_path):
    n = tls_node
    auditor = client_name("audra", "demo-node")
    foreign = DevCA.create(tmp_path / "foreign", "Some other CA")
    # Right name, wrong CA: the chain is what the node checks first.
    forged = foreign.issue("forged", [auditor], server=False, client=True)
    own_ca = DevCA.load(n.tls)
    wrong_name = own_ca.issue("stranger", ["stranger.demo-node.clients.veil"], server=False, client=True)
    expired = own_ca.issue("expired", [auditor], server=False, client=True, days=1,
                           not_before=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3))
    outcomes = {}

    # The good cases first, so the refusals below are about the credential, not the setup.
    assert list_datasets(n.channel(), n.tokens["alice"]).datasets  # TLS + signed token
    with n.channel(mtls="client-audra") as ch:  # mutual TLS, the auditor system by certificate
        ch.unary_unary(EVENTS, request_serializer=audit_pb2.ListAuditEventsRequest.SerializeToString,
                       response_deserializer=audit_pb2.ListAuditEventsResponse.FromString)(
            audit_pb2.ListAuditEventsRequest(page_size=1), timeout=5)
        # A certificate grants its principal's role, no more: the auditor may not submit.
        outcomes["certificate, wrong role"] = refused(lambda: ch.unary_unary(
            "/veil.v1.QueryService/SubmitQuery", request_serializer=query_pb2.SubmitQueryRequest.SerializeToString,
            response_deserializer=query_pb2.Query.FromString)(query_pb2.SubmitQueryRequest(), timeout=5)).code()

    start = n.running.node.audit.log.tree_size
    with grpc.insecure_channel(n.target) as ch:  # plaintext to a TLS port
        outcomes["no TLS at all"] = refused(lambda: list_datasets(ch, n.tokens["alice"])).code()
    with n.channel(ca=foreign.cert_path.read_bytes()) as ch:  # the client does not trust the node's CA
        outcomes["server not trusted"] = refused(lambda: list_datasets(ch, n.tokens["alice"])).code()
    with n.channel() as ch:  # TLS, but no credentials at all
        outcomes["no token"] = refused(lambda: list_datasets(ch)).code()
    with grpc.secure_channel(n.mtls_target, grpc.ssl_channel_credentials(n.pem("ca.pem"))) as ch:
        outcomes["mTLS port, no certificate"] = refused(lambda: list_datasets(ch, n.tokens["alice"])).code()
    for label, issued in (("foreign CA, right name", forged), ("right CA, wrong name", wrong_name),
                          ("expired certificate", expired)):
        with n.channel(cert=issued.cert.read_bytes(), key=issued.key.read_bytes()) as ch:
            err = refused(lambda: list_datasets(ch, n.tokens["alice"]))  # a token does not rescue it
            outcomes[label] = err.code()
            if label == "right CA, wrong name":
                assert veil.errors.from_rpc_error(err).reason == "CERTIFICATE_NOT_MAPPED"

    assert outcomes == {
        "certificate, wrong role": DENIED, "no TLS at all": UNAVAILABLE, "server not trusted": UNAVAILABLE,
        "no token": UNAUTH, "mTLS port, no certificate": UNAVAILABLE, "foreign CA, right name": UNAVAILABLE,
        "right CA, wrong name": UNAUTH, "expired certificate": UNAVAILABLE,
    }
    logged = [e for e in n.running.node.audit.log.entries(start) if e.kind == "auth.failure"]
    assert {e.details["reason"] for e in logged} >= {"MISSING_CREDENTIALS", "CERTIFICATE_NOT_MAPPED"}
    ledger.record("attack", "certificates", "certificate matrix: no TLS, untrusted server, no certificate, "
                  "foreign CA, wrong name, expired, wrong role", len(outcomes))


def test_token_attacks(tls_node):
    n = tls_node
    state = n.folder / "state"
    key = tokens.load_or_create_signing_key(state)
    other_key = tokens.load_or_create_signing_key(n.folder / "elsewhere")

    def mint(**kw):
        args = dict(issuer="demo-node", principal="alice", role="analyst", ttl_seconds=3600)
        args.update(kw)
        k = args.pop("key", key)
        return tokens.issue(k, **args)[0]

    good = mint()
    payload, _, sig = good.rpartition(".")
    claims = json.loads(base64.urlsafe_b64decode(payload[6:] + "=" * (-len(payload[6:]) % 4)))
    escalated = "veil1." + base64.urlsafe_b64encode(json.dumps({**claims, "role": "admin"}).encode()).decode() \
        .rstrip("=") + "." + sig
    static = "not-a-signed-token-" + "x" * 20
    attacks = {
        "expired": (mint(now=time.time() - 7200), "TOKEN_EXPIRED"),
        "signed by another key": (mint(key=other_key), "INVALID_TOKEN"),
        "issued for another node": (mint(issuer="other-node"), "TOKEN_WRONG_ISSUER"),
        "lifetime over the ceiling": (mint(ttl_seconds=800 * 3600), "TOKEN_TTL_TOO_LONG"),
        "claims edited (role escalated)": (escalated, "INVALID_TOKEN"),
        "signature stripped": (payload + ".", "INVALID_TOKEN"),
        "undeclared principal": (mint(principal="mallory"), "UNKNOWN_PRINCIPAL"),
        "role differs from the config": (mint(role="admin"), "ROLE_MISMATCH"),
        "static token in production mode": (static, "INVALID_TOKEN"),
        "issued in the future": (mint(now=time.time() + 3600), "INVALID_TOKEN"),
        "oversized token": ("veil1." + "A" * 5000 + ".x", "INVALID_TOKEN"),
    }
    with n.channel() as ch:
        assert list_datasets(ch, good).datasets
        for label, (token, reason) in attacks.items():
            err = veil.errors.from_rpc_error(refused(lambda: list_datasets(ch, token)))
            assert (err.code, err.reason) == (UNAUTH, reason), label

        # Revocation, on the running node, through the operator's command.
        victim, victim_claims = tokens.issue(key, issuer="demo-node", principal="bob", role="analyst",
                                             ttl_seconds=3600, state_dir=state)
        assert list_datasets(ch, victim).datasets
        assert veil_main(["token", "revoke", victim_claims.token_id, "--config", str(n.folder / "veil.toml")]) == 0
        err = veil.errors.from_rpc_error(refused(lambda: list_datasets(ch, victim)))
        assert err.reason == "TOKEN_REVOKED"
        assert list_datasets(ch, n.tokens["bob"]).datasets  # only that token
        # Revoking a principal revokes every token issued to them so far, not later ones.
        assert veil_main(["token", "revoke", "--principal", "bob", "--config", str(n.folder / "veil.toml")]) == 0
        err = veil.errors.from_rpc_error(refused(lambda: list_datasets(ch, n.tokens["bob"])))
        assert err.reason == "TOKEN_REVOKED"
        time.sleep(1.1)  # issue times have a one-second resolution
        assert veil_main(["token", "issue", "--principal", "bob", "--ttl", "1h", "--out",
                          str(n.folder / "bob2.token"), "--config", str(n.folder / "veil.toml")]) == 0
        assert list_datasets(ch, (n.folder / "bob2.token").read_text().strip()).datasets
    ledger.record("attack", "tokens", "bearer tokens: expired, forged, edited, foreign, revoked, over-long, "
                  "static in production, undeclared principal, wrong role", len(attacks) + 2)


def test_secure_by_default(tmp_path):
    """Without [tls] and without an explicit dev mode the node does not start; dev mode is
    loopback only; a plaintext SDK connection to a remote host needs insecure=True."""
    from veil_server.cli.demo import init_node_folder

    init_node_folder(tmp_path, rows=500)
    set_config(tmp_path, node={"dev_mode": "false"})
    with pytest.raises(ConfigError, match="TLS is required"):
        with run_server(load_config(tmp_path / "veil.toml", env={}), listen="127.0.0.1:0"):
            pass
    dev = load_config(tmp_path / "veil.toml", env={"VEIL_DEV_MODE": "1"})
    with pytest.raises(ConfigError, match="loopback only"):
        with run_server(dev, listen="0.0.0.0:0"):
            pass
    from veil.transport import open_channel

    ch = open_channel("example.org:443")  # no CA: TLS against the system roots, never plaintext
    assert type(ch).__name__ == "Channel"
    ch.close()


def test_peer_calls_use_tls_and_the_node_certificate(tls_node):
    """Federation transport: with [tls] a node dials peers over TLS (trusting tls.ca) and presents
    its own certificate, so a peer's mutual-TLS port admits it; without, it cannot reach them."""
    from veil.v1 import federation_pb2
    from veil_server.federation.settings import FederationConfig, Peer
    from veil_server.federation.transport import FederationFailed, PeerTransport
    from veil_server.access.security import settings_of

    tls = settings_of(tls_node.running.node.config).tls
    reasons = {}
    for label, target, settings in (("TLS port", tls_node.target, tls), ("mTLS port", tls_node.mtls_target, tls),
                                    ("plaintext", tls_node.target, None)):
        cfg = FederationConfig("self", (Peer("peer", target, "00" * 32),), ())
        transport = PeerTransport(cfg, participant=None, tls=settings)
        try:
            with pytest.raises(FederationFailed) as e:
                transport.call("peer", "abort", federation_pb2.PeerEnvelope(), timeout=5, retries=0)
            reasons[label] = e.value.reason
        finally:
            transport.close()
    # Reached (the peer, not configured for federation, refuses the envelope) versus unreachable.
    assert reasons == {"TLS port": "FEDERATION_PEER_REJECTED", "mTLS port": "FEDERATION_PEER_REJECTED",
                       "plaintext": "FEDERATION_PEER_UNAVAILABLE"}
