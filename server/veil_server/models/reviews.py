"""Owner review of models (issue 18): on a dataset whose policy does not approve automatically,
a model is fitted only once the dataset's owners approved it.

What is reviewed is the model, not one release: (analyst, dataset, purpose, family, the design's
terms and response), on one version of the dataset (its certificate). The first release asked
for opens a review and is refused (``MODEL_REVIEW_PENDING``, naming the review); the owners see
the formula, terms, family, purpose and analyst (``ListModelReviews``), never a value; as many
distinct owners as the policy's ``approvals_required`` approve it, or one rejects it with a
reason the analyst is told (``MODEL_REVIEW_REJECTED``). Approved, the analyst fits it as often as
it asks (each release under every other rule: budgets, exact-mode history, the Newton path); a
new version of the dataset needs a new review. Pending reviews expire after ``REVIEW_TTL_US``; the
next request opens a new one. Every step is in the audit log (``admin.model_review.*``), written
in the transaction that makes it.

Whether a review is pending, approved or rejected depends on the owners, never on the data; the
review is opened only after every structural rule passed (grant, columns, rows, parameters), so
owners see only models that could run.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

from ..errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, PolicyViolation
from ..state.store import StateStore, now_us

REVIEW_TTL_US = 7 * 24 * 3600 * 1_000_000
STATES = ("pending", "approved", "rejected")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS model_reviews (
    id TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    principal TEXT NOT NULL,
    dataset TEXT NOT NULL,
    purpose TEXT NOT NULL,
    family TEXT NOT NULL,
    formula TEXT NOT NULL,
    terms TEXT NOT NULL,
    response TEXT NOT NULL,
    certificate TEXT NOT NULL,
    approvals_required INTEGER NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    expires_us INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS model_reviews_spec ON model_reviews (spec, certificate);
CREATE TABLE IF NOT EXISTS model_review_approvals (
    review_id TEXT NOT NULL,
    approver TEXT NOT NULL,
    reason TEXT NOT NULL,
    at_us INTEGER NOT NULL,
    PRIMARY KEY (review_id, approver)
)
"""


@dataclass(frozen=True)
class ModelReview:
    id: str
    principal: str
    dataset: str
    purpose: str
    family: str
    formula: str
    terms: tuple[str, ...]
    response: str
    certificate: str
    approvals_required: int
    state: str
    reason: str
    created_us: int
    expires_us: int
    approved_by: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"modelReviews/{self.id}"


def spec_digest(principal: str, dataset: str, purpose: str, family: str, terms: list[str], response: str) -> str:
    """What an approval covers: the same analyst, dataset, purpose, family and design (the terms
    the formula resolves to, so spacing or term order in the text does not matter)."""
    body = json.dumps([principal, dataset.lower(), purpose, family, sorted(terms), response.lower()])
    return hashlib.sha256(body.encode()).hexdigest()


