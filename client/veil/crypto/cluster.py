"""Paillier batches on a Dask cluster: ``connect("dask+tls://crypto-head:8786", tls=...)``.

The returned :class:`DaskExecutor` is a ``concurrent.futures.Executor`` over a
``distributed.Client`` (``pip install 'veil[dask]'``); pass it as ``executor=`` to a batch call,
or install it for the process with ``veil.crypto.pool.use_executor`` (what a node does for
``[crypto] executor``). Every worker needs ``veil`` importable (the same version): it runs the
pool's chunk functions, which take and return ints, strings and bytes only.

Addresses: ``dask+tls://host:port`` -- TLS with the CA, client certificate and key given in
``tls``; Dask's ``require_encryption`` is set, so nothing falls back to plaintext -- and
``dask://host:port``, plain TCP, for a cluster on this host in development (``LocalCluster``,
tests, the benchmark). A scheduler runs whatever code a connected client sends, and the batches
carry plaintexts (and for decryption p and q), so the cluster belongs inside the data owner's
domain behind mutual TLS: ``veil.crypto.pool`` lists what crosses.

Failure: :func:`connect` raises :class:`ClusterUnavailable` when the scheduler does not answer
within ``connect_timeout`` -- a node refuses to start rather than run on a cluster it was not
told about. Later, a batch that fails or outlasts ``task_timeout`` is recomputed on the local
pool with a warning (``veil.crypto.pool``): same answer, later.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from veil.transport import is_loopback_host

__all__ = ["ClusterUnavailable", "DaskExecutor", "TlsFiles", "connect", "scheduler_address"]

SCHEMES = {"dask": "tcp", "dask+tls": "tls"}
# How long a worker count stays fresh: it decides how many chunks a batch is cut into, and
# asking the scheduler costs a round trip per batch.
_PARALLELISM_TTL_SECONDS = 5.0


class ClusterUnavailable(ConnectionError):
    """The Dask scheduler cannot be reached (or ``distributed`` is not installed)."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for mutual TLS with the scheduler: the CA that signed the cluster's
    certificates, and this client's certificate and key."""

    ca: Path
    cert: Path
    key: Path


def scheduler_address(url: str) -> str:
    """``dask://h:p`` -> ``tcp://h:p``, ``dask+tls://h:p`` -> ``tls://h:p``; else ValueError."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.hostname or parts.port is None:
        raise ValueError(
            "a crypto cluster address reads dask+tls://host:port (or dask://host:port on loopback)"
        )
    if (
        parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username
        or parts.password
    ):
        raise ValueError("a crypto cluster address is dask+tls://host:port, nothing more")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{SCHEMES[parts.scheme]}://{host}:{parts.port}"


class DaskExecutor(Executor):
    """``concurrent.futures`` over a Dask client, every call impure (never memoised).

    ``parallelism`` is the cluster's worker threads (0 while it has none); ``timeout`` bounds
    one batch's wait before ``veil.crypto.pool`` recomputes it locally.
    """

    def __init__(
        self, client: Any, *, address: str, task_timeout: float | None, owns_client: bool
    ) -> None:
        self._client = client
        # pure=False: Client.submit otherwise keys a task by its arguments and hands back a
        # finished result for a repeat, which for encryption would be repeated randomness.
        self._executor = client.get_executor(pure=False)
        self.address = address
        self.timeout = task_timeout
        self._owns_client = owns_client
        self._lock = threading.Lock()
        self._threads = 0
        self._threads_at = float("-inf")

    @property
    def parallelism(self) -> int:
        with self._lock:
            if time.monotonic() - self._threads_at > _PARALLELISM_TTL_SECONDS:
                try:
                    self._threads = sum(self._client.nthreads().values())
                except Exception:  # noqa: BLE001 -- unreachable now: no workers as far as we know
                    self._threads = 0
                self._threads_at = time.monotonic()
            return self._threads

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self._executor.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._executor.shutdown(wait=wait)
        if self._owns_client:
            self._client.close()

    def __repr__(self) -> str:
        return f"DaskExecutor({self.address})"


def connect(
    url: str,
    *,
    tls: TlsFiles | None = None,
    connect_timeout: float = 10.0,
    task_timeout: float | None = 600.0,
) -> DaskExecutor:
    """An executor on the Dask scheduler at ``url`` (``dask+tls://`` needs ``tls``).

    Raises ``ValueError`` for a malformed address or a TLS address without ``tls``, and
    :class:`ClusterUnavailable` when ``distributed`` is missing or the scheduler does not answer
    within ``connect_timeout`` seconds. Shut the executor down to close the client.
    """
    address = scheduler_address(url)
    secure = address.startswith("tls://")
    if not secure and not is_loopback_host(urlsplit(url).hostname or ""):
        raise ValueError(
            "plaintext dask:// is for a cluster on this host only; use dask+tls:// and certificates"
        )
    if secure and tls is None:
        raise ValueError("dask+tls:// needs the CA, certificate and key files (tls=TlsFiles(...))")
    try:
        from distributed import Client
        from distributed.security import Security
    except ImportError:
        raise ClusterUnavailable(
            "a Dask crypto executor needs `distributed`: pip install 'veil[dask]' ('veil-server[dask]' on a node)"
        ) from None
    security = None
    if secure:
        assert tls is not None
        security = Security(
            tls_ca_file=str(tls.ca),
            tls_client_cert=str(tls.cert),
            tls_client_key=str(tls.key),
            require_encryption=True,
        )
    try:
        client = Client(address, timeout=connect_timeout, security=security, set_as_default=False)
    except (OSError, TimeoutError) as e:
        raise ClusterUnavailable(
            f"the Dask scheduler at {address} did not answer within {connect_timeout:g} s "
            f"({type(e).__name__})"
        ) from None
    return DaskExecutor(client, address=address, task_timeout=task_timeout, owns_client=True)
