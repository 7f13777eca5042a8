"""Signed, expiring, revocable bearer tokens for analysts (and any principal without a certificate).

Format: ``veil1.<payload>.<signature>``, both parts unpadded base64url. The payload is canonical
JSON ``{"v":1,"iss":NODE,"sub":PRINCIPAL,"role":ROLE,"iat":SECONDS,"exp":SECONDS,"jti":HEX}``
and the signature is Ed25519 over the ASCII bytes ``veil1.<payload>`` with the node's *token key*
(``state_dir/token_key.pem``; a key separate from the audit key, so a leaked token key cannot
forge checkpoints and rotating it does not start a new audit log).

Why this shape: the node stores no token and no secret that could be replayed (only the public
key), so a stolen config or state backup mints nothing; expiry bounds what a leaked token is
worth; the ``jti`` lets the operator revoke one token, and a principal-wide entry revokes all
tokens issued to someone before a time. What the node checks, in order, each a refusal with its
own reason: size and shape, signature, issuer (this node), not issued in the future, lifetime no
longer than ``[tokens] max_ttl_hours``, not expired, not revoked, principal declared in the
config with the same role (the config is the source of truth: removing a principal disables
their tokens at the next restart).

The revocation list is ``state_dir/revoked_tokens.jsonl`` (append-only, fsynced); the node
re-reads it whenever its size or mtime changes, so ``veil token revoke`` works on a running
node without a restart. If the list exists but cannot be read, every signed token is refused
(fail closed).
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..errors import Unauthenticated, Unavailable
from .node_key import NodeKey

PREFIX = "veil1."
MAX_TOKEN_CHARS = 2048  # far above a real token (~250 chars); refuse before any decoding work
CLOCK_SKEW = 300  # seconds a token's iat may lie in the future (clocks across hosts drift)
PRIVATE_KEY_FILE = "token_key.pem"
PUBLIC_KEY_FILE = "token_key.pub"
REVOKED_FILE = "revoked_tokens.jsonl"
ISSUED_FILE = "issued_tokens.jsonl"
_JTI = re.compile(r"^[0-9a-f]{32}$")
_DURATION = re.compile(r"^(\d+)([smhd])$")


@dataclass(frozen=True)
class Claims:
    issuer: str
    principal: str
    role: str
    issued_at: int
    expires_at: int
    token_id: str

    def to_json(self) -> dict[str, Any]:
        return {"v": 1, "iss": self.issuer, "sub": self.principal, "role": self.role, "iat": self.issued_at,
                "exp": self.expires_at, "jti": self.token_id}


def parse_duration(text: str) -> int:
    """``90s``, ``30m``, ``8h``, ``7d`` → seconds."""
    m = _DURATION.match(text.strip())
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"duration {text!r} must look like 90s, 30m, 8h or 7d")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _append_line(path: Path, record: dict[str, Any]) -> None:
    """One fsynced line: the record is durable before the command reports success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the issuer's side (``veil token ...``, ``veil node init``) ---------------------------------


def load_or_create_signing_key(state_dir: Path) -> NodeKey:
    """The token key ``state_dir/token_key.pem``, created on first use exactly as the node key is
    (0600 in a 0700 directory, atomically), with its public half in ``token_key.pub``."""
    key = NodeKey.load_or_create(Path(state_dir), PRIVATE_KEY_FILE)
    pub = Path(state_dir) / PUBLIC_KEY_FILE
    if not pub.exists() or pub.read_bytes() != key.public_key_pem:
        tmp = pub.with_name(f".{pub.name}.{os.getpid()}.tmp")
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(key.public_key_pem)  # 0600 like every file in the state directory (issue 15)
        os.replace(tmp, pub)
    return key


def issue(key: NodeKey, *, issuer: str, principal: str, role: str, ttl_seconds: int,
          now: float | None = None, state_dir: Path | None = None) -> tuple[str, Claims]:
    """A new token and its claims; recorded (claims only, never the token) in the issue log."""
    iat = int(time.time() if now is None else now)
    claims = Claims(issuer, principal, role, iat, iat + int(ttl_seconds), secrets.token_hex(16))
    payload = PREFIX + _b64(json.dumps(claims.to_json(), sort_keys=True, separators=(",", ":")).encode())
    token = payload + "." + _b64(key.sign(payload.encode("ascii")))
    if state_dir is not None:
        _append_line(Path(state_dir) / ISSUED_FILE, claims.to_json())
    return token, claims


def revoke(state_dir: Path, *, token_id: str | None = None, principal: str | None = None,
           now: float | None = None) -> dict[str, Any]:
    """Revoke one token by id, or every token issued to ``principal`` up to now."""
    at = int(time.time() if now is None else now)
    if token_id is not None:
        if not _JTI.match(token_id):
            raise ValueError("a token id is 32 hex digits (see `veil token list`)")
        record: dict[str, Any] = {"jti": token_id, "revoked_at": at}
    elif principal:
        record = {"sub": principal, "issued_before": at + 1, "revoked_at": at}
    else:
        raise ValueError("name a token id or a principal")
    _append_line(Path(state_dir) / REVOKED_FILE, record)
    return record


