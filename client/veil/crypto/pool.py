"""Process pool for large Paillier batches (encrypt, decrypt, multi-exponentiation).

gmpy2 holds the GIL, so threads cannot spread modular arithmetic over cores; processes can.
The pool uses the ``spawn`` start method (safe next to gRPC's threads, where fork is not) and
crosses the process boundary with ints and fixed-width bytes only -- no Veil objects, so no
object graph is ever pickled.

Spawned workers re-import the parent's ``__main__`` module, so an entry script must keep its
work under ``if __name__ == "__main__":`` (as any spawn-based pool requires). If the pool cannot
start or dies, the batch is computed in this process instead and the pool stays off for the
rest of the process: slower, never wrong. ``VEIL_CRYPTO_WORKERS=1`` turns it off up front.

What it reveals: worker processes are this process's own children on the same host; for
decryption they receive p and q over the executor's pipe, which is no wider than the parent's
own memory. Each worker draws its own randomness from ``secrets`` (os.urandom is fork- and
spawn-safe), so no obfuscator is shared between processes.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any, TypeVar

from gmpy2 import mpz

from veil.crypto.obfuscation import Obfuscation, obfuscators

__all__ = [
    "resolve_workers",
    "encrypt_raw_batch",
    "decrypt_raw_batch",
    "run_chunks",
    "shutdown",
    "PARALLEL_MIN_ITEMS",
]

# Below this many items per batch the spawn/IPC overhead outweighs a second core.
PARALLEL_MIN_ITEMS = 256
# A 2048-bit CRT decryption costs ~2.5 ms (two constant-time powmods of ~1.3 ms, which the pool
# runs as separate jobs), several times a warm pool's round trip, so even two ciphertexts
# decrypt faster on two cores.
DECRYPT_PARALLEL_MIN_ITEMS = 2
_ENV_WORKERS = "VEIL_CRYPTO_WORKERS"

_T = TypeVar("_T")
_executors: dict[int, ProcessPoolExecutor] = {}
_lock = threading.Lock()
_broken = False  # set once a pool failed; later batches stay in-process


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_workers(workers: int | None) -> int:
    """``None`` -> $VEIL_CRYPTO_WORKERS or the CPUs this process may use; at least 1."""
    if workers is None:
        env = os.environ.get(_ENV_WORKERS, "").strip()
        workers = int(env) if env.isdecimal() else available_cpus()
    if workers < 1:
        raise ValueError("workers must be >= 1")
    return 1 if _broken else workers


def _executor(workers: int) -> ProcessPoolExecutor:
    with _lock:
        ex = _executors.get(workers)
        if ex is None:
            ex = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
            _executors[workers] = ex
        return ex


def shutdown() -> None:
    """Stop every worker this module started (also runs at interpreter exit)."""
    with _lock:
        executors = list(_executors.values())
        _executors.clear()
    for ex in executors:
        ex.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown)


def run_chunks(fn: Callable[..., _T], chunks: Sequence[tuple[Any, ...]], workers: int) -> list[_T]:
    """Run ``fn(*chunk)`` for each chunk on the pool; results in chunk order.

    Chunk functions are pure, so when the pool breaks they are simply run here instead.
    """
    global _broken
    try:
        ex = _executor(workers)
        futures = [ex.submit(fn, *chunk) for chunk in chunks]
        return [f.result() for f in futures]
    except (BrokenProcessPool, OSError):
        with _lock:
            _broken = True
            dead = _executors.pop(workers, None)
        if dead is not None:
            dead.shutdown(wait=False, cancel_futures=True)
        return [fn(*chunk) for chunk in chunks]


def split_evenly(count: int, parts: int) -> list[tuple[int, int]]:
    step, extra = divmod(count, parts)
    bounds, start = [], 0
    for i in range(parts):
        end = start + step + (1 if i < extra else 0)
        if end > start:
            bounds.append((start, end))
        start = end
    return bounds


def to_blob(values: Sequence[int], width: int) -> bytes:
    return b"".join(mpz(v).to_bytes(width, "big") for v in values)


def from_blob(blob: bytes, width: int) -> list[mpz]:
    frm = mpz.from_bytes
    return [frm(blob[i : i + width], "big") for i in range(0, len(blob), width)]


# -- encryption ---------------------------------------------------------------------------------
def encrypt_local(n: mpz, n2: mpz, ms: Sequence[int], mode: Obfuscation) -> list[mpz]:
    obf = obfuscators(n, n2, len(ms), mode)
    return [(1 + m * n) * s % n2 for m, s in zip(ms, obf)]


def _encrypt_chunk(n_bytes: bytes, blob: bytes, mode: Obfuscation) -> bytes:
    n = mpz.from_bytes(n_bytes, "big")
    width = len(n_bytes)
    cs = encrypt_local(n, n * n, from_blob(blob, width), mode)
    return to_blob(cs, 2 * width)


def encrypt_raw_batch(
    n: mpz, n2: mpz, ms: Sequence[int], workers: int | None, mode: Obfuscation
) -> list[mpz]:
    """Enc of raw plaintexts in [0, n) (caller validated), in order."""
    w = resolve_workers(workers)
    if w == 1 or len(ms) < PARALLEL_MIN_ITEMS:
        return encrypt_local(n, n2, ms, mode)
    width = (int(n).bit_length() + 7) // 8
    n_bytes = int(n).to_bytes(width, "big")
    chunks = [(n_bytes, to_blob(ms[a:b], width), mode) for a, b in split_evenly(len(ms), w)]
    out: list[mpz] = []
    for blob in run_chunks(_encrypt_chunk, chunks, w):
        out.extend(from_blob(blob, 2 * width))
    return out


# -- decryption ---------------------------------------------------------------------------------
def _decrypt_halves(consts: tuple[bytes, ...], ct_width: int, blob: bytes, first: int, count: int) -> bytes:
    """Jobs first, first + 1, ... of 2 * count: job j < count is ciphertext j's half mod p, job
    count + j its half mod q. ``blob`` holds each job's ciphertext, in job order."""
    from veil.crypto.paillier import crt_half

    p, q, p2, q2, hp, hq = (mpz.from_bytes(x, "big") for x in consts)
    half_width = (max(p, q).bit_length() + 7) // 8
    out = [crt_half(c, p, p2, hp) if first + k < count else crt_half(c, q, q2, hq)
           for k, c in enumerate(from_blob(blob, ct_width))]
    return to_blob(out, half_width)


