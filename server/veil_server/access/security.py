"""Transport, identity and limits, wired together: what ``run_server`` asks before it serves.

Secure by default: a node serves only over TLS unless its config says, explicitly,
``[node] dev_mode = true`` (or ``VEIL_DEV_MODE=1``), and even then plaintext is allowed only on
a loopback address. Development mode is also the only mode that accepts static SHA-256 tokens.

```toml
[tokens]
public_key = "state/token_key.pub"   # default: state_dir/token_key.pub (created on first start)
max_ttl_hours = 720                  # the node refuses tokens that live longer than this
```
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import grpc

from ..state.lifecycle import QueryState
from .limits import LimitSettings, Limiter, parse_limits
from .tls import TlsSettings, is_loopback, parse_tls
from .tokens import PUBLIC_KEY_FILE, REVOKED_FILE, TokenVerifier, load_or_create_signing_key

log = logging.getLogger("veil.security")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class TokenSettings:
    public_key: Path
    max_ttl_hours: int = 720
    default_location: bool = True  # state_dir/token_key.pub: the node creates the key if missing


@dataclass(frozen=True)
class SecuritySettings:
    dev_mode: bool = False
    tls: TlsSettings | None = None
    tokens: TokenSettings | None = None
    limits: LimitSettings = field(default_factory=LimitSettings)


def parse_security(raw: Mapping[str, Any], *, node: Mapping[str, Any], base_dir: Path, env: Mapping[str, str],
                   state_dir: Path, principals: set[str], error: type[Exception]) -> SecuritySettings:
    dev = node.get("dev_mode", False)
    if env.get("VEIL_DEV_MODE"):
        flag = env["VEIL_DEV_MODE"].strip().lower()
        if flag not in _TRUE + _FALSE:
            raise error("VEIL_DEV_MODE must be 1/true or 0/false")
        dev = flag in _TRUE
    if not isinstance(dev, bool):
        raise error("node.dev_mode must be true or false")
    tls = parse_tls(raw.get("tls"), base_dir=base_dir, env=env, principals=principals, error=error)
    tok = dict(raw.get("tokens") or {})
    default_key = Path(state_dir) / PUBLIC_KEY_FILE
    if tok.get("public_key"):
        p = Path(str(tok["public_key"])).expanduser()
        key_path = p if p.is_absolute() else (base_dir / p).resolve()
    else:
        key_path = default_key
    try:
        ttl = int(tok.get("max_ttl_hours", 720))
    except (TypeError, ValueError):
        raise error("tokens.max_ttl_hours must be an integer") from None
    if not 1 <= ttl <= 24 * 366:
        raise error("tokens.max_ttl_hours must be between 1 and 8784 (a year)")
    tokens = TokenSettings(key_path, ttl, key_path == default_key)
    limits = parse_limits(raw.get("limits"), env=env, error=error)
    return SecuritySettings(dev, tls, tokens, limits)


def settings_of(config: Any) -> SecuritySettings:
    """A config built without parsing (tests, tools) is treated as production: TLS required."""
    return getattr(config, "security", None) or SecuritySettings()


def check_startable(settings: SecuritySettings, address: str, *, error: type[Exception]) -> None:
    """Refuse to serve in a configuration that would expose the node."""
    if settings.tls is None and not settings.dev_mode:
        raise error("TLS is required outside development mode: add a [tls] section (`veil node init` writes "
                    "one with a development CA), or set [node] dev_mode = true for local development on loopback")
    if settings.tls is None and not is_loopback(address):
        raise error(f"development mode serves plaintext and listens on loopback only, not {address}; "
                    "configure [tls] to listen on other addresses")


def token_verifier(settings: SecuritySettings, *, issuer: str, state_dir: Path) -> TokenVerifier | None:
    tokens = settings.tokens
    if tokens is None:
        return None
    if tokens.default_location and not tokens.public_key.exists():
        load_or_create_signing_key(state_dir)  # so `veil token issue` and the node agree on a key
    if not tokens.public_key.exists():
        log.warning("no token key at %s: signed tokens are refused", tokens.public_key)
        return None
    return TokenVerifier.from_files(tokens.public_key, issuer=issuer, max_ttl_seconds=tokens.max_ttl_hours * 3600,
                                    revoked_path=Path(state_dir) / REVOKED_FILE)


def open_queries(node: Any):
    """Unfinished queries of a principal, for the per-principal cap on open queries."""
    unfinished = [QueryState.PENDING_APPROVAL, QueryState.APPROVED, QueryState.RUNNING]
    return lambda principal: sum(1 for q in node.store.in_states(unfinished) if q.principal == principal)


def server_options(settings: SecuritySettings) -> list[tuple[str, Any]]:
    size = settings.limits.max_message_bytes
    return [
        ("grpc.max_receive_message_length", size),
        ("grpc.max_send_message_length", max(size, 16 * 1024 * 1024)),  # results may be larger than requests
        ("grpc.so_reuseport", 0),
        # Dead or stalled clients are found and their calls cancelled (keepalive), and idle
        # connections are closed, so abandoned connections do not pin threads or memory.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.max_connection_idle_ms", 300_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_metadata_size", 16 * 1024),
    ]


def bind(server: grpc.Server, address: str, settings: SecuritySettings, *,
         mtls_address: str | None = None) -> tuple[int, int]:
    """Add the node's ports; returns (port, mutual-TLS port or 0). A port of 0 means it failed."""
    tls = settings.tls
    try:
        if tls is None:
            return server.add_insecure_port(address), 0
        port = server.add_secure_port(address, tls.server_credentials(require_client_cert=False))
        mtls = mtls_address or tls.mtls_listen
        mport = server.add_secure_port(mtls, tls.server_credentials(require_client_cert=True)) if mtls else 0
        if mtls and mport == 0:
            return 0, 0
        return port, mport
    except RuntimeError:
        return 0, 0


__all__ = ["SecuritySettings", "TokenSettings", "parse_security", "settings_of", "check_startable",
           "token_verifier", "open_queries", "server_options", "bind", "Limiter"]
