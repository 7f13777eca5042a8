"""Checking that a released result is the one the node logged: receipts, on the client.

What each party learns: the analyst learns, from the receipt of their own query, one log entry
(the release: query id, plan digest, result digest) and hashes of the rest of the log, never
another entry's content. An auditor shown the receipt learns the same, and can check it with
the node's public key alone (``veil receipt verify FILE --key NODE.pub``).

A receipt binds a result when: the checkpoint is signed by the node key; the release entry is
in the tree the checkpoint signs (inclusion proof); and the entry names this query, this plan
(SHA-256 of the canonical SQL) and this result (its digest, recomputed from the bytes
received). Anything else raises :class:`veil.IntegrityError`: do not trust the result.
"""

from __future__ import annotations

import hashlib

from .audit.merkle import VerificationError
from .audit.records import Checkpoint, Receipt
from .errors import IntegrityError
from .results import result_digest
from .v1 import audit_pb2, query_pb2


def checkpoint_from_proto(cp: audit_pb2.Checkpoint) -> Checkpoint:
    try:
        return Checkpoint.from_signed_bytes(cp.body, cp.signature)
    except (VerificationError, ValueError) as e:
        raise IntegrityError(f"the node sent a malformed checkpoint: {e}", reason="CHECKPOINT_INVALID") from None


def receipt_from_proto(r: audit_pb2.Receipt) -> Receipt:
    return Receipt(
        query_id=r.query, query_digest=bytes(r.query_digest), dataset_certificate_id=r.dataset_certificate_id,
        result_digest=bytes(r.result_digest), log_index=r.log_index, entry=bytes(r.entry),
        inclusion_proof=[bytes(h) for h in r.inclusion_proof], checkpoint=checkpoint_from_proto(r.checkpoint),
    )


def plan_digest(canonical_sql: str) -> str:
    """What the node logs as the query digest: SHA-256 (hex) of the canonical SQL."""
    return hashlib.sha256(canonical_sql.encode()).hexdigest()


def check_receipt(receipt: Receipt, node_key, *, query_id: str, result: query_pb2.QueryResult | None = None,
                  canonical_sql: str | None = None) -> None:
    """Raise :class:`IntegrityError` unless ``receipt`` proves the release of ``result``."""
    try:
        receipt.verify(node_key)
    except (VerificationError, ValueError) as e:
        raise IntegrityError(f"the receipt does not verify against the node key: {e}",
                             reason="RECEIPT_INVALID") from None
    if receipt.query_id != query_id.removeprefix("queries/"):
        raise IntegrityError("the receipt is for another query", reason="RECEIPT_MISMATCH")
    if result is not None:
        digest = result_digest(result)
        if result.result_digest != digest or receipt.result_digest.hex() != digest:
            raise IntegrityError("the result is not the one the receipt says was released",
                                 reason="RECEIPT_MISMATCH")
    if canonical_sql is not None and receipt.query_digest.hex() != plan_digest(canonical_sql):
        raise IntegrityError("the receipt names another plan than the query's canonical SQL",
                             reason="RECEIPT_MISMATCH")
