"""``veil dataset …``, ``veil grant …``, ``veil review …``, ``veil cert …`` and ``veil explain``:
governance from the command line, for owners, reviewers and analysts.

    veil dataset register spec.toml            # owner: one [[datasets]] table with governance keys
    veil dataset submit NAME                   # owner: DRAFT -> UNDER_REVIEW
    veil dataset list-approve NAME --reason …  # reviewer: UNDER_REVIEW -> LISTED, certificate issued
    veil dataset suspend|resume|delist NAME --reason …
    veil dataset versions [NAME]
    veil dataset NAME                          # show a dataset (same as `veil dataset show NAME`)
    veil grant add --principal alice --dataset NAME --purpose research [--columns a,b] [--until ISO] [--max-queries N]
    veil grant list [--dataset NAME] | veil grant revoke ID --reason …
    veil review list | show Q | approve Q --reason … | reject Q --reason …
    veil cert get NAME --out FILE | veil cert verify FILE --key NODE.pub
    veil explain "SQL" --purpose P
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from ..certificates import CertificateError, verify_file

DATASET_ACTIONS = ("show", "register", "submit", "list-approve", "list-reject", "suspend", "resume", "delist",
                   "versions")


def _print(obj, as_json: bool) -> None:
    if as_json:
        print(json.dumps(obj, default=str))
    elif isinstance(obj, list):
        for item in obj:
            print("  ".join(f"{k}={v}" for k, v in item.items()))
    else:
        for k, v in obj.items():
            print(f"{k}: {v}")


def register(sub, common: Callable[[argparse.ArgumentParser], None], connect, show_dataset) -> None:
    def add(name: str, fn, help: str, parent=sub) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help, description=help)
        common(p)
        p.set_defaults(func=fn)
        return p

    def cmd_dataset(args):
        action, target = args.action, args.subject
        if action not in DATASET_ACTIONS:  # `veil dataset NAME` shows it
            action, target = "show", action
        if action == "show":
            args.name = target
            return show_dataset(args)
        with connect(args) as node:
            gov = node.governance
            if action == "register":
                v = gov.register(Path(target))
            elif action == "versions":
                _print([asdict(v) for v in gov.versions(target or "")], args.json)
                return None
            else:
                if not target:
                    raise ValueError(f"veil dataset {action} needs a dataset name")
                fn = {"submit": gov.submit, "list-approve": gov.approve_listing, "list-reject": gov.reject_listing,
                      "suspend": gov.suspend, "resume": gov.resume, "delist": gov.delist}[action]
                v = fn(target, args.reason)
        _print(asdict(v), args.json)
        return None

    p = add("dataset", cmd_dataset, "show a dataset, or register, review, list, suspend, resume, delist one")
    p.add_argument("action", help=f"one of {', '.join(DATASET_ACTIONS)}, or a dataset name to show it")
    p.add_argument("subject", nargs="?", default="", help="dataset name (a spec file for register)")
    p.add_argument("--reason", default="", help="why (required to reject, suspend and delist)")

    grant = sub.add_parser("grant", help="create, list and revoke grants (owners)")
    gsub = grant.add_subparsers(dest="grant_command", metavar="ACTION")
    gsub.required = True

    def cmd_grant_add(args):
        until = datetime.fromisoformat(args.until) if args.until else None
        if until is not None and until.tzinfo is None:
            until = until.replace(tzinfo=timezone.utc)
        with connect(args) as node:
            g = node.governance.grant(args.principal, args.dataset, args.purpose,
                                      columns=[c for c in args.columns.split(",") if c], valid_until=until,
                                      max_queries=args.max_queries)
        _print(asdict(g), args.json)

    p = add("add", cmd_grant_add, "grant a principal the use of a dataset for a purpose", gsub)
    p.add_argument("--principal", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--purpose", required=True)
    p.add_argument("--columns", default="", help="comma-separated column subset (default: all allowed)")
    p.add_argument("--until", default="", help="end of validity, ISO 8601 (default: none)")
    p.add_argument("--max-queries", type=int, default=0, help="0 for no limit")

    def cmd_grant_list(args):
        with connect(args) as node:
            _print([asdict(g) for g in node.governance.grants(args.dataset)], args.json)

    add("list", cmd_grant_list, "list grants you may see", gsub).add_argument("--dataset", default="")

    def cmd_grant_revoke(args):
        with connect(args) as node:
            _print(asdict(node.governance.revoke(args.grant, args.reason)), args.json)

    p = add("revoke", cmd_grant_revoke, "revoke a grant", gsub)
    p.add_argument("grant")
    p.add_argument("--reason", required=True)

    review = sub.add_parser("review", help="queries awaiting your approval (dataset owners)")
    rsub = review.add_subparsers(dest="review_command", metavar="ACTION")
    rsub.required = True

    def cmd_review(args):
        with connect(args) as node:
            r = node.review
            if args.review_command == "list":
                out = [asdict(p) for p in r.pending(args.dataset)]
            elif args.review_command == "show":
                out = asdict(r.show(args.query))
            elif args.review_command == "approve":
                out = asdict(r.approve(args.query, args.reason))
            else:
                out = asdict(r.reject(args.query, args.reason))
        _print(out, args.json)

    add("list", cmd_review, "list pending queries", rsub).add_argument("--dataset", default="")
    add("show", cmd_review, "show one pending query", rsub).add_argument("query")
    for verb in ("approve", "reject"):
        p = add(verb, cmd_review, f"{verb} a pending query", rsub)
        p.add_argument("query")
        p.add_argument("--reason", required=True)

    cert = sub.add_parser("cert", help="data asset certificates")
    csub = cert.add_subparsers(dest="cert_command", metavar="ACTION")
    csub.required = True

    def cmd_cert_get(args):
        with connect(args) as node:
            c, raw = node.governance.certificate(args.name)
        Path(args.out).write_bytes(raw)
        print(f"wrote {args.out}: certificate {c.certificate_id} of datasets/{c.dataset} version {c.version}")

    p = add("get", cmd_cert_get, "fetch (and verify) a listed dataset's certificate", csub)
    p.add_argument("name")
    p.add_argument("--out", required=True)

    def cmd_cert_verify(args):
        try:
            c = verify_file(args.file, Path(args.key).read_bytes())
        except (CertificateError, ValueError) as e:
            print(f"INVALID: {e}", file=sys.stderr)
            return 1
        print(f"OK: datasets/{c.dataset} version {c.version}, {c.classification}, {c.row_count} rows, "
              f"content {c.content_fingerprint}, issued {c.issued_at} by {c.node_id}")
        return 0

    p = csub.add_parser("verify", help="verify a certificate file offline with the node's public key")
    p.add_argument("file")
    p.add_argument("--key", required=True, help="the node's public key (PEM), e.g. from `veil audit key`")
    p.set_defaults(func=cmd_cert_verify)

    def cmd_explain(args):
        with connect(args) as node:
            _print(node.explain(args.sql, purpose=args.purpose), args.json)

    p = add("explain", cmd_explain, "what policy would decide for a query (nothing runs)")
    p.add_argument("sql")
    p.add_argument("--purpose", required=True)
