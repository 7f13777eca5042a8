"""Usage, metering and privacy budgets: per dataset and per analyst, as tables, charts over time
and CSV (a pricing team's input, 价格形成机制).

Everything comes from ``QueryService/GetUsageReport``, which the node scopes by role (owners: the
datasets they own; auditors and admins: all); the chart is the same report over consecutive
windows. Budget limits come from ``ListDatasetVersions`` (owners and admins; auditors see spend
without limits). ε figures are what the metering ledger recorded at each release.
"""

from __future__ import annotations

import csv
import io
import time
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from veil.v1 import governance_pb2, query_pb2

from .roles import may_call
from .calls import Refusal
from .charts import Series, bar_chart, line_chart
from .datasets import latest_by_name, versions
from .httpd import App, Request, Response

PERIODS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400, "365d": 365 * 86400}
BUCKETS = 12
COUNTS = ("queries_submitted", "queries_approved", "queries_released", "queries_refused", "rows_scanned",
          "cells_released", "cells_suppressed", "epsilon_spent", "ciphertexts")
CSV_COLUMNS = ("principal", "dataset", "purpose") + COUNTS


def _ts(seconds: float) -> Timestamp:
    t = Timestamp()
    t.FromMicroseconds(int(seconds * 1_000_000))
    return t


def _report(app: App, req: Request, start: float | None, end: float | None, dataset: str) -> list[Any]:
    r = query_pb2.GetUsageReportRequest(dataset=f"datasets/{dataset}" if dataset else "")
    if start is not None:
        r.start_time.CopyFrom(_ts(start))
    if end is not None:
        r.end_time.CopyFrom(_ts(end))
    return list(app.rpc(req, "/veil.v1.QueryService/GetUsageReport", r).rows)


def _filters(req: Request) -> tuple[str, int, str]:
    period = req.arg("period", "24h")
    if period not in PERIODS:
        raise Refusal(None, "INVALID_PERIOD", f"period must be one of {', '.join(PERIODS)}", http_status=400)
    return period, PERIODS[period], req.arg("dataset")


def _total(rows: list[Any], key) -> list[dict[str, Any]]:
    acc: dict[Any, dict[str, Any]] = {}
    for r in rows:
        k = key(r)
        row = acc.setdefault(k, {"key": k, **{c: 0 for c in COUNTS}})
        for c in COUNTS:
            row[c] += getattr(r, c)
    return [acc[k] for k in sorted(acc)]


