"""Additive secret sharing over Z_2^64 (numpy uint64) and zero-sum masks for federation.

Security basis: information-theoretic. A value v is split into shares s_1..s_m with
s_1..s_{m-1} uniform in Z_2^64 and s_m = v - sum(others); any m - 1 shares are uniform and
independent of v, so a coalition missing one share learns nothing -- provided the randomness is
uniform and never reused. Masks come from AES-256-CTR keystreams (NIST SP 800-38A) under a key
fresh from ``os.urandom`` for every call, so no two calls share a keystream; numpy's generators
are never used (predictable). Pairwise masks expand seeds agreed between two parties with
HKDF-SHA256 (RFC 5869) + AES-CTR, and are only as fresh as the caller's ``context``.

What each party learns: a share holder learns nothing about the value; whoever reconstructs learns
exactly the reconstructed total. Totals live in the ring: a total whose magnitude exceeds 2^63 - 1
wraps silently, so callers declare the worst case first (``check_worst_case``) and are refused
when it does not fit. Semi-honest only: a party that alters its share alters the total
undetected; malicious parties would need MAC-checked shares (e.g. SPDZ), not provided here.
"""

from __future__ import annotations

import operator
import os
import secrets
from collections.abc import Mapping, Sequence

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from veil.crypto.errors import EncodingOverflow

__all__ = [
    "RING_BITS",
    "MAX_ABS_TOTAL",
    "random_ring",
    "keystream_uint64",
    "split",
    "reconstruct",
    "add_shares",
    "check_worst_case",
    "zero_sum_masks",
    "pairwise_zero_sum_mask",
    "zero_sum_masks_mod",
]

RING_BITS = 64
MAX_ABS_TOTAL = (1 << 63) - 1
_CHUNK = 1 << 23  # keystream produced 8 MiB at a time: bounded scratch memory for any size
_ZEROS = bytes(_CHUNK)


def keystream_uint64(count: int, key: bytes, nonce: bytes = bytes(16)) -> np.ndarray:
    """``count`` uint64 words of AES-256-CTR keystream under (key, nonce).

    The caller guarantees (key, nonce) is never used for two different masks.
    """
    if len(key) != 32 or len(nonce) != 16:
        raise ValueError("AES-256-CTR needs a 32-byte key and a 16-byte nonce")
    nbytes = 8 * count
    # Room for update_into's block-size slack; CTR writes exactly as many bytes as it reads.
    buf = np.empty(nbytes + 16, dtype=np.uint8)
    view = buf.data
    enc = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()
    for off in range(0, nbytes, _CHUNK):
        n = min(_CHUNK, nbytes - off)
        enc.update_into(_ZEROS[:n] if n < _CHUNK else _ZEROS, view[off : off + n + 15])
    return buf[:nbytes].view(np.uint64)


def random_ring(shape: int | tuple[int, ...]) -> np.ndarray:
    """Uniform uint64 array from a keystream under a fresh random key: never repeats a mask."""
    shape_t = (shape,) if isinstance(shape, int) else tuple(shape)
    count = int(np.prod(shape_t, dtype=np.int64))
    return keystream_uint64(count, os.urandom(32)).reshape(shape_t)


