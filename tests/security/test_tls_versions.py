"""What SECURITY.md says about TLS versions is what both ports do (issue 15): TLS 1.3 and 1.2
are accepted (1.2 only with forward-secret AEAD suites, BoringSSL's defaults for gRPC), TLS 1.1
and 1.0 are refused in the handshake. gRPC's Python API cannot raise the floor to 1.3."""

from __future__ import annotations

import socket
import ssl

import pytest

from tests.security import ledger

pytestmark = pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")


def handshake(port: int, version: ssl.TLSVersion, folder, *, client_cert: bool = False) -> str | None:
    """The negotiated version, or None if the server refused the handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(folder / "tls" / "ca.pem")
    if client_cert:
        ctx.load_cert_chain(folder / "tls" / "client-audra.pem", folder / "tls" / "client-audra.key")
    ctx.check_hostname = False
    ctx.minimum_version = ctx.maximum_version = version
    ctx.set_alpn_protocols(["h2"])
    if version < ssl.TLSVersion.TLSv1_2:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer it, so the server is what refuses
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw) as tls:
                tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")  # the server's answer proves it kept the session
                tls.settimeout(5)
                return tls.version() if tls.recv(9) else None
        except (ssl.SSLError, ConnectionResetError, OSError):
            return None


def test_both_ports_accept_tls_1_3_and_1_2_and_refuse_older(tls_node):
    running, folder = tls_node.running, tls_node.folder
    seen = {}
    for name, port, cert in (("token port", running.port, False), ("mTLS port", running.mtls_port, True)):
        assert handshake(port, ssl.TLSVersion.TLSv1_3, folder, client_cert=cert) == "TLSv1.3", name
        assert handshake(port, ssl.TLSVersion.TLSv1_2, folder, client_cert=cert) == "TLSv1.2", name
        for old in (ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1):
            try:
                got = handshake(port, old, folder, client_cert=cert)
            except ssl.SSLError:
                pytest.skip("this OpenSSL cannot offer TLS 1.0/1.1 even at security level 0")
            assert got is None, (name, old, got)
        seen[name] = "1.3/1.2 accepted, 1.1/1.0 refused"
    ledger.figure("tls_versions", seen)
