"""Packing: exact round trips, sums of `terms` vectors at the worst case, overflow refused first."""

from __future__ import annotations

from functools import reduce

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veil.crypto import (
    ColumnPacking,
    EncodingOverflow,
    PackingLayout,
    PrivateKey,
    PublicKey,
    decrypt_packed,
    encrypt_packed,
    generate_keypair,
)
from veil.crypto.packing import HEADROOM_BITS

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def keys() -> tuple[PublicKey, PrivateKey]:
    return generate_keypair(2048)


def _sum_vectors(vectors: list[list]) -> list:  # type: ignore[type-arg]
    return [reduce(lambda a, b: a + b, col) for col in zip(*vectors)]


def test_layout_sizing(keys: tuple[PublicKey, PrivateKey]) -> None:
    pk, _ = keys
    lay = PackingLayout.for_range(pk, -1000, 1000, terms=16)
    assert lay.slot_bits == (16 * 2000).bit_length() == 15
    assert lay.slots == (2048 - HEADROOM_BITS) // 15
    assert lay.slots * lay.slot_bits <= pk.bits - HEADROOM_BITS
    # Packed sums stay below n // 3, so even a signed decrypt cannot misread them.
    assert 2 ** (lay.slots * lay.slot_bits) <= pk.max_int
    one = PackingLayout.for_range(pk, 5, 5)
    assert one.slot_bits == 1
    with pytest.raises(EncodingOverflow):
        PackingLayout.for_range(pk, 0, 2**2046)
    with pytest.raises(ValueError):
        PackingLayout.for_range(pk, 1, 0)


@FAST
@given(data=st.data())
def test_round_trip(keys: tuple[PublicKey, PrivateKey], data: st.DataObject) -> None:
    pk, sk = keys
    low = data.draw(st.integers(-(2**40), 2**40))
    high = low + data.draw(st.integers(0, 2**48))
    lay = PackingLayout.for_range(pk, low, high)
    count = data.draw(st.integers(0, 3 * lay.slots + 1))
    edge = st.sampled_from([low, high])
    values = data.draw(st.lists(st.one_of(edge, st.integers(low, high)), min_size=count, max_size=count))
    cts = encrypt_packed(pk, values, lay, workers=1)
    assert len(cts) == lay.ciphertexts_for(count)
    assert decrypt_packed(sk, cts, lay, count, workers=1) == values


@pytest.mark.parametrize(("low", "high", "terms"), [(0, 1, 1), (-5000, 5000, 7), (-(2**31), 2**31 - 1, 64)])
def test_sum_of_terms_is_exact_at_worst_case(
    keys: tuple[PublicKey, PrivateKey], low: int, high: int, terms: int
) -> None:
    pk, sk = keys
    lay = PackingLayout.for_range(pk, low, high, terms=terms)
    count = lay.slots + 3  # spills into a second ciphertext
    for extreme in (high, low):
        vectors = [encrypt_packed(pk, [extreme] * count, lay, workers=1) for _ in range(terms)]
        total = _sum_vectors(vectors)
        assert decrypt_packed(sk, total, lay, count, terms=terms, workers=1) == [terms * extreme] * count
    mixed = [[high if (i + t) % 2 else low for i in range(count)] for t in range(terms)]
    total = _sum_vectors([encrypt_packed(pk, v, lay, workers=1) for v in mixed])
    assert decrypt_packed(sk, total, lay, count, terms=terms, workers=1) == [sum(c) for c in zip(*mixed)]


def test_more_terms_than_declared_is_refused(keys: tuple[PublicKey, PrivateKey]) -> None:
    pk, sk = keys
    lay = PackingLayout.for_range(pk, 0, 1000, terms=2)
    vectors = [encrypt_packed(pk, [1000] * 5, lay, workers=1) for _ in range(3)]
    with pytest.raises(EncodingOverflow, match="sized for"):
        decrypt_packed(sk, _sum_vectors(vectors), lay, 5, terms=3, workers=1)
    # Under-declaring terms is caught when a slot lands between the worst case and the slot
    # width (2 * 1000 < 3 * 680 < 2^11). A sum that carried past the slot cannot be detected
    # afterwards -- which is why `terms` is declared up front and sizes the slots.
    vectors = [encrypt_packed(pk, [680] * 5, lay, workers=1) for _ in range(3)]
    with pytest.raises(EncodingOverflow, match="worst case"):
        decrypt_packed(sk, _sum_vectors(vectors), lay, 5, terms=2, workers=1)


@pytest.mark.parametrize("bad", [1001, -1, 2**70])
def test_overflow_refused_before_encryption(
    keys: tuple[PublicKey, PrivateKey], monkeypatch: pytest.MonkeyPatch, bad: int
) -> None:
    pk, _ = keys
    lay = PackingLayout.for_range(pk, 0, 1000)
    calls: list[int] = []
    monkeypatch.setattr(PublicKey, "encrypt_raw_many", lambda self, ms, **kw: calls.append(len(ms)))
    with pytest.raises(EncodingOverflow):
        encrypt_packed(pk, [1, 2, bad, 3], lay)
    with pytest.raises(EncodingOverflow):
        encrypt_packed(pk, np.array([1, 2, bad % 2**63, 3], dtype=np.int64) if bad < 2**63 else [bad], lay)
    assert calls == []  # nothing was encrypted


