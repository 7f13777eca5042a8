"""The ring Z_2^B (B a multiple of 64) for secret shares and count masks, as numpy uint64 limbs.

``veil.crypto.sharing`` works in Z_2^64. A federated vector can need more: sums of squares of a
decimal column over a billion declared rows pass 2^63 on a single node. So B is chosen per query
from the declared worst case (:func:`ring_bits_for`), and elements are held as ``w = B / 64``
little-endian uint64 limbs (an array of shape ``(count, w)``); addition carries limb to limb.
With w = 1 this is exactly ``veil.crypto.sharing``'s ring.

What it reveals: nothing by itself. A uniform element (``random``, or a keystream from a seed)
added to a value gives a uniform element; shares built here are uniform except for the last, and
any w - 1 of them are independent of the value. Randomness comes from AES-256-CTR keystreams
under keys fresh from ``os.urandom`` (``veil.crypto.sharing.keystream_uint64``) or derived from a
pairwise seed with HKDF-SHA256 -- never from numpy's generators.
"""

from __future__ import annotations

import os

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from veil.crypto import EncodingOverflow
from veil.crypto.sharing import keystream_uint64

LIMB_BITS = 64


def ring_bits_for(max_abs_total: int) -> int:
    """The smallest multiple of 64 bits whose signed range holds ``+-max_abs_total``."""
    if max_abs_total < 0:
        raise ValueError("max_abs_total must be >= 0")
    limbs = max(1, -(-(max_abs_total.bit_length() + 1) // LIMB_BITS))
    return limbs * LIMB_BITS


class Ring:
    """Z_2^bits with elements as (count, limbs) uint64 arrays."""

    def __init__(self, bits: int) -> None:
        if bits < LIMB_BITS or bits % LIMB_BITS:
            raise ValueError("ring bits must be a positive multiple of 64")
        self.bits = bits
        self.limbs = bits // LIMB_BITS
        self.modulus = 1 << bits
        self.element_bytes = 8 * self.limbs

    def __repr__(self) -> str:
        return f"Ring(2^{self.bits})"

    # -- conversion -------------------------------------------------------------------------

    def encode(self, values: list[int]) -> np.ndarray:
        """Signed integers -> ring elements; refuses values outside the signed range."""
        half = self.modulus >> 1
        if any(v >= half or v < -half for v in values):
            raise EncodingOverflow("a value does not fit the share ring")
        m, nb = self.modulus, self.element_bytes
        raw = b"".join((v % m).to_bytes(nb, "little") for v in values)
        return np.frombuffer(raw, dtype="<u8").astype(np.uint64).reshape(len(values), self.limbs)

    def decode(self, elements: np.ndarray) -> list[int]:
        """Ring elements -> signed integers (two's complement)."""
        half, m = self.modulus >> 1, self.modulus
        data = np.ascontiguousarray(elements, dtype="<u8").tobytes()
        nb = self.element_bytes
        out = []
        for i in range(0, len(data), nb):
            v = int.from_bytes(data[i : i + nb], "little")
            out.append(v - m if v >= half else v)
        return out

    def to_bytes(self, elements: np.ndarray) -> bytes:
        return np.ascontiguousarray(elements, dtype="<u8").tobytes()

    def from_bytes(self, data: bytes, count: int) -> np.ndarray:
        if len(data) != count * self.element_bytes:
            raise ValueError(f"expected {count} ring elements of {self.element_bytes} bytes")
        return np.frombuffer(data, dtype="<u8").astype(np.uint64).reshape(count, self.limbs)

    # -- arithmetic -------------------------------------------------------------------------

    def zeros(self, count: int) -> np.ndarray:
        return np.zeros((count, self.limbs), dtype=np.uint64)

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if a.shape != b.shape:
            raise ValueError("ring vectors of different shapes")
        out = np.empty_like(a)
        carry = np.zeros(a.shape[0], dtype=np.uint64)
        for i in range(self.limbs):
            s = a[:, i] + b[:, i]  # uint64 wraps: the carry is s < a
            c1 = s < a[:, i]
            t = s + carry
            c2 = t < s
            out[:, i] = t
            carry = (c1 | c2).astype(np.uint64)
        return out

    def neg(self, a: np.ndarray) -> np.ndarray:
        one = self.zeros(a.shape[0])
        one[:, 0] = 1
        return self.add(np.invert(a), one)

    def sub(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.add(a, self.neg(b))

    def total(self, vectors: list[np.ndarray]) -> np.ndarray:
        if not vectors:
            raise ValueError("nothing to add")
        acc = vectors[0].copy()
        for v in vectors[1:]:
            acc = self.add(acc, v)
        return acc

    # -- randomness -------------------------------------------------------------------------

    def random(self, count: int) -> np.ndarray:
        """Uniform elements from a keystream under a fresh random key (never repeats)."""
        return self.stream(os.urandom(32), count)

    def stream(self, key: bytes, count: int) -> np.ndarray:
        """Uniform-looking elements expanded from a 32-byte key (AES-256-CTR)."""
        return keystream_uint64(count * self.limbs, key).reshape(count, self.limbs).copy()

    def seeded(self, seed: bytes, context: bytes, count: int) -> np.ndarray:
        """Elements expanded from a pairwise seed for one use (``context`` names the use)."""
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=b"veil.federation.v1|ring|" + context).derive(seed)
        return self.stream(key, count)
