"""Witnessed checkpoints: the C2SP signed-note, tlog-checkpoint and tlog-cosignature formats.

Why: a node's own signature on a checkpoint proves only that the node's key signed it. An
operator holding that key can rebuild a shorter or different log and sign it too; only someone
who kept an earlier checkpoint notices. A *witness* keeps the latest checkpoint of each log it
follows and cosigns a new one only if an RFC 6962 consistency proof shows that the old tree is
a prefix of the new one. A receipt cosigned by a quorum of witnesses therefore names a history
the node can no longer roll back or fork without every one of those witnesses refusing it.

What each party learns: a witness sees checkpoints (origin, size, root hash) and consistency
proofs (hashes): nothing of any entry.

Formats, following C2SP where they fit:

* checkpoint body (tlog-checkpoint): ``<origin>\\n<tree size>\\n<base64 root hash>\\n``, with the
  Veil log's ``node_id`` as origin;
* signed note (signed-note): body, a blank line, then one line per signature
  ``— <key name> <base64(4-byte key id || signature)>``; Ed25519 key ids are
  ``SHA-256(name || "\\n" || 0x01 || public key)[:4]``. The node signs the body with its node key
  under the key name = origin;
* cosignature (tlog-cosignature, ``cosignature/v1``): the witness signs
  ``"cosignature/v1\\ntime <unix seconds>\\n" || body`` with Ed25519; its line carries
  ``key id (alg 0x04) || 8-byte big-endian time || signature``;
* verifier keys (vkey): ``<name>+<hex key id>+<base64(alg byte || public key)>``.

Departures, written down: Veil's own checkpoint (canonical JSON, signed by the node key) stays
the one receipts and exports have carried; the C2SP note is derived from it (same origin, size
and root) and signed separately, so a C2SP witness can follow a Veil log unchanged. Origins are
``veil-<key id prefix>`` rather than a URL-like name. The witness's HTTP API is C2SP
tlog-witness's ``add-checkpoint`` (see ``veil_server.witness``).
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .merkle import VerificationError
from .records import Checkpoint

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
DASH = "\u2014"  # the em dash that begins a signature line


class WitnessError(VerificationError):
    """A note, cosignature or key that does not parse or verify, or a quorum not met."""


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(name: str, alg: int, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public_key).digest()[:4]


def checkpoint_body(origin: str, size: int, root: bytes) -> bytes:
    if not origin or "\n" in origin or not isinstance(size, int) or size < 0 or len(root) != 32:
        raise WitnessError("a checkpoint needs an origin line, a size and a 32-byte root")
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n".encode()


def body_of(cp: Checkpoint) -> bytes:
    """The C2SP checkpoint body of a Veil checkpoint."""
    return checkpoint_body(cp.origin, cp.tree_size, cp.root_hash)


@dataclass(frozen=True)
class ParsedBody:
    origin: str
    size: int
    root: bytes


def parse_body(body: bytes) -> ParsedBody:
    try:
        lines = body.decode().split("\n")
        origin, size, root = lines[0], int(lines[1]), base64.b64decode(lines[2], validate=True)
    except (UnicodeDecodeError, IndexError, ValueError):
        raise WitnessError("not a checkpoint body") from None
    if not origin or size < 0 or len(root) != 32 or str(size) != lines[1] or not body.endswith(b"\n"):
        raise WitnessError("not a checkpoint body")
    return ParsedBody(origin, size, root)


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes
    payload: bytes  # what follows the key id

    def line(self) -> str:
        return f"{DASH} {self.name} {base64.b64encode(self.key_id + self.payload).decode()}\n"


def sign_note(body: bytes, name: str, private_key: Ed25519PrivateKey | None = None, *,
              sign=None, public_key: bytes | None = None) -> NoteSignature:
    """The log's Ed25519 signature line over ``body`` (``sign`` for a key kept elsewhere)."""
    pub = public_key if public_key is not None else _raw(private_key.public_key())
    signature = sign(body) if sign is not None else private_key.sign(body)
    return NoteSignature(name, key_id(name, ALG_ED25519, pub), signature)


def format_note(body: bytes, signatures: list[NoteSignature]) -> bytes:
    return body + b"\n" + "".join(s.line() for s in signatures).encode()


