"""Untrusted keys and ciphertexts are refused, with messages that name the rule, never the value."""

from __future__ import annotations

import os
import secrets

import gmpy2
import pytest

from veil.crypto import Ciphertext, InvalidCiphertext, InvalidKey, PrivateKey, PublicKey, generate_keypair


@pytest.fixture(scope="module")
def keys() -> tuple[PublicKey, PrivateKey]:
    return generate_keypair(2048)


def _prime(bits: int) -> int:
    return int(gmpy2.next_prime(secrets.randbits(bits) | (1 << (bits - 1))))


def _assert_rejected(n: int, rule: str, *, min_bits: int = 2048) -> None:
    width = (n.bit_length() + 7) // 8
    with pytest.raises(InvalidKey, match=rule) as exc:
        PublicKey.from_bytes(n.to_bytes(width, "big"), min_bits=min_bits)
    msg = str(exc.value)
    assert str(n) not in msg and format(n, "x") not in msg  # the message never carries the key


@pytest.mark.parametrize(
    ("make", "rule"),
    [
        (lambda: _prime(1024) * _prime(1024) * 2, "odd"),
        (lambda: _prime(2048), "composite"),
        (lambda: _prime(1025) ** 2, "perfect square"),
        (lambda: 3 * _prime(2047), "below 2\\^16"),
        (lambda: 65521 * _prime(2040), "below 2\\^16"),  # largest prime < 2^16
        (lambda: _prime(512) * _prime(512), "shorter"),
        (lambda: 2**2048 - 1, "below 2\\^16"),  # all-0xff bytes: divisible by 3
    ],
    ids=["even", "prime", "square", "factor-3", "factor-65521", "small", "all-ff"],
)
def test_public_key_rules(make, rule: str) -> None:  # type: ignore[no-untyped-def]
    _assert_rejected(make(), rule)


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        (b"", "shorter"),
        (b"\x00" * 256, "leading zero"),
        (b"\x00" + os.urandom(255), "leading zero|shorter"),
        (os.urandom(255), "shorter"),
        (b"\xff" * 3000, "longer"),
        (b"\x80" + b"\x00" * 254 + b"\x02", "odd"),  # random-looking garbage, forced even
    ],
    ids=["empty", "zeros", "leading-zero", "short", "huge", "even-garbage"],
)
def test_public_key_garbage_bytes(data: bytes, rule: str) -> None:
    with pytest.raises(InvalidKey, match=rule):
        PublicKey.from_bytes(data)


def test_public_key_wrong_types() -> None:
    with pytest.raises(InvalidKey):
        PublicKey.from_bytes("00ff")  # type: ignore[arg-type]
    with pytest.raises(InvalidKey):
        PublicKey.from_int(-15, min_bits=1)


def test_min_bits_is_the_explicit_insecure_switch() -> None:
    pk, _ = generate_keypair(1024, insecure_test_key=True)
    with pytest.raises(InvalidKey, match="shorter"):
        PublicKey.from_bytes(pk.to_bytes())
    assert PublicKey.from_bytes(pk.to_bytes(), min_bits=1024) == pk


def test_remembered_moduli_still_meet_every_rule() -> None:
    from veil.crypto.paillier import _check_structure

    pk, _ = generate_keypair(1024, insecure_test_key=True)
    assert PublicKey.from_bytes(pk.to_bytes(), min_bits=1024) == pk  # passes, and is remembered
    hits = _check_structure.cache_info().hits
    assert PublicKey.from_bytes(pk.to_bytes(), min_bits=1024) == pk
    assert _check_structure.cache_info().hits == hits + 1  # the primality test did not run again
    with pytest.raises(InvalidKey, match="shorter"):  # the length rule is checked every time
        PublicKey.from_bytes(pk.to_bytes())
    prime = _prime(2048)
    for _ in range(2):  # a refusal is never remembered as a pass
        _assert_rejected(prime, "composite")


def test_valid_key_accepted(keys: tuple[PublicKey, PrivateKey]) -> None:
    pk, _ = keys
    assert PublicKey.from_bytes(pk.to_bytes()).n == pk.n
    assert PublicKey.from_bytes(bytearray(pk.to_bytes())).n == pk.n


def test_ciphertext_rules(keys: tuple[PublicKey, PrivateKey]) -> None:
    pk, sk = keys
    p = int(sk.to_dict()["p"])
    w = pk.ciphertext_size
    bad = {
        "zero": 0,
        "n^2": pk.nsquare,
        "multiple of p": p * 12345,
        "multiple of n": pk.n * 7,
    }
    for name, value in bad.items():
        with pytest.raises(InvalidCiphertext):
            Ciphertext.from_bytes(pk, value.to_bytes(w, "big"))
        with pytest.raises(InvalidCiphertext):
            Ciphertext(pk, value)
    with pytest.raises(InvalidCiphertext, match="exactly 512 bytes"):
        Ciphertext.from_bytes(pk, pk.encrypt(1).to_bytes()[1:])
    with pytest.raises(InvalidCiphertext, match="exactly 512 bytes"):
        Ciphertext.from_bytes(pk, b"\x00" + pk.encrypt(1).to_bytes())
    with pytest.raises(InvalidCiphertext):
        Ciphertext.from_bytes(pk, b"\xff" * w)  # >= n^2
    with pytest.raises(InvalidCiphertext):
        Ciphertext.from_bytes(pk, "not bytes")  # type: ignore[arg-type]
    assert Ciphertext.from_bytes(pk, (1).to_bytes(w, "big")).value == 1  # Enc(0; r=1) is valid


def test_private_key_dict_rules(keys: tuple[PublicKey, PrivateKey]) -> None:
    pk, sk = keys
    good = sk.to_dict()
    p, q = int(good["p"]), int(good["q"])
    cases = [
        ({**good, "kind": "other"}, "not a Veil"),
        ({k: v for k, v in good.items() if k != "q"}, "must have n, p and q"),
        ({**good, "p": "0x12"}, "decimal"),
        ({**good, "p": str(p + 2)}, "multiply"),
        ({**good, "q": good["p"], "n": str(p * p)}, "perfect square|distinct"),
        ({**good, "n": str(p * q * 3), "q": str(q * 3)}, "below 2\\^16"),
    ]
    for d, rule in cases:
        with pytest.raises(InvalidKey, match=rule):
            PrivateKey.from_dict(d)
    # Composite "p": n = a * b with a composite passes the modulus checks but not primality.
    a, b = 0, 0
    while (a * b).bit_length() < 2048:
        a, b = _prime(512) * _prime(520), _prime(1024)
    with pytest.raises(InvalidKey, match="prime"):
        PrivateKey.from_dict({**good, "n": str(a * b), "p": str(a), "q": str(b)})
    with pytest.raises(InvalidKey, match="multiply"):
        PrivateKey(pk, p, q + 2)
