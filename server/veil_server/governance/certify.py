"""Issuing data asset certificates, and noticing when the data no longer matches one.

The content fingerprint is the SHA-256 of the source file's bytes. Hashing a large file on every
query would be wasteful, so the registry keeps the file's (size, mtime, inode) stamp from the
last hash and re-hashes only when the stamp changes. A changed stamp with unchanged bytes is
re-stamped; changed bytes make the dataset refuse queries (DATA_CHANGED_SINCE_LISTING) until an
owner registers, and a reviewer lists, a new version. The operator can still swap bytes while
forging the stamp: the node operator is trusted with the data; this check catches re-pointing and
silent changes, not a hostile operator (whose actions the audit log records).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from datetime import datetime, timezone

from veil.audit.canonical import format_time
from veil.certificates import DatasetCertificate

from ..query.catalog import Dataset
from ..config import dataset_to_dict
from ..errors import FailedPrecondition, Unavailable
from ..access.node_key import NodeKey
from ..query.fingerprints import external_fingerprint, external_stamp
from ..query.sources import FILE_FORMATS
from .registry import DatasetRecord, Governance

CHUNK = 4 << 20


def file_stamp(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        raise Unavailable("the dataset's source file cannot be read; the owner must restore it",
                          reason="DATASET_UNAVAILABLE") from None
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def fingerprint(path: str) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
    except OSError:
        raise Unavailable("the dataset's source file cannot be read; the owner must restore it",
                          reason="DATASET_UNAVAILABLE") from None
    return "sha256:" + h.hexdigest()


def keyed_fingerprint(key, content: str) -> str:
    """What the certificate states of the content: HMAC-SHA256 of the content fingerprint under a
    secret derived from the node key. Two versions with the same bytes have the same value, so a
    buyer can compare versions; but anyone can read a certificate, and a plain SHA-256 of the file
    would let an analyst who knows every other row test guesses of the last one against it (a
    function of the data released outside every budget). The plain fingerprint stays in the
    node's state, where it detects changed data."""
    secret = key.derived_key(b"certificate-content")
    return "hmac-sha256:" + hmac.new(secret, content.encode("utf-8"), hashlib.sha256).hexdigest()


def source_stamp(ds: Dataset) -> str:
    """``file_stamp`` for a file; for PostgreSQL and Spark sources see veil_server.query.fingerprints."""
    return file_stamp(ds.source) if ds.format in FILE_FORMATS else external_stamp(ds)


def source_fingerprint(ds: Dataset) -> str:
    return fingerprint(ds.source) if ds.format in FILE_FORMATS else external_fingerprint(ds)


def schema_hash(ds: Dataset) -> str:
    """Hash of the schema and every rule on it (not the file path: moving a file is not a change)."""
    from veil.audit import canonical

    spec = dataset_to_dict(ds)
    spec.pop("source")
    spec.pop("connection", None)  # nor is moving the database
    if "consent" in spec:  # nor moving the consent table (its content is each release's snapshot)
        spec["consent"] = {k: v for k, v in spec["consent"].items() if k != "source"}
    return "sha256:" + hashlib.sha256(canonical.encode(_no_floats(spec))).hexdigest()


def _no_floats(value):
    """ε terms and dominance shares as their shortest decimal text (canonical JSON has no floats)."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {k: _no_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_floats(v) for v in value]
    return value


def issue(rec: DatasetRecord, *, key: NodeKey, node_id: str, row_count: int, content: str,
          quality: dict | None = None) -> DatasetCertificate:
    gov: Governance = rec.governance
    cert = DatasetCertificate(
        dataset=rec.name, version=rec.version, owner=",".join(rec.owners), schema_hash=schema_hash(rec.dataset),
        content_fingerprint=content, row_count=row_count, classification=gov.classification,
        rights=tuple(sorted(gov.rights)), purposes=tuple(sorted(rec.dataset.purposes)),
        issued_at=format_time(datetime.now(timezone.utc)), node_id=node_id, key_id=key.key_id,
        disclosure=disclosure_terms(rec.dataset), basis=rec.dataset.basis, quality=dict(quality or {}))
    return DatasetCertificate(**{**cert.__dict__, "signature": key.sign(cert.signed_bytes()).hex()})


def disclosure_terms(ds: Dataset) -> dict[str, str]:
    """The dataset's disclosure mode as the certificate states it (strings only)."""
    p = ds.disclosure
    if not p.dp:
        return {"mode": "exact", "reason": p.exact_reason}
    return {"mode": "dp", "mechanism": "discrete_laplace", "accounting": "pure_epsilon_basic_composition",
            "epsilon_per_query": f"{p.epsilon_per_query:g}", "max_epsilon_per_query": f"{p.max_epsilon_per_query:g}",
            "analyst_budget": f"{p.analyst_budget:g}", "dataset_budget": f"{p.dataset_budget:g}",
            "budget_per": p.per}


def check_unchanged(rec: DatasetRecord) -> str | None:
    """None if the data still matches the certificate, else a new stamp to store if only the
    stamp changed. Raises FailedPrecondition if the bytes changed."""
    if rec.fingerprint is None:
        return None
    stamp = source_stamp(rec.dataset)
    if stamp == rec.file_stamp:
        return None
    if source_fingerprint(rec.dataset) != rec.fingerprint:
        raise FailedPrecondition(
            f"the data of datasets/{rec.name} changed after it was listed; it cannot be queried until the owner "
            "registers a new version and a reviewer lists it", reason="DATA_CHANGED_SINCE_LISTING",
            metadata={"dataset": rec.name})
    return stamp
