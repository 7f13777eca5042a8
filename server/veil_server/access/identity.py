"""Who is calling: a verified client certificate, a signed token, or (development only) a static token.

The authentication interceptor (:mod:`veil_server.access.auth`) asks :class:`NodeAuthenticator` for the
principal of each call; everything here either returns a principal declared in the config or
raises ``Unauthenticated`` with a reason. In order:

1. **Client certificate** (mutual-TLS port only). The handshake verified the chain; the
   certificate's subjectAltNames must include a name mapped in ``[[tls.clients]]`` to a declared
   principal, or the call is refused (``CERTIFICATE_NOT_MAPPED``). On that port the certificate
   is the credential and bearer tokens are ignored, so a leaked token cannot upgrade a system's
   identity or the other way round.
2. **Signed token** (``veil1.…``, :mod:`veil_server.access.tokens`): signature, issuer, lifetime,
   expiry, revocation; then the principal must be declared with the role the token names.
3. **Static token** (SHA-256 in ``[[principals]] token_sha256``): accepted only when the node
   runs in explicit development mode (``[node] dev_mode = true``). In production mode such a
   token is refused like any unknown string: static strings do not expire and cannot be revoked
   one at a time.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

import grpc

from .auth import TokenAuthenticator
from ..config import NodeConfig, Principal
from ..errors import Unauthenticated
from .tls import TlsSettings, certificate_names
from .tokens import PREFIX, TokenVerifier

log = logging.getLogger("veil.identity")


def bearer_token(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    for key, value in metadata or ():
        # Size is bounded by grpc.max_metadata_size (16 KiB); the verifier refuses long tokens.
        if key == "authorization" and isinstance(value, str):
            scheme, _, rest = value.partition(" ")
            if scheme.lower() == "bearer" and rest.strip():
                return rest.strip()
    return None


class NodeAuthenticator:
    def __init__(self, config: NodeConfig, *, dev_mode: bool, tls: TlsSettings | None,
                 verifier: TokenVerifier | None) -> None:
        self._principals = {p.name: p for p in config.principals}
        self._tls = tls
        self._verifier = verifier
        self.dev_mode = dev_mode
        static = [p for p in config.principals if p.token_sha256]
        self._static = TokenAuthenticator(static) if dev_mode else None
        if static and not dev_mode:
            log.warning("ignoring token_sha256 of %s: static tokens are accepted only in development mode",
                        ", ".join(p.name for p in static))

    def authenticate(self, metadata: Iterable[tuple[str, Any]] | None,
                     context: grpc.ServicerContext | None = None) -> Principal:
        names = certificate_names(context)
        if names is not None:
            return self._by_certificate(names)
        token = bearer_token(metadata)
        if token is None:
            raise Unauthenticated("no credentials: send metadata 'authorization: Bearer <token>' "
                                  "or connect with a client certificate", reason="MISSING_CREDENTIALS")
        if token.startswith(PREFIX):
            return self._by_signed_token(token)
        if self._static is not None:
            return self._static.authenticate([("authorization", f"Bearer {token}")])
        raise Unauthenticated("the token is not valid on this node (static tokens are accepted only in "
                              "development mode); ask the owner for one: `veil token issue`",
                              reason="INVALID_TOKEN")

    def _by_certificate(self, names: list[str]) -> Principal:
        name = self._tls.principal_for(names) if self._tls is not None else None
        principal = self._principals.get(name) if name else None
        if principal is None:
            raise Unauthenticated("the client certificate is valid but its name is not mapped to a principal "
                                  "on this node ([[tls.clients]])", reason="CERTIFICATE_NOT_MAPPED")
        return principal

    def _by_signed_token(self, token: str) -> Principal:
        if self._verifier is None:
            raise Unauthenticated("this node has no token key; it accepts no signed token",
                                  reason="INVALID_TOKEN")
        claims = self._verifier.verify(token)
        principal = self._principals.get(claims.principal)
        if principal is None:
            raise Unauthenticated("the token names a principal this node does not declare",
                                  reason="UNKNOWN_PRINCIPAL")
        if principal.role.value != claims.role:
            raise Unauthenticated("the token's role differs from the principal's declared role; ask for a new token",
                                  reason="ROLE_MISMATCH")
        return principal
