"""Datasets and the listing queue: lifecycle, certificate, classification, column rules and
disclosure control, and the owners' and reviewers' lifecycle actions.

Owners see the datasets they own, reviewers and admins every dataset (``ListDatasetVersions``
scopes it). Actions are ``GovernanceService`` RPCs; the steward behind them enforces ownership and
that nobody lists a dataset they registered.
"""

from __future__ import annotations

import json
from typing import Any

from veil.v1 import catalog_pb2, governance_pb2

from .calls import Refusal
from .httpd import App, Request, Response

NAME = r"(?P<name>[A-Za-z0-9_.-]{1,128})"
# action -> (RPC, whether the console asks for a reason, what it is called on the page)
ACTIONS = {
    "submit": ("/veil.v1.GovernanceService/SubmitDatasetForReview", False, "submitted for review"),
    "approve": ("/veil.v1.GovernanceService/ApproveListing", True, "listed"),
    "reject": ("/veil.v1.GovernanceService/RejectListing", True, "rejected"),
    "suspend": ("/veil.v1.GovernanceService/SuspendDataset", True, "suspended"),
    "resume": ("/veil.v1.GovernanceService/ResumeDataset", False, "resumed"),
    "delist": ("/veil.v1.GovernanceService/DelistDataset", True, "delisted"),
}
CONTROL = {v: k.removeprefix("COLUMN_CONTROL_").lower() for k, v in catalog_pb2.ColumnControl.items()}
TYPE = {v: k.removeprefix("COLUMN_TYPE_").lower() for k, v in catalog_pb2.ColumnType.items()}
MAX_REASON = 2000


def versions(app: App, req: Request, name: str = "") -> list[Any]:
    out = app.rpc(req, "/veil.v1.GovernanceService/ListDatasetVersions",
                  governance_pb2.ListDatasetVersionsRequest(name=f"datasets/{name}" if name else ""))
    return list(out.versions)


def latest_by_name(all_versions: list[Any]) -> list[Any]:
    latest: dict[str, Any] = {}
    for v in all_versions:
        if v.name not in latest or v.version > latest[v.name].version:
            latest[v.name] = v
    return [latest[k] for k in sorted(latest)]


def columns(spec: Any) -> list[dict[str, Any]]:
    out = []
    for c in spec.columns:
        domain = ", ".join(c.categories) if c.categories else ""
        if c.range_low or c.range_high:
            domain = f"[{c.range_low}, {c.range_high}]" + (f", bins of {c.bin_width}" if c.bin_width else "")
        out.append({"name": c.name, "type": TYPE.get(c.type, "?"), "controls": [CONTROL.get(x, "?") for x in c.controls],
                    "domain": domain, "scale": c.scale, "description": c.description})
    return out


def dataset_list(app: App, req: Request) -> Response:
    rows = latest_by_name(versions(app, req))
    return app.render(req, "datasets.html", title="Datasets", datasets=rows)


def listing_queue(app: App, req: Request) -> Response:
    queue = [v for v in versions(app, req) if v.state == "UNDER_REVIEW"]
    return app.render(req, "listings.html", title="Listing queue", queue=queue, columns=columns)


def dataset_detail(app: App, req: Request) -> Response:
    name = req.params["name"]
    all_versions = sorted(versions(app, req, name), key=lambda v: -v.version)
    if not all_versions:
        raise Refusal(None, "DATASET_NOT_FOUND", f"no dataset {name} that you govern", http_status=404)
    latest = all_versions[0]
    certificate = None
    if any(v.certificate_id for v in all_versions):
        cert = app.rpc(req, "/veil.v1.GovernanceService/GetCertificate",
                       governance_pb2.GetCertificateRequest(name=f"datasets/{name}"))
        try:
            document = json.loads(cert.document)
        except ValueError:
            document = {}
        certificate = {"id": cert.certificate_id, "fields": _flatten(document)}
    return app.render(req, "dataset.html", title=f"Dataset {name}", name=name, latest=latest, versions=all_versions,
                      columns=columns(latest.spec), certificate=certificate, actions=_actions(req, latest))


def _actions(req: Request, v: Any) -> list[dict[str, Any]]:
    """Which forms to offer (a courtesy: the RPC decides what is allowed)."""
    role, state = req.session.role if req.session else "", v.state
    offered = []
    if role == "owner":
        offered += {"DRAFT": ["submit"], "LISTED": ["suspend", "delist"], "SUSPENDED": ["resume", "delist"]}.get(state, [])
    if role == "admin":
        offered += {"LISTED": ["suspend", "delist"], "SUSPENDED": ["resume", "delist"]}.get(state, [])
    if role == "reviewer" and state == "UNDER_REVIEW":
        offered += ["approve", "reject"]
    return [{"action": a, "reason_required": ACTIONS[a][1]} for a in offered]


def _flatten(doc: Any, prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if isinstance(doc, dict):
        for k in sorted(doc):
            out += _flatten(doc[k], f"{prefix}{k}." if not isinstance(doc[k], (str, int, float, bool, type(None)))
                            else f"{prefix}{k}")
        return out
    if isinstance(doc, list) and all(isinstance(x, (str, int, float)) for x in doc):
        return [(prefix.rstrip("."), ", ".join(str(x) for x in doc))]
    if isinstance(doc, list):
        return [(prefix.rstrip("."), json.dumps(doc, sort_keys=True))]
    return [(prefix, str(doc))]


def reason_of(req: Request, required: bool) -> str:
    reason = req.form.get("reason", "").strip()
    if required and not reason:
        raise Refusal(None, "REASON_REQUIRED", "say why: this action needs a reason, which is recorded in the audit "
                      "log", http_status=400)
    if len(reason) > MAX_REASON:
        raise Refusal(None, "REASON_TOO_LONG", f"a reason is at most {MAX_REASON} characters", http_status=400)
    return reason


def dataset_action(app: App, req: Request) -> Response:
    name, action = req.params["name"], req.params["action"]
    method, required, done = ACTIONS[action]
    reason = reason_of(req, required)
    v = app.rpc(req, method, governance_pb2.DatasetActionRequest(name=f"datasets/{name}", reason=reason))
    back = req.form.get("back", "")
    to = back if back in ("/listings", "/datasets") else f"/datasets/{name}"
    return app.redirect(req, to, f"datasets/{name} version {v.version} {done}: now {v.state}")


ROUTES = [
    ("GET", "/datasets", dataset_list),
    ("GET", "/listings", listing_queue),
    ("GET", f"/datasets/{NAME}", dataset_detail),
    ("POST", f"/datasets/{NAME}/(?P<action>{'|'.join(ACTIONS)})", dataset_action),
]
