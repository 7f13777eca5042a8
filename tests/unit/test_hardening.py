"""Pure logic of issue 8: token format and revocation, limits, settings, storage error mapping."""

from __future__ import annotations

import errno
import sqlite3
import time
from pathlib import Path

import pytest

from veil.v1 import query_pb2
from veil_server.access import tokens
from veil_server.config import ConfigError, parse_config
from veil_server.errors import ResourceExhausted, Unauthenticated, Unavailable
from veil_server.access.guard import invalid_well_known
from veil_server.access.limits import LimitSettings, Limiter
from veil_server.state.storage import storage_error


def verifier(tmp_path: Path, **kw) -> tuple[tokens.TokenVerifier, object]:
    key = tokens.load_or_create_signing_key(tmp_path)
    v = tokens.TokenVerifier.from_files(tmp_path / tokens.PUBLIC_KEY_FILE, issuer="n", max_ttl_seconds=3600,
                                        revoked_path=tmp_path / tokens.REVOKED_FILE, **kw)
    return v, key


def test_token_round_trip_expiry_and_revocation(tmp_path):
    v, key = verifier(tmp_path)
    tok, claims = tokens.issue(key, issuer="n", principal="alice", role="analyst", ttl_seconds=60, state_dir=tmp_path)
    assert v.verify(tok) == claims
    with pytest.raises(Unauthenticated, match="expired"):
        v.verify(tok, now=time.time() + 61)
    tokens.revoke(tmp_path, token_id=claims.token_id)
    with pytest.raises(Unauthenticated) as e:
        v.verify(tok)
    assert e.value.reason == "TOKEN_REVOKED"
    assert [c["jti"] for c in tokens.issued(tmp_path)] == [claims.token_id]  # claims kept, never the token
    assert tok not in (tmp_path / tokens.ISSUED_FILE).read_text()


def test_revocation_list_tolerates_a_torn_append_but_not_garbage(tmp_path):
    v, key = verifier(tmp_path)
    tok, _ = tokens.issue(key, issuer="n", principal="bob", role="analyst", ttl_seconds=60)
    (tmp_path / tokens.REVOKED_FILE).write_text('{"jti": "00", "revoked_at": 1}\n{"jti": "ab')  # crash mid-append
    assert v.verify(tok).principal == "bob"
    (tmp_path / tokens.REVOKED_FILE).write_text("garbage\n")
    with pytest.raises(Unavailable):
        v.verify(tok)


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("30m", 1800), ("8h", 28800), ("7d", 604800)])
def test_durations(text, seconds):
    assert tokens.parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "8", "0h", "-1h", "1w", "h8"])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        tokens.parse_duration(bad)


def test_rate_limit_and_concurrency_cap():
    lim = Limiter(LimitSettings(requests_per_second=1000, burst=3, max_concurrent_calls=2))
    a, b = lim.admit("p", "/x/Get"), lim.admit("p", "/x/Get")
    with pytest.raises(ResourceExhausted) as e:
        lim.admit("p", "/x/Get")
    assert e.value.reason == "CONCURRENCY_LIMIT"
    a(), a()  # releasing twice counts once
    assert lim.in_flight() == 1
    lim.admit("q", "/x/Get")  # principals do not share a budget
    slow = Limiter(LimitSettings(requests_per_second=0.1, burst=2, max_concurrent_calls=10))
    slow.admit("p", "/m")()
    slow.admit("p", "/m")()
    with pytest.raises(ResourceExhausted) as e:
        slow.admit("p", "/m")
    assert e.value.reason == "RATE_LIMITED" and int(e.value.metadata["retry_after_ms"]) > 0
    b()


def test_open_query_cap_releases_its_slot():
    lim = Limiter(LimitSettings(max_open_queries=2), open_queries=lambda p: 2)
    with pytest.raises(ResourceExhausted) as e:
        lim.admit("p", "/veil.v1.QueryService/SubmitQuery")
    assert e.value.reason == "TOO_MANY_OPEN_QUERIES" and lim.in_flight() == 0


BASE = {"node": {"name": "n"}, "principals": [{"name": "alice", "role": "analyst"}]}


def test_security_settings_parse_and_refuse(tmp_path):
    cfg = parse_config(BASE, base_dir=tmp_path)
    assert cfg.security.dev_mode is False and cfg.security.tls is None
    assert parse_config(BASE, base_dir=tmp_path, env={"VEIL_DEV_MODE": "1"}).security.dev_mode
    for raw, match in [
        ({**BASE, "limits": {"burst": 0}}, "limits.burst"),
        ({**BASE, "limits": {"bogus": 1}}, "unknown keys"),
        ({**BASE, "tls": {"cert": "nope.pem", "key": "nope.key"}}, "does not exist"),
        ({**BASE, "tls": {"key": "k"}}, "tls.cert is required"),
        ({**BASE, "tokens": {"max_ttl_hours": 0}}, "max_ttl_hours"),
        ({"node": {"dev_mode": "yes"}}, "dev_mode"),
    ]:
        with pytest.raises(ConfigError, match=match):
            parse_config(raw, base_dir=tmp_path)


def test_storage_errors_become_unavailable_others_do_not():
    assert storage_error(OSError(errno.ENOSPC, "No space left on device")).reason == "STORAGE_UNAVAILABLE"
    assert storage_error(sqlite3.OperationalError("database or disk is full")) is not None
    assert storage_error(sqlite3.OperationalError("no such column: x")) is None
    assert storage_error(ValueError("x")) is None


def test_out_of_range_well_known_types_are_found():
    req = query_pb2.WaitQueryRequest(name="q")
    assert invalid_well_known(req) is None
    req.timeout.seconds = 10**12
    assert invalid_well_known(req) == "timeout.duration"


def test_text_with_a_nul_character_is_found_in_any_field():
    from veil.v1 import governance_pb2
    from veil_server.access.guard import invalid_field

    assert invalid_field(query_pb2.SubmitQueryRequest(sql="SELECT 1", purpose="research")) is None
    assert invalid_field(query_pb2.WaitQueryRequest(name="queries/a\x00b")) == ("name", "nul")
    assert invalid_field(query_pb2.SubmitQueryRequest(sql="SELECT 1\x00")) == ("sql", "nul")
    spec = governance_pb2.RegisterDatasetRequest()
    spec.spec.name = "ok"
    spec.spec.purposes.extend(["research", "bad\x00"])
    assert invalid_field(spec) == ("spec.purposes", "nul")


def test_postgres_state_errors_become_unavailable():
    import psycopg
    from psycopg import errors as pg

    assert storage_error(psycopg.OperationalError("server closed the connection")).reason == \
        "STATE_DATABASE_UNAVAILABLE"
    assert storage_error(pg.LockNotAvailable("lock timeout")).reason == "STATE_DATABASE_UNAVAILABLE"
    assert storage_error(pg.UniqueViolation("dup")) is None
