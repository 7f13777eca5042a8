"""gRPC adapters for governance: datasets, certificates, grants, and review of queries.

Thin, like every servicer: translate, call the node's steward, translate back. Roles are checked
by the interceptor (METHOD_ROLES); ownership and separation of duties by the steward. Every
change is written to the audit log before it is made.
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from veil.certificates import DatasetCertificate
from veil.v1 import governance_pb2, governance_pb2_grpc, query_pb2

from ..access.auth import current_principal
from ..config import ConfigError, Role, dataset_from_dict
from ..errors import InvalidArgument
from ..governance.grants import Grant
from ..governance.quality import quality_proto
from ..governance.registry import DatasetRecord, Governance
from ..node import Node
from .query_service import _CONTROL, _TYPE, query_proto

_CONTROL_NAME = {v: k.value for k, v in _CONTROL.items()}
_TYPE_NAME = {v: k.value for k, v in _TYPE.items()}


def _ts(us: int | None) -> Timestamp | None:
    if not us:
        return None
    t = Timestamp()
    t.FromMicroseconds(us)
    return t


def _us(ts: Timestamp) -> int:
    return ts.ToMicroseconds()


def spec_to_dict(spec: governance_pb2.DatasetSpec) -> dict:
    cols = []
    for c in spec.columns:
        col = {"name": c.name, "type": _TYPE_NAME.get(c.type, ""), "description": c.description,
               "controls": [_CONTROL_NAME.get(x, "") for x in c.controls] or ["hidden"], "scale": c.scale}
        if c.categories:
            col["categories"] = list(c.categories)
        if c.range_low or c.range_high:
            col["range"] = [c.range_low, c.range_high]
        if c.bin_width:
            col["bin_width"] = c.bin_width
        cols.append(col)
    d = {"name": spec.name, "source": spec.source, "description": spec.description, "purposes": list(spec.purposes),
         "columns": cols}
    for key in ("format", "min_group_size", "max_groups", "max_rows", "basis", "freshness_column"):
        value = getattr(spec, key)
        if value:
            d[key] = value
    if spec.HasField("consent"):
        c = spec.consent
        d["consent"] = {"source": c.source, "subject_column": c.subject_column,
                        **({"format": c.format} if c.format else {}), **({"columns": dict(c.columns)} if c.columns else {})}
    return d


def spec_from_record(rec: DatasetRecord) -> governance_pb2.DatasetSpec:
    ds = rec.dataset
    out = governance_pb2.DatasetSpec(
        name=ds.name, source=ds.source, format=ds.format, description=ds.description, purposes=sorted(ds.purposes),
        min_group_size=ds.min_group_size, max_groups=ds.max_groups, max_rows=ds.max_rows,
        classification=rec.governance.classification, rights=list(rec.governance.rights),
        auto_approve=rec.governance.auto_approve, approvals_required=rec.governance.approvals_required,
        owners=list(rec.owners), basis=ds.basis, freshness_column=ds.freshness_column)
    if ds.consent is not None:
        out.consent.CopyFrom(governance_pb2.ConsentSourceSpec(
            source=ds.consent.source, format=ds.consent.format if ds.consent.format != "postgres" else "",
            subject_column=ds.consent.subject_column, columns=ds.consent.to_dict()["columns"]))
    for c in ds.columns:
        col = out.columns.add(name=c.name, type=_TYPE[c.type], controls=sorted(_CONTROL[x] for x in c.controls),
                              description=c.description, categories=[str(x) for x in c.categories], scale=c.scale,
                              bin_width=str(c.bin_width) if c.bin_width is not None else "")
        if c.value_range is not None:
            col.range_low, col.range_high = (str(v) for v in c.value_range)
    return out


def disclosure_proto(rec: DatasetRecord) -> governance_pb2.DisclosurePolicy:
    d = rec.dataset.disclosure
    if not d.dp:
        return governance_pb2.DisclosurePolicy(mode=d.mode, exact_reason=d.exact_reason)
    return governance_pb2.DisclosurePolicy(
        mode=d.mode, epsilon_per_query=d.epsilon_per_query, max_epsilon_per_query=d.max_epsilon_per_query,
        analyst_budget=d.analyst_budget, dataset_budget=d.dataset_budget, budget_per=d.per)


def version_proto(rec: DatasetRecord, profile: dict | None = None) -> governance_pb2.DatasetVersion:
    """``profile``: the version's stored quality profile (the listing queue shows it)."""
    cert_id = DatasetCertificate.from_json(rec.certificate).certificate_id if rec.certificate else ""
    out = governance_pb2.DatasetVersion(
        name=f"datasets/{rec.name}", version=rec.version, state=rec.state, owners=list(rec.owners),
        registered_by=rec.registered_by, listed_by=rec.listed_by or "", spec=spec_from_record(rec),
        certificate_id=cert_id, update_time=_ts(rec.updated_us), disclosure=disclosure_proto(rec))
    if profile:
        out.quality.CopyFrom(quality_proto(profile))
    return out


