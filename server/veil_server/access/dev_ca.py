"""A development certificate authority: what ``veil node init`` writes so a demo runs over TLS.

Threat it answers: a fresh node must not serve plaintext by default, yet a demo must run with one
command and no outside PKI. So init creates a throw-away CA (ECDSA P-256), a server certificate
for the node and client certificates for the principals that authenticate by certificate
(enterprise systems, peer nodes). The CA's private key stays in the node folder (mode 0600):
whoever holds it can mint identities, so a real deployment replaces the whole ``tls/`` folder
with certificates from the organisation's own CA and never ships this key.

Names are what mutual TLS maps to principals (``[[tls.clients]]``): each client certificate
carries exactly one DNS subjectAltName, and the node trusts the name only in a chain it verified.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_DAYS = 365


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Create with the final mode: a private key must never exist world-readable, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class DevCA:
    """A CA whose key and certificate live in ``folder`` (``ca.pem``, ``ca.key``)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, folder: Path) -> None:
        self.key, self.cert, self.folder = key, cert, folder

    @property
    def cert_path(self) -> Path:
        return self.folder / "ca.pem"

    @classmethod
    def create(cls, folder: Path, common_name: str, *, days: int = DEFAULT_DAYS) -> "DevCA":
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = _now()
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        ca = cls(key, cert, folder)
        _write(folder / "ca.key", _key_pem(key), 0o600)
        _write(folder / "ca.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return ca

    @classmethod
    def load(cls, folder: Path) -> "DevCA":
        key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
        if not isinstance(key, ec.EllipticCurvePrivateKey):  # pragma: no cover - we only write EC keys
            raise ValueError(f"{folder / 'ca.key'} is not an EC key")
        return cls(key, cert, folder)

    def issue(self, stem: str, names: list[str], *, server: bool, client: bool, days: int = DEFAULT_DAYS,
              not_before: dt.datetime | None = None) -> Issued:
        """A leaf certificate for ``names`` (DNS names or IP addresses) written as
        ``stem.pem`` / ``stem.key``. ``not_before`` lets tests mint expired certificates."""
        key = ec.generate_private_key(ec.SECP256R1())
        start = not_before or (_now() - dt.timedelta(minutes=5))
        sans: list[x509.GeneralName] = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        issued = Issued(self.folder / f"{stem}.pem", self.folder / f"{stem}.key")
        _write(issued.key, _key_pem(key), 0o600)
        _write(issued.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return issued


def server_names(node_name: str, listen: str) -> list[str]:
    """What a node's certificate names: loopback (the demo), its node name (peers dial it by
    name with a target-name override) and the host it listens on, if that is a name or address."""
    names = [node_name.lower().replace("_", "-"), "localhost", "127.0.0.1", "::1"]
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host and host not in names and host not in ("0.0.0.0", "::"):
        names.append(host)
    return names
