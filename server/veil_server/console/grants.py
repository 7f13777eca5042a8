"""Grants: who may query which dataset for which purpose, until when, how many times; adding
and revoking them (``GovernanceService``; the steward checks that the caller owns the dataset).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from veil.v1 import governance_pb2

from .calls import Refusal
from .datasets import latest_by_name, reason_of, versions
from .httpd import App, Request, Response

GRANT = r"(?P<grant>[A-Za-z0-9_.:-]{1,80})"


def status(g: Any, now: datetime) -> str:
    if g.HasField("revoke_time"):
        return "revoked"
    if g.HasField("valid_until") and g.valid_until.ToDatetime(timezone.utc) <= now:
        return "expired"
    if g.HasField("valid_from") and g.valid_from.ToDatetime(timezone.utc) > now:
        return "not yet valid"
    if g.max_queries and g.used >= g.max_queries:
        return "used up"
    return "active"


def grant_list(app: App, req: Request) -> Response:
    dataset = req.arg("dataset")
    out = app.rpc(req, "/veil.v1.GovernanceService/ListGrants",
                  governance_pb2.ListGrantsRequest(dataset=f"datasets/{dataset}" if dataset else ""))
    now = datetime.now(timezone.utc)
    rows = [{"g": g, "id": g.name.removeprefix("grants/"), "status": status(g, now)} for g in out.grants]
    owned = latest_by_name(versions(app, req)) if req.session is not None and req.session.role == "owner" else []
    purposes = sorted({p for v in owned for p in v.spec.purposes})
    return app.render(req, "grants.html", title="Grants", rows=rows, dataset=dataset, owned=owned,
                      purposes=purposes, today=date.today().isoformat())


def _day(text: str, field: str, *, end: bool) -> Timestamp | None:
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise Refusal(None, "INVALID_DATE", f"{field} must be a date (YYYY-MM-DD)", http_status=400) from None
    at = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + (timedelta(days=1) if end else timedelta())
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


def add_grant(app: App, req: Request) -> Response:
    f = req.form
    max_queries = f.get("max_queries", "").strip() or "0"
    if not max_queries.isdigit() or int(max_queries) > 10**9:
        raise Refusal(None, "INVALID_MAX_QUERIES", "max queries must be a whole number (0: no limit)", http_status=400)
    columns = [c.strip() for c in f.get("columns", "").split(",") if c.strip()]
    request = governance_pb2.CreateGrantRequest(
        principal=f.get("principal", "").strip(), dataset=f"datasets/{f.get('dataset', '').strip()}",
        purpose=f.get("purpose", "").strip(), columns=columns, max_queries=int(max_queries))
    valid_from, valid_until = _day(f.get("valid_from", ""), "valid from", end=False), \
        _day(f.get("valid_until", ""), "valid until", end=True)
    if valid_from is not None:
        request.valid_from.CopyFrom(valid_from)
    if valid_until is not None:
        request.valid_until.CopyFrom(valid_until)
    g = app.rpc(req, "/veil.v1.GovernanceService/CreateGrant", request)
    return app.redirect(req, "/grants", f"{g.name} added: {g.principal} may query {g.dataset} for {g.purpose}")


def revoke_grant(app: App, req: Request) -> Response:
    reason = reason_of(req, True)
    g = app.rpc(req, "/veil.v1.GovernanceService/RevokeGrant",
                governance_pb2.RevokeGrantRequest(name=f"grants/{req.params['grant']}", reason=reason))
    return app.redirect(req, "/grants", f"{g.name} revoked")


ROUTES = [
    ("GET", "/grants", grant_list),
    ("POST", "/grants", add_grant),
    ("POST", f"/grants/{GRANT}/revoke", revoke_grant),
]
