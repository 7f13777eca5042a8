"""How the node notices that a dataset's rows changed: a cheap stamp and a content fingerprint.

They feed the data asset certificate (:mod:`veil_server.governance.certify`): for files they are
the (size, mtime, inode) stamp and the SHA-256 of the bytes; for PostgreSQL they come from the
database itself (see :mod:`.engines.postgres`); for a Spark location on a cluster's storage the
certificate binds the location only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import Unavailable
from .catalog import Dataset
from .sources import POSTGRES, SPARK


def is_remote(ds: Dataset) -> bool:
    return ds.format == SPARK and "://" in ds.source and not ds.source.startswith("file://")


def _files(path: str) -> list[Path]:
    p = Path(path.removeprefix("file://"))
    if p.is_dir():  # a Parquet dataset written by Spark is a directory of part files
        return sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith((".", "_")))
    return [p]


def external_stamp(ds: Dataset) -> str:
    """A cheap value that changes when the source's content may have changed."""
    if ds.format == POSTGRES:
        from .engines.postgres import content_stamp

        return content_stamp(ds)
    if is_remote(ds):
        return "uri:" + ds.source  # the cluster's storage is not checked from the node
    parts = []
    for f in _files(ds.source):
        try:
            st = f.stat()
        except OSError:
            raise _unreadable() from None
        parts.append(f"{f}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}")
    return "sha256:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()


def external_fingerprint(ds: Dataset) -> str:
    """A digest of the source's content (see each branch for what it binds)."""
    if ds.format == POSTGRES:
        from .engines.postgres import content_fingerprint

        return content_fingerprint(ds)
    if is_remote(ds):
        # Not the content: the node cannot read the cluster's storage cheaply. The certificate
        # then binds the location only, and says so.
        return "location-sha256:" + hashlib.sha256(ds.source.encode()).hexdigest()
    h = hashlib.sha256()
    for f in _files(ds.source):
        h.update(f.name.encode() + b"\0")
        try:
            with open(f, "rb") as fh:
                while chunk := fh.read(4 << 20):
                    h.update(chunk)
        except OSError:
            raise _unreadable() from None
    return "sha256:" + h.hexdigest()


def _unreadable() -> Unavailable:
    return Unavailable("the dataset's source cannot be read; the owner must restore it", reason="DATASET_UNAVAILABLE")
