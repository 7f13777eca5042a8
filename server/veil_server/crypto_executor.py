"""Where the node's Paillier work runs: ``[crypto]`` in the node's config.

```toml
[crypto]
executor = "local"                             # default: a process pool over this node's cores
# executor = "dask+tls://crypto-head.internal:8786"   # a Dask cluster inside this domain
# tls_ca = "dask/ca.pem"                       # mutual TLS with the scheduler (dask+tls:// only)
# tls_cert = "dask/node.pem"
# tls_key = "dask/node.key"
# connect_timeout_seconds = 10                 # at start-up
# task_timeout_seconds = 600                   # one batch; then it is recomputed locally
# obfuscation = "djn"                          # or "full": the randomness of every ciphertext made here
# table_memory = "auto"                        # or "512MiB", "2GiB", a number of bytes, 0 for none
```

``VEIL_CRYPTO_EXECUTOR`` overrides ``executor``, ``VEIL_CRYPTO_OBFUSCATION`` ``obfuscation``,
``VEIL_CRYPTO_TABLE_MEMORY`` ``table_memory`` (the budget of the analyst keys' fixed-base tables in
this process; "auto" derives it from the memory limit: ``veil.crypto.obfuscation``);
``VEIL_CRYPTO_WORKERS`` sizes the local pool.

``obfuscation`` chooses the randomness of every ciphertext the node makes under an analyst's key
(results, encrypted-input sums, federation contributions and combinations; see
``veil.crypto.obfuscation``): ``"djn"``, the default, takes a short exponent from a precomputed
fixed-base table (one more assumption than Paillier's, and a table read at positions set by the
secret exponent); ``"full"`` takes r^n for a uniform r (Paillier's own, DCRA only, and an
exponentiation whose sequence of operations is set by the public n alone), about ten times the
cost. Either way the node makes the next result's randomness while idle, so a returning analyst
pays for it mostly off the request path.
Plaintext ``dask://`` is accepted only in development mode and on loopback (a Dask scheduler runs
any code its clients send, and the batches carry released cells and raw column values in clear:
``veil.crypto.pool`` lists what crosses).

Start-up fails with a ``ConfigError`` naming the address when the scheduler does not answer:
a node told to use a cluster does not quietly run without it. Once running, a batch the cluster
fails is recomputed on the local pool with a warning (the same answer, later), and the next batch
tries the cluster again. Decryption never goes there: the node holds no private key.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from veil.crypto.cluster import TlsFiles, scheduler_address
from veil.crypto.obfuscation import OBFUSCATIONS

LOCAL = "local"


@dataclass(frozen=True)
class CryptoSettings:
    executor: str = LOCAL  # "local" or a dask:// / dask+tls:// URL
    tls: TlsFiles | None = None
    connect_timeout_seconds: float = 10.0
    task_timeout_seconds: float = 600.0
    # Randomness of every ciphertext the node makes under an analyst's key (veil.crypto.obfuscation):
    # "djn" (default: short exponent from a fixed-base table) or "full" (r^n, DCRA only, ~10x the
    # cost, and no table indexed by secret digits).
    obfuscation: str = "djn"
    # Bytes of fixed-base tables kept for analyst keys (veil.crypto.obfuscation); None: "auto".
    table_memory: int | None = None


_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "kb": 10**3, "mb": 10**6, "gb": 10**9}


def parse_bytes(value: Any, where: str, error: type[Exception]) -> int | None:
    """ "auto" -> None; an integer, or a number with a unit (KiB, MiB, GiB, kB, MB, GB) -> bytes."""
    if isinstance(value, bool):
        raise error(f'{where} must be "auto" or a size such as "512MiB" or "2GiB"')
    if isinstance(value, int):
        n = value
    else:
        text = str(value).strip().lower().replace(" ", "")
        if text == "auto":
            return None
        m = re.fullmatch(r"(\d+(?:\.\d+)?)([a-z]*)", text)
        if not m or m.group(2) not in _UNITS:
            raise error(f'{where} must be "auto" or a size such as "512MiB" or "2GiB", not {value!r}')
        n = int(float(m.group(1)) * _UNITS[m.group(2)])
    if not 0 <= n <= 1 << 42:
        raise error(f"{where} must be between 0 and 4 TiB")
    return n


def parse_crypto(raw: Mapping[str, Any] | None, *, env: Mapping[str, str], base_dir: Path, dev_mode: bool,
                 error: type[Exception]) -> CryptoSettings:
    section = dict(raw or {})
    if env.get("VEIL_CRYPTO_EXECUTOR"):
        section["executor"] = env["VEIL_CRYPTO_EXECUTOR"]
    if env.get("VEIL_CRYPTO_OBFUSCATION"):
        section["obfuscation"] = env["VEIL_CRYPTO_OBFUSCATION"]
    if env.get("VEIL_CRYPTO_TABLE_MEMORY"):
        section["table_memory"] = env["VEIL_CRYPTO_TABLE_MEMORY"]
    table_memory = parse_bytes(section.get("table_memory", "auto"), "crypto.table_memory", error)
    obfuscation = str(section.get("obfuscation", "djn")).strip().lower()
    if obfuscation not in OBFUSCATIONS:
        raise error(f'crypto.obfuscation must be "djn" (fixed-base table, the default) or "full" '
                    f'(full-width r^n: no short-exponent assumption, no secret-indexed table; about 10x '
                    f'slower), not {section.get("obfuscation")!r}')
    executor = str(section.get("executor", LOCAL)).strip()
    connect_timeout = _seconds(section.get("connect_timeout_seconds", 10), "crypto.connect_timeout_seconds", error)
    task_timeout = _seconds(section.get("task_timeout_seconds", 600), "crypto.task_timeout_seconds", error)
    files = {k: section.get(k) for k in ("tls_ca", "tls_cert", "tls_key")}
    if executor == LOCAL:
        return CryptoSettings(LOCAL, None, connect_timeout, task_timeout, obfuscation, table_memory)
    try:
        address = scheduler_address(executor)
    except ValueError as e:
        raise error(f'crypto.executor must be "local" or dask+tls://host:port: {e}') from None
    tls = None
    if address.startswith("tls://"):
        missing = [k for k, v in files.items() if not v]
        if missing:
            raise error(f"crypto.executor {executor} needs crypto.{', crypto.'.join(missing)} "
                        "(PEM files for mutual TLS with the scheduler)")
        paths = {k: _path(v, base_dir) for k, v in files.items()}
        for k, p in paths.items():
            if not p.is_file():
                raise error(f"crypto.{k}: {p} does not exist")
        tls = TlsFiles(paths["tls_ca"], paths["tls_cert"], paths["tls_key"])
    elif not (dev_mode and _loopback(address)):
        raise error("crypto.executor: plaintext dask:// is accepted only in development mode on loopback; "
                    "use dask+tls://host:port with crypto.tls_ca, crypto.tls_cert and crypto.tls_key")
    elif any(files.values()):
        raise error("crypto.tls_* apply to a dask+tls:// executor only")
    return CryptoSettings(executor, tls, connect_timeout, task_timeout, obfuscation, table_memory)


@contextlib.contextmanager
def crypto_executor(settings: CryptoSettings | None, *, error: type[Exception]) -> Iterator[Any]:
    """Install the configured executor for this process's public-key work while the node runs;
    yields it (None for the local pool). Raises ``error`` if the cluster cannot be reached."""
    if settings is None or settings.executor == LOCAL:
        yield None
        return
    from veil.crypto import pool
    from veil.crypto.cluster import ClusterUnavailable, connect

    try:
        executor = connect(settings.executor, tls=settings.tls, connect_timeout=settings.connect_timeout_seconds,
                           task_timeout=settings.task_timeout_seconds)
    except ClusterUnavailable as e:
        raise error(f"crypto.executor: {e}; start the cluster, or set executor = \"local\"") from None
    try:
        with pool.executor_scope(executor):
            yield executor
    finally:
        executor.shutdown(wait=False)


def _loopback(address: str) -> bool:
    from veil.crypto.cluster import is_loopback_host

    host = address.split("://", 1)[1].rsplit(":", 1)[0].strip("[]")
    return is_loopback_host(host)


def _seconds(value: Any, where: str, error: type[Exception]) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise error(f"{where} must be a number of seconds") from None
    if not 0 < v <= 86400:
        raise error(f"{where} must be between 0 and 86400 seconds")
    return v


def _path(value: Any, base_dir: Path) -> Path:
    p = Path(str(value)).expanduser()
    return p if p.is_absolute() else (base_dir / p).resolve()