def grant_proto(g: Grant) -> governance_pb2.Grant:
    return governance_pb2.Grant(
        name=g.resource_name, principal=g.principal, dataset=f"datasets/{g.dataset}", purpose=g.purpose,
        columns=list(g.columns), valid_from=_ts(g.valid_from_us), valid_until=_ts(g.valid_until_us),
        max_queries=g.max_queries, used=g.used, created_by=g.created_by, create_time=_ts(g.created_us),
        revoke_time=_ts(g.revoked_us), revoked_by=g.revoked_by or "", revoke_reason=g.revoke_reason or "")


class GovernanceServicer(governance_pb2_grpc.GovernanceServiceServicer):
    def __init__(self, node: Node) -> None:
        self.node = node

    def RegisterDataset(self, request, context):
        spec = request.spec
        try:
            ds = dataset_from_dict(spec_to_dict(spec), where="spec", min_group_size=self.node.config.min_group_size)
        except ConfigError as e:
            raise InvalidArgument(str(e), reason="INVALID_DATASET_SPEC") from None
        gov = Governance(spec.classification or "internal", tuple(spec.rights) or ("holding", "processing"),
                         spec.auto_approve, max(1, spec.approvals_required))
        principal = current_principal()
        self.node.audit.admin("dataset.register", principal.name, dataset=ds.name,
                              details={"classification": gov.classification, "rights": sorted(gov.rights),
                                       "purposes": sorted(ds.purposes)})
        return version_proto(self.node.steward.register(principal, ds, gov, list(spec.owners)))

    def _act(self, request, action: str):
        principal = current_principal()
        name = request.name.removeprefix("datasets/")
        self.node.audit.admin(f"dataset.{action}", principal.name, dataset=name,
                              details={"reason": request.reason[:2000]})
        rec = self.node.steward.act(principal, name, action, request.reason)
        return version_proto(rec, self.node.steward.profiles.get(rec.name, rec.version))

    def SubmitDatasetForReview(self, request, context):
        return self._act(request, "submit")

    def ApproveListing(self, request, context):
        return self._act(request, "approve")

    def RejectListing(self, request, context):
        return self._act(request, "reject")

    def SuspendDataset(self, request, context):
        return self._act(request, "suspend")

    def ResumeDataset(self, request, context):
        return self._act(request, "resume")

    def DelistDataset(self, request, context):
        return self._act(request, "delist")

    def ListDatasetVersions(self, request, context):
        principal = current_principal()
        visible = {r.name for r in self.node.steward.visible(principal)}
        names = [request.name.removeprefix("datasets/")] if request.name else sorted(visible)
        out = governance_pb2.ListDatasetVersionsResponse()
        for name in names:
            if name not in visible:
                continue
            for rec in self.node.steward.registry.versions(name):
                if principal.role in (Role.REVIEWER, Role.ADMIN) or rec.owned_by(principal.name):
                    out.versions.append(version_proto(rec, self.node.steward.profiles.get(rec.name, rec.version)))
        return out

    def GetCertificate(self, request, context):
        rec = self.node.steward.certificate(request.name)
        self.node.audit.catalog_read(current_principal(), "GetCertificate", rec.name)
        cert = DatasetCertificate.from_json(rec.certificate)
        return governance_pb2.Certificate(document=rec.certificate, certificate_id=cert.certificate_id)

    def CreateGrant(self, request, context):
        principal = current_principal()
        name = request.dataset.removeprefix("datasets/")
        rec = self.node.steward.registry.latest(name)
        self.node.steward._require_owner(principal, rec)
        known = {p.name for p in self.node.config.principals}
        if request.principal not in known:
            raise InvalidArgument("the grantee is not a principal of this node", reason="UNKNOWN_PRINCIPAL")
        if request.purpose not in rec.dataset.purposes:
            raise InvalidArgument(f"purpose '{request.purpose}' is not one datasets/{rec.name} allows",
                                  reason="PURPOSE_NOT_ALLOWED")
        unknown = [c for c in request.columns if rec.dataset.column(c) is None]
        if unknown:
            raise InvalidArgument(f"unknown column(s): {', '.join(unknown)}", reason="UNKNOWN_COLUMN")
        self.node.audit.admin("grant.create", principal.name, dataset=rec.name,
                              details={"principal": request.principal, "purpose": request.purpose,
                                       "columns": list(request.columns), "max_queries": request.max_queries})
        g = self.node.steward.grants.add(
            principal=request.principal, dataset=rec.name, purpose=request.purpose, created_by=principal.name,
            columns=list(request.columns),
            valid_from_us=_us(request.valid_from) if request.HasField("valid_from") else 0,
            valid_until_us=_us(request.valid_until) if request.HasField("valid_until") else 0,
            max_queries=request.max_queries)
        return grant_proto(g)

    def ListGrants(self, request, context):
        principal = current_principal()
        dataset = request.dataset.removeprefix("datasets/") or None
        grants = self.node.steward.grants.list(dataset=dataset)
        if principal.role is Role.ANALYST:
            grants = [g for g in grants if g.principal == principal.name]
        elif principal.role is Role.OWNER:
            grants = [g for g in grants if self.node.steward.registry.latest(g.dataset).owned_by(principal.name)]
        return governance_pb2.ListGrantsResponse(grants=[grant_proto(g) for g in grants])

    def RevokeGrant(self, request, context):
        principal = current_principal()
        g = self.node.steward.grants.get(request.name)
        self.node.steward._require_owner(principal, self.node.steward.registry.latest(g.dataset))
        if not request.reason.strip():
            raise InvalidArgument("say why: a revocation needs a reason", reason="REASON_REQUIRED")
        self.node.audit.admin("grant.revoke", principal.name, dataset=g.dataset,
                              details={"grant": g.id, "reason": request.reason[:2000]})
        return grant_proto(self.node.steward.grants.revoke(g.id, by=principal.name, reason=request.reason))


