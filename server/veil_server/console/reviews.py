"""Pending queries: what each would compute and cost, why policy sent it to review, and the
owners' approve / reject with a reason (N of M shown).

``ReviewService`` scopes the queue to the datasets the caller owns; ``Node.approve`` refuses an
owner approving their own query, a second approval by the same owner, and a query that is no
longer pending. A query approved by its last required owner runs at once, and the analyst's SDK
receives the encrypted result.
"""

from __future__ import annotations

from veil.v1 import governance_pb2, query_pb2

from .datasets import reason_of
from .httpd import App, Request, Response

QUERY = r"(?P<query>[A-Za-z0-9_-]{1,64})"
STATE = {v: k.removeprefix("QUERY_STATE_") for k, v in query_pb2.QueryState.items()}


def pending_list(app: App, req: Request) -> Response:
    dataset = req.arg("dataset")
    out = app.rpc(req, "/veil.v1.ReviewService/ListPendingQueries",
                  governance_pb2.ListPendingQueriesRequest(dataset=f"datasets/{dataset}" if dataset else ""))
    may_decide = req.session is not None and req.session.role == "owner"
    return app.render(req, "reviews.html", title="Pending queries", pending=list(out.queries), dataset=dataset,
                      may_decide=may_decide, state=STATE)


def pending_detail(app: App, req: Request) -> Response:
    p = app.rpc(req, "/veil.v1.ReviewService/GetPendingQuery",
                governance_pb2.ReviewQueryRequest(name=f"queries/{req.params['query']}"))
    return app.render(req, "review.html", title=f"Query {req.params['query']}", p=p, q=p.query, state=STATE,
                      pending=p.query.state == query_pb2.QUERY_STATE_PENDING_APPROVAL)


def decide(app: App, req: Request) -> Response:
    query, verdict = req.params["query"], req.params["verdict"]
    reason = reason_of(req, True)
    method = "/veil.v1.ReviewService/ApproveQuery" if verdict == "approve" else "/veil.v1.ReviewService/RejectQuery"
    p = app.rpc(req, method, governance_pb2.ReviewQueryRequest(name=f"queries/{query}", reason=reason))
    state = STATE.get(p.query.state, "?")
    if verdict == "approve" and state == "PENDING_APPROVAL":
        note = f"approval recorded ({len(p.approved_by)} of {p.approvals_required}); the query waits for more"
    else:
        note = f"queries/{query} {'approved' if verdict == 'approve' else 'rejected'}: now {state}"
    return app.redirect(req, "/reviews", note)


ROUTES = [
    ("GET", "/reviews", pending_list),
    ("GET", f"/reviews/{QUERY}", pending_detail),
    ("POST", f"/reviews/{QUERY}/(?P<verdict>approve|reject)", decide),
]
