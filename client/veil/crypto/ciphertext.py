"""Paillier ciphertexts: homomorphic arithmetic and fixed-width serialization.

Security basis: see ``paillier.py`` (DCRA). Arithmetic results are valid ciphertexts but their
randomness is derived from the inputs' (c * k reuses c's randomness raised to k, and c + 0 is c),
so whoever saw the inputs can link them to the output. Hence ``obfuscated`` is False after any
arithmetic and every ciphertext that leaves the process must be ``obfuscate()``-d first.
What it reveals: the public key (through the modulus width and any validation), nothing else.
``from_bytes`` is the gate for untrusted input: it rejects anything outside Z*_{n^2}, because
an element sharing a factor with n is not a ciphertext and would turn decryption into an oracle
on malformed input.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Protocol

import gmpy2
from gmpy2 import mpz

from veil.crypto.errors import InvalidCiphertext
from veil.crypto.obfuscation import Obfuscation, obfuscators

if TYPE_CHECKING:
    import phe

__all__ = ["Ciphertext"]


class PaillierKey(Protocol):
    """What a ciphertext needs of the key it was made under: ``veil.crypto.paillier.PublicKey``,
    which makes ciphertexts (so it imports this module, and this module only describes it)."""

    _n: mpz
    _n2: mpz
    _n_int: int
    _half: int

    @property
    def ciphertext_size(self) -> int: ...

    def encode(self, m: int) -> int: ...

    def fingerprint(self) -> str: ...

    def to_phe(self) -> phe.PaillierPublicKey: ...


class Ciphertext:
    """Enc(m) under ``public_key``: an element of Z*_{n^2}.

    ``Ciphertext(pk, value)`` validates ``value``; arithmetic reads like the plaintext
    arithmetic it performs: ``c1 + c2``, ``c + 3``, ``c * -2``, ``-c``, ``c1 - c2``.
    """

    __slots__ = ("public_key", "_c", "obfuscated")

    public_key: PaillierKey
    _c: mpz
    obfuscated: bool

    def __init__(self, public_key: PaillierKey, value: int, *, obfuscated: bool = False) -> None:
        _check_value(public_key, value)
        self.public_key = public_key
        self._c = mpz(value)
        self.obfuscated = obfuscated

    @classmethod
    def _trusted(cls, public_key: PaillierKey, value: mpz, obfuscated: bool) -> Ciphertext:
        """Skip validation for values this module computed itself (the hot path)."""
        self = object.__new__(cls)
        self.public_key = public_key
        self._c = value
        self.obfuscated = obfuscated
        return self

    @property
    def value(self) -> int:
        return int(self._c)

    # -- serialization ----------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Big-endian, exactly ``public_key.ciphertext_size`` bytes."""
        data: bytes = self._c.to_bytes(self.public_key.ciphertext_size, "big")
        return data

    @classmethod
    def from_bytes(cls, public_key: PaillierKey, data: bytes | bytearray | memoryview) -> Ciphertext:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidCiphertext("ciphertext must be bytes")
        if len(data) != public_key.ciphertext_size:
            raise InvalidCiphertext(
                f"ciphertext must be exactly {public_key.ciphertext_size} bytes for this key"
            )
        value = mpz.from_bytes(bytes(data), "big")
        _check_value(public_key, value)
        return cls._trusted(public_key, value, False)

    # -- arithmetic -------------------------------------------------------------------------
    def _same_key(self, other: Ciphertext) -> None:
        if other.public_key is not self.public_key and other.public_key != self.public_key:
            raise InvalidCiphertext("ciphertexts under different public keys cannot be combined")

    def __add__(self, other: Ciphertext | int) -> Ciphertext:
        pk = self.public_key
        if isinstance(other, Ciphertext):
            self._same_key(other)
            return Ciphertext._trusted(pk, self._c * other._c % pk._n2, False)
        m = pk.encode(other)  # TypeError for non-integers, EncodingOverflow for out of range
        if m == 0:
            return Ciphertext._trusted(pk, self._c, False)
        # (1 + n)^m = 1 + m*n mod n^2: adding a plaintext needs no exponentiation.
        return Ciphertext._trusted(pk, self._c * (1 + m * pk._n) % pk._n2, False)

    __radd__ = __add__

    def __neg__(self) -> Ciphertext:
        pk = self.public_key
        return Ciphertext._trusted(pk, gmpy2.invert(self._c, pk._n2), False)

    def __sub__(self, other: Ciphertext | int) -> Ciphertext:
        if isinstance(other, Ciphertext):
            self._same_key(other)
            pk = self.public_key
            return Ciphertext._trusted(pk, self._c * gmpy2.invert(other._c, pk._n2) % pk._n2, False)
        return self + (-operator.index(other))

    def __rsub__(self, other: int) -> Ciphertext:
        return (-self) + other

    def __mul__(self, k: int) -> Ciphertext:
        """Enc(m * k) for any integer ``k`` (signed; taken mod n)."""
        if isinstance(k, Ciphertext):
            return NotImplemented  # Paillier has no ciphertext-ciphertext product
        k = operator.index(k)
        pk = self.public_key
        n, n2 = pk._n_int, pk._n2
        k %= n
        # A negative k arrives as n - |k|: inverting once and raising to |k| costs far less
        # than a ~full-width exponent.
        if k > pk._half:
            return Ciphertext._trusted(pk, gmpy2.powmod(gmpy2.invert(self._c, n2), n - k, n2), False)
        return Ciphertext._trusted(pk, gmpy2.powmod(self._c, k, n2), False)

    __rmul__ = __mul__

    def obfuscate(self, *, obfuscation: Obfuscation = "djn") -> Ciphertext:
        """Same plaintext, fresh randomness: unlinkable to every ciphertext seen before."""
        pk = self.public_key
        s = obfuscators(pk._n, pk._n2, 1, obfuscation)[0]
        return Ciphertext._trusted(pk, self._c * s % pk._n2, True)

    # -- interop ----------------------------------------------------------------------------
    def to_phe(self, exponent: int = 0) -> phe.EncryptedNumber:
        import phe

        return phe.EncryptedNumber(self.public_key.to_phe(), int(self._c), exponent)

    @classmethod
    def from_phe(
        cls,
        enc: phe.EncryptedNumber,
        *,
        public_key: PaillierKey,
    ) -> Ciphertext:
        """Wrap a phe ciphertext made under ``public_key`` (``PublicKey.from_phe`` converts a
        phe key); only exponent 0, since Veil scales explicitly (FixedPoint)."""
        if enc.exponent != 0:
            raise InvalidCiphertext("phe ciphertext must have exponent 0; use FixedPoint scaling")
        if public_key._n_int != enc.public_key.n:
            raise InvalidCiphertext("phe ciphertext was made under a different public key")
        return cls(public_key, enc.ciphertext(be_secure=False))

    # -- identity ---------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Ciphertext)
            and self._c == other._c
            and self.public_key == other.public_key
        )

    def __hash__(self) -> int:
        return hash(self._c)

    def __repr__(self) -> str:
        return (
            f"Ciphertext(key={self.public_key.fingerprint()[:16]}, "
            f"obfuscated={self.obfuscated})"
        )


def _check_value(public_key: PaillierKey, value: int) -> None:
    if not isinstance(value, int | mpz) or isinstance(value, bool):
        raise InvalidCiphertext("ciphertext value must be an integer")
    if not 0 < value < public_key._n2:
        raise InvalidCiphertext("ciphertext must lie in (0, n^2)")
    if gmpy2.gcd(value, public_key._n) != 1:
        raise InvalidCiphertext("ciphertext must be coprime to n")
