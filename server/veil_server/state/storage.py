"""Is the state directory able to take new work? Refuse early, and say why.

Threat: a full disk (or a state directory remounted read-only) halfway through a query. The
audit log and the state store already fail closed (an action whose entry or transition cannot
be made durable does not happen), but an analyst would then see a query accepted and stuck, or
a bare storage error. So new work (submissions and other state changes) is refused *before* it
starts, with UNAVAILABLE and a reason the caller can act on, while there is still headroom for
the work already acknowledged to finish:

* ``STORAGE_LOW``: less than ``[limits] min_free_bytes`` free in ``state_dir``;
* ``STATE_DIR_UNWRITABLE``: a probe file cannot be written and fsynced there.

Free space is read before every call that starts work (one ``statvfs``, no cache: refusal and
recovery follow the disk at once); the write probe, an fsync, is cached for ``ttl`` seconds, so
under load it costs one small fsync per second, not one per call. ``storage_error`` maps a storage exception that still escapes (SQLite's "database or
disk is full", ENOSPC, EROFS, EIO) to the same UNAVAILABLE status instead of INTERNAL.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
import time
from pathlib import Path

from ..errors import Unavailable

PROBE = ".veil-write-probe"
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EIO, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM}
_SQLITE_STORAGE = ("disk is full", "readonly", "read-only", "disk i/o error", "unable to open", "file is not a database")


def storage_error(exc: BaseException) -> Unavailable | None:
    """The UNAVAILABLE status for an exception caused by the state directory, else None."""
    if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
        return Unavailable("the node cannot write its state right now; nothing was changed, retry later",
                           reason="STORAGE_UNAVAILABLE", private=str(exc))
    if isinstance(exc, sqlite3.Error) and any(s in str(exc).lower() for s in _SQLITE_STORAGE):
        return Unavailable("the node cannot write its state right now; nothing was changed, retry later",
                           reason="STORAGE_UNAVAILABLE", private=str(exc))
    if _postgres_unavailable(exc):
        # The shared state database (replicas) is down, unreachable or a lock wait timed out.
        return Unavailable("the node's state database is unavailable right now; nothing was changed, retry later",
                           reason="STATE_DATABASE_UNAVAILABLE", private=type(exc).__name__)
    return None


def _postgres_unavailable(exc: BaseException) -> bool:
    try:
        import psycopg
        from psycopg import errors as pg
    except ImportError:  # a node without the postgres extra: no psycopg error can occur
        return False
    return isinstance(exc, (psycopg.OperationalError, pg.LockNotAvailable, pg.QueryCanceled,
                            pg.AdminShutdown, pg.CannotConnectNow))


class StorageMonitor:
    def __init__(self, state_dir: Path, min_free_bytes: int, *, ttl: float = 1.0) -> None:
        self.state_dir = Path(state_dir)
        self.min_free = min_free_bytes
        self.ttl = ttl
        self._lock = threading.Lock()
        self._checked = -1e9
        self._problem: Unavailable | None = None

    def check(self) -> None:
        """Raise the current refusal, if any. Free space is read on every call, right before the
        write transaction the call leads to (one ``statvfs``, microseconds: no lag after the disk
        fills or frees); the write probe (an fsync) is cached ``ttl`` seconds."""
        problem = self._space()
        if problem is None:
            with self._lock:
                now = time.monotonic()
                if now - self._checked >= self.ttl:
                    self._problem = self._probe()
                    self._checked = now
                problem = self._problem
        if problem is not None:
            raise problem

    def _space(self) -> Unavailable | None:
        try:
            st = os.statvfs(self.state_dir)
            free = st.f_bavail * st.f_frsize
        except OSError as e:
            return Unavailable("the node's state directory is unavailable; new work is refused until it returns",
                               reason="STATE_DIR_UNWRITABLE", private=str(e))
        if free < self.min_free:
            return Unavailable("the node is low on disk space; new work is refused until space is freed",
                               reason="STORAGE_LOW", metadata={"free_bytes": str(free)})
        return None

    def _probe(self) -> Unavailable | None:
        problem = self._space()
        if problem is not None:
            return problem
        path = self.state_dir / f"{PROBE}.{os.getpid()}"  # replicas may share the directory
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"veil" * 1024)  # a real block, so a full disk shows even above min_free
                os.fsync(fd)
            finally:
                os.close(fd)
            os.unlink(path)
        except OSError as e:
            try:
                os.unlink(path)
            except OSError:
                pass
            return Unavailable("the node cannot write to its state directory; new work is refused until it can",
                               reason="STATE_DIR_UNWRITABLE", private=str(e))
        return None
