"""``veil grant ...``, ``veil review ...`` and ``veil cert ...``: governance for owners and
reviewers, and data asset certificates for anyone.

    veil grant add --principal alice --dataset NAME --purpose research [--columns a,b] [--until ISO] [--max-queries N]
    veil grant list [--dataset NAME]
    veil grant revoke ID --reason "…"
    veil review list [--dataset NAME] | show QUERY | approve QUERY --reason "…" | reject QUERY --reason "…"
    veil cert get NAME --out FILE                       # fetched and verified against the pinned node key
    veil cert verify FILE --key NODE.pub                # offline; exit 1 if it does not verify
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from ..certificates import CertificateError, verify_file
from .command import Commands
from .connection import connect
from .output import emit

VERIFY_FAILED = 1


def grant_add(args: argparse.Namespace) -> None:
    until = datetime.fromisoformat(args.until) if args.until else None
    if until is not None and until.tzinfo is None:
        until = until.replace(tzinfo=timezone.utc)
    with connect(args) as node:
        emit(args, node.governance.grant(args.principal, args.dataset, args.purpose,
                                         columns=[c for c in args.columns.split(",") if c], valid_until=until,
                                         max_queries=args.max_queries))


def grant_list(args: argparse.Namespace) -> None:
    with connect(args) as node:
        emit(args, node.governance.grants(args.dataset))


def grant_revoke(args: argparse.Namespace) -> None:
    with connect(args) as node:
        emit(args, node.governance.revoke(args.grant, args.reason))


def review_list(args: argparse.Namespace) -> None:
    with connect(args) as node:
        emit(args, node.review.pending(args.dataset))


def review_show(args: argparse.Namespace) -> None:
    with connect(args) as node:
        emit(args, node.review.show(args.query))


def _decide(approve: bool):
    def run(args: argparse.Namespace) -> None:
        with connect(args) as node:
            r = node.review
            emit(args, (r.approve if approve else r.reject)(args.query, args.reason))
    return run


def cert_get(args: argparse.Namespace) -> None:
    with connect(args) as node:
        c, raw = node.governance.certificate(args.name)
    Path(args.out).write_bytes(raw)
    emit(args, {"file": args.out, **asdict(c)},
         f"wrote {args.out}: certificate {c.certificate_id} of datasets/{c.dataset} version {c.version}")


def cert_verify(args: argparse.Namespace) -> int:
    try:
        c = verify_file(args.file, Path(args.key).read_bytes())
    except (CertificateError, ValueError) as e:
        if args.json:
            emit(args, {"ok": False, "error": str(e)})
        print(f"INVALID: {e}", file=sys.stderr)
        return VERIFY_FAILED
    emit(args, {"ok": True, **asdict(c)},
         f"OK: datasets/{c.dataset} version {c.version}, {c.classification}, {c.row_count} rows, "
         f"content {c.content_fingerprint}, issued {c.issued_at} by {c.node_id}")
    return 0


def register(cli: Commands) -> None:
    grant = cli.noun("grant", "who may use which dataset for which purpose (owners)")
    p = grant.verb("add", grant_add, "grant a principal the use of a dataset for a purpose", connects=True)
    p.add_argument("--principal", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--purpose", required=True)
    p.add_argument("--columns", default="", help="comma-separated column subset (default: all allowed)")
    p.add_argument("--until", default="", help="end of validity, ISO 8601 (default: none)")
    p.add_argument("--max-queries", type=int, default=0, help="0 for no limit")
    grant.verb("list", grant_list, "list the grants you may see", connects=True).add_argument("--dataset", default="")
    p = grant.verb("revoke", grant_revoke, "revoke a grant", connects=True)
    p.add_argument("grant")
    p.add_argument("--reason", required=True)

    review = cli.noun("review", "queries awaiting a dataset owner's approval")
    review.verb("list", review_list, "list pending queries", connects=True).add_argument("--dataset", default="")
    review.verb("show", review_show, "show one pending query: plan, columns, groups, rules",
                connects=True).add_argument("query")
    for verb, approve in (("approve", True), ("reject", False)):
        p = review.verb(verb, _decide(approve), f"{verb} a pending query", connects=True)
        p.add_argument("query")
        p.add_argument("--reason", required=True)

    cert = cli.noun("cert", "data asset certificates")
    p = cert.verb("get", cert_get, "fetch and verify a listed dataset's certificate", connects=True)
    p.add_argument("name")
    p.add_argument("--out", required=True)
    p = cert.verb("verify", cert_verify, "verify a certificate file offline with the node's public key")
    p.add_argument("file")
    p.add_argument("--key", required=True, help="the node's public key (PEM), e.g. from `veil audit key`")
