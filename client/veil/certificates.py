"""Data asset certificates: a node's signed statement of what a listed dataset is.

On listing, a node signs (Ed25519) a canonical JSON document naming the dataset and its version,
its owner, a hash of its schema and rules, a fingerprint of its content, its row count,
classification, declared rights and allowed purposes, its disclosure mode (differential privacy
with its ε terms, or exact release with the owner's stated reason), its lawful basis, its
quality profile (computed at listing, under the dataset's disclosure rules), and the time of issue. Anyone holding the
node's public key can verify a certificate offline; changing any byte of it breaks the signature,
and the node refuses to run queries once the data no longer matches the fingerprint.

The signed bytes are RFC 8785 canonical JSON (see :mod:`veil.audit.canonical`) with a ``type``
field, so a certificate signature can never be mistaken for a checkpoint's or a receipt's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature

from .audit import canonical
from .audit.records import load_public_key

CERT_TYPE = "veil.dataset.certificate"
CERT_VERSION = 3
# version 1: before the disclosure mode was certified; 2: before the lawful basis and the
# quality profile were
KNOWN_VERSIONS = (1, 2, 3)


class CertificateError(ValueError):
    """A certificate is malformed, or its signature does not verify under the given key."""


@dataclass(frozen=True)
class DatasetCertificate:
    dataset: str
    version: int
    owner: str
    schema_hash: str
    content_fingerprint: str
    row_count: int
    classification: str
    rights: tuple[str, ...]
    purposes: tuple[str, ...]
    issued_at: str  # RFC 3339 UTC, microseconds
    node_id: str
    key_id: str
    # {"mode": "dp" | "exact", ...}: the ε terms, or the owner's reason for exact release; all strings.
    disclosure: dict[str, str] = field(default_factory=dict)
    # Version 3: the lawful basis ("consent", "contract", "public-task", "anonymous"; "" if the
    # owner declared none) and the quality profile computed at listing (strings and integers:
    # see veil_server.governance.quality).
    basis: str = ""
    quality: dict[str, Any] = field(default_factory=dict)
    signature: str = field(default="", compare=False)  # lowercase hex Ed25519 over signed_bytes()
    version_of_format: int = field(default=CERT_VERSION, compare=False)

    @property
    def certificate_id(self) -> str:
        """SHA-256 of the signed bytes: what queries, results and receipts cite."""
        return hashlib.sha256(self.signed_bytes()).hexdigest()

    def body(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("signature")
        fmt = d.pop("version_of_format")
        if fmt == 1:
            d.pop("disclosure")
        if fmt < 3:
            d.pop("basis")
            d.pop("quality")
        d["rights"] = sorted(self.rights)
        d["purposes"] = sorted(self.purposes)
        d["type"] = CERT_TYPE
        d["v"] = fmt
        return d

    def signed_bytes(self) -> bytes:
        return canonical.encode(self.body())

    def verify(self, public_key: bytes | str) -> None:
        """Raise CertificateError unless the signature verifies under ``public_key``."""
        key = load_public_key(public_key)
        try:
            sig = bytes.fromhex(self.signature)
            if sig.hex() != self.signature:  # one spelling only: no upper case, no spaces
                raise ValueError("non-canonical hex")
            key.verify(sig, self.signed_bytes())
        except (InvalidSignature, ValueError) as e:
            raise CertificateError("the certificate's signature does not verify under this key") from e

    def to_bytes(self) -> bytes:
        """The certificate file: canonical JSON, so that every byte of it is significant."""
        return canonical.encode({"certificate": self.body(), "signature": self.signature})

    def to_json(self) -> str:
        return self.to_bytes().decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> "DatasetCertificate":
        try:
            doc = json.loads(text)
            body = dict(doc["certificate"])
            version = body.pop("v")
            if body.pop("type") != CERT_TYPE or version not in KNOWN_VERSIONS or isinstance(version, bool):
                raise CertificateError("not a Veil dataset certificate of a known version")
            if version >= 2 and not (isinstance(body.get("disclosure"), dict)
                                     and all(isinstance(v, str) for v in body["disclosure"].values())):
                raise CertificateError("malformed certificate: disclosure")
            if version >= 3 and not (isinstance(body.get("basis"), str) and isinstance(body.get("quality"), dict)):
                raise CertificateError("malformed certificate: basis or quality")
            body["version_of_format"] = version
            body["rights"] = tuple(body["rights"])
            body["purposes"] = tuple(body["purposes"])
            return cls(**body, signature=str(doc["signature"]))
        except CertificateError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise CertificateError(f"malformed certificate: {type(e).__name__}") from None

    @classmethod
    def load(cls, path: str | Path) -> "DatasetCertificate":
        return cls.from_json(Path(path).read_bytes())


def verify_bytes(raw: bytes, public_key: bytes | str) -> DatasetCertificate:
    """Verify a certificate file's bytes. The file must be exactly the canonical encoding of its
    content, so changing any single byte (even white space) makes verification fail."""
    cert = DatasetCertificate.from_json(raw)
    if cert.to_bytes() != raw:
        raise CertificateError("the certificate file is not in its canonical form (was it edited?)")
    cert.verify(public_key)
    return cert


def verify_file(path: str | Path, public_key: bytes | str) -> DatasetCertificate:
    return verify_bytes(Path(path).read_bytes(), public_key)