def _as_int64(values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind not in "iu":
        raise TypeError("shared values must be integers (fixed-point encode them first)")
    if arr.dtype != np.int64:
        if arr.size and arr.dtype.kind == "u" and int(arr.max()) > MAX_ABS_TOTAL:
            raise EncodingOverflow("a value does not fit a signed 64-bit ring element")
        arr = arr.astype(np.int64)
    return arr


def split(values: np.ndarray, parties: int) -> list[np.ndarray]:
    """Shares (uint64 arrays, same shape) of int64 fixed-point ``values`` for ``parties`` holders."""
    parties = operator.index(parties)
    if parties < 2:
        raise ValueError("secret sharing needs at least 2 parties")
    v = _as_int64(values).view(np.uint64)
    shares = [random_ring(v.shape) for _ in range(parties - 1)]
    last = v.copy()
    for s in shares:
        np.subtract(last, s, out=last)  # uint64 arithmetic wraps: exactly Z_2^64
    shares.append(last)
    return shares


def add_shares(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Share of the sum, computed locally by one holder."""
    return np.add(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))


def reconstruct(shares: Sequence[np.ndarray]) -> np.ndarray:
    """Sum of all shares in Z_2^64, read as signed int64 (two's complement)."""
    if len(shares) == 0:
        raise ValueError("nothing to reconstruct")
    arrays = [np.asarray(s) for s in shares]
    if any(a.dtype != np.uint64 or a.shape != arrays[0].shape for a in arrays):
        raise ValueError("shares must be uint64 arrays of one shape")
    total = arrays[0].copy()
    for a in arrays[1:]:
        np.add(total, a, out=total)
    return total.view(np.int64)


def check_worst_case(max_abs_value: int, *, terms: int = 1) -> int:
    """Refuse unless a sum of ``terms`` values with |value| <= max_abs_value fits the ring.

    Returns the worst-case |total|. Call it before sharing: a total past 2^63 - 1 would wrap into
    a wrong but plausible number, which no later check could detect.
    """
    max_abs_value, terms = operator.index(max_abs_value), operator.index(terms)
    if max_abs_value < 0 or terms < 1:
        raise ValueError("max_abs_value must be >= 0 and terms >= 1")
    worst = max_abs_value * terms
    if worst > MAX_ABS_TOTAL:
        raise EncodingOverflow("declared worst-case total does not fit the 64-bit ring")
    return worst


def zero_sum_masks(shape: int | tuple[int, ...], parties: int) -> list[np.ndarray]:
    """``parties`` uniform-looking uint64 masks summing to 0 mod 2^64 (dealer-generated).

    Whoever runs this knows every mask; use it only where that party is trusted to forget them,
    otherwise use ``pairwise_zero_sum_mask``.
    """
    return split(np.zeros(shape, dtype=np.int64), parties)


def _pair_stream(seed: bytes, context: bytes, count: int) -> np.ndarray:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"veil.mask.v1|" + context).derive(seed)
    return keystream_uint64(count, key)


def pairwise_zero_sum_mask(
    index: int,
    seeds: Mapping[int, bytes],
    shape: int | tuple[int, ...],
    *,
    context: bytes,
) -> np.ndarray:
    """This party's mask in a set of masks that sum to 0 mod 2^64 with no dealer.

    ``seeds[j]`` is a >= 16-byte secret this party (``index``) shares with party j (e.g. from an
    X25519 agreement). mask_i = sum_{j > i} PRG(s_ij) - sum_{j < i} PRG(s_ij), so every pair's
    stream cancels in the total while each mask looks uniform to anyone missing one of its
    seeds. ``context`` must be unique per use (query and round id): reusing it reuses the masks.
    """
    if not context:
        raise ValueError("context must identify this use of the seeds")
    shape_t = (shape,) if isinstance(shape, int) else tuple(shape)
    count = int(np.prod(shape_t, dtype=np.int64))
    mask = np.zeros(count, dtype=np.uint64)
    for j, seed in seeds.items():
        if j == index:
            raise ValueError("a party shares no seed with itself")
        if len(seed) < 16:
            raise ValueError("pairwise seeds must be at least 16 bytes")
        stream = _pair_stream(seed, context, count)
        if j > index:
            np.add(mask, stream, out=mask)
        else:
            np.subtract(mask, stream, out=mask)
    return mask.reshape(shape_t)


def zero_sum_masks_mod(modulus: int, count: int, parties: int) -> list[list[int]]:
    """Masks in Z_modulus (e.g. a Paillier n) summing to 0 mod ``modulus``, for Paillier federation.

    Party i adds masks[i] to its partial before encrypting; the product of all parties'
    ciphertexts decrypts to the true total, while each blinded partial is uniform in Z_n. Dealer
    model, as ``zero_sum_masks``.
    """
    if parties < 2 or modulus < 2:
        raise ValueError("need >= 2 parties and modulus >= 2")
    masks = [[secrets.randbelow(modulus) for _ in range(count)] for _ in range(parties - 1)]
    last = [(-sum(col)) % modulus for col in zip(*masks)] if count else []
    masks.append(last)
    return masks
