"""Interop with python-paillier (phe): keys and ciphertexts convert both ways and decrypt."""

from __future__ import annotations

import phe
import pytest

from veil.crypto import Ciphertext, InvalidCiphertext, InvalidKey, PrivateKey, PublicKey, generate_keypair


@pytest.fixture(scope="module")
def keys() -> tuple[PublicKey, PrivateKey]:
    return generate_keypair(2048)


@pytest.fixture(scope="module")
def phe_keys() -> tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey]:
    # phe's own generator at 2048 bits can take several seconds; its keys are ordinary
    # g = n + 1 Paillier keys either way.
    return phe.generate_paillier_keypair(n_length=2048)


# phe's max_int is n // 3 - 1, one below Veil's: stay inside both ranges.
def _values(pk: PublicKey) -> list[int]:
    return [0, 1, -1, 2**64, -(2**64), pk.max_int - 1, -(pk.max_int - 1)]


def test_veil_ciphertexts_decrypt_with_phe(keys: tuple[PublicKey, PrivateKey]) -> None:
    pk, sk = keys
    psk = sk.to_phe()
    for m in _values(pk):
        assert psk.decrypt(pk.encrypt(m).to_phe()) == m
    # phe arithmetic on a converted Veil ciphertext still decrypts correctly.
    assert psk.decrypt(pk.encrypt(20).to_phe() * 3 + 4) == 64


def test_phe_ciphertexts_decrypt_with_veil(
    phe_keys: tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey],
) -> None:
    ppk, psk = phe_keys
    pk, sk = PublicKey.from_phe(ppk), PrivateKey.from_phe(psk)
    assert sk.public_key == pk
    for m in _values(pk):
        c = Ciphertext.from_phe(ppk.encrypt(m), public_key=pk)
        assert sk.decrypt(c) == m
    # A phe ciphertext and a Veil one under the same key combine homomorphically.
    mixed = Ciphertext.from_phe(ppk.encrypt(-5), public_key=pk) + pk.encrypt(12)
    assert sk.decrypt(mixed) == 7


def test_keys_convert_both_ways(
    keys: tuple[PublicKey, PrivateKey],
    phe_keys: tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey],
) -> None:
    pk, sk = keys
    assert PublicKey.from_phe(pk.to_phe()) == pk
    assert PrivateKey.from_phe(sk.to_phe()).to_dict() == sk.to_dict()
    ppk, psk = phe_keys
    assert PublicKey.from_phe(ppk).to_phe() == ppk
    back = PrivateKey.from_phe(psk).to_phe()
    assert (back.p, back.q) == (psk.p, psk.q)


def test_phe_conversion_refusals(keys: tuple[PublicKey, PrivateKey]) -> None:
    pk, _ = keys
    ppk = pk.to_phe()
    with pytest.raises(InvalidCiphertext, match="exponent"):
        Ciphertext.from_phe(ppk.encrypt(1.5), public_key=pk)  # phe picked a value-dependent exponent
    other, _ = generate_keypair(512, insecure_test_key=True)  # only needs to differ; small = fast
    with pytest.raises(InvalidCiphertext, match="different public key"):
        Ciphertext.from_phe(ppk.encrypt(1), public_key=other)
    small = phe.PaillierPublicKey(other.n)
    with pytest.raises(InvalidKey, match="shorter"):
        PublicKey.from_phe(small)
    assert PublicKey.from_phe(small, min_bits=512) == other
