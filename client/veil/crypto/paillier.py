"""Paillier keys: generation, validation, encryption and CRT decryption.

Security basis: Paillier (EUROCRYPT 1999) with g = n + 1 is IND-CPA under the Decisional Composite
Residuosity Assumption for a modulus n = p*q that cannot be factored; Veil generates >= 2048-bit
moduli (NIST SP 800-57 puts 2048-bit factoring at 112-bit security, 3072 at 128). Randomness is
described in ``obfuscation.py``. Ciphertexts are malleable by design (that is the homomorphism),
so nothing here gives integrity: a party that may tamper needs a MAC or proof on top.

What it reveals: a ciphertext reveals the public key it was made under and nothing else about
the plaintext; the plaintext space is Z_n, signed values use [-max_int, max_int] with
max_int = n // 3, negatives stored as n + m, and the gap between the two halves detects overflow.
Private keys never appear in ``repr`` or error messages; decryption exponentiates in constant
time (``consttime.SecretPower``: OpenSSL's or GMP's routine) because p - 1 and q - 1 are secret.
"""

from __future__ import annotations

import functools
import hashlib
import operator
import secrets
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

import gmpy2
from gmpy2 import mpz

from veil.crypto import pool
from veil.crypto.ciphertext import Ciphertext
from veil.crypto.consttime import SecretPower
from veil.crypto.crt import crt_combine, crt_decrypt, crt_half, crt_powers
from veil.crypto.errors import EncodingOverflow, InvalidCiphertext, InvalidKey
from veil.crypto.obfuscation import Obfuscation, obfuscators, prefill

if TYPE_CHECKING:
    import phe

__all__ = ["PublicKey", "PrivateKey", "generate_keypair", "PRODUCTION_BITS", "crt_decrypt", "crt_half", "crt_combine",
           "crt_powers"]

PRODUCTION_BITS: frozenset[int] = frozenset({2048, 3072, 4096})
_MIN_TEST_BITS = 256
_SMALL_FACTOR_BOUND = 1 << 16
# Bounds the primality test an untrusted key can make us run.
_MAX_BITS = 16384


@functools.cache
def _small_primorial() -> mpz:
    """Product of all primes below 2^16: one gcd tests a modulus against all of them."""
    prod, p = mpz(1), mpz(2)
    while p < _SMALL_FACTOR_BOUND:
        prod *= p
        p = gmpy2.next_prime(p)
    return prod


def validate_modulus(n: int, *, min_bits: int = 2048) -> None:
    """Reject moduli that cannot be a sound Paillier n; messages name the rule, not the value."""
    if not isinstance(n, int | mpz) or isinstance(n, bool) or n <= 0:
        raise InvalidKey("modulus must be a positive integer")
    if n.bit_length() > _MAX_BITS:
        raise InvalidKey(f"modulus is longer than the supported {_MAX_BITS} bits")
    if n.bit_length() < min_bits:
        raise InvalidKey(f"modulus is shorter than the required {min_bits} bits")
    _check_structure(int(n))


@functools.lru_cache(maxsize=256)
def _check_structure(n: int) -> None:
    """The checks that do not depend on ``min_bits``; a pure function of n, so a modulus that
    passed once (an analyst's key arrives with every query) is not tested again (~2 ms each).
    Only passes are cached: a failing modulus raises every time."""
    if n % 2 == 0:
        raise InvalidKey("modulus must be odd")
    if gmpy2.gcd(n, _small_primorial()) != 1:
        raise InvalidKey("modulus has a prime factor below 2^16")
    if gmpy2.is_square(n):
        raise InvalidKey("modulus must not be a perfect square")
    if gmpy2.is_prime(n, 25):
        raise InvalidKey("modulus must be composite")


