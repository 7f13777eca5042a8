"""Where large Paillier batches run: in this process, on a local process pool, or on any
``concurrent.futures.Executor`` -- a Dask cluster's included (encryption, decryption, encrypted
dot products).

gmpy2 holds the GIL, so threads cannot spread modular arithmetic over cores; processes can. A
batch is cut into chunks, and each chunk is one call of a pure, module-level function on ints,
strings and fixed-width bytes -- no Veil object, so no object graph is ever pickled, and a chunk
runs wherever ``veil`` can be imported: a child process here or a worker on another host.

Where a batch runs, by what the caller passes:

* ``workers=1``: in this process.
* ``workers=N``: the local pool of N processes.
* ``executor=ex``: on ``ex``, cut into ``workers`` chunks (default: :func:`parallelism` of ``ex``),
  whatever the batch's size.
* ``workers=None`` (the default for encryption): public-key work goes to the process's default
  executor when one is installed (:func:`use_executor`; a node does so for ``[crypto] executor =
  "dask+tls://..."``), else to the local pool over ``$VEIL_CRYPTO_WORKERS`` or the CPUs this
  process may use. Decryption never takes the default executor: p and q leave this process only
  for an executor passed to that very call.

Below ``PARALLEL_MIN_ITEMS`` an encryption batch stays in this process (unless an executor is
passed): shipping it would cost more than a second core saves.

The local pool uses the ``spawn`` start method (safe next to gRPC's threads, where fork is not).
Spawned workers re-import the parent's ``__main__`` module, so an entry script must keep its
work under ``if __name__ == "__main__":`` (as any spawn-based pool requires). If the pool cannot
start or dies, the batch is computed in this process instead and the pool stays off for the
rest of the process: slower, never wrong. ``VEIL_CRYPTO_WORKERS=1`` turns it off up front.

Another executor that fails -- raises, loses its workers, or exceeds its ``timeout`` attribute
(``veil.crypto.cluster`` sets one) -- is logged, and that batch is recomputed on the local pool:
the chunk functions are pure, so the answer is the same, only later. The next batch tries the
executor again. (A cluster that cannot be reached at all is refused when it is connected: see
``veil.crypto.cluster``.)

What crosses, and to whom. Decryption with OpenSSL's constant-time routine
(``veil.crypto.consttime``, the usual case) runs on threads of this process: p and q go nowhere.
Otherwise the local pool: this process's own children on the same host, which receive p and q
over the executor's pipe, no wider than the parent's own memory. Another executor (a Dask
scheduler and its workers; ``veil.crypto.cluster``):

* encryption: the modulus n and every plaintext -- on a node, the packed cells of a result about
  to be released, in clear -- and the workers draw each ciphertext's randomness (knowing it
  decrypts that ciphertext);
* encrypted dot products: the analyst's ciphertexts and the node's scalars -- raw column values;
* decryption (only with an executor passed to the call): p and q, which decrypt everything under
  the key, and every plaintext.

So such a cluster must sit inside the domain of whoever owns that material -- the data owner's
for a node's encryption and dot products, the key owner's for decryption -- run by the same
operators, with TLS on every Dask comm (``tls://`` addresses with certificates on the client,
scheduler and workers; ``veil.crypto.cluster`` takes plaintext only to loopback, and a node only
in development mode), because a Dask scheduler runs whatever code its clients send and workers
may spill task data to local disk. It is a wider trust boundary than the node's process, never
a way to hand crypto work to a third party.

Randomness: each worker -- local or remote -- draws its own from ``secrets`` (os.urandom is fork-
and spawn-safe), so no obfuscator is shared between processes. Encryption chunks carry a fresh
128-bit nonce, so an executor that memoises calls by their arguments (Dask's ``Client.submit``
does by default, ``pure=True``) can never hand the same ciphertexts back for a repeated batch.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any, TypeVar

from gmpy2 import mpz

from veil.crypto.crt import crt_combine, crt_decrypt, crt_half, crt_powers
from veil.crypto.obfuscation import Obfuscation, obfuscators

__all__ = [
    "resolve_workers",
    "parallelism",
    "use_executor",
    "executor_scope",
    "default_executor",
    "encrypt_raw_batch",
    "decrypt_raw_batch",
    "run_chunks",
    "shutdown",
    "PARALLEL_MIN_ITEMS",
]

log = logging.getLogger("veil.crypto.pool")

# Below this many items per batch the spawn/IPC overhead outweighs a second core.
PARALLEL_MIN_ITEMS = 256
# A 2048-bit CRT decryption costs 2.5-5.5 ms (two constant-time exponentiations, which run as
# separate jobs), several times a warm pool's round trip, so even two ciphertexts decrypt
# faster on two cores.
DECRYPT_PARALLEL_MIN_ITEMS = 2
_ENV_WORKERS = "VEIL_CRYPTO_WORKERS"

_T = TypeVar("_T")
_executors: dict[int, ProcessPoolExecutor] = {}
_lock = threading.Lock()
_broken = False  # set once a pool failed; later batches stay in-process
_default: Executor | None = None  # public-key work with workers=None goes here when set


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


def parallelism(executor: Executor) -> int:
    """How many chunks to cut a batch into for ``executor``: its ``parallelism`` attribute
    (``veil.crypto.cluster``: the cluster's worker threads now, 0 when it has none), a standard
    pool's worker count, else this host's CPUs."""
    n = getattr(executor, "parallelism", None)
    if n is None:
        n = getattr(executor, "_max_workers", None) or available_cpus()
    return int(n)


def use_executor(executor: Executor | None) -> Executor | None:
    """Install ``executor`` as this process's default for public-key work (encryption and dot
    products asked with ``workers=None``); ``None`` goes back to the local pool. Returns the
    previous default. Decryption never uses it. The caller keeps ownership (and shuts it down)."""
    global _default
    with _lock:
        previous, _default = _default, executor
    return previous


def default_executor() -> Executor | None:
    return _default


@contextlib.contextmanager
def executor_scope(executor: Executor | None) -> Iterator[None]:
    """``use_executor`` for the duration of a ``with`` block, restoring the previous default."""
    previous = use_executor(executor)
    try:
        yield
    finally:
        use_executor(previous)


def placement(
    workers: int | None, executor: Executor | None, *, public: bool
) -> tuple[Executor | None, int]:
    """(executor, chunks) for a batch: (None, 1) is this process, (None, w) the local pool of w.

    ``public``: the batch is public-key work, which may take the process's default executor.
    An executor without workers right now is skipped (logged) for the local pool.
    """
    if executor is None and workers is None and public:
        executor = _default
    if executor is None:
        return None, resolve_workers(workers)
    if workers is not None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        return executor, workers
    n = parallelism(executor)
    if n < 1:
        log.warning(
            "crypto executor %s has no workers: batch computed on the local pool", _name(executor)
        )
        return None, resolve_workers(None)
    return executor, n


def _executor(workers: int) -> ProcessPoolExecutor:
    with _lock:
        ex = _executors.get(workers)
        if ex is None:
            ex = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
            _executors[workers] = ex
        return ex


def shutdown() -> None:
    """Stop every worker this module started (also runs at interpreter exit). Executors passed
    in or installed with ``use_executor`` belong to their caller and are left alone."""
    with _lock:
        executors = list(_executors.values())
        _executors.clear()
    for ex in executors:
        ex.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown)


def _name(executor: Executor) -> str:
    return str(getattr(executor, "address", type(executor).__name__))


def run_chunks(
    fn: Callable[..., _T],
    chunks: Sequence[tuple[Any, ...]],
    workers: int,
    executor: Executor | None = None,
) -> list[_T]:
    """Run ``fn(*chunk)`` for each chunk on ``executor`` (or the local pool of ``workers``);
    results in chunk order.

    Chunk functions are pure, so when an executor fails the batch is simply recomputed: on the
    local pool after another executor failed, in this process after the local pool broke.
    """
    if executor is not None:
        done = _run_on(executor, fn, chunks)
        if done is not None:
            return done
        workers = resolve_workers(None)
    if workers == 1:
        return [fn(*chunk) for chunk in chunks]
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


def _run_on(
    executor: Executor, fn: Callable[..., _T], chunks: Sequence[tuple[Any, ...]]
) -> list[_T] | None:
    """The chunks' results from ``executor``, or None (logged) if it failed or timed out."""
    timeout = getattr(executor, "timeout", None)
    futures = []
    try:
        futures = [executor.submit(fn, *chunk) for chunk in chunks]
        _, pending = wait_futures(futures, timeout=timeout)
        if pending:
            raise TimeoutError(f"no answer within {timeout} s")
        return [f.result() for f in futures]
    except Exception as e:  # noqa: BLE001 -- any failure: the same pure work is redone locally
        for f in futures:
            f.cancel()
        # The type and the executor's address only: an exception's text may quote task arguments.
        log.warning(
            "crypto executor %s failed (%s): batch recomputed on the local pool",
            _name(executor),
            type(e).__name__,
        )
        return None


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


