"""Analyst keys under churn (issue 22): the randomness a node makes per query, with one analyst key
against many, side by side in one run.

Each simulated query takes 20 obfuscators (what a 960-cell result's ciphertexts need) under a key
drawn uniformly from K keys, through ``veil.crypto.obfuscation`` -- the layer whose fixed-base
table cache thrashed when many analysts each had their own key. Reported: obfuscators per second
at steady state (every key past its first uses; tables built by the background builder before
timing), for K = 1 and K = 64 (``--keys``), under the default budget derived from this machine's
memory and under the former fixed 192 MiB. Target: K = 64 at >= 0.85x K = 1 under the default.

The moduli are products of two random 1024-bit primes made here for the benchmark: the
randomness path needs only n, and nothing is encrypted or decrypted.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import time

import gmpy2

from veil.crypto import obfuscation

PER_QUERY = 20


def _modulus(bits: int) -> tuple[gmpy2.mpz, gmpy2.mpz]:
    half = bits // 2
    p = gmpy2.next_prime(gmpy2.mpz(secrets.randbits(half) | (1 << (half - 1))))
    q = gmpy2.next_prime(gmpy2.mpz(secrets.randbits(half) | (1 << (half - 1))))
    n = p * q
    return n, n * n


def _run(keys: list[tuple[gmpy2.mpz, gmpy2.mpz]], budget: int, queries: int) -> float:
    """Obfuscators per second over ``queries`` queries on keys drawn uniformly, after a warm-up
    in which every key is used enough to earn its table and the builds finish."""
    obfuscation.clear_table_cache()
    obfuscation.configure_table_cache(budget)
    for _ in range(3):  # warm-up: 60 uses per key, past the 32 that earn a table
        for n, n2 in keys:
            obfuscation.obfuscators(n, n2, PER_QUERY)
        obfuscation.wait_for_tables(600)
    start = time.perf_counter()
    for _ in range(queries):
        n, n2 = keys[secrets.randbelow(len(keys))]
        obfuscation.obfuscators(n, n2, PER_QUERY)
    elapsed = time.perf_counter() - start
    obfuscation.wait_for_tables(600)
    return queries * PER_QUERY / elapsed


def measure(count: int, bits: int, queries: int, rounds: int, *, print_lines: bool = True) -> dict[str, list[float]]:
    """Obfuscators per second, one sample per round, for 1 key, ``count`` keys under the default
    budget and ``count`` keys under the former 192 MiB, interleaved round by round."""
    if print_lines:
        print(f"Analyst keys under churn (issue 22): {PER_QUERY} obfuscators per query, {bits}-bit keys, "
              f"{queries} queries per sample, {rounds} interleaved rounds; load {os.getloadavg()[0]:.1f}")
    keys = [_modulus(bits) for _ in range(count)]
    auto = obfuscation.default_table_memory()
    old = 192 * 1024 * 1024
    table = obfuscation.table_nbytes(keys[0][1], obfuscation.exponent_bits(keys[0][0]),
                                     obfuscation.window_bits(bits))
    if print_lines:
        print(f"  one table: {table / 2**20:.1f} MiB; default budget {auto / 2**20:.0f} MiB "
              f"({auto // table} tables), former 192 MiB ({old // table} tables)")
    rates: dict[str, list[float]] = {"1 key": [], f"{count} keys, default": [], f"{count} keys, 192 MiB": []}
    for _ in range(rounds):
        rates["1 key"].append(_run(keys[:1], auto, queries))
        rates[f"{count} keys, default"].append(_run(keys, auto, queries))
        rates[f"{count} keys, 192 MiB"].append(_run(keys, old, queries))
    base = statistics.median(rates["1 key"])
    if print_lines:
        for name, values in rates.items():
            ratio = statistics.median(values) / base
            print(f"  {name:<22} {statistics.median(values):9.0f} obfuscators/s "
                  f"(range {min(values):.0f}-{max(values):.0f})  {ratio:5.2f}x one key")
        info = obfuscation.table_cache_info()
        print(f"  cache after the last sample: {info['tables']} tables, built {info['built']}, "
              f"evicted {info['evicted']}, declined {info['declined']}")
    obfuscation.clear_table_cache()
    return rates


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--keys", type=int, default=64)
    ap.add_argument("--bits", type=int, default=2048)
    ap.add_argument("--queries", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    rates = measure(args.keys, args.bits, args.queries, args.rounds)
    ratios = [m / o for m, o in zip(rates[f"{args.keys} keys, default"], rates["1 key"])]
    ratio = statistics.median(ratios)
    # The same format as the issue-22 section of bench/perf_bench.py: median of the per-round
    # ratios, their range, the target and PASS/FAIL.
    print(f"  {args.keys} keys vs one key under the default budget: {ratio:.2f}x "
          f"(range {min(ratios):.2f}-{max(ratios):.2f}, {len(ratios)} rounds) target >= 0.85x "
          f"{'PASS' if ratio >= 0.85 else 'FAIL'}; load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
