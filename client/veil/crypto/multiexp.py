"""Encrypted dot product Enc(sum x_i * w_i) = prod Enc(w_i)^x_i by multi-exponentiation.

Security basis: Paillier/DCRA (``paillier.py``); the computation is public-key only.
What it reveals: the result is obfuscated with fresh randomness, so it is unlinkable to the input
ciphertexts and reveals nothing but the key to anyone without the private key. The decryptor
learns the dot product, nothing more. The scalars x_i are the computing party's plaintext;
the running time depends on their bit lengths and on how many are zero, so a party whose
scalars are secret from an observer of its timing must pad or fix their width.

Algorithm: Pippenger's bucket method. For c-bit windows each ciphertext costs one modular
multiplication per window instead of a full exponentiation, plus 2^(c+1) multiplications per
window to combine the buckets; c is chosen to minimise that sum. Negative scalars go to a second
multi-exponentiation whose result is inverted once, instead of inverting each base.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from concurrent.futures import Executor

import gmpy2
from gmpy2 import mpz

from veil.crypto import pool
from veil.crypto.ciphertext import Ciphertext
from veil.crypto.obfuscation import Obfuscation, obfuscators

__all__ = ["dot", "multiexp", "best_window"]

# Below this many items per worker, shipping the ciphertexts costs more than a second core saves.
_PARALLEL_MIN_ITEMS = 1 << 15


def best_window(count: int, bits: int) -> int:
    """Window c minimising ceil(bits/c) * (count + 2^(c+1)) multiplications."""
    best_c, best_cost = 1, None
    for c in range(1, 21):
        cost = -(-bits // c) * (count + (1 << (c + 1)))
        if best_cost is None or cost < best_cost:
            best_c, best_cost = c, cost
    return best_c


def multiexp(bases: Sequence[mpz], exps: Sequence[int], modulus: mpz) -> mpz:
    """prod bases[i]^exps[i] mod ``modulus`` for exps[i] >= 0."""
    pairs = [(b, e) for b, e in zip(bases, exps) if e]
    if not pairs:
        return mpz(1)
    bits = max(e.bit_length() for _, e in pairs)
    if len(pairs) < 4:
        acc = mpz(1)
        for b, e in pairs:
            acc = acc * gmpy2.powmod(b, e, modulus) % modulus
        return acc
    c = best_window(len(pairs), bits)
    mask = (1 << c) - 1
    nbuckets = 1 << c
    result: mpz | None = None
    for shift in range(c * ((bits - 1) // c), -1, -c):
        if result is not None:
            result = gmpy2.powmod(result, 1 << c, modulus)  # c squarings in one C call
        buckets: list[mpz | None] = [None] * nbuckets
        for b, e in pairs:
            d = (e >> shift) & mask
            if d:
                cur = buckets[d]
                buckets[d] = b if cur is None else cur * b % modulus
        # sum_d d * bucket[d] as running products: running(d) = prod_{j >= d} bucket[j].
        running: mpz | None = None
        window: mpz | None = None
        for d in range(nbuckets - 1, 0, -1):
            bk = buckets[d]
            if bk is not None:
                running = bk if running is None else running * bk % modulus
            if running is not None:
                window = running if window is None else window * running % modulus
        if window is not None:
            result = window if result is None else result * window % modulus
    return mpz(1) if result is None else result


def _signed_multiexp(bases: Sequence[mpz], scalars: Sequence[int], n: int, n2: mpz) -> mpz:
    pos_b: list[mpz] = []
    pos_e: list[int] = []
    neg_b: list[mpz] = []
    neg_e: list[int] = []
    half = n // 2
    for b, x in zip(bases, scalars):
        x %= n  # exponents act mod n; pick the shorter of x and x - n
        if x == 0:
            continue
        if x > half:
            neg_b.append(b)
            neg_e.append(n - x)
        else:
            pos_b.append(b)
            pos_e.append(x)
    acc = multiexp(pos_b, pos_e, n2)
    if neg_b:
        acc = acc * gmpy2.invert(multiexp(neg_b, neg_e, n2), n2) % n2
    return acc


def _dot_chunk(n_bytes: bytes, blob: bytes, scalars: list[int]) -> bytes:
    n = mpz.from_bytes(n_bytes, "big")
    n2 = n * n
    width = 2 * len(n_bytes)
    acc = _signed_multiexp(pool.from_blob(blob, width), scalars, int(n), n2)
    data: bytes = acc.to_bytes(width, "big")
    return data


def dot(
    ciphertexts: Sequence[Ciphertext],
    scalars: Sequence[int],
    *,
    workers: int | None = 1,
    obfuscation: Obfuscation = "djn",
    executor: Executor | None = None,
) -> Ciphertext:
    """Enc(sum x_i * w_i) for ciphertexts Enc(w_i) and signed integer scalars x_i; obfuscated.

    ``workers``: 1 (default) computes in this process; None uses every CPU (or the process's
    default executor, ``veil.crypto.pool``) for inputs large enough to pay for shipping them.
    With ``executor``, the products are cut into ``workers`` chunks (None: its parallelism) on
    it; the scalars travel to it in clear. The final obfuscation is always drawn here.
    """
    if len(ciphertexts) != len(scalars):
        raise ValueError("ciphertexts and scalars must have the same length")
    if not ciphertexts:
        raise ValueError("dot() needs at least one ciphertext (it defines the key)")
    pk = ciphertexts[0].public_key
    bases: list[mpz] = []
    for c in ciphertexts:
        if c.public_key is not pk:
            c._same_key(ciphertexts[0])
        bases.append(c._c)
    xs = [operator.index(x) for x in scalars]
    n, n2 = pk.n, pk._n2
    explicit = executor is not None
    w = 1
    if explicit or (workers != 1 and len(bases) >= 2 * _PARALLEL_MIN_ITEMS):
        executor, w = pool.placement(workers, executor, public=True)
        if not (explicit and workers is not None):
            w = min(w, max(1, len(bases) // _PARALLEL_MIN_ITEMS))
    if w <= 1 and not explicit:
        acc = _signed_multiexp(bases, xs, n, n2)
    else:
        width = pk.ciphertext_size
        n_bytes = pk.to_bytes()
        chunks = [
            (n_bytes, pool.to_blob(bases[a:b], width), xs[a:b])
            for a, b in pool.split_evenly(len(bases), w)
        ]
        acc = mpz(1)
        for part in pool.run_chunks(_dot_chunk, chunks, w, executor):
            acc = acc * mpz.from_bytes(part, "big") % n2
    s = obfuscators(pk._n, n2, 1, obfuscation)[0]
    return Ciphertext._trusted(pk, acc * s % n2, True)
