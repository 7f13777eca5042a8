"""Policy decisions on a validated plan: reject, queue for a person, or approve automatically.

Pure functions of (plan, dataset, principal, purpose): no I/O, no gRPC. Each rule that fires is
recorded by name so that the analyst, the owner and the audit log see *why*.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .catalog import Dataset
from ..config import Principal, Role
from ..errors import PermissionDenied, PolicyViolation, VeilError
from .plan import QueryPlan
from .domain import expected_groups


@dataclass(frozen=True)
class Rule:
    name: str
    message: str


@dataclass
class Decision:
    auto_approve: bool = True
    rejected: VeilError | None = None
    rules: list[Rule] = field(default_factory=list)
    approvals_required: int = 0  # owner approvals needed when not approved automatically
    expected_groups: int = 0

    @property
    def outcome(self) -> str:
        if self.rejected is not None:
            return "REJECT"
        return "AUTO_APPROVE" if self.auto_approve else "REVIEW"

    def review(self, rule: Rule, approvals: int) -> None:
        self.auto_approve = False
        self.approvals_required = max(self.approvals_required, approvals)
        self.rules.append(rule)

    def reject(self, err: VeilError) -> None:
        self.rejected = err
        self.auto_approve = False
        self.rules.append(Rule(err.reason, err.message))

    def raise_if_rejected(self) -> None:
        if self.rejected is not None:
            raise self.rejected

    def summary(self) -> str:
        if not self.rules:
            return "approved by policy: every rule passed"
        return "; ".join(f"{r.name}: {r.message}" for r in self.rules)


def evaluate(plan: QueryPlan, ds: Dataset, *, principal: Principal, purpose: str, governance=None) -> Decision:
    """``governance`` (a registry Governance) decides whether a person must approve."""
    d = Decision()
    if principal.role is not Role.ANALYST:
        d.reject(PermissionDenied("only analysts submit queries", reason="ROLE_NOT_ALLOWED"))
        return d
    if purpose not in ds.purposes:
        d.reject(PolicyViolation(
            f"purpose '{purpose}' is not allowed on datasets/{ds.name}; allowed: {', '.join(sorted(ds.purposes))}",
            reason="PURPOSE_NOT_ALLOWED",
            metadata={"dataset": ds.name, "purpose": purpose},
        ))
        return d
    groups = expected_groups(plan, ds)
    d.expected_groups = groups
    if groups > ds.max_groups:
        d.reject(PolicyViolation(
            f"the query would produce {groups} groups; datasets/{ds.name} allows at most {ds.max_groups}"
            " (group by fewer columns or use wider bins)",
            reason="TOO_MANY_GROUPS",
            metadata={"dataset": ds.name, "limit": str(ds.max_groups)},
        ))
        return d
    if governance is not None and not governance.auto_approve:
        d.review(Rule("MANUAL_APPROVAL_REQUIRED",
                      f"datasets/{ds.name} ({governance.classification}) needs {governance.approvals_required} "
                      "owner approval(s) for every query"), governance.approvals_required)
    return d
