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

The table cache (issue 22). A 2048-bit key's table is ~18 MB (~40 MB at 3072 bits), so a node
serving many analysts' keys holds only some of them. The budget is a setting
(``configure_table_cache``; a node's ``[crypto] table_memory``) whose default is derived from the
memory this process may use (``default_table_memory``: a sixteenth of the physical memory or of
the cgroup's limit, between 64 MiB and 4 GiB). What stays is chosen by measured reuse, not by
recency: each key's uses decay with a half-life of ``REUSE_HALF_LIFE`` seconds, a table is
evicted only for a key used more than it, and a key used less than every resident table gets no
table (a cyclic scan over more keys than fit would otherwise rebuild every table once per cycle
and keep none). Tables are built by one background thread of this process: the call that earns a
key its table goes on with direct exponentiations and does not wait for the build (gmpy2 holds the
GIL while it multiplies, so the build still takes CPU from the process; it takes no request's
latency in one piece). Tables are never written to disk: one is rebuilt from the key in ~30
exponentiations' time, less than reading and checking the integrity of 18 MB, and nothing
stored means nothing for an attacker with the disk to substitute.
"""

from __future__ import annotations

import os
import queue
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
    "default_table_memory",
    "wait_for_tables",
    "prefill",
]

Obfuscation = Literal["djn", "full"]
OBFUSCATIONS: tuple[str, ...] = ("djn", "full")

# Building a 2048-bit table costs ~30 direct hs^a evaluations; below that many uses of a key the
# direct powmod is cheaper, so the table is only built once a key has earned it (ski rental).
_BUILD_AFTER_USES = 32
# Per-entry overhead of a gmpy2 mpz on CPython, measured; used for the cache's byte accounting.
_MPZ_OVERHEAD = 48
_MAX_KEYS = 1024
# A use counts half as much after this many seconds: the time scale of "reuse".
REUSE_HALF_LIFE = 60.0
# A resident table gives way only to a key reused this many times more: hysteresis, so that keys
# used about equally do not trade places (and rebuild) at every fluctuation.
ADMIT_MARGIN = 1.5
_MIN_DEFAULT = 64 * 1024 * 1024
_MAX_DEFAULT = 4 * 1024 * 1024 * 1024


def _memory_limit() -> int | None:
    """Bytes this process may use: the smaller of physical memory and a cgroup v2/v1 limit."""
    limits: list[int] = []
    try:
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path, encoding="ascii") as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < 1 << 60:  # "max" or a huge sentinel: no limit
            limits.append(int(text))
    return min(limits) if limits else None


def default_table_memory(limit: int | None = None) -> int:
    """Default budget of the fixed-base tables: 1/16 of the memory limit, within [64 MiB, 4 GiB]
    (24 GiB of memory: 1.5 GiB, about 80 tables of 2048-bit keys). 192 MiB when the limit is
    unknown."""
    limit = _memory_limit() if limit is None else limit
    if not limit:
        return 192 * 1024 * 1024
    return max(_MIN_DEFAULT, min(_MAX_DEFAULT, limit // 16))


_DEFAULT_CACHE_BYTES = default_table_memory()
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

    __slots__ = ("n", "n2", "hs", "exp_bits", "table", "uses", "refused", "lock", "stocks", "stock_lock",
                 "score", "stamp", "building")

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
        self.score = 0.0  # uses, each decayed by its age (half-life REUSE_HALF_LIFE)
        self.stamp = time.monotonic()
        self.building = False  # queued for, or being built by, the background builder
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

    def reuse(self, now: float) -> float:
        """This key's decayed use count at ``now``."""
        return self.score * 0.5 ** (max(0.0, now - self.stamp) / REUSE_HALF_LIFE)

    def touch(self, count: int) -> None:
        now = time.monotonic()
        self.score = self.reuse(now) + count
        self.stamp = now

    def fresh(self, count: int) -> list[mpz]:
        if count <= 0:
            return []
        self.uses += count
        self.touch(count)
        table = self.table
        if table is None and self.uses >= _BUILD_AFTER_USES and not self.refused and not self.building:
            _CACHE.request_build(self)  # built in the background; this call goes on without it
        bits = self.exp_bits
        if table is not None:
            return [table.power(secrets.randbits(bits)) for _ in range(count)]
        hs, n2 = self.hs, self.n2
        return [gmpy2.powmod(hs, secrets.randbits(bits), n2) for _ in range(count)]


class _TableCache:
    """Per-key state (bounded by key count, least recently used first out) and the tables, bounded
    by bytes and kept by measured reuse. Tables are built by one background thread."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.entries: OrderedDict[int, _KeyRandomness] = OrderedDict()
        self.lock = threading.Lock()
        self.builds: queue.SimpleQueue[_KeyRandomness | None] = queue.SimpleQueue()
        self.builder: threading.Thread | None = None
        self.pending = 0  # builds queued or running
        self.idle = threading.Condition(self.lock)
        self.stats = {"built": 0, "evicted": 0, "declined": 0}

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

    # -- admission and eviction -------------------------------------------------------------

    def _resident(self) -> list[_KeyRandomness]:
        return [s for s in self.entries.values() if s.table is not None]

    def _room_for(self, st: _KeyRandomness, nbytes: int, now: float, evict: bool) -> bool:
        """Whether ``st``'s table of ``nbytes`` fits, evicting (if ``evict``) only tables of keys
        reused less than ``st``, least reused first. Caller holds the lock."""
        if nbytes > self.max_bytes:
            return False
        resident = [s for s in self._resident() if s is not st]
        total = sum(s.table.nbytes for s in resident)  # type: ignore[union-attr]
        if total + nbytes <= self.max_bytes:
            return True
        mine = st.reuse(now)
        victims = sorted((s for s in resident if s.reuse(now) * ADMIT_MARGIN < mine), key=lambda s: s.reuse(now))
        freed, chosen = 0, []
        for victim in victims:
            if total - freed + nbytes <= self.max_bytes:
                break
            freed += victim.table.nbytes  # type: ignore[union-attr]
            chosen.append(victim)
        if total - freed + nbytes > self.max_bytes:
            return False
        if evict:
            for victim in chosen:
                victim.table = None
                victim.uses = 0  # earns its table again by use
                self.stats["evicted"] += 1
        return True

    def request_build(self, st: _KeyRandomness) -> None:
        """Queue ``st``'s table for the background builder, if it would be admitted now."""
        window = window_bits(int(st.n).bit_length())
        nbytes = table_nbytes(st.n2, st.exp_bits, window)
        with self.lock:
            if st.building or st.table is not None:
                return
            if nbytes > self.max_bytes:
                st.refused = True  # budget below one table: stay on the direct powmod
                return
            if not self._room_for(st, nbytes, time.monotonic(), evict=False):
                st.uses = 0  # reused less than every resident table: try again after more use
                self.stats["declined"] += 1
                return
            st.building = True
            self.pending += 1
            if self.builder is None or not self.builder.is_alive():
                self.builder = threading.Thread(target=self._build_loop, name="veil-table-builder", daemon=True)
                self.builder.start()
        self.builds.put(st)

    def _build_loop(self) -> None:
        while True:
            st = self.builds.get()
            if st is None:
                return
            table: FixedBaseTable | None = None
            try:
                window = window_bits(int(st.n).bit_length())
                table = FixedBaseTable(st.hs, st.n2, st.exp_bits, window)
            finally:
                with self.lock:
                    if table is not None and self._room_for(st, table.nbytes, time.monotonic(), evict=True):
                        st.table = table
                        self.stats["built"] += 1
                    else:
                        st.uses = 0
                        self.stats["declined"] += 1
                    st.building = False
                    self.pending -= 1
                    self.idle.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no table build is queued or running (tests, benchmarks)."""
        with self.lock:
            return self.idle.wait_for(lambda: self.pending == 0, timeout)

    def shrink(self) -> None:
        """Evict least-reused tables until the budget holds. Caller holds the lock."""
        now = time.monotonic()
        resident = sorted(self._resident(), key=lambda s: s.reuse(now))
        total = sum(s.table.nbytes for s in resident)  # type: ignore[union-attr]
        for st in resident:
            if total <= self.max_bytes:
                break
            total -= st.table.nbytes  # type: ignore[union-attr]
            st.table = None
            st.uses = 0
            self.stats["evicted"] += 1

    def info(self) -> dict[str, int]:
        with self.lock:
            tables = [s.table for s in self.entries.values() if s.table is not None]
            return {
                "keys": len(self.entries),
                "tables": len(tables),
                "table_bytes": sum(t.nbytes for t in tables),
                "max_bytes": self.max_bytes,
                "pending_builds": self.pending,
                **self.stats,
            }


_CACHE = _TableCache(_DEFAULT_CACHE_BYTES)


def _after_fork_in_child() -> None:
    # The builder thread does not survive a fork: the child starts with no build in flight.
    _CACHE.lock = threading.Lock()
    _CACHE.idle = threading.Condition(_CACHE.lock)
    _CACHE.builds = queue.SimpleQueue()
    _CACHE.builder = None
    _CACHE.pending = 0
    for st in _CACHE.entries.values():
        st.building = False
        st.lock = threading.Lock()
        st.stock_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def configure_table_cache(max_bytes: int) -> None:
    """Bound the memory of this process's fixed-base tables (each process has its own)."""
    if max_bytes < 0:
        raise ValueError("max_bytes must be >= 0")
    with _CACHE.lock:
        _CACHE.max_bytes = max_bytes
        for st in _CACHE.entries.values():
            st.refused = False  # a larger budget may now fit tables refused before
        _CACHE.shrink()


def table_cache_info() -> dict[str, int]:
    """Keys, resident tables and their bytes, the budget, builds pending, and counts of tables
    built, evicted and declined (a key reused less than every resident table)."""
    return _CACHE.info()


def wait_for_tables(timeout: float | None = None) -> bool:
    """Wait until the background builder has no table queued or running."""
    return _CACHE.wait_idle(timeout)


def clear_table_cache() -> None:
    _CACHE.wait_idle(None)
    with _CACHE.lock:
        _CACHE.entries.clear()
        _CACHE.stats = dict.fromkeys(_CACHE.stats, 0)


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