def parse_note(note: bytes) -> tuple[bytes, list[NoteSignature]]:
    """``(body, signatures)`` of a signed note; malformed lines raise :class:`WitnessError`."""
    try:
        text = note.decode()
    except UnicodeDecodeError:
        raise WitnessError("a note is UTF-8 text") from None
    head, sep, tail = text.rpartition("\n\n")
    if not sep or not tail.endswith("\n"):
        raise WitnessError("a signed note is a body, a blank line and signature lines")
    sigs = []
    for line in tail[:-1].split("\n"):
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != DASH:
            raise WitnessError("malformed signature line")
        try:
            raw = base64.b64decode(parts[2], validate=True)
        except ValueError:
            raise WitnessError("malformed signature line") from None
        if len(raw) < 5:
            raise WitnessError("malformed signature line")
        sigs.append(NoteSignature(parts[1], raw[:4], raw[4:]))
    return (head + "\n").encode(), sigs


def cosigned_message(body: bytes, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n".encode() + body


def cosign(body: bytes, name: str, timestamp: int, *, sign, public_key: bytes) -> NoteSignature:
    """A witness's cosignature/v1 line over a checkpoint body (``sign``: its Ed25519 key's)."""
    kid = key_id(name, ALG_COSIGNATURE_V1, public_key)
    return NoteSignature(name, kid, struct.pack(">Q", timestamp) + sign(cosigned_message(body, timestamp)))


@dataclass(frozen=True)
class VerifierKey:
    """A pinned key: who (name), which algorithm, the raw Ed25519 key."""

    name: str
    alg: int
    public_key: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.alg, self.public_key)

    def text(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(bytes([self.alg]) + self.public_key).decode()}"

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        try:
            name, kid, key = text.strip().split("+", 2)
            raw = base64.b64decode(key, validate=True)
        except ValueError:
            raise WitnessError("a verifier key reads NAME+KEYID+BASE64") from None
        if not name or len(raw) != 33 or raw[0] not in (ALG_ED25519, ALG_COSIGNATURE_V1):
            raise WitnessError("a verifier key holds an Ed25519 key (algorithm 1 or 4)")
        vk = cls(name, raw[0], raw[1:])
        if vk.key_id.hex() != kid.lower():
            raise WitnessError(f"verifier key {name}: the key id does not match the key")
        return vk

    def verify(self, body: bytes, sig: NoteSignature) -> int | None:
        """The cosignature's time (or 0 for a log signature) if ``sig`` is this key's, valid over
        ``body``; ``None`` if it is another key's line; raises if it is this key's and invalid."""
        if sig.name != self.name or sig.key_id != self.key_id:
            return None
        key = Ed25519PublicKey.from_public_bytes(self.public_key)
        try:
            if self.alg == ALG_COSIGNATURE_V1:
                if len(sig.payload) != 72:
                    raise WitnessError(f"cosignature of {self.name} is malformed")
                (timestamp,) = struct.unpack(">Q", sig.payload[:8])
                key.verify(sig.payload[8:], cosigned_message(body, timestamp))
                return timestamp
            key.verify(sig.payload, body)
            return 0
        except InvalidSignature:
            raise WitnessError(f"the signature of {self.name} does not verify") from None


def log_verifier(origin: str, public_key: bytes) -> VerifierKey:
    return VerifierKey(origin, ALG_ED25519, public_key)


def witness_verifier(name: str, public_key: bytes) -> VerifierKey:
    return VerifierKey(name, ALG_COSIGNATURE_V1, public_key)


def check_witnessed(note: bytes, cp: Checkpoint, witnesses: list[VerifierKey], quorum: int) -> list[str]:
    """Raise :class:`WitnessError` unless ``note`` is the C2SP form of ``cp`` cosigned by at
    least ``quorum`` of ``witnesses`` (distinct names). Returns the names that cosigned."""
    if quorum <= 0:
        return []
    if not note:
        raise WitnessError(f"the checkpoint carries no witness cosignatures; {quorum} required")
    body, sigs = parse_note(note)
    if body != body_of(cp):
        raise WitnessError("the witnessed note is not this checkpoint (origin, size or root differ)")
    names = set()
    for w in witnesses:
        for sig in sigs:
            if w.alg == ALG_COSIGNATURE_V1 and w.verify(body, sig) is not None:
                names.add(w.name)
    if len(names) < quorum:
        raise WitnessError(f"{len(names)} of the pinned witnesses cosigned this checkpoint; {quorum} required")
    return sorted(names)
