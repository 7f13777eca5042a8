"""Writing the JSONL export that ``veil.audit.verify.verify_export`` reads (format: see there).

``export_raw`` exports a log file as it lies on disk, without the checks ``AuditLog`` runs at
open and without signing anything: for handing a log that refuses to start to an auditor, who
then learns from the verifier which entry is bad.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, IO

from veil.audit.records import Checkpoint, key_id
from veil.audit.verify import EXPORT_FORMAT, EXPORT_VERSION

from . import store

BATCH = 1000


def header(node_id: str | None, public_key: bytes | None, tree_size: int) -> bytes:
    obj = {
        "format": EXPORT_FORMAT, "version": EXPORT_VERSION, "node_id": node_id,
        "public_key": base64.b64encode(public_key).decode() if public_key else None,
        "key_id": key_id(public_key) if public_key else None, "tree_size": tree_size,
    }
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _line(cp: Checkpoint) -> bytes:
    return json.dumps(cp.to_json(), sort_keys=True, separators=(",", ":")).encode()


def write(
    out: IO[bytes],
    head: bytes,
    batches: Iterable[Sequence[tuple[int, bytes]]],
    checkpoints: Sequence[Checkpoint],
) -> None:
    """Header, then entries, each checkpoint right after the entry that completes its tree."""
    by_size: dict[int, list[Checkpoint]] = {}
    for cp in checkpoints:
        by_size.setdefault(cp.tree_size, []).append(cp)
    out.write(head + b"\n")
    for cp in by_size.pop(0, []):
        out.write(_line(cp) + b"\n")
    written = 0
    for rows in batches:
        for _, body in rows:
            out.write(bytes(body) + b"\n")
            written += 1
            for cp in by_size.pop(written, []):
                out.write(_line(cp) + b"\n")
    for size in sorted(by_size):  # beyond the entries written: the verifier will say so
        for cp in by_size[size]:
            out.write(_line(cp) + b"\n")
    out.flush()


def export_raw(path: Path | Any, out: IO[bytes]) -> None:
    """Export the log at ``path`` (a SQLite file, or an open state database: PostgreSQL)
    exactly as stored (read-only, nothing verified)."""
    conn = path if hasattr(path, "execute") else store.connect(Path(path), read_only=True)
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        pub = base64.b64decode(meta["public_key"]) if "public_key" in meta else None
        count = conn.execute("SELECT COUNT(*) FROM entry").fetchone()[0]
        cps = []
        for size, body, sig in conn.execute("SELECT tree_size, body, signature FROM checkpoint"):
            try:
                cps.append(Checkpoint.from_signed_bytes(bytes(body), bytes(sig)))
            except ValueError:
                continue  # unreadable: leaving it out is what the verifier would report anyway
        cur = conn.execute("SELECT idx, body FROM entry ORDER BY idx")

        def batches() -> Iterable[list[tuple[int, bytes]]]:
            while rows := cur.fetchmany(BATCH):
                yield rows

        write(out, header(meta.get("node_id"), pub, count), batches(), cps)
    finally:
        conn.close()
