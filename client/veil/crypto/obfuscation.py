"""Fresh randomness ("obfuscators") for Paillier ciphertexts.

Security basis. A Paillier ciphertext is (1 + n)^m * s mod n^2 where s is a random n-th residue;
semantic security rests on the Decisional Composite Residuosity Assumption (Paillier, EUROCRYPT
1999) as long as s is uniform among n-th residues and never reused.

* ``"full"``: s = r^n mod n^2 with r uniform in Z_n^* -- Paillier's original, DCRA only.
  Cost: one modular exponentiation with an n-bit exponent modulo n^2.
* ``"djn"`` (default): the variant of Damgaard, Jurik and Nielsen, "A generalization of Paillier's
  public-key system with applications to electronic voting" (Int. J. Inf. Secur. 9, 2010,
  sec. 4.1), also used by production HE libraries (e.g. SecretFlow HEU, ABY). Pick x uniform in
  Z_n^*, h = -x^2 mod n, hs = h^n mod n^2, and s = hs^a with a uniform of ceil(k/2) bits for a
  k-bit n. Besides DCRA this rests on one extra assumption: that hs^a for such a short a cannot be
  told apart from a uniform element of <hs> (a short-exponent assumption, in the line of Hastad,
  Schrift and Shamir's results on short exponents modulo a composite). ceil(k/2) bits is the
  length DJN prescribe and the shortest Veil accepts: nothing here takes a shorter exponent.
  Keys Veil generates meet DJN sec. 4.1's modulus conditions (p = q = 3 mod 4, gcd(p-1, q-1) = 2);
  for imported keys correctness is unaffected, and ``"full"`` avoids the extra assumption.
  Because hs is a fixed base, hs^a is evaluated from a precomputed table with ceil(k/2)/w
  multiplications and no squarings (w = window bits), ~15x cheaper than r^n.

What it reveals: nothing about the plaintext. h and the tables are per process and need not be
secret (DJN publish h); what must stay secret is each exponent a / each r, drawn from ``secrets``
and used for exactly one obfuscator -- no obfuscator is ever handed out twice. An obfuscator
reveals the plaintext of the one ciphertext it masks, so obfuscators made ahead of time
(``prefill``) are kept in this process's memory only, one stock per key and mode, and each is
removed from its stock, under a lock, by the one call that uses it.

Side channels: evaluating hs^a from the table reads the entries that a's bytes select and skips
zero bytes, so timing and cache state depend on a. ``"full"`` raises the secret r to the public
n with GMP's exponentiation, whose sequence of operations and table reads are set by n alone.

A background thread pre-computing obfuscators does not raise throughput: gmpy2 holds the GIL,
so it only moves the work around. It does cut latency when it runs while this process waits on
something that releases the GIL (the node fills a key's stock while the engine scans the data), or
while it is idle (the node tops up a key's stock after releasing a result under it, while no query
executes: ``veil_server.query.release.RandomnessRefill``).
Large batches go to the process pool (``pool.py``).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal

import gmpy2
from gmpy2 import mpz

__all__ = [
    "Obfuscation",
    "OBFUSCATIONS",
    "FixedBaseTable",
    "obfuscators",
    "obfuscator",
    "configure_table_cache",
    "table_cache_info",
    "clear_table_cache",
    "prefill",
]

Obfuscation = Literal["djn", "full"]
OBFUSCATIONS: tuple[str, ...] = ("djn", "full")

# Building a 2048-bit table costs ~30 direct hs^a evaluations; below that many uses of a key the
# direct powmod is cheaper, so the table is only built once a key has earned it (ski rental).
_BUILD_AFTER_USES = 32
# Per-entry overhead of a gmpy2 mpz on CPython, measured; used for the cache's byte accounting.
_MPZ_OVERHEAD = 48
_DEFAULT_CACHE_BYTES = 192 * 1024 * 1024
_MAX_KEYS = 256
# Obfuscators kept ready per key (512 bytes each at 2048 bits).
STOCK_MAX = 256


def window_bits(key_bits: int) -> int:
    """Window of the fixed-base table: 8 (byte digits, fastest) while the table stays < 40 MB."""
    return 8 if key_bits <= 3072 else 6


def exponent_bits(n: int) -> int:
    """DJN exponent length ceil(k/2) for a k-bit n: the floor of what Veil accepts."""
    return (int(n).bit_length() + 1) // 2


def table_nbytes(modulus: int, exp_bits: int, window: int) -> int:
    """Memory of one fixed-base table: ceil(e/w) rows of 2^w - 1 residues mod ``modulus``."""
    entry = (int(modulus).bit_length() + 7) // 8 + _MPZ_OVERHEAD
    return -(-exp_bits // window) * ((1 << window) - 1) * entry


class FixedBaseTable:
    """rows[i][d] = base^(d * 2^(w*i)) mod m, so base^e is one product over e's w-bit digits."""

    __slots__ = ("modulus", "window", "exponent_bits", "rows", "nbytes")

    def __init__(self, base: mpz, modulus: mpz, exp_bits: int, window: int = 8) -> None:
        self.modulus = modulus
        self.window = window
        self.exponent_bits = exp_bits
        nrows = -(-exp_bits // window)
        one = mpz(1)
        rows: list[list[mpz]] = []
        b = mpz(base) % modulus
        for _ in range(nrows):
            row = [one, b]
            prev = b
            for _ in range((1 << window) - 2):
                prev = prev * b % modulus
                row.append(prev)
            rows.append(row)
            # Next row's base is base^(2^w): the last entry times base once more.
            b = prev * b % modulus
        self.rows = rows
        self.nbytes = table_nbytes(modulus, exp_bits, window)

    def power(self, e: int) -> mpz:
        """base^e for 0 <= e < 2^exponent_bits; exactly one table product per non-zero digit."""
        m = self.modulus
        acc: mpz | None = None
        if self.window == 8:
            digits: Sequence[int] = e.to_bytes(len(self.rows), "little")
        else:
            w, mask = self.window, (1 << self.window) - 1
            digits = [(e >> (w * i)) & mask for i in range(len(self.rows))]
        for row, d in zip(self.rows, digits):
            if d:
                acc = row[d] if acc is None else acc * row[d] % m
        return mpz(1) if acc is None else acc


class _KeyRandomness:
    """Per-public-key DJN state of this process: hs, a use counter, and (once earned) a table."""

    __slots__ = ("n", "n2", "hs", "exp_bits", "table", "uses", "refused", "lock", "stocks", "stock_lock")

    def __init__(self, n: mpz, n2: mpz) -> None:
        self.n = n
        self.n2 = n2
        self.exp_bits = exponent_bits(n)
        x = _unit_mod(n)
        h = (-x * x) % n
        self.hs = gmpy2.powmod(h, n, n2)
        self.table: FixedBaseTable | None = None
        self.uses = 0
        self.refused = False  # the cache budget cannot hold this key's table
        self.lock = threading.Lock()
        # Made ahead, by mode, never handed out; each leaves its stock exactly once.
        self.stocks: dict[str, list[mpz]] = {"djn": [], "full": []}
        self.stock_lock = threading.Lock()

    @property
    def stock(self) -> list[mpz]:
        """The DJN stock (the default mode's)."""
        return self.stocks["djn"]

    def obfuscators(self, count: int, mode: Obfuscation = "djn") -> list[mpz]:
        stock = self.stocks[mode]
        with self.stock_lock:
            ready = stock[len(stock) - min(count, len(stock)):]
            del stock[len(stock) - len(ready):]
        if len(ready) >= count:
            return ready
        return ready + (self.fresh(count - len(ready)) if mode == "djn" else _full(self.n, self.n2, count - len(ready)))

    def prefill(self, count: int, stop: threading.Event, mode: Obfuscation = "djn") -> None:
        """Top the ``mode`` stock up to ``count`` obfuscators (at most STOCK_MAX), one at a time,
        until ``stop`` is set. What the stock already holds counts: a stock kept full between
        queries leaves nothing to make during the next one."""
        stock = self.stocks[mode]
        for _ in range(min(count, STOCK_MAX)):
            if stop.is_set() or len(stock) >= min(count, STOCK_MAX):
                return
            (s,) = self.fresh(1) if mode == "djn" else _full(self.n, self.n2, 1)
            with self.stock_lock:
                stock.append(s)
            # Hand the GIL over between obfuscators: a thread waiting for it (the one about to
            # start the scan this overlaps, or a gRPC handler) would otherwise wait out the
            # interpreter's 5 ms switch interval at every step.
            time.sleep(0)

    def fresh(self, count: int) -> list[mpz]:
        if count <= 0:
            return []
        self.uses += count
        table = self.table
        if table is None and self.uses >= _BUILD_AFTER_USES and not self.refused:
            table = _CACHE.build_table(self)
        bits = self.exp_bits
        if table is not None:
            return [table.power(secrets.randbits(bits)) for _ in range(count)]
        hs, n2 = self.hs, self.n2
        return [gmpy2.powmod(hs, secrets.randbits(bits), n2) for _ in range(count)]


class _TableCache:
    """LRU of per-key state, bounded by table bytes (tables dominate) and by key count."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.entries: OrderedDict[int, _KeyRandomness] = OrderedDict()
        self.lock = threading.Lock()

    def state(self, n: mpz, n2: mpz) -> _KeyRandomness:
        key = int(n)
        with self.lock:
            st = self.entries.get(key)
            if st is not None:
                self.entries.move_to_end(key)
                return st
        fresh = _KeyRandomness(n, n2)  # one powmod, outside the lock
        with self.lock:
            st = self.entries.setdefault(key, fresh)
            self.entries.move_to_end(key)
            while len(self.entries) > _MAX_KEYS:
                self.entries.popitem(last=False)
            return st

    def build_table(self, st: _KeyRandomness) -> FixedBaseTable | None:
        with st.lock:  # one builder per key; the others wait rather than duplicate the work
            if st.table is None:
                window = window_bits(int(st.n).bit_length())
                if table_nbytes(st.n2, st.exp_bits, window) > self.max_bytes:
                    st.refused = True  # budget below one table: stay on the direct powmod
                    return None
                st.table = FixedBaseTable(st.hs, st.n2, st.exp_bits, window)
        with self.lock:
            self._evict(keep=int(st.n))
        return st.table

    def _evict(self, keep: int) -> None:
        total = sum(s.table.nbytes for s in self.entries.values() if s.table is not None)
        for key in list(self.entries):
            if total <= self.max_bytes:
                break
            st = self.entries[key]
            if key != keep and st.table is not None:
                total -= st.table.nbytes
                st.table = None
                st.uses = 0

    def info(self) -> dict[str, int]:
        with self.lock:
            tables = [s.table for s in self.entries.values() if s.table is not None]
            return {
                "keys": len(self.entries),
                "tables": len(tables),
                "table_bytes": sum(t.nbytes for t in tables),
                "max_bytes": self.max_bytes,
            }


_CACHE = _TableCache(_DEFAULT_CACHE_BYTES)


def configure_table_cache(max_bytes: int) -> None:
    """Bound the memory of this process's fixed-base tables (each process has its own)."""
    if max_bytes < 0:
        raise ValueError("max_bytes must be >= 0")
    with _CACHE.lock:
        _CACHE.max_bytes = max_bytes
        for st in _CACHE.entries.values():
            st.refused = False  # a larger budget may now fit tables refused before
        _CACHE._evict(keep=-1)


def table_cache_info() -> dict[str, int]:
    return _CACHE.info()


def clear_table_cache() -> None:
    with _CACHE.lock:
        _CACHE.entries.clear()


def _unit_mod(n: mpz) -> mpz:
    """Uniform element of Z_n^* (rejection sampling; a non-unit would reveal a factor anyway)."""
    while True:
        r = mpz(secrets.randbelow(int(n)))
        if r > 1 and gmpy2.gcd(r, n) == 1:
            return r


def obfuscators(n: mpz, n2: mpz, count: int, mode: Obfuscation = "djn") -> list[mpz]:
    """``count`` independent fresh n-th residues mod n^2, each to be used exactly once."""
    if count <= 0:
        return []
    if mode not in OBFUSCATIONS:
        raise ValueError("obfuscation must be one of " + ", ".join(OBFUSCATIONS))
    return _CACHE.state(n, n2).obfuscators(count, mode)


def _full(n: mpz, n2: mpz, count: int) -> list[mpz]:
    """Full-width obfuscators r^n mod n^2. The secret is the base r; the exponent n is public, so
    GMP's exponentiation reads its precomputed powers of r in an order set by n alone."""
    return [gmpy2.powmod(_unit_mod(n), n, n2) for _ in range(count)]


def prefill(n: mpz, n2: mpz, count: int, stop: threading.Event, mode: Obfuscation = "djn") -> None:
    """Top key n's stock of ``mode`` obfuscators up to ``count`` ahead of time, until ``stop`` is
    set; later ``obfuscators(n, n2, ..., mode)`` calls take them first. Meant for a background
    thread."""
    if mode not in OBFUSCATIONS:
        raise ValueError("obfuscation must be one of " + ", ".join(OBFUSCATIONS))
    if count > 0:
        _CACHE.state(n, n2).prefill(count, stop, mode)


def obfuscator(n: mpz, n2: mpz, mode: Obfuscation = "djn") -> mpz:
    return obfuscators(n, n2, 1, mode)[0]