def _encrypt_chunk(n_bytes: bytes, blob: bytes, mode: Obfuscation, nonce: bytes) -> bytes:
    # ``nonce`` is never read: it makes every call's arguments unique, so no executor can answer
    # a repeated chunk from a cache and so reuse randomness.
    del nonce
    n = mpz.from_bytes(n_bytes, "big")
    width = len(n_bytes)
    cs = encrypt_local(n, n * n, from_blob(blob, width), mode)
    return to_blob(cs, 2 * width)


def encrypt_raw_batch(
    n: mpz,
    n2: mpz,
    ms: Sequence[int],
    workers: int | None,
    mode: Obfuscation,
    executor: Executor | None = None,
) -> list[mpz]:
    """Enc of raw plaintexts in [0, n) (caller validated), in order."""
    explicit = executor is not None
    if not explicit and (workers == 1 or len(ms) < PARALLEL_MIN_ITEMS):
        return encrypt_local(n, n2, ms, mode)
    executor, w = placement(workers, executor, public=True)
    if not explicit and w == 1:
        return encrypt_local(n, n2, ms, mode)
    width = (int(n).bit_length() + 7) // 8
    n_bytes = int(n).to_bytes(width, "big")
    chunks = [
        (n_bytes, to_blob(ms[a:b], width), mode, secrets.token_bytes(16))
        for a, b in split_evenly(len(ms), w)
    ]
    out: list[mpz] = []
    for blob in run_chunks(_encrypt_chunk, chunks, w, executor):
        out.extend(from_blob(blob, 2 * width))
    return out