def decrypt_raw_batch(
    crt: tuple[mpz, ...], ct_width: int, cs: Sequence[mpz], workers: int | None
) -> list[int]:
    """Decryptions of ``cs``, in order. On a pool the work is split by CRT half (each ciphertext
    is two independent exponentiations), so that an odd number of ciphertexts still keeps every
    worker busy to the end."""
    from veil.crypto.paillier import crt_combine, crt_decrypt

    w = resolve_workers(workers)
    if w == 1 or len(cs) < DECRYPT_PARALLEL_MIN_ITEMS:
        return [int(crt_decrypt(c, *crt)) for c in cs]
    p, q, p2, q2, hp, hq, qinv = crt
    consts = tuple(int(x).to_bytes((int(x).bit_length() + 7) // 8 or 1, "big") for x in (p, q, p2, q2, hp, hq))
    n = len(cs)
    chunks = [(consts, ct_width, to_blob([cs[j % n] for j in range(a, b)], ct_width), a, n)
              for a, b in split_evenly(2 * n, w)]
    half_width = (max(p, q).bit_length() + 7) // 8
    halves: list[mpz] = []
    for blob in run_chunks(_decrypt_halves, chunks, w):
        halves.extend(from_blob(blob, half_width))
    return [int(crt_combine(halves[i], halves[n + i], p, q, qinv)) for i in range(n)]
