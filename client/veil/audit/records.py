"""What the audit log stores and signs: entries, checkpoints and receipts, in canonical bytes.

**Entry** (schema ``"v": 1``), the canonical JSON (``veil.audit.canonical``) of::

    {"v": 1, "index": 7, "time": "2025-01-02T03:04:05.123456Z", "kind": "query.release",
     "principal": "alice", "outcome": "ok", "dataset": "patients", "query": "q-42",
     "details": {...}, "prev": "<hex SHA-256 leaf hash of entry 6, 64 zeros for entry 0>"}

``dataset``, ``query`` and ``details`` are left out when absent. The leaf hash of an entry is
``SHA-256(0x00 || bytes)``. ``prev`` chains each entry to the one before; the Merkle tree is what
the node signs, the chain only lets a verifier say *which* entry was altered.
``details`` holds names, counts, reasons and digests — never a data value.

**Checkpoint**: ``{"v":1, "type":"veil.audit.checkpoint", "origin", "tree_size", "root_hash"
(hex), "time", "key_id"}`` in canonical JSON, signed with the node's Ed25519 key. The ``type``
field keeps a checkpoint signature from being replayed as any other document the key signs.

**Receipt**: a release entry, its inclusion proof and a signed checkpoint. It needs no signature
of its own: the checkpoint signs the root, the proof ties the entry to the root, and the entry
names the query, the dataset certificate and the digest of the encrypted result.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import canonical, merkle
from .merkle import VerificationError

SCHEMA_VERSION = 1
CHECKPOINT_TYPE = "veil.audit.checkpoint"
GENESIS_PREV = bytes(32)
MAX_ENTRY_BYTES = 64 * 1024

OUTCOMES = frozenset({"ok", "denied", "error"})
KINDS = frozenset({
    "auth.failure", "catalog.read", "query.submit", "query.decision", "query.approve",
    "query.reject", "query.execute", "query.release", "query.cancel", "query.fail",
    "query.expire",
    "model.release", "model.refuse",  # issue 18: one entry per model release (digest) or refusal
})
"""Known kinds; besides these, any ``admin.<verb>`` (e.g. ``admin.dataset.register``)."""
_KIND_RE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+\Z")

# Entries a Receipt may prove: a query's release, and a model's (issue 18).
RELEASE_KINDS = frozenset({"query.release", "model.release"})
# Keys a "query.release" (or "model.release") entry's details carry, so a Receipt can be checked against it.
QUERY_DIGEST = "query_digest"
DATASET_CERTIFICATE = "dataset_certificate"
RESULT_DIGEST = "result_digest"

_ENTRY_KEYS = {"v", "index", "time", "kind", "principal", "outcome", "prev"}
_ENTRY_OPTIONAL = {"dataset", "query", "details"}


class SignatureError(VerificationError):
    """A checkpoint signature does not verify under the given key."""


def is_known_kind(kind: str) -> bool:
    return kind in KINDS or (kind.startswith("admin.") and bool(_KIND_RE.match(kind)))


def release_details(
    query_digest: bytes | str, dataset_certificate: str, result_digest: bytes | str, **extra: Any
) -> dict[str, Any]:
    """``details`` for a ``query.release`` entry: digests as lowercase hex, never the result."""

    def hexdigest(d: bytes | str) -> str:
        return d.hex() if isinstance(d, (bytes, bytearray)) else bytes.fromhex(d).hex()

    return {
        **extra,
        QUERY_DIGEST: hexdigest(query_digest),
        DATASET_CERTIFICATE: dataset_certificate,
        RESULT_DIGEST: hexdigest(result_digest),
    }


def load_public_key(key: bytes | str | Ed25519PublicKey) -> Ed25519PublicKey:
    """An Ed25519 public key from raw 32 bytes, PEM (bytes or str), or a key object."""
    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, str):
        key = key.encode("ascii")
    key = bytes(key)
    if len(key) == 32:
        return Ed25519PublicKey.from_public_bytes(key)
    loaded = serialization.load_pem_public_key(key)
    if not isinstance(loaded, Ed25519PublicKey):
        raise ValueError("the node key must be Ed25519")
    return loaded


def public_key_bytes(key: bytes | str | Ed25519PublicKey) -> bytes:
    return load_public_key(key).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def key_id(key: bytes | str | Ed25519PublicKey) -> str:
    """SHA-256 of the raw 32-byte public key, hex."""
    return hashlib.sha256(public_key_bytes(key)).hexdigest()


def _hex32(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError(f"{what} must be 64 lowercase hex digits")
    return bytes.fromhex(value)


@dataclass(frozen=True)
class Entry:
    """One audit event. ``to_bytes()`` is what the Merkle leaf hashes."""

    index: int
    time: str
    kind: str
    principal: str
    outcome: str
    prev: bytes = GENESIS_PREV
    dataset: str | None = None
    query: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.index, int) or isinstance(self.index, bool) or self.index < 0:
            raise ValueError("index must be a non-negative int")
        canonical.parse_time(self.time)
        if not isinstance(self.kind, str) or not _KIND_RE.match(self.kind):
            raise ValueError(f"kind {self.kind!r} is not dotted lowercase words")
        if not isinstance(self.principal, str):
            raise ValueError("principal must be a string")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}, not {self.outcome!r}")
        if not isinstance(self.prev, bytes) or len(self.prev) != 32:
            raise ValueError("prev must be a 32-byte leaf hash")
        for name in ("dataset", "query"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string or None")
        if not isinstance(self.details, Mapping):
            raise ValueError("details must be a mapping")

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "v": SCHEMA_VERSION, "index": self.index, "time": self.time, "kind": self.kind,
            "principal": self.principal, "outcome": self.outcome, "prev": self.prev.hex(),
        }
        if self.dataset is not None:
            obj["dataset"] = self.dataset
        if self.query is not None:
            obj["query"] = self.query
        if self.details:
            obj["details"] = self.details
        return obj

    def to_bytes(self) -> bytes:
        data = canonical.encode(self.to_json())
        if len(data) > MAX_ENTRY_BYTES:
            raise ValueError(f"entry is {len(data)} bytes; the limit is {MAX_ENTRY_BYTES}")
        return data

    def leaf_hash(self) -> bytes:
        return merkle.leaf_hash(self.to_bytes())

    @classmethod
    def from_json(cls, obj: Any) -> Entry:
        if not isinstance(obj, dict):
            raise ValueError("an entry is a JSON object")
        if obj.get("v") != SCHEMA_VERSION:
            raise ValueError(f"unsupported entry schema version {obj.get('v')!r}")
        missing = _ENTRY_KEYS - obj.keys()
        unknown = obj.keys() - _ENTRY_KEYS - _ENTRY_OPTIONAL
        if missing or unknown:
            raise ValueError(f"entry keys: missing {sorted(missing)}, unknown {sorted(unknown)}")
        if "details" in obj and (not isinstance(obj["details"], dict) or not obj["details"]):
            raise ValueError("details, when present, is a non-empty object")
        return cls(
            index=obj["index"], time=obj["time"], kind=obj["kind"], principal=obj["principal"],
            outcome=obj["outcome"], prev=_hex32(obj["prev"], "prev"), dataset=obj.get("dataset"),
            query=obj.get("query"), details=obj.get("details", {}),
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Entry:
        """Decode canonical entry bytes; raises :class:`canonical.NonCanonical` on anything else."""
        try:
            return cls.from_json(canonical.decode(data))
        except canonical.NonCanonical:
            raise
        except (ValueError, TypeError) as exc:  # a field of the wrong type or value
            raise canonical.NonCanonical(f"not a v{SCHEMA_VERSION} entry: {exc}") from None


def encode_entry(entry: Mapping[str, Any]) -> bytes:
    """A dict with the entry fields (``prev`` as hex or bytes) -> canonical, validated bytes."""
    obj = dict(entry)
    obj.setdefault("v", SCHEMA_VERSION)
    if isinstance(obj.get("prev"), (bytes, bytearray)):
        obj["prev"] = bytes(obj["prev"]).hex()
    obj = {k: v for k, v in obj.items() if v is not None}
    return Entry.from_json(obj).to_bytes()


def decode_entry(data: bytes) -> dict[str, Any]:
    """Canonical entry bytes -> dict; raises :class:`canonical.NonCanonical` otherwise."""
    return Entry.from_bytes(data).to_json()


@dataclass(frozen=True)
class Checkpoint:
    """Signed by the node: "my log ``origin`` had ``tree_size`` entries, with this root"."""

    origin: str
    tree_size: int
    root_hash: bytes
    time: str
    key_id: str
    signature: bytes = b""

    def body(self) -> dict[str, Any]:
        return {
            "v": SCHEMA_VERSION, "type": CHECKPOINT_TYPE, "origin": self.origin,
            "tree_size": self.tree_size, "root_hash": self.root_hash.hex(), "time": self.time,
            "key_id": self.key_id,
        }

    def signed_bytes(self) -> bytes:
        return canonical.encode(self.body())

    def with_signature(self, signature: bytes) -> Checkpoint:
        return replace(self, signature=bytes(signature))

    def verify(self, public_key: bytes | str | Ed25519PublicKey) -> None:
        """Raises :class:`SignatureError` unless ``public_key`` signed exactly this checkpoint."""
        key = load_public_key(public_key)
        if self.key_id != key_id(key):
            raise SignatureError(f"checkpoint at size {self.tree_size} names another key")
        try:
            key.verify(self.signature, self.signed_bytes())
        except InvalidSignature:
            raise SignatureError(
                f"checkpoint at size {self.tree_size}: signature does not verify"
            ) from None

    def to_json(self) -> dict[str, Any]:
        return {"checkpoint": self.body(), "signature": base64.b64encode(self.signature).decode()}

    @classmethod
    def from_signed_bytes(cls, body: bytes, signature: bytes) -> Checkpoint:
        """Rebuild from ``signed_bytes()`` and the signature (how a store keeps checkpoints)."""
        sig = base64.b64encode(signature).decode()
        return cls.from_json({"checkpoint": canonical.decode(body), "signature": sig})

    @classmethod
    def from_json(cls, obj: Any) -> Checkpoint:
        try:
            body, sig = obj["checkpoint"], obj["signature"]
            if body.get("v") != SCHEMA_VERSION or body.get("type") != CHECKPOINT_TYPE:
                raise ValueError("not a v1 Veil audit checkpoint")
            if set(body) != set(cls("", 0, bytes(32), "", "").body()):
                raise ValueError("unexpected checkpoint fields")
            size = body["tree_size"]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ValueError("tree_size must be a non-negative int")
            canonical.parse_time(body["time"])
            canonical.encode(body)  # NFC strings, safe ints: what signed_bytes() will need
            if not isinstance(body["origin"], str) or not isinstance(body["key_id"], str):
                raise ValueError("origin and key_id are strings")
            return cls(
                origin=body["origin"], tree_size=size, root_hash=_hex32(body["root_hash"], "root"),
                time=body["time"], key_id=body["key_id"],
                signature=base64.b64decode(sig, validate=True),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise canonical.NonCanonical(f"malformed checkpoint: {exc}") from None


@dataclass(frozen=True)
class Receipt:
    """Proof that a query's encrypted result was released, and logged, as stated."""

    query_id: str
    query_digest: bytes
    dataset_certificate_id: str
    result_digest: bytes
    log_index: int
    entry: bytes
    inclusion_proof: Sequence[bytes]
    checkpoint: Checkpoint
    # The checkpoint as a C2SP signed note with its witnesses' cosignatures (issue 15); checked
    # against pinned witness keys by ``veil.audit.witness.check_witnessed``. Empty: none.
    witness_note: bytes = b""

    @property
    def consent_snapshot(self) -> str:
        """The consent snapshot digest the release entry logged ("" for a dataset whose basis is
        not consent); bound by :meth:`verify` like every field of the entry."""
        value = Entry.from_bytes(self.entry).details.get("consent_snapshot", "")
        return value if isinstance(value, str) else ""

    def verify(self, public_key: bytes | str | Ed25519PublicKey) -> None:
        """Raises a :class:`VerificationError` naming the first thing that does not hold."""
        cp = self.checkpoint
        cp.verify(public_key)
        entry = Entry.from_bytes(self.entry)
        if entry.index != self.log_index:
            raise VerificationError(f"entry has index {entry.index}, receipt says {self.log_index}")
        if entry.kind not in RELEASE_KINDS or entry.outcome != "ok":
            raise VerificationError(f"entry {entry.index} is {entry.kind}/{entry.outcome}")
        details = entry.details
        claims = {
            "query": (entry.query, self.query_id),
            QUERY_DIGEST: (details.get(QUERY_DIGEST), self.query_digest.hex()),
            DATASET_CERTIFICATE: (details.get(DATASET_CERTIFICATE), self.dataset_certificate_id),
            RESULT_DIGEST: (details.get(RESULT_DIGEST), self.result_digest.hex()),
        }
        for name, (logged, claimed) in claims.items():
            if logged != claimed:
                raise VerificationError(f"receipt {name} does not match log entry {entry.index}")
        merkle.verify_inclusion(
            merkle.leaf_hash(self.entry), self.log_index, cp.tree_size,
            list(self.inclusion_proof), cp.root_hash,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "query_id": self.query_id, "query_digest": self.query_digest.hex(),
            "dataset_certificate_id": self.dataset_certificate_id,
            "result_digest": self.result_digest.hex(), "log_index": self.log_index,
            "entry": base64.b64encode(self.entry).decode(),
            "inclusion_proof": [p.hex() for p in self.inclusion_proof],
            "checkpoint": self.checkpoint.to_json(),
            **({"witness_note": self.witness_note.decode()} if self.witness_note else {}),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Receipt:
        try:
            return cls(
                query_id=obj["query_id"], query_digest=bytes.fromhex(obj["query_digest"]),
                dataset_certificate_id=obj["dataset_certificate_id"],
                result_digest=bytes.fromhex(obj["result_digest"]), log_index=obj["log_index"],
                entry=base64.b64decode(obj["entry"], validate=True),
                inclusion_proof=[bytes.fromhex(p) for p in obj["inclusion_proof"]],
                checkpoint=Checkpoint.from_json(obj["checkpoint"]),
                witness_note=str(obj.get("witness_note", "")).encode(),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise canonical.NonCanonical(f"malformed receipt: {exc}") from None
