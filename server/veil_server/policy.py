"""Policy decisions on a validated plan: reject, queue for a person, or approve automatically.

Pure functions of (plan, dataset, principal, purpose): no I/O, no gRPC. Each rule that fires is
recorded by name so that the analyst, the owner and the audit log see *why*.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .catalog import Dataset
from .config import Principal, Role
from .errors import PermissionDenied, PolicyViolation, VeilError
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


def evaluate(plan: QueryPlan, ds: Dataset, *, principal: Principal, purpose: str) -> Decision:
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
    if groups > ds.max_groups:
        d.reject(PolicyViolation(
            f"the query would produce {groups} groups; datasets/{ds.name} allows at most {ds.max_groups}"
            " (group by fewer columns or use wider bins)",
            reason="TOO_MANY_GROUPS",
            metadata={"dataset": ds.name, "limit": str(ds.max_groups)},
        ))
        return d
    return d
