"""Paillier round trips and homomorphic arithmetic on real 2048-bit keys (plus one 3072)."""

from __future__ import annotations

import hashlib
import json

import gmpy2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veil.crypto import (
    Ciphertext,
    EncodingOverflow,
    InvalidCiphertext,
    PrivateKey,
    PublicKey,
    generate_keypair,
)
from veil.crypto.obfuscation import (
    FixedBaseTable,
    configure_table_cache,
    exponent_bits,
    obfuscators,
    table_cache_info,
    wait_for_tables,
)

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def keys() -> tuple[PublicKey, PrivateKey]:
    return generate_keypair(2048)


@pytest.fixture(scope="module")
def other_keys() -> tuple[PublicKey, PrivateKey]:
    return generate_keypair(2048)


def signed_in_range(pk: PublicKey) -> st.SearchStrategy[int]:
    edges = st.sampled_from([0, 1, -1, pk.max_int, -pk.max_int, pk.max_int - 1, -pk.max_int + 1])
    return st.one_of(edges, st.integers(-pk.max_int, pk.max_int), st.integers(-(2**64), 2**64))


def test_generated_key_shape(keys: tuple[PublicKey, PrivateKey]) -> None:
    pk, sk = keys
    assert pk.bits == 2048 and pk.n.bit_length() == 2048
    assert pk.g == pk.n + 1 and pk.nsquare == pk.n**2
    assert pk.max_int == pk.n // 3
    assert pk.ciphertext_size == 512 and len(pk.to_bytes()) == 256
    p, q = int(sk.to_dict()["p"]), int(sk.to_dict()["q"])
    # DJN sec. 4.1 conditions the fast randomness relies on.
    assert p % 4 == 3 and q % 4 == 3 and gmpy2.gcd(p - 1, q - 1) == 2


def test_round_trip_edges(keys: tuple[PublicKey, PrivateKey]) -> None:
    pk, sk = keys
    for m in (0, 1, -1, pk.max_int, -pk.max_int, 2**63, -(2**63)):
        assert sk.decrypt(pk.encrypt(m)) == m
        assert sk.decrypt(pk.encrypt(m, obfuscation="full")) == m


def test_encrypt_refuses_out_of_range(keys: tuple[PublicKey, PrivateKey]) -> None:
    pk, _ = keys
    for m in (pk.max_int + 1, -pk.max_int - 1, pk.n):
        with pytest.raises(EncodingOverflow):
            pk.encrypt(m)
    with pytest.raises(TypeError):
        pk.encrypt(1.5)  # type: ignore[arg-type]


@FAST
@given(data=st.data())
def test_homomorphic_ops(keys: tuple[PublicKey, PrivateKey], data: st.DataObject) -> None:
    pk, sk = keys
    bound = pk.max_int // 2
    a = data.draw(st.one_of(st.integers(-bound, bound), st.sampled_from([bound, -bound, 0])))
    b = data.draw(st.one_of(st.integers(-bound, bound), st.sampled_from([bound, -bound, 0])))
    k = data.draw(st.integers(-(2**40), 2**40))
    ca, cb = pk.encrypt(a), pk.encrypt(b)
    assert sk.decrypt(ca + cb) == a + b
    assert sk.decrypt(ca - cb) == a - b
    assert sk.decrypt(ca + b) == a + b
    assert sk.decrypt(b + ca) == a + b
    assert sk.decrypt(b - ca) == b - a
    assert sk.decrypt(-ca) == -a
    small = data.draw(st.integers(-(2**200), 2**200))
    assert sk.decrypt(pk.encrypt(small) * k) == small * k
    assert sk.decrypt(k * pk.encrypt(small)) == small * k


def test_sum_and_scalar_edge_cases(keys: tuple[PublicKey, PrivateKey]) -> None:
    pk, sk = keys
    cs = pk.encrypt_many([5, -7, 11], workers=1)
    assert sk.decrypt(sum(cs)) == 9  # type: ignore[arg-type]  # sum() starts from int 0
    assert sk.decrypt(cs[0] * 0) == 0
    assert sk.decrypt(cs[1] * 1) == -7
    assert sk.decrypt(cs[1] * -1) == 7
    assert sk.decrypt(cs[0] * (pk.n - 2)) == -10  # scalars act mod n


