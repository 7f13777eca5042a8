"""``veil dataset list | show | register | submit | approve | reject | suspend | resume | delist |
versions``: the catalog for analysts, and a dataset's listing for owners and reviewers.

    veil dataset list                                   # what the node serves
    veil dataset show patients                          # columns, rules, purposes
    veil dataset register spec.toml                     # owner: one [[datasets]] table
    veil dataset submit admissions                      # owner: DRAFT -> UNDER_REVIEW
    veil dataset approve admissions --reason "…"        # reviewer: listed, certificate issued
    veil dataset suspend|resume|delist admissions --reason "…"
    veil dataset versions [NAME]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .command import Commands
from .connection import connect
from .output import emit, frame_text, table


def list_datasets(args: argparse.Namespace) -> None:
    with connect(args) as node:
        items = node.datasets()
    emit(args, items, table([{"dataset": d.name, "rows (approx.)": d.approximate_row_count,
                              "min group": d.min_group_size, "disclosure": _mode(d),
                              "purposes": ",".join(d.purposes), "description": d.description} for d in items]))


def _mode(d) -> str:
    if d.disclosure_mode == "dp":
        return f"DP, ε {d.epsilon_per_query:g}/query"
    return "exact" if d.disclosure_mode == "exact" else d.disclosure_mode


def show(args: argparse.Namespace) -> None:
    with connect(args) as node:
        d = node.dataset(args.name)
    emit(args, d, f"{d.name}: {d.description}\n"
                  f"  about {d.approximate_row_count} rows; groups under {d.min_group_size} rows are suppressed;"
                  f" purposes: {', '.join(d.purposes)}\n  disclosure: {_mode(d)}"
                  + (f" (reason: {d.exact_reason})" if d.exact_reason else "")
                  + (f"\n  lawful basis: {d.basis}" if d.basis else "")
                  + f"\n{frame_text(d.columns_frame())}" + _quality(d.quality))


def _quality(q: dict) -> str:
    """The certified quality profile as a table (shares of missing, out-of-range and out-of-domain
    values, distinct-value bands), with how it was released."""
    if not q:
        return ""
    how = (f"noisy: ε {q.get('epsilon')}, noise scale {q.get('noise_scale')} per count" if q.get("mode") == "dp"
           else "exact; '<' marks fewer than k rows")
    head = f"\nquality profile: {q.get('rows')} rows ({how})"
    fresh = q.get("freshness")
    if fresh:
        head += (f"; dated within 30 days {fresh['within_30d']}, within a year {fresh['within_365d']}"
                 f" ({fresh['column']})")
    rows = [{"column": name, "missing": c.get("missing", ""), "outside range": c.get("out_of_range", ""),
             "outside domain": c.get("out_of_domain", ""), "distinct": c.get("distinct", "")}
            for name, c in q.get("columns", {}).items()]
    return head + "\n" + table(rows)


def register_spec(args: argparse.Namespace) -> None:
    with connect(args) as node:
        emit(args, node.governance.register(Path(args.spec)))


def _step(action: str):
    def run(args: argparse.Namespace) -> None:
        with connect(args) as node:
            gov = node.governance
            step = {"submit": gov.submit, "approve": gov.approve_listing, "reject": gov.reject_listing,
                    "suspend": gov.suspend, "resume": gov.resume, "delist": gov.delist}[action]
            emit(args, step(args.name, args.reason))
    return run


def versions(args: argparse.Namespace) -> None:
    with connect(args) as node:
        emit(args, node.governance.versions(args.name or ""))


STEPS = {
    "submit": "owner: send a registered dataset to review (DRAFT -> UNDER_REVIEW)",
    "approve": "reviewer: list a dataset under review and issue its certificate",
    "reject": "reviewer: send a dataset under review back to its owner",
    "suspend": "owner or admin: stop new queries on a listed dataset",
    "resume": "owner or admin: serve a suspended dataset again",
    "delist": "owner or admin: withdraw a dataset for good",
}


def register(cli: Commands) -> None:
    d = cli.noun("dataset", "the catalog; registering, reviewing and listing datasets")
    d.verb("list", list_datasets, "list the datasets the node serves", connects=True)
    d.verb("show", show, "show a dataset: columns, their rules, purposes", connects=True).add_argument("name")
    d.verb("register", register_spec, "owner: register a dataset (or a new version) from a spec file",
           connects=True).add_argument("spec", help="a TOML file with one [[datasets]] table")
    for action, help in STEPS.items():
        p = d.verb(action, _step(action), help, connects=True)
        p.add_argument("name")
        p.add_argument("--reason", default="", help="why (required to reject, suspend and delist)")
    d.verb("versions", versions, "list a dataset's versions (all datasets without NAME)",
           connects=True).add_argument("name", nargs="?", default="")


__all__ = ["register"]