class PublicKey:
    """Paillier public key with g = n + 1.

    ``PublicKey(n)`` trusts ``n``; keys from outside the process go through ``from_bytes``,
    ``from_int`` or ``from_phe``, which validate.
    """

    __slots__ = ("_n", "_n2", "_n_int", "_half", "_max_int", "_width", "__weakref__")

    def __init__(self, n: int) -> None:
        self._n = mpz(n)
        self._n2 = self._n * self._n
        self._n_int = int(n)
        self._half = self._n_int // 2
        self._max_int = self._n_int // 3
        self._width = (self._n_int.bit_length() + 7) // 8

    # -- properties -------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return self._n_int

    @property
    def nsquare(self) -> int:
        return int(self._n2)

    @property
    def g(self) -> int:
        return self._n_int + 1

    @property
    def bits(self) -> int:
        return self._n_int.bit_length()

    @property
    def max_int(self) -> int:
        return self._max_int

    @property
    def key_size(self) -> int:
        """Bytes of a serialized public key."""
        return self._width

    @property
    def ciphertext_size(self) -> int:
        """Bytes of a serialized ciphertext: fixed, so batches are plain concatenations."""
        return 2 * self._width

    # -- serialization ----------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        return self._n_int.to_bytes(self._width, "big")

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, *, min_bits: int = 2048) -> PublicKey:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidKey("public key must be bytes")
        data = bytes(data)
        if len(data) * 8 < min_bits:
            raise InvalidKey(f"public key is shorter than the required {min_bits} bits")
        if not data or data[0] == 0:
            raise InvalidKey("public key encoding must not have leading zero bytes")
        return cls.from_int(int.from_bytes(data, "big"), min_bits=min_bits)

    @classmethod
    def from_int(cls, n: int, *, min_bits: int = 2048) -> PublicKey:
        validate_modulus(n, min_bits=min_bits)
        return cls(n)

    def fingerprint(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    # -- encoding ---------------------------------------------------------------------------
    def encode(self, m: int) -> int:
        """Signed integer -> element of Z_n; |m| <= max_int else ``EncodingOverflow``."""
        m = operator.index(m)
        if m > self._max_int or m < -self._max_int:
            raise EncodingOverflow("plaintext outside the signed range [-max_int, max_int]")
        return m if m >= 0 else self._n_int + m

    def decode(self, raw: int) -> int:
        """Element of Z_n -> signed integer; values in the overflow gap raise."""
        if raw <= self._max_int:
            return int(raw)
        if raw >= self._n_int - self._max_int:
            return int(raw) - self._n_int
        raise EncodingOverflow("decrypted value lies outside the signed range (overflow)")

    # -- encryption -------------------------------------------------------------------------
    def encrypt(self, m: int, *, obfuscation: Obfuscation = "djn") -> Ciphertext:
        """Enc(m) for signed ``m`` with fresh randomness; raises ``EncodingOverflow``."""
        return self.encrypt_raw(self.encode(m), obfuscation=obfuscation)

    def encrypt_raw(self, m: int, *, obfuscation: Obfuscation = "djn") -> Ciphertext:
        """Enc(m) for ``m`` already in [0, n) (packed plaintexts, mask arithmetic)."""
        self._check_raw(m)
        obf = obfuscators(self._n, self._n2, 1, obfuscation)[0]
        return Ciphertext._trusted(self, (1 + m * self._n) * obf % self._n2, True)

    def encrypt_many(
        self,
        ms: Sequence[int],
        *,
        workers: int | None = None,
        obfuscation: Obfuscation = "djn",
        executor: Executor | None = None,
    ) -> list[Ciphertext]:
        """Encrypt a batch; large batches spread over a process pool (``workers`` None = CPUs, or
        the process's default executor), or over ``executor`` (see ``veil.crypto.pool``)."""
        return self.encrypt_raw_many(
            [self.encode(m) for m in ms],
            workers=workers,
            obfuscation=obfuscation,
            executor=executor,
        )

    def encrypt_raw_many(
        self,
        ms: Sequence[int],
        *,
        workers: int | None = None,
        obfuscation: Obfuscation = "djn",
        executor: Executor | None = None,
    ) -> list[Ciphertext]:
        for m in ms:
            self._check_raw(m)
        values = pool.encrypt_raw_batch(self._n, self._n2, ms, workers, obfuscation, executor)
        make = Ciphertext._trusted
        return [make(self, c, True) for c in values]

    def prepare_randomness(self, count: int, stop: threading.Event, obfuscation: Obfuscation = "djn") -> None:
        """Top this key's stock of ``obfuscation`` obfuscators up to ``count`` for later
        encryptions in that mode, until ``stop`` is set (blocking: run it in a thread while this
        process waits on something that releases the GIL). Each is used by exactly one later
        encryption; see ``obfuscation.py``."""
        prefill(self._n, self._n2, count, stop, obfuscation)

    def _check_raw(self, m: int) -> None:
        if not 0 <= m < self._n_int:
            raise EncodingOverflow("raw plaintext must lie in [0, n)")

    # -- interop and identity ---------------------------------------------------------------
    def to_phe(self) -> phe.PaillierPublicKey:
        import phe

        return phe.PaillierPublicKey(self._n_int)

    @classmethod
    def from_phe(cls, key: phe.PaillierPublicKey, *, min_bits: int = 2048) -> PublicKey:
        if key.g != key.n + 1:
            raise InvalidKey("only phe keys with g = n + 1 are supported")
        return cls.from_int(int(key.n), min_bits=min_bits)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and self._n == other._n

    def __hash__(self) -> int:
        return hash(self._n_int)

    def __repr__(self) -> str:
        return f"PublicKey(bits={self.bits}, fingerprint={self.fingerprint()[:16]})"


class PrivateKey:
    """Paillier private key (p, q) with the CRT constants precomputed."""

    __slots__ = ("public_key", "_p", "_q", "_p2", "_q2", "_hp", "_hq", "_qinv", "_powers")

    def __init__(self, public_key: PublicKey, p: int, q: int) -> None:
        p, q = (mpz(p), mpz(q)) if p < q else (mpz(q), mpz(p))
        if p * q != public_key._n or p == q:
            raise InvalidKey("p and q must be distinct and multiply to the public modulus")
        self.public_key = public_key
        self._p, self._q = p, q
        self._p2, self._q2 = p * p, q * q
        # hp = L_p(g^(p-1) mod p^2)^-1 mod p, so that m mod p = L_p(c^(p-1) mod p^2) * hp. With
        # g = n + 1, g^(p-1) = 1 + (p-1)n (mod p^2) and L_p of that is (p-1)q = -q (mod p): no
        # exponentiation by the secret p - 1 is needed (nor q - 1 for hq).
        self._hp = gmpy2.invert(-q % p, p)
        self._hq = gmpy2.invert(-p % q, q)
        self._qinv = gmpy2.invert(q, p)
        self._powers: tuple[SecretPower, SecretPower] | None = None

    def _crt(self) -> tuple[mpz, ...]:
        return (self._p, self._q, self._p2, self._q2, self._hp, self._hq, self._qinv)

    def _crt_powers(self) -> tuple[SecretPower, SecretPower]:
        if self._powers is None:  # a race builds it twice; either copy is right
            self._powers = crt_powers(self._p, self._q, self._p2, self._q2)
        return self._powers

    def _own(self, c: Ciphertext) -> mpz:
        if not isinstance(c, Ciphertext):
            raise TypeError("expected a Ciphertext")
        if c.public_key != self.public_key:
            raise InvalidCiphertext("ciphertext was made under a different public key")
        return c._c

    def decrypt_raw(self, c: Ciphertext) -> int:
        """Plaintext in [0, n)."""
        return int(crt_decrypt(self._own(c), *self._crt(), powers=self._crt_powers()))

    def decrypt(self, c: Ciphertext) -> int:
        """Signed plaintext; raises ``EncodingOverflow`` if it fell into the overflow gap."""
        return self.public_key.decode(self.decrypt_raw(c))

    def decrypt_raw_many(
        self,
        cs: Sequence[Ciphertext],
        *,
        workers: int | None = None,
        executor: Executor | None = None,
    ) -> list[int]:
        """Plaintexts in [0, n). ``executor`` receives p and q: only one inside the key owner's
        trust domain (``veil.crypto.pool`` says what crosses)."""
        values = [self._own(c) for c in cs]
        return pool.decrypt_raw_batch(
            self._crt(), self.public_key.ciphertext_size, values, workers, executor, powers=self._crt_powers()
        )

    def decrypt_many(
        self,
        cs: Sequence[Ciphertext],
        *,
        workers: int | None = None,
        executor: Executor | None = None,
    ) -> list[int]:
        decode = self.public_key.decode
        return [decode(m) for m in self.decrypt_raw_many(cs, workers=workers, executor=executor)]

    # -- serialization ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, str]:
        """JSON-able form. It is the secret key: store it like one (0600, never logged)."""
        return {
            "kind": "veil.paillier.private_key",
            "n": str(self.public_key.n),
            "p": str(int(self._p)),
            "q": str(int(self._q)),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, min_bits: int = 2048) -> PrivateKey:
        if not isinstance(d, Mapping) or d.get("kind") != "veil.paillier.private_key":
            raise InvalidKey("not a Veil Paillier private key")
        try:
            n, p, q = (_parse_decimal(d[k]) for k in ("n", "p", "q"))
        except KeyError:
            raise InvalidKey("private key must have n, p and q") from None
        return cls._from_factors(n, p, q, min_bits=min_bits)

    @classmethod
    def _from_factors(cls, n: int, p: int, q: int, *, min_bits: int) -> PrivateKey:
        pk = PublicKey.from_int(n, min_bits=min_bits)
        if p * q != n or p == q:
            raise InvalidKey("p and q must be distinct and multiply to n")
        if not (gmpy2.is_prime(p, 25) and gmpy2.is_prime(q, 25)):
            raise InvalidKey("p and q must be prime")
        if gmpy2.gcd(n, (p - 1) * (q - 1)) != 1:
            raise InvalidKey("gcd(n, (p-1)(q-1)) must be 1 for g = n + 1")
        return cls(pk, p, q)

    def to_phe(self) -> phe.PaillierPrivateKey:
        import phe

        return phe.PaillierPrivateKey(self.public_key.to_phe(), int(self._p), int(self._q))

    @classmethod
    def from_phe(cls, key: phe.PaillierPrivateKey, *, min_bits: int = 2048) -> PrivateKey:
        pub = key.public_key
        if pub.g != pub.n + 1:
            raise InvalidKey("only phe keys with g = n + 1 are supported")
        return cls._from_factors(int(pub.n), int(key.p), int(key.q), min_bits=min_bits)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrivateKey) and self.public_key == other.public_key

    def __hash__(self) -> int:
        return hash(self.public_key)

    def __repr__(self) -> str:
        return f"PrivateKey(public_key={self.public_key!r})"


