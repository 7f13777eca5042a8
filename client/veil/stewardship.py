"""Governance from Python: ``node.governance`` (datasets, certificates, grants) and
``node.review`` (queries awaiting an owner's decision).

    gov = node.governance
    gov.register(spec_dict)                     # owner: a [[datasets]] table as a dict (or TOML file)
    gov.submit("patients"); gov.approve_listing("patients", "checked")   # reviewer
    gov.grant("alice", "patients", "research", max_queries=100)
    node.review.pending(); node.review.approve("queries/…", "fits the study protocol")

Certificates come back as their exact signed bytes; :meth:`GovernanceAPI.certificate` verifies
them against the node key the SDK trusts before returning them.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from google.protobuf.timestamp_pb2 import Timestamp

from .certificates import CertificateError, DatasetCertificate, verify_bytes
from .errors import IntegrityError
from .quality import quality_dict
from .v1 import catalog_pb2, governance_pb2, governance_pb2_grpc, query_pb2

if TYPE_CHECKING:
    from .connection import Connection

_CONTROL = {k.removeprefix("COLUMN_CONTROL_").lower(): v for k, v in catalog_pb2.ColumnControl.items()}
_TYPE = {k.removeprefix("COLUMN_TYPE_").lower(): v for k, v in catalog_pb2.ColumnType.items()}


@dataclass(frozen=True)
class DatasetVersionInfo:
    name: str
    version: int
    state: str
    owners: tuple[str, ...]
    registered_by: str
    listed_by: str
    certificate_id: str
    classification: str
    # The version's quality profile (from submission for review on; see veil.quality.quality_dict)
    quality: dict = field(default_factory=dict, compare=False)
    basis: str = ""

    @classmethod
    def from_proto(cls, v: governance_pb2.DatasetVersion) -> "DatasetVersionInfo":
        return cls(v.name.removeprefix("datasets/"), v.version, v.state, tuple(v.owners), v.registered_by,
                   v.listed_by, v.certificate_id, v.spec.classification,
                   quality_dict(v.quality) if v.HasField("quality") else {}, v.spec.basis)


@dataclass(frozen=True)
class GrantInfo:
    name: str
    principal: str
    dataset: str
    purpose: str
    columns: tuple[str, ...]
    max_queries: int
    used: int
    revoked: bool
    valid_until: str

    @property
    def id(self) -> str:
        return self.name.removeprefix("grants/")

    @classmethod
    def from_proto(cls, g: governance_pb2.Grant) -> "GrantInfo":
        until = g.valid_until.ToDatetime(timezone.utc).isoformat() if g.HasField("valid_until") else ""
        return cls(g.name, g.principal, g.dataset.removeprefix("datasets/"), g.purpose, tuple(g.columns),
                   g.max_queries, g.used, g.HasField("revoke_time"), until)


@dataclass(frozen=True)
class PendingInfo:
    query: str
    principal: str
    dataset: str
    purpose: str
    sql: str
    canonical_sql: str
    rules: tuple[tuple[str, str], ...]
    columns: tuple[str, ...]
    expected_groups: int
    approvals_required: int
    approved_by: tuple[str, ...]
    state: str

    @classmethod
    def from_proto(cls, p: governance_pb2.PendingQuery) -> "PendingInfo":
        q = p.query
        return cls(q.name, q.principal, q.dataset.removeprefix("datasets/"), q.purpose, q.sql, q.canonical_sql,
                   tuple((r.rule, r.message) for r in p.rules), tuple(p.columns_touched), p.expected_groups,
                   p.approvals_required, tuple(p.approved_by),
                   query_pb2.QueryState.Name(q.state).removeprefix("QUERY_STATE_"))


def spec_proto(spec: Mapping[str, Any]) -> governance_pb2.DatasetSpec:
    """A ``[[datasets]]`` table (as in veil.toml, with governance keys) as a DatasetSpec."""
    out = governance_pb2.DatasetSpec(
        name=spec["name"], source=str(spec["source"]), format=spec.get("format", ""),
        description=spec.get("description", ""), purposes=list(spec.get("purposes", [])),
        min_group_size=int(spec.get("min_group_size", 0)), max_groups=int(spec.get("max_groups", 0)),
        max_rows=int(spec.get("max_rows", 0)), classification=spec.get("classification", "internal"),
        rights=list(spec.get("rights", [])), auto_approve=bool(spec.get("auto_approve", False)),
        approvals_required=int(spec.get("approvals_required", 1)), owners=list(spec.get("owners", [])),
        basis=spec.get("basis", ""), freshness_column=spec.get("freshness_column", ""))
    if spec.get("consent"):
        c = spec["consent"]
        out.consent.CopyFrom(governance_pb2.ConsentSourceSpec(
            source=str(c.get("source", "")), format=c.get("format", ""), subject_column=c.get("subject_column", ""),
            columns=dict(c.get("columns", {}))))
    for c in spec.get("columns", []):
        controls = c.get("controls", c.get("control", ["hidden"]))
        controls = [controls] if isinstance(controls, str) else controls
        col = out.columns.add(name=c["name"], type=_TYPE[c["type"]], controls=[_CONTROL[x] for x in controls],
                              description=c.get("description", ""),
                              categories=[str(x) for x in c.get("categories", [])], scale=int(c.get("scale", 0)),
                              bin_width=str(c["bin_width"]) if "bin_width" in c else "")
        if "range" in c:
            col.range_low, col.range_high = (str(v) for v in c["range"])
    return out


def load_spec(path: str | Path) -> dict[str, Any]:
    """A TOML file holding one ``[[datasets]]`` table; a relative source is relative to the file."""
    path = Path(path)
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    tables = doc.get("datasets", [doc] if "name" in doc else [])
    if len(tables) != 1:
        raise ValueError(f"{path} must hold exactly one [[datasets]] table")
    spec = dict(tables[0])
    src = Path(str(spec.get("source", "")))
    if spec.get("source") and not src.is_absolute():
        spec["source"] = str((path.parent / src).resolve())
    return spec


def _ts(when: datetime | None) -> Timestamp | None:
    if when is None:
        return None
    t = Timestamp()
    t.FromDatetime(when if when.tzinfo else when.replace(tzinfo=timezone.utc))
    return t


class GovernanceAPI:
    """The GovernanceService for owners and reviewers. Obtain it as ``node.governance``."""

    def __init__(self, node: "Connection") -> None:
        self._node = node
        self._stub = governance_pb2_grpc.GovernanceServiceStub(node._channel)

    def _version(self, method, name: str, reason: str = "") -> DatasetVersionInfo:
        req = governance_pb2.DatasetActionRequest(name=_ds(name), reason=reason)
        return DatasetVersionInfo.from_proto(self._node._call(method, req))

    def register(self, spec: Mapping[str, Any] | str | Path) -> DatasetVersionInfo:
        spec = load_spec(spec) if isinstance(spec, (str, Path)) else spec
        req = governance_pb2.RegisterDatasetRequest(spec=spec_proto(spec))
        return DatasetVersionInfo.from_proto(self._node._call(self._stub.RegisterDataset, req))

    def submit(self, name: str, reason: str = "") -> DatasetVersionInfo:
        return self._version(self._stub.SubmitDatasetForReview, name, reason)

    def approve_listing(self, name: str, reason: str = "") -> DatasetVersionInfo:
        return self._version(self._stub.ApproveListing, name, reason)

    def reject_listing(self, name: str, reason: str) -> DatasetVersionInfo:
        return self._version(self._stub.RejectListing, name, reason)

    def suspend(self, name: str, reason: str) -> DatasetVersionInfo:
        return self._version(self._stub.SuspendDataset, name, reason)

    def resume(self, name: str, reason: str = "") -> DatasetVersionInfo:
        return self._version(self._stub.ResumeDataset, name, reason)

    def delist(self, name: str, reason: str) -> DatasetVersionInfo:
        return self._version(self._stub.DelistDataset, name, reason)

    def versions(self, name: str = "") -> list[DatasetVersionInfo]:
        req = governance_pb2.ListDatasetVersionsRequest(name=_ds(name) if name else "")
        return [DatasetVersionInfo.from_proto(v) for v in self._node._call(self._stub.ListDatasetVersions, req).versions]

    def certificate(self, name: str, *, verify: bool = True) -> tuple[DatasetCertificate, bytes]:
        """The certificate and its exact bytes, verified against the node key the SDK trusts."""
        resp = self._node._call(self._stub.GetCertificate, governance_pb2.GetCertificateRequest(name=_ds(name)),
                                retry=True)
        try:
            cert = verify_bytes(resp.document, self._node.node_key()) if verify else \
                DatasetCertificate.from_json(resp.document)
        except CertificateError as e:
            raise IntegrityError(f"the certificate does not verify: {e}", reason="CERTIFICATE_INVALID") from None
        return cert, resp.document

    def grant(self, principal: str, dataset: str, purpose: str, *, columns: Iterable[str] = (),
              valid_from: datetime | None = None, valid_until: datetime | None = None,
              max_queries: int = 0) -> GrantInfo:
        req = governance_pb2.CreateGrantRequest(principal=principal, dataset=_ds(dataset), purpose=purpose,
                                                columns=list(columns), valid_from=_ts(valid_from),
                                                valid_until=_ts(valid_until), max_queries=max_queries)
        return GrantInfo.from_proto(self._node._call(self._stub.CreateGrant, req))

    def grants(self, dataset: str = "") -> list[GrantInfo]:
        req = governance_pb2.ListGrantsRequest(dataset=_ds(dataset) if dataset else "")
        return [GrantInfo.from_proto(g) for g in self._node._call(self._stub.ListGrants, req, retry=True).grants]

    def revoke(self, grant: str, reason: str) -> GrantInfo:
        name = grant if grant.startswith("grants/") else f"grants/{grant}"
        req = governance_pb2.RevokeGrantRequest(name=name, reason=reason)
        return GrantInfo.from_proto(self._node._call(self._stub.RevokeGrant, req))


class ReviewAPI:
    """The ReviewService for dataset owners. Obtain it as ``node.review``."""

    def __init__(self, node: "Connection") -> None:
        self._node = node
        self._stub = governance_pb2_grpc.ReviewServiceStub(node._channel)

    def pending(self, dataset: str = "") -> list[PendingInfo]:
        req = governance_pb2.ListPendingQueriesRequest(dataset=_ds(dataset) if dataset else "")
        return [PendingInfo.from_proto(p) for p in self._node._call(self._stub.ListPendingQueries, req).queries]

    def show(self, query: str) -> PendingInfo:
        req = governance_pb2.ReviewQueryRequest(name=_q(query))
        return PendingInfo.from_proto(self._node._call(self._stub.GetPendingQuery, req))

    def approve(self, query: str, reason: str) -> PendingInfo:
        req = governance_pb2.ReviewQueryRequest(name=_q(query), reason=reason)
        return PendingInfo.from_proto(self._node._call(self._stub.ApproveQuery, req))

    def reject(self, query: str, reason: str) -> PendingInfo:
        req = governance_pb2.ReviewQueryRequest(name=_q(query), reason=reason)
        return PendingInfo.from_proto(self._node._call(self._stub.RejectQuery, req))


def _ds(name: str) -> str:
    return name if name.startswith("datasets/") else f"datasets/{name}"


def _q(name: str) -> str:
    return name if name.startswith("queries/") else f"queries/{name}"
