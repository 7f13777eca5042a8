"""The audit log as an auditor sees it: canonical records, Merkle proofs, offline verification.

Nothing here talks to a node or imports the server: an auditor verifies an export, a receipt or
a pair of checkpoints with the node's public key alone.

    from veil.audit import verify_export
    report = verify_export("audit.jsonl", node_public_key_pem, old_checkpoint=kept)
    if not report.ok:
        print(report.index, report.message)
"""

from .canonical import NonCanonical
from .merkle import EMPTY_ROOT, CompactRange, ProofError, VerificationError
from .records import (
    Checkpoint,
    Entry,
    Receipt,
    SignatureError,
    decode_entry,
    encode_entry,
    key_id,
    load_public_key,
    release_details,
)
from .verify import (
    Problem,
    VerifyReport,
    verify_checkpoint_consistency,
    verify_export,
    verify_receipt,
)

__all__ = [
    "EMPTY_ROOT", "CompactRange", "Checkpoint", "Entry", "NonCanonical", "Problem", "ProofError",
    "Receipt", "SignatureError", "VerificationError", "VerifyReport", "decode_entry",
    "encode_entry", "key_id", "load_public_key", "release_details",
    "verify_checkpoint_consistency", "verify_export", "verify_receipt",
]
