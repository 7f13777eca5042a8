"""The node's audit log: append-only, Merkle-tree backed, with signed checkpoints.

``log`` holds :class:`AuditLog` (and what it guarantees against whom); ``store`` the SQLite
layout and the integrity check run at open; ``export`` the JSONL export; ``search`` filtering
and paging; ``events`` the node's vocabulary of entries; ``anchoring`` the check at start that
state and log vouch for each other; ``witnessing`` sending checkpoints to witnesses and bringing
their cosignatures into receipts. The auditor's side (canonical records, proofs, the offline verifier) is
``veil.audit`` in the client library.
"""

from .errors import AuditCorrupted, AuditUnavailable
from .export import export_raw
from .log import AuditLog
from .search import SearchPage

__all__ = ["AuditCorrupted", "AuditLog", "AuditUnavailable", "SearchPage", "export_raw"]