def issued(state_dir: Path) -> list[dict[str, Any]]:
    path = Path(state_dir) / ISSUED_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- the node's side ----------------------------------------------------------------------------


class RevocationList:
    """``revoked_tokens.jsonl``, re-read when it changes. Fail closed on a file it cannot read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._ids: frozenset[str] = frozenset()
        self._before: dict[str, int] = {}

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._ids, self._before = None, frozenset(), {}
            return
        except OSError as e:
            raise Unavailable("the token revocation list cannot be read; no token is accepted until it can",
                              reason="REVOCATION_LIST_UNAVAILABLE", private=str(e)) from None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stamp:
            return
        try:
            text = self.path.read_text(encoding="utf-8")
            ids, before = set(), {}
            lines = text.split("\n")
            # A torn final line (no newline yet) is an append in progress: skip it, not fail.
            for line in lines[:-1]:
                if not line.strip():
                    continue
                rec = json.loads(line)
                if "jti" in rec:
                    ids.add(str(rec["jti"]))
                elif "sub" in rec:
                    before[str(rec["sub"])] = max(before.get(str(rec["sub"]), 0), int(rec["issued_before"]))
                else:
                    raise ValueError("record names neither jti nor sub")
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise Unavailable("the token revocation list cannot be read; no token is accepted until it can",
                              reason="REVOCATION_LIST_UNAVAILABLE", private=f"{self.path}: {e}") from None
        self._stamp, self._ids, self._before = stamp, frozenset(ids), before

    def is_revoked(self, claims: Claims) -> bool:
        with self._lock:
            self._refresh()
            return claims.token_id in self._ids or claims.issued_at < self._before.get(claims.principal, 0)


def _refuse(reason: str, message: str) -> Unauthenticated:
    return Unauthenticated(message, reason=reason)


class TokenVerifier:
    def __init__(self, public_key: Ed25519PublicKey, *, issuer: str, max_ttl_seconds: int,
                 revocations: RevocationList) -> None:
        self._key = public_key
        self.issuer = issuer
        self.max_ttl = max_ttl_seconds
        self.revocations = revocations

    @classmethod
    def from_files(cls, public_key_path: Path, *, issuer: str, max_ttl_seconds: int,
                   revoked_path: Path) -> "TokenVerifier":
        key = serialization.load_pem_public_key(public_key_path.read_bytes())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"{public_key_path} is not an Ed25519 public key")
        return cls(key, issuer=issuer, max_ttl_seconds=max_ttl_seconds, revocations=RevocationList(revoked_path))

    def verify(self, token: str, *, now: float | None = None) -> Claims:
        """The token's claims, or ``Unauthenticated`` naming what failed. Never any other error."""
        if len(token) > MAX_TOKEN_CHARS or not token.startswith(PREFIX) or token.count(".") != 2:
            raise _refuse("INVALID_TOKEN", "the token is not one this node issued; ask the owner for one")
        payload, _, sig = token.rpartition(".")
        try:
            self._key.verify(_unb64(sig), payload.encode("ascii"))
        except (InvalidSignature, ValueError, UnicodeEncodeError):
            raise _refuse("INVALID_TOKEN", "the token's signature does not verify; ask the owner for a new one") from None
        try:  # signed by us, so well formed unless the key was misused; still checked, never trusted
            raw = json.loads(_unb64(payload[len(PREFIX):]))
            claims = Claims(str(raw["iss"]), str(raw["sub"]), str(raw["role"]), int(raw["iat"]), int(raw["exp"]),
                            str(raw["jti"]))
            if raw.get("v") != 1:
                raise ValueError("version")
        except (ValueError, KeyError, TypeError):
            raise _refuse("INVALID_TOKEN", "the token's claims are malformed; ask the owner for a new one") from None
        t = int(time.time() if now is None else now)
        if claims.issuer != self.issuer:
            # The issuer is the node's name: a renamed node refuses the tokens of its old name.
            raise _refuse("TOKEN_WRONG_ISSUER", "the token was issued for another node, or for this node under "
                          "an earlier [node] name; ask the operator to re-issue it (`veil token issue`)")
        if claims.issued_at > t + CLOCK_SKEW:
            raise _refuse("INVALID_TOKEN", "the token claims to be issued in the future; check the clocks")
        if claims.expires_at - claims.issued_at > self.max_ttl:
            raise _refuse("TOKEN_TTL_TOO_LONG", "the token lives longer than this node allows; ask for a shorter one")
        if claims.expires_at <= t:
            raise _refuse("TOKEN_EXPIRED", "the token has expired; ask the owner for a new one")
        if self.revocations.is_revoked(claims):
            raise _refuse("TOKEN_REVOKED", "the token has been revoked; ask the owner for a new one")
        return claims
