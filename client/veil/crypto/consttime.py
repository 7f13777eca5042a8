"""Modular exponentiation with a secret exponent, in constant time: the core of decryption.

A Paillier decryption (CRT) is two exponentiations, c^(p-1) mod p^2 and c^(q-1) mod q^2, whose
exponents are the secret p - 1 and q - 1. Their running time and memory accesses must not depend
on the exponent's bits, or a process that can time or share a cache with the key holder's
process could recover p. :class:`SecretPower` computes ``x -> x^e mod m`` for one secret (e, m)
with one of two constant-time implementations, the faster one available:

* ``openssl``: ``BN_mod_exp_mont_consttime``, the routine OpenSSL's own RSA private-key
  operations use (fixed windows, and a precomputed table read in full at every step, so neither
  the sequence of operations nor the cache lines touched depend on the exponent). It comes from
  the libcrypto the interpreter itself is linked against (CPython's ``ssl`` and ``hashlib``
  modules), called through ``ctypes``. ``ctypes`` releases the GIL for the call, so threads
  decrypt on every core and p and q never leave the process.
* ``gmp``: gmpy2's ``powmod_sec`` (GMP's ``mpn_sec_powm``), wherever gmpy2 runs.

On the 2-core bench machine, for a 2048-bit modulus and a 1024-bit exponent (one CRT half of a
2048-bit key): OpenSSL 1.28 ms, GMP's constant-time routine 2.79 ms, GMP's variable-time
``powmod`` 1.99 ms (``make bench`` prints Veil's decryption next to the raw GMP floor).

The OpenSSL path is used only after it agrees with GMP on random values at first use; a missing
library or symbol, or any disagreement, leaves GMP in charge (logged once). ``VEIL_SECRET_POWMOD``
= ``gmp`` forces GMP; ``openssl`` requires OpenSSL and raises if it cannot be had.

Secret material handed to OpenSSL (modulus and exponent) is wiped when the object is released
(``BN_clear_free``); so is each intermediate result.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import secrets
import sys
import threading
import weakref
from typing import Any

import gmpy2
from gmpy2 import mpz

__all__ = ["SecretPower", "backend"]

log = logging.getLogger("veil.crypto.consttime")

_ENV = "VEIL_SECRET_POWMOD"
_BN_FLG_CONSTTIME = 0x04

_P = ctypes.c_void_p


class _LibCrypto:
    """The few libcrypto bignum calls used, with their C signatures declared (pointers must not
    pass through ctypes' default int conversion, which would truncate them)."""

    def __init__(self, path: str) -> None:
        lib = ctypes.CDLL(path)
        sig: dict[str, tuple[Any, list[Any]]] = {
            "BN_new": (_P, []),
            "BN_bin2bn": (_P, [ctypes.c_char_p, ctypes.c_int, _P]),
            "BN_bn2binpad": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_int]),
            "BN_set_flags": (None, [_P, ctypes.c_int]),
            "BN_clear_free": (None, [_P]),
            "BN_CTX_new": (_P, []),
            "BN_CTX_free": (None, [_P]),
            "BN_MONT_CTX_new": (_P, []),
            "BN_MONT_CTX_set": (ctypes.c_int, [_P, _P, _P]),
            "BN_MONT_CTX_free": (None, [_P]),
            "BN_mod_exp_mont_consttime": (ctypes.c_int, [_P, _P, _P, _P, _P, _P]),
        }
        for name, (restype, argtypes) in sig.items():
            fn = getattr(lib, name)  # AttributeError: this libcrypto lacks it
            fn.restype, fn.argtypes = restype, argtypes
            setattr(self, name, fn)
        self.path = path

    def bn(self, value: int, *, secret: bool) -> int:
        raw = int(value).to_bytes((int(value).bit_length() + 7) // 8 or 1, "big")
        out = self.BN_bin2bn(raw, len(raw), None)
        if not out:
            raise MemoryError("libcrypto could not allocate a bignum")
        if secret:
            self.BN_set_flags(out, _BN_FLG_CONSTTIME)
        return out


def _libcrypto_paths() -> list[str]:
    """The interpreter's own libcrypto first (mapped once ``_hashlib`` is loaded), then the
    system's."""
    paths: list[str] = []
    try:
        import _hashlib  # noqa: F401 -- maps the interpreter's libcrypto into this process
    except ImportError:
        pass
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
                for line in maps:
                    path = line.rsplit(" ", 1)[-1].strip()
                    if "/libcrypto" in path and path not in paths:
                        paths.append(path)
        except OSError:
            pass
    found = ctypes.util.find_library("crypto")
    if found and found not in paths:
        paths.append(found)
    # A copy bundled inside a wheel (psycopg's, say) after the interpreter's and the system's.
    return sorted(paths, key=lambda p: "site-packages" in p or "dist-packages" in p)


_lib: _LibCrypto | None = None
_chosen: str | None = None
_choose_lock = threading.Lock()


def _agrees(lib: _LibCrypto) -> bool:
    """OpenSSL's answer equals GMP's on random odd moduli of a few sizes (secret exponents)."""
    for bits in (64, 1024, 2048):
        m = mpz(secrets.randbits(bits)) | 1 | (mpz(1) << (bits - 1))
        e = mpz(secrets.randbits(bits // 2)) | 1
        x = mpz(secrets.randbits(bits)) % m
        if _OpenSSLPower(lib, e, m)(x) != gmpy2.powmod(x, e, m):
            return False
    return True


def backend() -> str:
    """``"openssl"`` or ``"gmp"``: the implementation :class:`SecretPower` uses in this process."""
    global _lib, _chosen
    if _chosen is not None:
        return _chosen
    with _choose_lock:
        if _chosen is not None:
            return _chosen
        wanted = os.environ.get(_ENV, "").strip().lower()
        if wanted not in ("", "openssl", "gmp"):
            raise ValueError(f"{_ENV} must be 'openssl' or 'gmp', not {wanted!r}")
        if wanted != "gmp":
            problems = []
            for path in _libcrypto_paths():
                try:
                    lib = _LibCrypto(path)
                    if _agrees(lib):
                        _lib, _chosen = lib, "openssl"
                        return _chosen
                    problems.append(f"{path}: results differ from GMP's")
                except (OSError, AttributeError) as e:
                    problems.append(f"{path}: {type(e).__name__}")
            if wanted == "openssl":
                raise RuntimeError(f"{_ENV}=openssl, but no usable libcrypto was found "
                                   f"({'; '.join(problems) or 'none on this system'})")
            log.info("constant-time exponentiation: GMP (no usable libcrypto: %s)",
                     "; ".join(problems) or "none found")
        _chosen = "gmp"
        return _chosen


class _OpenSSLPower:
    __slots__ = ("_lib", "_m", "_e", "_mont", "_size", "__weakref__")

    def __init__(self, lib: _LibCrypto, exponent: int, modulus: int) -> None:
        self._lib = lib
        self._size = (int(modulus).bit_length() + 7) // 8
        self._m = lib.bn(modulus, secret=True)
        self._e = lib.bn(exponent, secret=True)
        self._mont = lib.BN_MONT_CTX_new()
        weakref.finalize(self, _free, lib, self._m, self._e, self._mont)
        ctx = lib.BN_CTX_new()
        try:
            if not self._mont or not ctx or lib.BN_MONT_CTX_set(self._mont, self._m, ctx) != 1:
                raise MemoryError("libcrypto could not set up Montgomery arithmetic")
        finally:
            lib.BN_CTX_free(ctx)

    def __call__(self, base: mpz) -> mpz:
        lib = self._lib
        # A BN_CTX holds scratch space and is not thread-safe: one per call (microseconds, next
        # to a millisecond's exponentiation). The Montgomery context is only read.
        ctx, x, r = lib.BN_CTX_new(), lib.bn(base, secret=False), lib.BN_new()
        try:
            if not (ctx and x and r) or lib.BN_mod_exp_mont_consttime(r, x, self._e, self._m, ctx, self._mont) != 1:
                raise MemoryError("libcrypto's exponentiation failed")
            out = ctypes.create_string_buffer(self._size)
            if lib.BN_bn2binpad(r, out, self._size) != self._size:
                raise ValueError("libcrypto returned a result wider than the modulus")
            return mpz.from_bytes(out.raw, "big")
        finally:
            lib.BN_clear_free(r)
            lib.BN_clear_free(x)
            lib.BN_CTX_free(ctx)


def _free(lib: _LibCrypto, m: int, e: int, mont: int) -> None:
    lib.BN_MONT_CTX_free(mont)
    lib.BN_clear_free(e)
    lib.BN_clear_free(m)


class SecretPower:
    """``x -> x^exponent mod modulus`` in constant time in the exponent, for an odd modulus.

    The base is not secret (a ciphertext); it is reduced mod ``modulus`` first. Safe to call
    from several threads at once. Holds the exponent and modulus; never printed."""

    __slots__ = ("_fn", "_e", "_m")

    def __init__(self, exponent: int, modulus: int) -> None:
        if modulus < 3 or not modulus % 2 or exponent < 1:
            raise ValueError("constant-time exponentiation needs an odd modulus >= 3 and an exponent >= 1")
        self._e, self._m = mpz(exponent), mpz(modulus)
        self._fn = _OpenSSLPower(_lib, self._e, self._m) if backend() == "openssl" else None  # type: ignore[arg-type]

    def __call__(self, base: mpz | int) -> mpz:
        x = mpz(base) % self._m
        if self._fn is not None:
            return self._fn(x)
        return gmpy2.powmod_sec(x, self._e, self._m)

    @property
    def releases_gil(self) -> bool:
        """True when calls run outside the GIL (threads then use several cores)."""
        return self._fn is not None

    def __repr__(self) -> str:
        return f"SecretPower(<{self._m.bit_length()}-bit modulus>)"

    def __reduce__(self) -> Any:
        raise TypeError("a SecretPower holds secret material and is not pickled")