def test_overflow_is_detected_on_decrypt(keys: tuple[PublicKey, PrivateKey]) -> None:
    pk, sk = keys
    with pytest.raises(EncodingOverflow):
        sk.decrypt(pk.encrypt(pk.max_int) + pk.encrypt(1))
    assert sk.decrypt_raw(pk.encrypt(pk.max_int) + pk.encrypt(1)) == pk.max_int + 1


def test_fresh_randomness(keys: tuple[PublicKey, PrivateKey]) -> None:
    pk, sk = keys
    for mode in ("djn", "full"):
        cts = [pk.encrypt(42, obfuscation=mode) for _ in range(50)]
        assert len({c.value for c in cts}) == 50
    batch = pk.encrypt_many([7] * 300, workers=1)
    assert len({c.value for c in batch}) == 300
    c = pk.encrypt(3)
    o = c.obfuscate()
    assert o != c and o.obfuscated and sk.decrypt(o) == 3
    assert not (c + 0).obfuscated and not (c * 2).obfuscated


def test_obfuscators_are_nth_residues(keys: tuple[PublicKey, PrivateKey]) -> None:
    pk, sk = keys
    n, n2 = gmpy2.mpz(pk.n), gmpy2.mpz(pk.nsquare)
    for mode in ("djn", "full"):
        for s in obfuscators(n, n2, 40, mode):  # type: ignore[arg-type]
            # An obfuscator is an encryption of 0; anything else would shift plaintexts.
            assert sk.decrypt_raw(Ciphertext(pk, int(s))) == 0


