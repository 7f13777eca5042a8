"""Federation events in the node's own audit log (``node.audit``, one log per node and domain).

Every exchange lands in the log of each node it touches: a member logs each step it is asked to
perform (with digests of the signed request and of its signed answer), the coordinator logs each
answer it receives, the analyst's request, the release to the analyst and any failure. Entries
use the log's existing kinds, with ``details.federation`` saying which federated step it was:

- ``query.submit``   the analyst's request at the coordinator; a member's PREPARE request
- ``query.decision`` a member's policy decision on its part (approve or reject, with the rules)
- ``query.execute``  one exchange (step, peer, direction, SHA-256 of the signed envelopes, size)
- ``query.release``  the coordinator's release of the combined, encrypted result to the analyst
- ``query.fail``     a failure, naming the member that failed when one did

Like the rest of the log, entries never hold a value: digests and sizes only, no count, no
share, no ciphertext. Ordering follows ``audit.events``: entries for an action are written
before the action (an answer is not sent, nor a result released, without its entry), so an
unwritable log stops the step (fail closed); failures are logged best-effort.
"""

from __future__ import annotations

import hashlib
import logging
import unicodedata
from typing import Any

from veil.audit.records import release_details

from ..audit.errors import AuditUnavailable
from ..errors import VeilError

log = logging.getLogger("veil.federation.audit")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cap(text: str, limit: int = 200) -> str:
    """Canonical JSON takes NFC strings only, and peers and analysts send anything."""
    return unicodedata.normalize("NFC", text.encode("utf-8", "replace").decode("utf-8"))[:limit]


class FederationAudit:
    def __init__(self, trail: Any) -> None:
        self._trail = trail  # veil_server.audit.events.AuditTrail

    def _append(self, kind: str, principal: str, outcome: str, *, dataset: str, query: str,
                details: dict[str, Any]) -> None:
        # AuditUnavailable (UNAVAILABLE, AUDIT_UNAVAILABLE) propagates: the step is not performed.
        self._trail.log.append(kind, principal=_cap(principal), outcome=outcome, dataset=_cap(dataset) or None,
                               query=_cap(query) or None, details=details)

    def _best_effort(self, *args, **kwargs) -> None:
        try:
            self._append(*args, **kwargs)
        except VeilError as e:
            log.error("could not log a federation failure: %s", e.private)

    def submitted(self, principal: str, query: str, dataset: str, *, role: str, coordinator: str, protocol: str,
                  participants: list[str], compute: list[str], purpose: str, sql: str, key_fingerprint: str) -> None:
        self._append("query.submit", principal, "ok", dataset=dataset, query=query, details={
            "federation": {"role": role, "coordinator": coordinator, "protocol": protocol,
                           "participants": participants, "compute_parties": compute},
            "purpose": _cap(purpose), "sql_sha256": digest(sql.encode("utf-8", "replace")),
            "sql": _cap(sql, 8000), "key_fingerprint": key_fingerprint})

    def refused_request(self, principal: str, err: VeilError, *, sql: str, purpose: str) -> None:
        """The coordinator refused the analyst's request itself (bad request, SQL or policy)."""
        outcome = "error" if err.code.name in ("UNAVAILABLE", "INTERNAL", "UNKNOWN") else "denied"
        self._best_effort("query.submit", principal, outcome, dataset="", query="", details={
            "federation": {"role": "coordinator"}, "reason": err.reason, "code": err.code.name,
            "purpose": _cap(purpose), "sql_sha256": digest(sql.encode("utf-8", "replace")),
            "sql": _cap(sql, 8000)})

    def decided(self, principal: str, query: str, dataset: str, *, canonical_sql: str, plan_digest: str,
                summary: str) -> None:
        self._append("query.decision", principal, "ok", dataset=dataset, query=query, details={
            "federation": {"step": "prepare"}, "decision": "auto_approve", "summary": _cap(summary, 2000),
            "canonical_sql": _cap(canonical_sql, 8000), "plan_digest": plan_digest})

    def refused(self, principal: str, query: str, dataset: str, err: VeilError, *, step: str, peer: str) -> None:
        kind = "query.decision" if step == "prepare" else "query.fail"
        self._best_effort(kind, principal, "denied" if step == "prepare" else "error", dataset=dataset, query=query,
                          details={"federation": {"step": step, "peer": _cap(peer)}, "decision": "reject",
                                   "reason": err.reason, "code": err.code.name, "message": _cap(err.message, 1000)})

    def exchange(self, principal: str, query: str, dataset: str, *, step: str, peer: str, direction: str,
                 request: bytes, response: bytes, consent_snapshot: str = "") -> None:
        self._append("query.execute", principal, "ok", dataset=dataset, query=query, details={
            "federation": {"step": step, "peer": _cap(peer), "direction": direction},
            "request_sha256": digest(request), "response_sha256": digest(response),
            "request_bytes": len(request), "response_bytes": len(response),
            **({"consent_snapshot": consent_snapshot} if consent_snapshot else {})})

    def released(self, principal: str, query: str, dataset: str, *, plan_digest: str, result_digest: str,
                 key_fingerprint: str, ciphertexts: int, released: int, suppressed: int, model: bool = False) -> None:
        details = release_details(plan_digest, "", result_digest, key_fingerprint=key_fingerprint,
                                  ciphertexts=ciphertexts)
        details |= {"federation": {"step": "release_to_analyst", **({"model": True} if model else {})},
                    "groups_released": released, "groups_suppressed": suppressed}
        self._append("query.release", principal, "ok", dataset=dataset, query=query, details=details)
        try:
            self._trail.log.checkpoint()
        except AuditUnavailable as e:  # the entry is durable; a checkpoint can follow later
            log.error("could not checkpoint after a federated release: %s", e.private)

    def failed(self, principal: str, query: str, dataset: str, *, reason: str, node: str = "") -> None:
        self._best_effort("query.fail", principal, "error", dataset=dataset, query=query, details={
            "federation": {"failed_node": _cap(node)}, "reason": reason})
