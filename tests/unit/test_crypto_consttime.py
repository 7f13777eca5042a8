"""Constant-time exponentiation (veil.crypto.consttime): OpenSSL's and GMP's routines give the
same numbers as plain modular exponentiation, the choice between them is checked and can be
forced, and decryption on threads is correct under concurrency."""

from __future__ import annotations

import os
import pickle
import secrets
import subprocess
import sys
import threading

import gmpy2
import pytest
from gmpy2 import mpz

from veil.crypto import consttime, generate_keypair
from veil.crypto.consttime import SecretPower


@pytest.fixture(params=["openssl", "gmp"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "openssl" and consttime.backend() != "openssl":
        pytest.fail(f"no usable libcrypto among {consttime._libcrypto_paths()}")
    monkeypatch.setattr(consttime, "_chosen", request.param)
    return request.param


def _odd(bits: int) -> mpz:
    return mpz(secrets.randbits(bits)) | 1 | (mpz(1) << (bits - 1))


def test_linux_uses_the_interpreters_libcrypto() -> None:
    # CPython's hashlib is built on OpenSSL: on Linux its libcrypto is mapped and must be usable.
    # (Elsewhere the lookup has no /proc/self/maps; either backend is then a valid outcome.)
    if not sys.platform.startswith("linux"):
        assert consttime.backend() in ("openssl", "gmp")
        return
    paths = consttime._libcrypto_paths()
    assert paths and any("libcrypto" in p for p in paths)
    assert consttime.backend() == "openssl"


@pytest.mark.parametrize("bits", [64, 521, 1024, 2048, 3072, 4096])
def test_matches_plain_powmod_on_random_values(backend: str, bits: int) -> None:
    for _ in range(5):
        m = _odd(bits)
        e = mpz(secrets.randbits(bits // 2)) | 1
        power = SecretPower(e, m)
        assert power.releases_gil == (backend == "openssl")
        for x in (mpz(secrets.randbits(bits)) % m, mpz(0), mpz(1), m - 1, m + 5, 3 * m + 2):
            assert power(x) == gmpy2.powmod(x, e, m)


def test_edges_of_the_exponent(backend: str) -> None:
    m = _odd(2048)
    x = mpz(secrets.randbits(2000))
    assert SecretPower(1, m)(x) == x % m
    e = (mpz(1) << 2048) - 1  # every bit set, wider than the modulus
    assert SecretPower(e, m)(x) == gmpy2.powmod(x, e, m)


def test_refuses_what_it_cannot_compute() -> None:
    for e, m in ((5, 10), (5, 1), (0, 11), (-1, 11)):
        with pytest.raises(ValueError):
            SecretPower(e, m)


def test_never_pickled_and_never_printed() -> None:
    m = _odd(2048)
    power = SecretPower(m - 2, m)
    with pytest.raises(TypeError):
        pickle.dumps(power)
    assert str(int(m)) not in repr(power) and hex(int(m))[2:12] not in repr(power)


def test_a_libcrypto_that_disagrees_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    if consttime.backend() != "openssl":
        pytest.fail("no usable libcrypto on this machine")
    real = consttime._OpenSSLPower.__call__
    monkeypatch.setattr(consttime._OpenSSLPower, "__call__", lambda self, x: real(self, x) + 1)
    monkeypatch.setattr(consttime, "_chosen", None)
    assert consttime.backend() == "gmp"
    m = _odd(1024)
    assert SecretPower(m - 2, m)(7) == gmpy2.powmod(7, m - 2, m)


def _backend_in_child(value: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VEIL_SECRET_POWMOD": value}
    return subprocess.run([sys.executable, "-c", "from veil.crypto import consttime; print(consttime.backend())"],
                          env=env, capture_output=True, text=True, timeout=60)


def test_environment_forces_a_backend() -> None:
    assert _backend_in_child("gmp").stdout.strip() == "gmp"
    forced = _backend_in_child("openssl")
    if sys.platform.startswith("linux"):
        assert forced.returncode == 0 and forced.stdout.strip() == "openssl", forced.stderr
    bad = _backend_in_child("fast")
    assert bad.returncode != 0 and "VEIL_SECRET_POWMOD must be 'openssl' or 'gmp'" in bad.stderr


def test_threads_decrypt_concurrently_and_correctly(backend: str) -> None:
    # 1024-bit key: the test checks concurrency and results, not security.
    pk, sk = generate_keypair(1024, insecure_test_key=True)
    values = [secrets.randbelow(2**60) - 2**59 for _ in range(24)]
    cts = pk.encrypt_many(values, workers=1)
    errors: list[str] = []

    def work(k: int) -> None:
        got = sk.decrypt_many(cts[k:] + cts[:k], workers=2)
        if got != values[k:] + values[:k]:
            errors.append(f"thread {k}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [sk.decrypt(c) for c in cts[:3]] == values[:3]


def test_crt_constants_match_their_definition() -> None:
    # hp, hq are computed in closed form (-q^-1 mod p); check against L_p(g^(p-1) mod p^2)^-1.
    pk, sk = generate_keypair(1024, insecure_test_key=True)
    p, q = sk._p, sk._q
    g = pk._n + 1
    assert sk._hp == gmpy2.invert((gmpy2.powmod(g, p - 1, p * p) - 1) // p, p)
    assert sk._hq == gmpy2.invert((gmpy2.powmod(g, q - 1, q * q) - 1) // q, q)
