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
from collections.abc import Sequence

from .audit.records import Checkpoint, Receipt
from .audit.witness import VerifierKey, WitnessError, check_witnessed
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
        witness_note=bytes(r.witness_note),
    )


def plan_digest(canonical_sql: str) -> str:
    """What the node logs as the query digest: SHA-256 (hex) of the canonical SQL."""
    return hashlib.sha256(canonical_sql.encode()).hexdigest()


def check_receipt(receipt: Receipt, node_key, *, query_id: str, result: query_pb2.QueryResult | None = None,
                  canonical_sql: str | None = None, witnesses: Sequence[VerifierKey] = (),
                  quorum: int = 0) -> None:
    """Raise :class:`IntegrityError` unless ``receipt`` proves the release of ``result``, and
    (``quorum`` > 0) its checkpoint is cosigned by at least ``quorum`` of ``witnesses``."""
    try:
        check_witnessed(receipt.witness_note, receipt.checkpoint, list(witnesses), quorum)
    except WitnessError as e:
        raise IntegrityError(f"the receipt's checkpoint is not witnessed as required: {e}",
                             reason="WITNESS_QUORUM_NOT_MET") from None
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
        # The consent snapshot is outside the result digest; the logged entry binds it.
        if result.consent_snapshot != receipt.consent_snapshot:
            raise IntegrityError("the result's consent snapshot is not the one its release entry logged",
                                 reason="RECEIPT_MISMATCH")
    if canonical_sql is not None and receipt.query_digest.hex() != plan_digest(canonical_sql):
        raise IntegrityError("the receipt names another plan than the query's canonical SQL",
                             reason="RECEIPT_MISMATCH")


def witness_policy(witnesses: Sequence[str], quorum: int | None) -> tuple[list[VerifierKey], int]:
    """Pinned witness keys and the quorum a receipt must meet (``VEIL_WITNESSES``,
    ``VEIL_WITNESS_QUORUM`` by default; the quorum defaults to every pinned witness)."""
    import os

    texts = list(witnesses) or [w for w in os.environ.get("VEIL_WITNESSES", "").split(",") if w.strip()]
    try:
        keys = [VerifierKey.parse(t) for t in texts]
    except WitnessError as e:
        raise ValueError(f"witness key: {e}") from None
    if quorum is None:
        env = os.environ.get("VEIL_WITNESS_QUORUM", "")
        quorum = int(env) if env.strip() else len(keys)
    if not 0 <= quorum <= len(keys):
        raise ValueError(f"witness quorum {quorum} must be between 0 and the {len(keys)} pinned witnesses")
    return keys, quorum
