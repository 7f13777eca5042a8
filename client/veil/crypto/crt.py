"""Paillier decryption by the Chinese remainder theorem: pure functions on integers.

Kept apart from the key classes so that the worker pool (:mod:`veil.crypto.pool`), which runs
them in threads or other processes on p and q sent as integers, and the private key
(:mod:`veil.crypto.paillier`), which runs them in this process, need not import each other.
The secret exponents p - 1 and q - 1 are applied in constant time (``consttime.SecretPower``).
"""

from __future__ import annotations

from gmpy2 import mpz

from veil.crypto.consttime import SecretPower

__all__ = ["crt_combine", "crt_decrypt", "crt_half", "crt_powers"]


def crt_decrypt(c: mpz, p: mpz, q: mpz, p2: mpz, q2: mpz, hp: mpz, hq: mpz, qinv: mpz,
                powers: tuple[SecretPower, SecretPower] | None = None) -> mpz:
    """Paillier decryption split over p^2 and q^2 (~4x fewer word operations than mod n^2).
    ``powers``: the key's two exponentiations (``crt_powers``), built here when not given."""
    pp, pq = powers if powers is not None else crt_powers(p, q, p2, q2)
    return crt_combine(crt_half(c, p, hp, pp), crt_half(c, q, hq, pq), p, q, qinv)


def crt_powers(p: mpz, q: mpz, p2: mpz, q2: mpz) -> tuple[SecretPower, SecretPower]:
    """x -> x^(p-1) mod p^2 and x -> x^(q-1) mod q^2, constant time in the secret exponents."""
    return SecretPower(p - 1, p2), SecretPower(q - 1, q2)


def crt_half(c: mpz, prime: mpz, h: mpz, power: SecretPower) -> mpz:
    """m mod prime: L_prime(c^(prime-1) mod prime^2) * h, with ``power`` that exponentiation.
    The two halves are independent, so they run in parallel (half the work of a ciphertext per
    job)."""
    return (power(c) - 1) // prime * h % prime


def crt_combine(mp: mpz, mq: mpz, p: mpz, q: mpz, qinv: mpz) -> mpz:
    """m from m mod p and m mod q (Garner)."""
    return mq + q * ((mp - mq) * qinv % p)
