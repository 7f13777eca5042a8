"""The fixed-base table cache (issue 22): a budget derived from memory, tables kept by measured
reuse rather than recency, built off the caller's path, and results unchanged under eviction."""

from __future__ import annotations

import secrets
import threading

import gmpy2
import pytest

from veil.crypto import Ciphertext, generate_keypair
from veil.crypto import obfuscation
from veil.crypto.obfuscation import default_table_memory, exponent_bits, table_nbytes, window_bits
from veil_server.crypto_executor import parse_bytes, parse_crypto

MIB = 1 << 20
GIB = 1 << 30


@pytest.fixture()
def cache(monkeypatch: pytest.MonkeyPatch) -> obfuscation._TableCache:
    """A cache of its own for each test, so that no other test's keys share its budget."""
    fresh = obfuscation._TableCache(0)
    monkeypatch.setattr(obfuscation, "_CACHE", fresh)
    yield fresh
    fresh.wait_idle(120)


def _modulus(bits: int = 512) -> tuple[gmpy2.mpz, gmpy2.mpz]:
    # Table arithmetic needs only an odd modulus; small ones keep each table ~1.4 MB. Results are
    # checked against a real key in the last test.
    n = gmpy2.mpz(secrets.randbits(bits) | (1 << (bits - 1)) | 1)
    return n, n * n


def _one_table(n: gmpy2.mpz) -> int:
    return table_nbytes(n * n, exponent_bits(n), window_bits(int(n).bit_length()))


def _use(n: gmpy2.mpz, n2: gmpy2.mpz, uses: int) -> list[gmpy2.mpz]:
    out = []
    for _ in range(uses // 8):
        out += obfuscation.obfuscators(n, n2, 8)
    return out


def test_the_default_budget_follows_the_memory_limit() -> None:
    assert default_table_memory(24 * GIB) == 1536 * MIB  # about 80 tables of 2048-bit keys
    assert default_table_memory(512 * MIB) == 64 * MIB  # never below 64 MiB
    assert default_table_memory(1 << 40) == 4 * GIB  # never above 4 GiB
    assert obfuscation._DEFAULT_CACHE_BYTES == default_table_memory()


def test_table_memory_setting() -> None:
    assert parse_bytes("auto", "crypto.table_memory", ValueError) is None
    assert parse_bytes("512MiB", "crypto.table_memory", ValueError) == 512 * MIB
    assert parse_bytes("2 GiB", "crypto.table_memory", ValueError) == 2 * GIB
    assert parse_bytes(0, "crypto.table_memory", ValueError) == 0
    assert parse_bytes("1.5GB", "crypto.table_memory", ValueError) == 1_500_000_000
    for bad in ("lots", "-1", "12 parsecs", True, -5):
        with pytest.raises(ValueError, match="crypto.table_memory"):
            parse_bytes(bad, "crypto.table_memory", ValueError)
    from pathlib import Path
    s = parse_crypto({"table_memory": "256MiB"}, env={}, base_dir=Path("."), dev_mode=True, error=ValueError)
    assert s.table_memory == 256 * MIB
    s = parse_crypto({}, env={"VEIL_CRYPTO_TABLE_MEMORY": "1GiB"}, base_dir=Path("."), dev_mode=True, error=ValueError)
    assert s.table_memory == GIB
    assert parse_crypto({}, env={}, base_dir=Path("."), dev_mode=True, error=ValueError).table_memory is None


def test_a_table_is_built_in_the_background(cache: obfuscation._TableCache) -> None:
    n, n2 = _modulus()
    cache.max_bytes = 4 * _one_table(n)
    gate = threading.Event()
    real = obfuscation.FixedBaseTable

    def slow_table(*args, **kwargs):  # holds the build until the caller has returned
        assert gate.wait(60)
        return real(*args, **kwargs)

    obfuscation.FixedBaseTable = slow_table  # type: ignore[misc]
    try:
        got = _use(n, n2, 64)  # earns a table; the call does not wait for it
        st = cache.state(n, n2)
        assert len(got) == 64 and st.table is None and st.building
        gate.set()
        assert cache.wait_idle(60)
    finally:
        obfuscation.FixedBaseTable = real  # type: ignore[misc]
    assert st.table is not None and cache.info()["built"] == 1
    # Values from the table equal direct exponentiation of the same fixed base.
    e = secrets.randbits(st.exp_bits)
    assert st.table.power(e) == gmpy2.powmod(st.hs, e, n2)


def test_tables_are_kept_by_reuse_not_recency(cache: obfuscation._TableCache) -> None:
    keys = [_modulus() for _ in range(4)]
    cache.max_bytes = 2 * _one_table(keys[0][0]) + 1000  # room for two
    (a, a2), (b, b2), (c, c2), (d, d2) = keys
    _use(a, a2, 400)
    _use(b, b2, 200)
    assert cache.wait_idle(60)
    assert cache.state(a, a2).table is not None and cache.state(b, b2).table is not None
    _use(c, c2, 48)  # the most recent, but used far less than either resident table
    assert cache.wait_idle(60)
    assert cache.state(c, c2).table is None and cache.info()["declined"] >= 1
    _use(d, d2, 800)  # used more than both: takes the place of the less reused one (b)
    assert cache.wait_idle(60)
    assert cache.state(d, d2).table is not None
    assert cache.state(a, a2).table is not None and cache.state(b, b2).table is None
    info = cache.info()
    assert info["tables"] == 2 and info["table_bytes"] <= cache.max_bytes and info["evicted"] == 1


def test_a_cyclic_scan_over_more_keys_than_fit_does_not_rebuild(cache: obfuscation._TableCache) -> None:
    """Least-recently-used would evict every table before its next use and rebuild each key once
    per cycle (6 keys x 10 cycles = 60 builds); kept by reuse, the first tables stay."""
    keys = [_modulus() for _ in range(6)]
    cache.max_bytes = 2 * _one_table(keys[0][0]) + 1000
    for _ in range(10):
        for n, n2 in keys:
            _use(n, n2, 40)
            cache.wait_idle(60)
    info = cache.info()
    assert info["tables"] == 2 and info["built"] <= 4, info


def test_results_are_the_same_under_eviction_pressure(cache: obfuscation._TableCache) -> None:
    pairs = [generate_keypair(1024, insecure_test_key=True) for _ in range(3)]  # small: speed only
    cache.max_bytes = _one_table(gmpy2.mpz(pairs[0][0].n)) + 1000  # room for one table
    for rnd in range(4):
        for i, (pk, sk) in enumerate(pairs if rnd % 2 == 0 else reversed(pairs)):
            values = [secrets.randbelow(10**12) - 5 * 10**11 for _ in range(40)]
            cts = pk.encrypt_many(values, workers=1)
            assert sk.decrypt_many(cts, workers=1) == values
            n, n2 = gmpy2.mpz(pk.n), gmpy2.mpz(pk.nsquare)
            s = obfuscation.obfuscators(n, n2, 3)
            assert len(set(s)) == 3 and all(sk.decrypt_raw(Ciphertext(pk, int(x))) == 0 for x in s)
    assert cache.wait_idle(60)
    assert cache.info()["table_bytes"] <= cache.max_bytes