class ModelReviews:
    def __init__(self, store: StateStore, audit: Any) -> None:
        self.store = store
        self.audit = audit
        store.ensure_schema(_SCHEMA)

    # -- the gate (ModelFitting.prepare) ------------------------------------------------------

    def admit(self, *, principal: str, dataset: str, purpose: str, family: str, formula: str, terms: list[str],
              response: str, certificate: str, approvals_required: int) -> None:
        """Returns if the owners approved this model on this version; otherwise refuses, opening
        a review if none is pending."""
        spec = spec_digest(principal, dataset, purpose, family, terms, response)
        now = now_us()
        with self.store.joined_tx() as db:
            row = db.execute("SELECT id, state, reason, expires_us FROM model_reviews WHERE spec=? AND certificate=? "
                             "ORDER BY created_us DESC LIMIT 1", (spec, certificate)).fetchone()
            if row is not None and row[1] == "approved":
                return
            if row is not None and row[1] == "rejected":
                raise PolicyViolation(f"the owners of datasets/{dataset} rejected this model (modelReviews/{row[0]}): "
                                      f"{row[2]}; change the model or ask the owners", reason="MODEL_REVIEW_REJECTED",
                                      metadata={"review": row[0], "dataset": dataset})
            if row is not None and row[3] > now:
                review = row[0]
            else:
                review = secrets.token_hex(8)
                self.audit.admin("model_review.open", principal, dataset=dataset, details={
                    "review": review, "purpose": purpose, "family": family, "formula": formula[:2000],
                    "terms": terms, "certificate": certificate})
                db.execute("INSERT INTO model_reviews VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                           (review, spec, principal, dataset.lower(), purpose, family, formula[:2000], json.dumps(terms),
                            response, certificate, approvals_required, "pending", "", now, now + REVIEW_TTL_US))
        raise FailedPrecondition(f"datasets/{dataset} needs its owners' approval for each model: review "
                                 f"modelReviews/{review} is pending. Ask an owner to approve it (veil model approve "
                                 f"{review}), then fit again", reason="MODEL_REVIEW_PENDING",
                                 metadata={"review": review, "dataset": dataset})

    # -- the owners ---------------------------------------------------------------------------

    def get(self, review: str) -> ModelReview | None:
        with self.store.reading() as db:
            row = db.execute("SELECT id, principal, dataset, purpose, family, formula, terms, response, certificate, "
                             "approvals_required, state, reason, created_us, expires_us FROM model_reviews WHERE id=?",
                             (review,)).fetchone()
            if row is None:
                return None
            approvers = tuple(r[0] for r in db.execute(
                "SELECT approver FROM model_review_approvals WHERE review_id=? ORDER BY at_us", (review,)).fetchall())
        return _review(row, approvers)

    def list(self, datasets: list[str] | None, state: str) -> list[ModelReview]:
        """Reviews on ``datasets`` (None: every dataset), newest first; ``state`` one of STATES or "all"."""
        if state not in (*STATES, "all"):
            raise InvalidArgument("state must be pending, approved, rejected or all", reason="INVALID_STATE")
        sql = ("SELECT id, principal, dataset, purpose, family, formula, terms, response, certificate, "
               "approvals_required, state, reason, created_us, expires_us FROM model_reviews")
        where, args = [], []
        if state != "all":
            where.append("state = ?")
            args.append(state)
        if state == "pending":
            where.append("expires_us > ?")
            args.append(now_us())
        if datasets is not None:
            if not datasets:
                return []
            where.append(f"dataset IN ({', '.join('?' * len(datasets))})")
            args += [d.lower() for d in datasets]
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self.store.reading() as db:
            rows = db.execute(sql + " ORDER BY created_us DESC LIMIT 1000", tuple(args)).fetchall()
        return [r for r in (self.get(row[0]) for row in rows) if r is not None]

    def decide(self, review: str, owner: str, *, approve: bool, reason: str,
               owns: Any) -> ModelReview:
        """One owner's approval or rejection. ``owns(dataset)``: whether ``owner`` owns it."""
        reason = reason.strip()
        if not approve and not reason:
            raise InvalidArgument("a rejection needs a reason: the analyst is told it", reason="REASON_REQUIRED")
        if len(reason) > 2000:
            raise InvalidArgument("the reason may be at most 2000 characters", reason="INVALID_REASON")
        with self.store.joined_tx() as db:
            current = self.get(review)
            if current is None or not owns(current.dataset):
                raise NotFound(f"no model review modelReviews/{review[:40]} on a dataset you own",
                               reason="MODEL_REVIEW_NOT_FOUND")
            if current.state != "pending" or current.expires_us <= now_us():
                raise FailedPrecondition(f"modelReviews/{review} is {current.state if current.state != 'pending' else 'expired'}; "
                                         "only a pending review is decided", reason="MODEL_REVIEW_DECIDED",
                                         metadata={"review": review})
            if owner == current.principal:
                raise PermissionDenied("an owner may not approve or reject its own model", reason="SELF_APPROVAL")
            if approve:
                if owner in current.approved_by:
                    raise AlreadyExists("you have already approved this model; another owner must approve it",
                                        reason="ALREADY_APPROVED")
                self.audit.admin("model_review.approve", owner, dataset=current.dataset,
                                 details={"review": review, "reason": reason})
                db.execute("INSERT INTO model_review_approvals VALUES (?,?,?,?)", (review, owner, reason, now_us()))
                if len(current.approved_by) + 1 >= current.approvals_required:
                    db.execute("UPDATE model_reviews SET state='approved' WHERE id=?", (review,))
            else:
                self.audit.admin("model_review.reject", owner, dataset=current.dataset,
                                 details={"review": review, "reason": reason})
                db.execute("UPDATE model_reviews SET state='rejected', reason=? WHERE id=?", (reason, review))
        out = self.get(review)
        assert out is not None
        return out


def _review(row: tuple, approvers: tuple[str, ...]) -> ModelReview:
    return ModelReview(row[0], row[1], row[2], row[3], row[4], row[5], tuple(json.loads(row[6])), row[7], row[8],
                       int(row[9]), row[10], row[11], int(row[12]), int(row[13]), approvers)