def _parse_decimal(v: object) -> int:
    if not isinstance(v, str) or not v.isascii() or not v.isdecimal() or len(v) > 5000:
        raise InvalidKey("key fields must be decimal strings")
    return int(v)


def _random_prime(bits: int) -> mpz:
    """Uniform prime p = 3 (mod 4) with the top two bits set, from ``secrets``.

    Top two bits make p*q exactly 2*bits long; p = q = 3 (mod 4) is DJN sec. 4.1's condition
    for h = -x^2 to generate the group its fast randomness needs. Rejection sampling (rather than
    next_prime from a random start) keeps the distribution uniform over such primes.
    """
    top = 3 << (bits - 2)
    while True:
        c = mpz(secrets.randbits(bits) | top | 3)
        if gmpy2.is_prime(c, 40):
            return c


def generate_keypair(
    bits: int = 2048, *, insecure_test_key: bool = False
) -> tuple[PublicKey, PrivateKey]:
    """New key pair; ``bits`` in {2048, 3072, 4096}.

    Smaller sizes only with ``insecure_test_key=True``: such keys are factorable and exist so
    test suites can run fast.
    """
    if bits not in PRODUCTION_BITS and not (
        insecure_test_key and bits >= _MIN_TEST_BITS and bits % 2 == 0
    ):
        raise ValueError(
            "bits must be 2048, 3072 or 4096 (smaller only with insecure_test_key=True)"
        )
    half = bits // 2
    while True:
        p, q = _random_prime(half), _random_prime(half)
        # DJN sec. 4.1 also wants gcd(p-1, q-1) = 2; a tiny |p - q| would let Fermat factor n.
        if p == q or gmpy2.gcd(p - 1, q - 1) != 2 or abs(p - q).bit_length() < half - 64:
            continue
        n = p * q
        if n.bit_length() == bits:
            break
    pk = PublicKey(n)
    return pk, PrivateKey(pk, p, q)
