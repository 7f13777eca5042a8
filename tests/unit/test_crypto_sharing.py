"""Additive sharing over Z_2^64: exactness, wraparound, uniform-looking shares, fresh masks."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pytest

import veil.crypto
from veil.crypto import EncodingOverflow
from veil.crypto import sharing as sh

I64_MIN, I64_MAX = np.iinfo(np.int64).min, np.iinfo(np.int64).max
SAMPLES = 200_000


def looks_uniform(words: np.ndarray) -> bool:
    """Per-bit balance within 6 sigma and a byte chi-square well inside its tail.

    200k words: a bit's count has sigma ~224, so a generator stuck even slightly off 1/2 on any bit
    fails, as does anything with a skewed byte distribution (zeros, counters, small ranges).
    """
    n = words.size
    bits = np.unpackbits(words.astype(np.uint64).view(np.uint8)).reshape(n, 64)
    ones = bits.sum(axis=0)
    if np.any(np.abs(ones - n / 2) > 6 * np.sqrt(n) / 2):
        return False
    counts = np.bincount(words.view(np.uint8), minlength=256)
    expected = words.size * 8 / 256
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    return chi2 < 255 + 8 * np.sqrt(2 * 255)


def test_split_reconstruct_exact_with_extremes() -> None:
    values = np.array([0, 1, -1, I64_MAX, I64_MIN, 123456789, -987654321], dtype=np.int64)
    for parties in (2, 3, 7):
        shares = sh.split(values, parties)
        assert len(shares) == parties and all(s.dtype == np.uint64 for s in shares)
        np.testing.assert_array_equal(sh.reconstruct(shares), values)


def test_multidimensional_and_other_int_dtypes() -> None:
    values = np.arange(-12, 12, dtype=np.int32).reshape(4, 6)
    np.testing.assert_array_equal(sh.reconstruct(sh.split(values, 3)), values)
    with pytest.raises(TypeError):
        sh.split(np.array([0.5]), 2)
    with pytest.raises(EncodingOverflow):
        sh.split(np.array([2**64 - 1], dtype=np.uint64), 2)
    with pytest.raises(ValueError):
        sh.split(values, 1)


def test_sums_of_shares_wrap_in_the_ring() -> None:
    a = np.array([I64_MAX, -5, 40], dtype=np.int64)
    b = np.array([1, -7, 2], dtype=np.int64)
    sa, sb = sh.split(a, 3), sh.split(b, 3)
    total = sh.reconstruct([sh.add_shares(x, y) for x, y in zip(sa, sb)])
    # Each holder adds locally; the total is exact mod 2^64 -- I64_MAX + 1 wraps to I64_MIN,
    # which is exactly why the worst case must be checked before sharing.
    np.testing.assert_array_equal(total, np.array([I64_MIN, -12, 42], dtype=np.int64))


def test_worst_case_check() -> None:
    assert sh.check_worst_case(2**40, terms=1000) == 2**40 * 1000
    assert sh.check_worst_case(I64_MAX) == I64_MAX
    with pytest.raises(EncodingOverflow):
        sh.check_worst_case(2**62, terms=2)
    with pytest.raises(EncodingOverflow):
        sh.check_worst_case(I64_MAX + 1)
    with pytest.raises(ValueError):
        sh.check_worst_case(-1)


def test_shares_of_a_constant_look_uniform() -> None:
    constant = np.full(SAMPLES, 42_000_000, dtype=np.int64)
    shares = sh.split(constant, 3)
    for s in shares:  # the random ones and the derived last one alike
        assert looks_uniform(s)


def test_the_uniformity_check_has_teeth() -> None:
    rng_words = np.arange(SAMPLES, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # Weyl sequence
    assert not looks_uniform(np.zeros(SAMPLES, dtype=np.uint64))
    assert not looks_uniform(np.arange(SAMPLES, dtype=np.uint64))
    assert not looks_uniform(rng_words & np.uint64(0x7FFF_FFFF_FFFF_FFFF))  # one stuck bit
    assert looks_uniform(sh.random_ring(SAMPLES))


def test_fresh_masks_every_call() -> None:
    v = np.zeros(1000, dtype=np.int64)
    a, b = sh.split(v, 2), sh.split(v, 2)
    assert not np.array_equal(a[0], b[0])
    # Not merely different: unrelated (a reused keystream would make this difference constant).
    assert np.unique(a[0] - b[0]).size > 990
    assert not np.array_equal(sh.random_ring(1000), sh.random_ring(1000))


def test_keystream_is_aes_ctr_and_deterministic_per_key() -> None:
    key = bytes(range(32))
    ks = sh.keystream_uint64(5_000_000 // 8 * 3 + 7, key)  # crosses the internal chunking
    again = sh.keystream_uint64(ks.size, key)
    np.testing.assert_array_equal(ks, again)
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    ref = np.frombuffer(enc.update(bytes(8 * ks.size)), dtype=np.uint64)
    np.testing.assert_array_equal(ks, ref)
    with pytest.raises(ValueError):
        sh.keystream_uint64(1, b"short")


def test_zero_sum_masks() -> None:
    masks = sh.zero_sum_masks((3, 4), 5)
    np.testing.assert_array_equal(sh.reconstruct(masks), np.zeros((3, 4), dtype=np.int64))
    assert looks_uniform(sh.zero_sum_masks(SAMPLES, 2)[0])


def test_pairwise_zero_sum_masks_cancel_without_a_dealer() -> None:
    parties = 4
    seeds = {(i, j): os.urandom(32) for i in range(parties) for j in range(i + 1, parties)}

    def seeds_of(i: int) -> dict[int, bytes]:
        return {j: seeds[(min(i, j), max(i, j))] for j in range(parties) if j != i}

    masks = [sh.pairwise_zero_sum_mask(i, seeds_of(i), 1000, context=b"query-7/round-1") for i in range(parties)]
    np.testing.assert_array_equal(sh.reconstruct(masks), np.zeros(1000, dtype=np.int64))
    other_round = sh.pairwise_zero_sum_mask(0, seeds_of(0), 1000, context=b"query-7/round-2")
    assert np.unique(other_round - masks[0]).size > 990  # a new context gives unrelated masks
    with pytest.raises(ValueError):
        sh.pairwise_zero_sum_mask(0, seeds_of(0), 10, context=b"")
    with pytest.raises(ValueError):
        sh.pairwise_zero_sum_mask(0, {0: os.urandom(32)}, 10, context=b"x")


def test_zero_sum_masks_mod_n() -> None:
    n = 2**127 - 1
    masks = sh.zero_sum_masks_mod(n, 50, 3)
    assert all(sum(col) % n == 0 for col in zip(*masks))
    assert len({m for row in masks for m in row}) == 150


def test_crypto_sources_never_use_predictable_generators() -> None:
    """Randomness must come from secrets / os.urandom (or AES-CTR keyed from them)."""
    for path in Path(veil.crypto.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert all(a.name != "random" for a in node.names), path.name
            if isinstance(node, ast.ImportFrom):
                assert node.module not in ("random", "numpy.random"), path.name
            if isinstance(node, ast.Attribute) and node.attr == "random":
                assert not (isinstance(node.value, ast.Name) and node.value.id in ("np", "numpy")), path.name
