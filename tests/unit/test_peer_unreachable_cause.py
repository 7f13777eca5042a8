"""The cause of an unreachable federation member, read from gRPC's transport error text (issue 20).
The texts are the ones gRPC 1.85 produced in tests/integration/test_federation_init.py."""

from __future__ import annotations

import pytest

from veil_server.federation.transport import unreachable, unreachable_cause

TEXTS = [
    ("UNAVAILABLE: failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:51573: Tls handshake "
     "failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:"
     "CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate: OK", "CERTIFICATE_NOT_TRUSTED"),
    ("UNAVAILABLE: failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:51573: Custom "
     "verification check failed with error: UNAUTHENTICATED: Hostname Verification Check failed.",
     "CERTIFICATE_NAME_MISMATCH"),
    ("UNAVAILABLE: failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:9: "
     "Connection refused", "CONNECTION_REFUSED"),
    ("DEADLINE_EXCEEDED: Deadline Exceeded", "TIMED_OUT"),
    ("not a declared peer", "UNREACHABLE"),
]


@pytest.mark.parametrize("text,cause", TEXTS)
def test_cause(text, cause):
    assert unreachable_cause(text)[0] == cause
    err = unreachable("south", text)
    assert err.reason == "FEDERATION_PEER_UNAVAILABLE" and err.metadata == {"node": "south", "cause": cause}
    assert "127.0.0.1" not in err.message  # the transport text stays private (the operator's log)