def usage_page(app: App, req: Request) -> Response:
    period, span, dataset = _filters(req)
    now = time.time()
    start = now - span
    edges = [start + span * i / BUCKETS for i in range(BUCKETS + 1)]
    before = _report(app, req, None, start, dataset)  # everything spent before the window
    buckets = [_report(app, req, a, b, dataset) for a, b in zip(edges, edges[1:])]
    rows = _total([r for b in buckets for r in b], lambda r: (r.principal, r.dataset, r.purpose))
    in_range = [_Row(r) for r in rows]

    # Budgets: all-time ε per analyst x dataset and per dataset, against the declared limits.
    all_time = _total(before + in_range, lambda r: (r.principal, r.dataset))
    per_dataset_eps = _total(before + in_range, lambda r: r.dataset)
    limits: dict[str, Any] = {}
    grants: list[Any] = []
    role = req.session.role if req.session else ""
    if may_call(role, "/veil.v1.GovernanceService/ListDatasetVersions"):
        limits = {v.name: v.disclosure for v in latest_by_name(versions(app, req))}
    if role in ("owner", "admin"):
        out = app.rpc(req, "/veil.v1.GovernanceService/ListGrants", governance_pb2.ListGrantsRequest(
            dataset=f"datasets/{dataset}" if dataset else ""))
        grants = [g for g in out.grants if g.max_queries and not g.HasField("revoke_time")]

    # Charts: cumulative ε per analyst (all datasets in view) and per dataset; submissions and
    # refusals per window.
    base_analyst = defaultdict(float)
    base_dataset = defaultdict(float)
    for r in before:
        base_analyst[r.principal] += r.epsilon_spent
        base_dataset[r.dataset] += r.epsilon_spent
    analysts = sorted({r.principal for r in before} | {r.principal for b in buckets for r in b})
    names = sorted({r.dataset for r in before} | {r.dataset for b in buckets for r in b})
    analyst_series, dataset_series = [], []
    for who in analysts:
        level, pts = base_analyst[who], [(edges[0], base_analyst[who])]
        for b, end in zip(buckets, edges[1:]):
            level += sum(r.epsilon_spent for r in b if r.principal == who)
            pts.append((end, level))
        analyst_series.append(Series(who, pts))
    for name in names:
        level, pts = base_dataset[name], [(edges[0], base_dataset[name])]
        for b, end in zip(buckets, edges[1:]):
            level += sum(r.epsilon_spent for r in b if r.dataset == name)
            pts.append((end, level))
        dataset_series.append(Series(name.removeprefix("datasets/"), pts))
        limit = limits.get(name)
        if limit is not None and limit.mode == "dp" and limit.dataset_budget:
            dataset_series.append(Series(f"{name.removeprefix('datasets/')} budget",
                                         [(edges[0], limit.dataset_budget), (edges[-1], limit.dataset_budget)], True))
    labels = [datetime.fromtimestamp(e, timezone.utc).strftime("%H:%M" if span <= 2 * 86400 else "%m-%d")
              for e in edges[:-1]]
    submitted = [float(sum(r.queries_submitted for r in b)) for b in buckets]
    refused = [float(sum(r.queries_refused for r in b)) for b in buckets]
    window = f"the last {period}"
    charts = {
        "analyst": line_chart("Privacy budget spent per analyst (cumulative ε)",
                              f"Cumulative ε spent by each analyst over {window}, all datasets in view.",
                              analyst_series, edges[0], edges[-1], "ε spent", ident="eps-analyst"),
        "dataset": line_chart("Privacy budget spent per dataset (cumulative ε)",
                              f"Cumulative ε spent on each dataset over {window}; dashed: the dataset's budget.",
                              dataset_series, edges[0], edges[-1], "ε spent", ident="eps-dataset"),
        "queries": bar_chart("Queries submitted and refused per window",
                             f"Submissions and refusals in each of {BUCKETS} windows over {window}; many refusals "
                             "can mean an analyst is probing the rules.", labels,
                             [("submitted", submitted), ("refused", refused)], "queries", ident="queries"),
    }
    budget_rows = []
    for row in all_time:
        who, name = row["key"]
        limit = limits.get(name)
        budget_rows.append({"principal": who, "dataset": name, "spent": row["epsilon_spent"],
                            "limit": limit.analyst_budget if limit is not None and limit.mode == "dp" else None,
                            "mode": limit.mode if limit is not None else "", "per": limit.budget_per if limit else ""})
    dataset_budgets = []
    for row in per_dataset_eps:
        limit = limits.get(row["key"])
        dataset_budgets.append({"dataset": row["key"], "spent": row["epsilon_spent"],
                                "limit": limit.dataset_budget if limit is not None and limit.mode == "dp" else None,
                                "mode": limit.mode if limit is not None else ""})
    series_table = [{"end": datetime.fromtimestamp(e, timezone.utc).strftime("%Y-%m-%d %H:%M"),
                     "submitted": int(s), "refused": int(f),
                     "eps": {ser.label: ser.points[i + 1][1] for ser in analyst_series}}
                    for i, (e, s, f) in enumerate(zip(edges[1:], submitted, refused))]
    return app.render(req, "usage.html", title="Usage and budgets", period=period, periods=list(PERIODS),
                      dataset=dataset, rows=in_range, per_dataset=_total(in_range, lambda r: r.dataset),
                      per_analyst=_total(in_range, lambda r: r.principal), budget_rows=budget_rows,
                      dataset_budgets=dataset_budgets, limits_visible=bool(limits), grants=grants, charts=charts,
                      series_table=series_table, analysts=analysts, since=datetime.fromtimestamp(start, timezone.utc))


class _Row:
    """A usage row summed over the windows (the shape of ``UsageRow``)."""

    def __init__(self, d: dict[str, Any]) -> None:
        self.principal, self.dataset, self.purpose = d["key"]
        for c in COUNTS:
            setattr(self, c, d[c])


def _cell(value: Any) -> str:
    text = f"{value:.6f}" if isinstance(value, float) else str(value)
    # A spreadsheet must not run a cell as a formula (names and purposes are free text).
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def usage_csv(app: App, req: Request) -> Response:
    period, span, dataset = _filters(req)
    end = time.time()
    rows = _report(app, req, end - span, end, dataset)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow([_cell(getattr(r, c)) for c in CSV_COLUMNS])
    stamp = datetime.fromtimestamp(end, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Response(200, buf.getvalue().encode("utf-8"), "text/csv; charset=utf-8", headers=[
        ("Content-Disposition", f'attachment; filename="veil-usage-{period}-{stamp}.csv"')])


ROUTES = [
    ("GET", "/usage", usage_page),
    ("GET", "/usage.csv", usage_csv),
]
