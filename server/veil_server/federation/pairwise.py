"""Pairwise secrets between members: per-query X25519 agreement, masks and sealed shares.

Every member draws a fresh X25519 key for each federated query and signs its public half in
its ``PreparedBody`` (see ``envelope.py``). Any two members i and j then derive the same seed

    s_ij = HKDF-SHA256(X25519(a_i, A_j), salt = query id, info = "seed" || i || j || session)

(names sorted, ``session`` the digest of every signed PreparedBody), which only i and j can
compute: the coordinator relays the public keys but holds neither private key, and cannot
substitute its own because each is signed by its member's pinned node key. From seeds:

- ``zero_sum_ring``: member i's mask m_i = sum_{j>i} PRG(s_ij) - sum_{j<i} PRG(s_ij) in Z_2^B.
  The masks of all members sum to zero; each looks uniform to anyone missing one of its seeds.
- ``zero_sum_mod``: the same in Z_n for an analyst's Paillier modulus n; each PRG output is
  (bits(n) + 128) bits reduced mod n, so it is within 2^-128 of uniform.
- ``seal`` / ``open_sealed``: AES-256-GCM under a directional key from s_ij, for the one share
  of a member that travels; the associated data binds query, sender and recipient.

What each party learns: a member learns its own seeds only. Anyone short of one seed of a mask
sees that mask uniform; the coordinator sees public keys, signatures and ciphertexts.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from veil.crypto.sharing import keystream_uint64

from ..errors import Unauthenticated
from .ring import Ring

_INFO = b"veil.federation.v1|"


def new_ephemeral() -> tuple[X25519PrivateKey, bytes]:
    key = X25519PrivateKey.generate()
    return key, key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _hkdf(secret: bytes, info: bytes, salt: bytes | None = None) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_INFO + info).derive(secret)


def derive_seeds(me: str, private: X25519PrivateKey, publics: dict[str, bytes], *, federated_query: str,
                 session: bytes) -> dict[str, bytes]:
    """This member's seed with every other member, by name."""
    seeds = {}
    for other, pub in publics.items():
        if other == me:
            continue
        try:
            shared = private.exchange(X25519PublicKey.from_public_bytes(pub))
        except ValueError:  # malformed or low-order point
            raise Unauthenticated("a member's ephemeral key is not a valid X25519 key",
                                  reason="PEER_KEY_INVALID", metadata={"node": other}) from None
        a, b = sorted((me, other))
        seeds[other] = _hkdf(shared, b"seed|" + a.encode() + b"|" + b.encode() + b"|" + session,
                             salt=federated_query.encode())
    return seeds


def _sign(me: str, other: str) -> int:
    return 1 if other > me else -1


def zero_sum_ring(ring: Ring, me: str, seeds: dict[str, bytes], count: int, context: bytes) -> np.ndarray:
    """This member's mask in Z_2^bits; all members' masks sum to zero."""
    mask = ring.zeros(count)
    for other, seed in sorted(seeds.items()):
        stream = ring.seeded(seed, b"mask|" + context, count)
        mask = ring.add(mask, stream) if _sign(me, other) > 0 else ring.sub(mask, stream)
    return mask


def stream_mod(seed: bytes, context: bytes, modulus: int, count: int) -> list[int]:
    """``count`` integers mod ``modulus``, each within 2^-128 of uniform."""
    width = (modulus.bit_length() + 128 + 63) // 64  # uint64 words per integer
    words = keystream_uint64(count * width, _hkdf(seed, b"modn|" + context)).tobytes()
    step = 8 * width
    return [int.from_bytes(words[i : i + step], "little") % modulus for i in range(0, count * step, step)]


def zero_sum_mod(me: str, seeds: dict[str, bytes], modulus: int, count: int, context: bytes) -> list[int]:
    """This member's mask in Z_modulus; all members' masks sum to zero mod ``modulus``."""
    mask = [0] * count
    for other, seed in sorted(seeds.items()):
        s = _sign(me, other)
        for i, v in enumerate(stream_mod(seed, context, modulus, count)):
            mask[i] += s * v
    return [m % modulus for m in mask]


def _seal_key(seed: bytes, sender: str, recipient: str) -> bytes:
    return _hkdf(seed, b"seal|" + sender.encode() + b"->" + recipient.encode())


def _aad(federated_query: str, sender: str, recipient: str) -> bytes:
    return hashlib.sha256(f"{federated_query}|{sender}|{recipient}".encode()).digest()


def seal(seed: bytes, federated_query: str, sender: str, recipient: str, data: bytes) -> tuple[bytes, bytes]:
    nonce = os.urandom(12)
    return nonce, AESGCM(_seal_key(seed, sender, recipient)).encrypt(nonce, data, _aad(federated_query, sender, recipient))


def open_sealed(seed: bytes, federated_query: str, sender: str, recipient: str, nonce: bytes,
                ciphertext: bytes) -> bytes:
    try:
        return AESGCM(_seal_key(seed, sender, recipient)).decrypt(nonce, ciphertext,
                                                                  _aad(federated_query, sender, recipient))
    except (InvalidTag, ValueError):
        raise Unauthenticated("a sealed share does not open under the pairwise key", reason="PEER_SHARE_INVALID",
                              metadata={"node": sender}) from None