# -- decryption ---------------------------------------------------------------------------------
def _decrypt_halves(consts: tuple[bytes, ...], ct_width: int, blob: bytes, first: int, count: int) -> bytes:
    """Jobs first, first + 1, ... of 2 * count: job j < count is ciphertext j's half mod p, job
    count + j its half mod q. ``blob`` holds each job's ciphertext, in job order."""
    p, q, p2, q2, hp, hq = (mpz.from_bytes(x, "big") for x in consts)
    half_width = (max(p, q).bit_length() + 7) // 8
    powers = crt_powers(p, q, p2, q2)
    return to_blob(_halves((p, q, hp, hq), powers, from_blob(blob, ct_width), first, count), half_width)


def _halves(consts: tuple[mpz, ...], powers: tuple[Any, Any], cs: Sequence[mpz], first: int, count: int) -> list[mpz]:
    """``_decrypt_halves`` on numbers: ``cs[k]`` is job first + k's ciphertext."""
    p, q, hp, hq = consts
    return [crt_half(c, p, hp, powers[0]) if first + k < count else crt_half(c, q, hq, powers[1])
            for k, c in enumerate(cs)]


_threads: ThreadPoolExecutor | None = None


def _thread_pool() -> ThreadPoolExecutor:
    global _threads
    with _lock:
        if _threads is None:
            _threads = ThreadPoolExecutor(max_workers=available_cpus(), thread_name_prefix="veil-decrypt")
        return _threads


def decrypt_raw_batch(
    crt: tuple[mpz, ...],
    ct_width: int,
    cs: Sequence[mpz],
    workers: int | None,
    executor: Executor | None = None,
    *,
    powers: tuple[Any, Any] | None = None,
) -> list[int]:
    """Decryptions of ``cs``, in order. p and q go to ``executor`` when one is passed, never to
    the process's default executor. In parallel the work is split by CRT half (each ciphertext is
    two independent exponentiations), so that an odd number of ciphertexts still keeps every
    worker busy to the end.

    ``powers`` (the key's ``crt_powers``): when they run outside the GIL (OpenSSL's routine,
    see ``veil.crypto.consttime``), the parallel work runs on threads of this process -- no
    process pool, no copy of p and q in another process."""
    explicit = executor is not None
    executor, w = placement(workers, executor, public=False)
    p, q, p2, q2, hp, hq, qinv = crt
    n = len(cs)
    if not explicit and (w == 1 or n < DECRYPT_PARALLEL_MIN_ITEMS):
        powers = powers or crt_powers(p, q, p2, q2)
        return [int(crt_decrypt(c, *crt, powers=powers)) for c in cs]
    if not explicit and powers is not None and powers[0].releases_gil:
        threads = _thread_pool()
        futures = [threads.submit(_halves, (p, q, hp, hq), powers, [cs[j % n] for j in range(a, b)], a, n)
                   for a, b in split_evenly(2 * n, w)]
        halves = [h for f in futures for h in f.result()]
    else:
        consts = tuple(int(x).to_bytes((int(x).bit_length() + 7) // 8 or 1, "big") for x in (p, q, p2, q2, hp, hq))
        chunks = [(consts, ct_width, to_blob([cs[j % n] for j in range(a, b)], ct_width), a, n)
                  for a, b in split_evenly(2 * n, w)]
        half_width = (max(p, q).bit_length() + 7) // 8
        halves = []
        for blob in run_chunks(_decrypt_halves, chunks, w, executor):
            halves.extend(from_blob(blob, half_width))
    return [int(crt_combine(halves[i], halves[n + i], p, q, qinv)) for i in range(n)]
