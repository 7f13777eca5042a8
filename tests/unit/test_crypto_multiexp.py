"""Encrypted dot product: equals the plaintext dot product, signed scalars included."""

from __future__ import annotations

import secrets

import gmpy2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veil.crypto import InvalidCiphertext, PrivateKey, PublicKey, dot, generate_keypair
from veil.crypto import multiexp as mx


@pytest.fixture(scope="module")
def keys() -> tuple[PublicKey, PrivateKey]:
    return generate_keypair(2048)


@settings(max_examples=60, deadline=None)
@given(
    pairs=st.lists(st.tuples(st.integers(1, 2**61 - 2), st.integers(0, 2**70)), max_size=80),
)
def test_multiexp_matches_naive_product(pairs: list[tuple[int, int]]) -> None:
    m = gmpy2.mpz(2**61 - 1)  # small prime modulus: the bucket bookkeeping is what is tested
    bases = [gmpy2.mpz(b) for b, _ in pairs]
    exps = [e for _, e in pairs]
    expected = gmpy2.mpz(1)
    for b, e in zip(bases, exps):
        expected = expected * gmpy2.powmod(b, e, m) % m
    assert mx.multiexp(bases, exps, m) == expected


def test_best_window_grows_with_count() -> None:
    assert mx.best_window(4, 32) <= mx.best_window(4096, 32) <= mx.best_window(1_000_000, 32)
    assert mx.best_window(1_000_000, 32) >= 11


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_dot_equals_plaintext_dot(keys: tuple[PublicKey, PrivateKey], data: st.DataObject) -> None:
    pk, sk = keys
    size = data.draw(st.integers(1, 70))
    ws = data.draw(st.lists(st.integers(-(2**60), 2**60), min_size=size, max_size=size))
    xs = data.draw(
        st.lists(
            st.one_of(st.integers(-(2**40), 2**40), st.sampled_from([0, 1, -1, 2**63, -(2**63)])),
            min_size=size,
            max_size=size,
        )
    )
    cts = pk.encrypt_many(ws, workers=1)
    assert sk.decrypt(dot(cts, xs)) == sum(w * x for w, x in zip(ws, xs))


def test_dot_special_cases(keys: tuple[PublicKey, PrivateKey]) -> None:
    pk, sk = keys
    cts = pk.encrypt_many([3, -4, 5], workers=1)
    assert sk.decrypt(dot(cts, [0, 0, 0])) == 0
    assert sk.decrypt(dot(cts, [-1, -1, -1])) == -4
    assert sk.decrypt(dot(cts, [pk.n - 1, 0, 0])) == -3  # scalars act mod n
    r1, r2 = dot(cts, [1, 2, 3]), dot(cts, [1, 2, 3])
    assert r1.obfuscated and r1 != r2  # fresh randomness every time
    with pytest.raises(ValueError):
        dot(cts, [1, 2])
    with pytest.raises(ValueError):
        dot([], [])
    other, _ = generate_keypair(512, insecure_test_key=True)  # any other key will do; small = fast
    with pytest.raises(InvalidCiphertext):
        dot([cts[0], other.encrypt(1)], [1, 1])


def test_dot_on_process_pool(keys: tuple[PublicKey, PrivateKey], monkeypatch: pytest.MonkeyPatch) -> None:
    pk, sk = keys
    monkeypatch.setattr(mx, "_PARALLEL_MIN_ITEMS", 16)  # force the pool on a small input
    ws = [secrets.randbelow(2**32) - 2**31 for _ in range(100)]
    xs = [secrets.randbelow(2**32) - 2**31 for _ in range(100)]
    cts = pk.encrypt_many(ws, workers=1)
    assert sk.decrypt(dot(cts, xs, workers=2)) == sum(w * x for w, x in zip(ws, xs))