def test_prepared_obfuscators_are_each_used_once() -> None:
    import threading

    from veil.crypto import obfuscation

    pk, sk = generate_keypair(1024, insecure_test_key=True)  # a key of its own: a fresh stock
    n, n2 = gmpy2.mpz(pk.n), gmpy2.mpz(pk.nsquare)
    stop = threading.Event()
    pk.prepare_randomness(12, stop)
    state = obfuscation._CACHE.state(n, n2)
    stock = list(state.stock)
    assert len(stock) == 12 and len(set(stock)) == 12
    pk.prepare_randomness(12, stop)  # a full stock: nothing more to make
    assert state.stock == stock
    first = obfuscators(n, n2, 5)
    assert first == stock[-5:] and len(state.stock) == 7  # taken from the stock, and gone from it
    pk.prepare_randomness(9, stop)  # topped up to 9: two more
    assert len(state.stock) == 9 and state.stock[:7] == stock[:7]
    first += obfuscators(n, n2, 2)
    taken: list[list] = []
    threads = [threading.Thread(target=lambda: taken.append(obfuscators(n, n2, 3))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    handed = first + [s for batch in taken for s in batch]
    assert len(handed) == 19 and len(set(handed)) == 19 and not state.stock  # 14 prepared + 5 fresh, none twice
    assert all(sk.decrypt_raw(Ciphertext(pk, int(s))) == 0 for s in handed)  # encryptions of 0
    c = pk.encrypt(41)  # encryption after the stock ran dry still works
    assert sk.decrypt(c) == 41
    stop.set()
    pk.prepare_randomness(50, stop)  # a stopped prefill makes nothing
    assert not state.stock
    go = threading.Event()
    pk.prepare_randomness(obfuscation.STOCK_MAX + 5, go)
    assert len(state.stock) == obfuscation.STOCK_MAX  # bounded
    obfuscation.clear_table_cache()


def test_full_width_obfuscators_have_their_own_stock() -> None:
    import threading

    from veil.crypto import obfuscation

    pk, sk = generate_keypair(1024, insecure_test_key=True)  # a key of its own: fresh stocks
    n, n2 = gmpy2.mpz(pk.n), gmpy2.mpz(pk.nsquare)
    state = obfuscation._CACHE.state(n, n2)
    stop = threading.Event()
    pk.prepare_randomness(4, stop, "full")
    full = list(state.stocks["full"])
    assert len(full) == 4 and not state.stock  # the DJN stock is another
    # Each is r^n for a fresh r: an encryption of 0, and none equal.
    assert len(set(full)) == 4 and all(sk.decrypt_raw(Ciphertext(pk, int(s))) == 0 for s in full)
    c = pk.encrypt(-7, obfuscation="full")  # takes one from the full stock
    assert sk.decrypt(c) == -7 and len(state.stocks["full"]) == 3
    assert pk.encrypt(5).value != c.value and not state.stock and len(state.stocks["full"]) == 3  # DJN: fresh
    got = obfuscators(n, n2, 5, "full")  # 3 from the stock, 2 made now
    assert set(full[:3]) <= set(got) and len(set(got)) == 5 and not state.stocks["full"]
    with pytest.raises(ValueError):
        pk.prepare_randomness(1, stop, "short")  # type: ignore[arg-type]
    obfuscation.clear_table_cache()


@settings(max_examples=30, deadline=None)
@given(e=st.integers(0, 2**1024 - 1))
def test_fixed_base_table_matches_powmod(e: int) -> None:
    m = gmpy2.mpz(2**2048 + 981)  # any odd modulus works for table arithmetic
    base = gmpy2.mpz(123456789123456789)
    table = _TABLES.setdefault("t", FixedBaseTable(base, m, 1024, 8))
    assert table.power(e) == gmpy2.powmod(base, e, m)
    table6 = _TABLES.setdefault("t6", FixedBaseTable(base, m, 1024, 6))
    assert table6.power(e) == gmpy2.powmod(base, e, m)


_TABLES: dict[str, FixedBaseTable] = {}


def test_djn_exponent_is_half_the_modulus(keys: tuple[PublicKey, PrivateKey]) -> None:
    pk, _ = keys
    assert exponent_bits(pk.n) == 1024
    assert exponent_bits(2**3071 + 1) == 1536
    assert exponent_bits(2**2046 + 1) == 1024  # ceil(2047 / 2)


def test_table_cache_is_bounded(keys: tuple[PublicKey, PrivateKey]) -> None:
    pk, sk = keys
    before = table_cache_info()["max_bytes"]
    try:
        configure_table_cache(0)
        assert table_cache_info()["table_bytes"] == 0
        cts = pk.encrypt_many(list(range(100)), workers=1)  # falls back to direct powmod
        assert sk.decrypt_many(cts, workers=1) == list(range(100))
        assert table_cache_info()["table_bytes"] == 0
    finally:
        configure_table_cache(before)
    pk.encrypt_many(list(range(64)), workers=1)
    assert wait_for_tables(120)  # built by the background builder, not by the call that earned it
    info = table_cache_info()
    assert 0 < info["table_bytes"] <= info["max_bytes"]


def test_serialization(keys: tuple[PublicKey, PrivateKey]) -> None:
    pk, sk = keys
    c = pk.encrypt(-99)
    data = c.to_bytes()
    assert len(data) == pk.ciphertext_size
    assert sk.decrypt(Ciphertext.from_bytes(pk, data)) == -99
    assert PublicKey.from_bytes(pk.to_bytes()) == pk
    assert pk.fingerprint() == hashlib.sha256(pk.to_bytes()).hexdigest()
    d = json.loads(json.dumps(sk.to_dict()))
    sk2 = PrivateKey.from_dict(d)
    assert sk2.public_key == pk and sk2.decrypt(c) == -99
    assert d["p"] not in repr(sk) and d["q"] not in repr(sk)


def test_keys_do_not_mix(keys: tuple[PublicKey, PrivateKey], other_keys: tuple[PublicKey, PrivateKey]) -> None:
    (pk, sk), (pk2, sk2) = keys, other_keys
    a, b = pk.encrypt(1), pk2.encrypt(1)
    with pytest.raises(InvalidCiphertext):
        _ = a + b
    with pytest.raises(InvalidCiphertext):
        sk2.decrypt(a)


def test_batches_through_process_pool(keys: tuple[PublicKey, PrivateKey]) -> None:
    pk, sk = keys
    ms = list(range(-150, 150))  # >= PARALLEL_MIN_ITEMS, so this crosses process boundaries
    cts = pk.encrypt_many(ms, workers=2)
    assert len({c.value for c in cts}) == len(ms)
    assert sk.decrypt_many(cts, workers=2) == ms
    assert sk.decrypt_many(cts[:10], workers=1) == ms[:10]


@pytest.mark.parametrize("backend", ["openssl", "gmp"])
def test_pool_decrypts_by_crt_half_for_any_count_and_unbalanced_factors(
        backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import secrets as _secrets

    import gmpy2 as _gmpy2

    from veil.crypto import consttime, pool

    if backend == "openssl" and consttime.backend() != "openssl":
        pytest.fail("no usable libcrypto on this machine: test_crypto_consttime says why")
    monkeypatch.setattr(consttime, "_chosen", backend)

    def prime(bits: int) -> int:
        return int(_gmpy2.next_prime(_secrets.randbits(bits) | 1 << (bits - 1) | 1 << (bits - 2)))

    # An imported key need not split evenly: 1000 and 1048 bits.
    p, q = prime(1000), prime(1048)
    pk = PublicKey(p * q)
    sk = PrivateKey(pk, p, q)
    jobs: list[int] = []
    if backend == "gmp":  # the process pool: chunks of ciphertext bytes
        run = pool.run_chunks
        monkeypatch.setattr(pool, "run_chunks", lambda fn, chunks, w, executor=None: (
            jobs.append(sum(len(c[2]) for c in chunks) // pk.ciphertext_size), run(fn, chunks, w, executor))[1])
    else:  # threads of this process: calls of _halves
        halves = pool._halves
        calls: list[int] = []
        monkeypatch.setattr(pool, "_halves", lambda consts, powers, cs, first, count: (
            calls.append(len(cs)), halves(consts, powers, cs, first, count))[1])
    for count in (1, 2, 3, 5):  # odd counts: one worker takes a p half and a q half of one ciphertext
        ms = [pk.max_int - i for i in range(count)] if count % 2 else [-i for i in range(count)]
        cts = pk.encrypt_many(ms, workers=1)
        if backend == "openssl":
            calls.clear()
        assert sk.decrypt_many(cts, workers=2) == ms
        if backend == "openssl" and count > 1:
            jobs.append(sum(calls))
            assert len(calls) == 2
        assert sk.decrypt_many(cts, workers=1) == ms
    assert jobs == [4, 6, 10]  # two half-jobs per ciphertext; a single ciphertext stays in-process


def test_key_sizes() -> None:
    with pytest.raises(ValueError):
        generate_keypair(1024)
    with pytest.raises(ValueError):
        generate_keypair(2047)
    # Small keys exist only so tests can be fast; the flag makes that explicit.
    pk, sk = generate_keypair(512, insecure_test_key=True)
    assert pk.bits == 512 and sk.decrypt(pk.encrypt(-3)) == -3


@pytest.mark.slow
def test_3072_round_trip() -> None:
    pk, sk = generate_keypair(3072)
    assert pk.bits == 3072 and pk.ciphertext_size == 768
    cts = pk.encrypt_many([pk.max_int, -pk.max_int, 0, 12345], workers=1)
    assert sk.decrypt_many(cts, workers=1) == [pk.max_int, -pk.max_int, 0, 12345]
    assert sk.decrypt(cts[3] * -3 + cts[2]) == -37035


def test_broken_pool_falls_back_in_process(
    keys: tuple[PublicKey, PrivateKey], monkeypatch: pytest.MonkeyPatch
) -> None:
    from concurrent.futures.process import BrokenProcessPool

    from veil.crypto import pool

    def broken(workers: int) -> None:
        raise BrokenProcessPool("simulated")

    pk, sk = keys
    monkeypatch.setattr(pool, "_executor", broken)
    monkeypatch.setattr(pool, "_broken", False)
    ms = list(range(300))
    cts = pk.encrypt_many(ms, workers=2)  # slower, never wrong
    assert pool.resolve_workers(2) == 1  # and the pool stays off afterwards
    assert sk.decrypt_many(cts, workers=2) == ms
