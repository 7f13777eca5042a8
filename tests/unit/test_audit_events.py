"""The node's audit vocabulary on a real log: hostile free text still makes a valid entry, the
key's creation is logged once, and the config digest follows the effective configuration."""

from __future__ import annotations

import dataclasses
import hashlib

from veil.audit.canonical import decode
from veil_server.audit.events import AuditTrail, config_digest, public_key_path
from veil_server.config import Principal, Role, parse_config
from veil_server.errors import QueryRejected

ALICE = Principal("alice", Role.ANALYST, hashlib.sha256(b"t").hexdigest())


def test_hostile_sql_is_logged_as_a_valid_bounded_entry(tmp_path):
    trail = AuditTrail.open(tmp_path)
    try:
        sql = "SELECT \x00\x1b[31m e\u0301 \U0001F600 " + "\\\"" * 50_000  # control, non-NFC, astral, huge
        trail.refused(ALICE, QueryRejected("no"), sql=sql, purpose="re\u0301search", request_id="\x01" * 500)
        (entry,) = [e for e in trail.log.entries(0) if e.kind == "query.submit"]
        assert len(entry.to_bytes()) < 64 * 1024
        assert entry.details["sql_sha256"] == hashlib.sha256(sql.encode()).hexdigest()
        assert "\x00" not in entry.details["sql"] and "\u00e9" in entry.details["sql"]
        assert decode(entry.to_bytes())["details"]["purpose"] == "r\u00e9search"
    finally:
        trail.close()


def test_key_creation_is_logged_once_and_the_public_key_written(tmp_path):
    AuditTrail.open(tmp_path).close()
    trail = AuditTrail.open(tmp_path)
    try:
        assert [e.kind for e in trail.log.entries(0)] == ["admin.key.create"]
        assert public_key_path(tmp_path).read_bytes() == trail.key.public_key_pem
        assert trail.node_id == f"veil-{trail.key.key_id[:16]}"
    finally:
        trail.close()


def test_config_digest_follows_the_effective_configuration(tmp_path):
    raw = {"node": {"name": "n"}, "principals": [{"name": "a", "role": "analyst", "token_sha256": "0" * 64}]}
    base = parse_config(raw, base_dir=tmp_path)
    assert config_digest(base) == config_digest(parse_config(raw, base_dir=tmp_path))
    assert config_digest(base) != config_digest(parse_config(raw, base_dir=tmp_path, env={"VEIL_WORKERS": "2"}))
    assert config_digest(base) == config_digest(dataclasses.replace(base, source=tmp_path / "elsewhere.toml"))