def test_numpy_input_and_key_checks(keys: tuple[PublicKey, PrivateKey]) -> None:
    pk, sk = keys
    lay = PackingLayout.for_range(pk, -10, 10)
    arr = np.arange(-10, 11, dtype=np.int32)
    cts = encrypt_packed(pk, arr, lay, workers=1)
    assert decrypt_packed(sk, cts, lay, arr.size, workers=1) == arr.tolist()
    with pytest.raises(TypeError):
        lay.pack(np.array([0.5]))
    small, _ = generate_keypair(512, insecure_test_key=True)  # must be shorter than the layout's key
    with pytest.raises(EncodingOverflow, match="longer key"):
        encrypt_packed(small, [1], lay)
    with pytest.raises(EncodingOverflow, match="exceeds the layout"):
        lay.unpack([1 << (lay.slots * lay.slot_bits)], 1)
    with pytest.raises(ValueError):
        decrypt_packed(sk, cts, lay, len(cts) * lay.slots + 1)


def test_layout_from_wire_fields_is_validated(keys: tuple[PublicKey, PrivateKey]) -> None:
    pk, _ = keys
    with pytest.raises(EncodingOverflow):
        PackingLayout(slot_bits=4, slots=10, low=0, high=100, terms=1, key_bits=pk.bits)
    with pytest.raises(EncodingOverflow):
        PackingLayout(slot_bits=64, slots=40, low=0, high=1, terms=1, key_bits=pk.bits)
    ok = PackingLayout(slot_bits=8, slots=200, low=-3, high=252, terms=1, key_bits=pk.bits)
    assert ok.unpack(ok.pack([-3, 252, 0]), 3) == [-3, 252, 0]


# -- per-column packing (single-party results) --------------------------------------------------

RANGES = [(0, 10**8), (0, 5 * 10**15), (-5 * 10**12, 5 * 10**12), (0, 6 * 10**11 + 1)]


@FAST
@given(st.data())
def test_column_packing_round_trip(keys: tuple[PublicKey, PrivateKey], data: st.DataObject) -> None:
    pk, sk = keys
    packing = ColumnPacking.for_ranges(pk, RANGES)
    rows = data.draw(st.integers(0, 60))
    cells = [data.draw(st.integers(*RANGES[i % len(RANGES)])) for i in range(rows * len(RANGES))]
    plaintexts = packing.pack(cells)
    assert len(plaintexts) == packing.ciphertexts_for(len(cells)) == len(packing.chunks(len(cells)))
    assert all(0 <= p < 1 << packing.capacity for p in plaintexts)
    assert packing.unpack(plaintexts, len(cells)) == cells
    if cells:
        assert decrypt_packed(sk, encrypt_packed(pk, cells, packing), packing, len(cells)) == cells


def test_column_packing_is_narrower_than_uniform_and_fills_greedily(keys: tuple[PublicKey, PrivateKey]) -> None:
    pk, _ = keys
    packing = ColumnPacking.for_ranges(pk, RANGES)
    assert packing.widths == (27, 53, 44, 40) and packing.capacity == pk.bits - HEADROOM_BITS
    uniform = PackingLayout.for_range(pk, min(lo for lo, _ in RANGES), max(hi for _, hi in RANGES))
    cells = 160 * len(RANGES)
    assert packing.ciphertexts_for(cells) < uniform.ciphertexts_for(cells)
    sizes = packing.chunks(cells)
    widths = [packing.widths[i % 4] for i in range(cells)]
    start = 0
    for n in sizes:  # every plaintext holds as many cells as fit, and no more
        assert sum(widths[start:start + n]) <= packing.capacity
        if start + n < cells:
            assert sum(widths[start:start + n + 1]) > packing.capacity
        start += n
    assert start == cells


def test_column_packing_checks_each_column_against_its_own_range(keys: tuple[PublicKey, PrivateKey]) -> None:
    pk, _ = keys
    packing = ColumnPacking.for_ranges(pk, [(0, 100), (0, 10**9)])
    packing.pack([100, 10**9])
    with pytest.raises(EncodingOverflow):
        packing.pack([101, 0])  # inside the second column's range, not its own
    with pytest.raises(EncodingOverflow):
        packing.pack([0, -1])


def test_column_packing_refuses_what_it_did_not_produce(keys: tuple[PublicKey, PrivateKey]) -> None:
    pk, _ = keys
    packing = ColumnPacking.for_ranges(pk, [(0, 100), (-5, 5)])
    (p,) = packing.pack([7, -5])
    assert packing.unpack([p], 2) == [7, -5]
    with pytest.raises(EncodingOverflow):
        packing.unpack([p | 1 << 20], 2)  # bits beyond the last slot
    with pytest.raises(EncodingOverflow):
        packing.unpack([1 << packing.capacity], 2)
    with pytest.raises(EncodingOverflow):
        packing.unpack([p], 2, terms=2)  # plaintexts of several parties would carry between slots
    with pytest.raises(ValueError):
        packing.unpack([p], 2000)  # needs more plaintexts than given
    with pytest.raises(EncodingOverflow):
        ColumnPacking((0,), (255,), (7,), 100, pk.bits)  # 255 needs 8 bits
    with pytest.raises(EncodingOverflow):
        ColumnPacking((0,), (1,), (1,), pk.bits, pk.bits)  # no headroom left
    with pytest.raises(ValueError):
        ColumnPacking((0, 0), (1,), (1,), 100, pk.bits)