class ReviewServicer(governance_pb2_grpc.ReviewServiceServicer):
    def __init__(self, node: Node) -> None:
        self.node = node

    def _pending(self, rec, ctx) -> governance_pb2.PendingQuery:
        out = governance_pb2.PendingQuery(query=query_proto(self.node, rec))
        if ctx is not None:
            out.rules.extend(query_pb2.RuleHit(rule=r, message=m) for r, m in ctx.rules)
            out.columns_touched.extend(ctx.columns)
            out.expected_groups = ctx.expected_groups
            out.approvals_required = ctx.approvals_required
            out.approved_by.extend(a[0] for a in ctx.approvals)
            out.expire_time.CopyFrom(_ts(ctx.expires_us))
        return out

    def ListPendingQueries(self, request, context):
        items = self.node.pending(current_principal(), request.dataset)
        return governance_pb2.ListPendingQueriesResponse(queries=[self._pending(r, c) for r, c in items])

    def GetPendingQuery(self, request, context):
        rec = self.node._reviewable(current_principal(), request.name)
        return self._pending(rec, self.node.steward.reviews.context(rec.id))

    def ApproveQuery(self, request, context):
        rec = self.node.approve(current_principal(), request.name, request.reason)
        return self._pending(rec, self.node.steward.reviews.context(rec.id))

    def RejectQuery(self, request, context):
        rec = self.node.reject(current_principal(), request.name, request.reason)
        return self._pending(rec, self.node.steward.reviews.context(rec.id))

