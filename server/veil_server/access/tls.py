"""Transport security: the ``[tls]`` section, the node's listening ports, and certificate identities.

```toml
[tls]
cert = "tls/node.pem"              # the node's certificate chain (PEM)
key = "tls/node.key"               # its private key (PEM, mode 0600)
ca = "tls/ca.pem"                  # CA(s) whose client certificates this node accepts, and
                                   # that it trusts for its peers' server certificates
mtls_listen = "127.0.0.1:50052"    # optional: a second port where a client certificate is required

[[tls.clients]]                    # a certificate name (subjectAltName) -> a declared principal
name = "billing.hospital.example"
principal = "billing"
```

Two ports, because gRPC's server credentials either require a client certificate or never ask
for one: ``listen`` serves TLS with bearer tokens (analysts), ``mtls_listen`` requires a
certificate chained to ``ca`` (enterprise systems, peer nodes) and ignores bearer tokens.

Threat: a certificate from the right CA but for another system. The chain, validity dates and
key usage are checked by gRPC (BoringSSL) during the handshake; the *name* is checked here: a
verified certificate is mapped to a principal only through an exact subjectAltName listed in
``[[tls.clients]]``; a certificate whose names are not listed is refused (UNAUTHENTICATED,
``CERTIFICATE_NOT_MAPPED``) even though its chain is good. The common name is never used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import grpc

from veil.transport import is_loopback_host

ENV = {"cert": "VEIL_TLS_CERT", "key": "VEIL_TLS_KEY", "ca": "VEIL_TLS_CA", "mtls_listen": "VEIL_MTLS_LISTEN"}


@dataclass(frozen=True)
class ClientIdentity:
    name: str  # an exact subjectAltName (DNS name, URI or IP address as text)
    principal: str


@dataclass(frozen=True)
class TlsSettings:
    cert: Path
    key: Path
    ca: Path | None = None
    mtls_listen: str | None = None
    clients: tuple[ClientIdentity, ...] = ()

    def principal_for(self, names: list[str]) -> str | None:
        for client in self.clients:
            if client.name in names:
                return client.principal
        return None

    def server_credentials(self, *, require_client_cert: bool) -> grpc.ServerCredentials:
        pair = [(self.key.read_bytes(), self.cert.read_bytes())]
        if require_client_cert:
            if self.ca is None:
                raise ValueError("tls.mtls_listen needs tls.ca: the CA whose client certificates are accepted")
            return grpc.ssl_server_credentials(pair, root_certificates=self.ca.read_bytes(), require_client_auth=True)
        return grpc.ssl_server_credentials(pair)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """As a client of a peer node: trust ``ca``, present this node's certificate."""
        return grpc.ssl_channel_credentials(self.ca.read_bytes() if self.ca else None, self.key.read_bytes(),
                                            self.cert.read_bytes())


def parse_tls(raw: Any, *, base_dir: Path, env: Mapping[str, str], principals: set[str],
              error: type[Exception]) -> TlsSettings | None:
    section = dict(raw or {})
    for key, var in ENV.items():
        if env.get(var):
            section[key] = env[var]
    if not section:
        return None
    for key in ("cert", "key"):
        if not section.get(key):
            raise error(f"tls.{key} is required when [tls] is present (PEM file path)")

    def path(key: str) -> Path | None:
        value = section.get(key)
        if not value:
            return None
        p = Path(str(value)).expanduser()
        p = p if p.is_absolute() else (base_dir / p).resolve()
        if not p.is_file():
            raise error(f"tls.{key}: {p} does not exist (create a development CA with `veil node init`)")
        return p

    clients = []
    for i, c in enumerate(section.get("clients", [])):
        name, principal = str(c.get("name", "")), str(c.get("principal", ""))
        if not name or principal not in principals:
            raise error(f"tls.clients[{i}] needs a certificate name and a principal declared in [[principals]]")
        clients.append(ClientIdentity(name, principal))
    mtls = section.get("mtls_listen")
    settings = TlsSettings(path("cert"), path("key"), path("ca"), str(mtls) if mtls else None,  # type: ignore[arg-type]
                           tuple(clients))
    if settings.mtls_listen and settings.ca is None:
        raise error("tls.mtls_listen needs tls.ca: the CA whose client certificates are accepted")
    return settings


def is_loopback(address: str) -> bool:
    return is_loopback_host(address.rsplit(":", 1)[0].strip("[]"))


def certificate_names(context: grpc.ServicerContext | None) -> list[str] | None:
    """The subjectAltNames of the caller's *verified* certificate, or None without one.

    Only the mutual-TLS port asks for a certificate, and it completes the handshake only for a
    chain it verified, so a name here is one the CA vouched for."""
    if context is None:
        return None
    try:
        auth = context.auth_context()
    except Exception:  # pragma: no cover - a context without transport information
        return None
    if not auth.get("x509_pem_cert"):
        return None
    return [v.decode("utf-8", "replace") for v in auth.get("x509_subject_alternative_name", [])]
