"""``veil usage`` and ``veil budget``: metered use and the privacy budget (issue 4)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from ..usage import parse_time, usage_table


def register(sub, common, node_of) -> None:
    def cmd_usage(args: argparse.Namespace) -> None:
        with node_of(args) as node:
            rows = node.usage(since=parse_time(args.since), until=parse_time(args.until), dataset=args.dataset or "")
        print(json.dumps([asdict(r) for r in rows]) if args.json else usage_table(rows))

    def cmd_budget(args: argparse.Namespace) -> None:
        with node_of(args) as node:
            b = node.budget(args.dataset, purpose=args.purpose or "")
        if args.json:
            print(json.dumps(asdict(b)))
        elif not b.dp_enabled:
            print(f"{b.dataset}: differential privacy is off (no ε budget)")
        else:
            print(f"{b.dataset}: ε spent {b.spent:g} of {b.limit:g}, {b.remaining:g} left "
                  f"({b.epsilon_per_query:g} per query)")

    p = sub.add_parser("usage", help="metered use over a time range", description="metered use over a time range")
    common(p)
    p.add_argument("--since", help="start (ISO 8601 date or date-time, UTC by default)")
    p.add_argument("--until", help="end, exclusive (ISO 8601)")
    p.add_argument("--dataset", help="only this dataset")
    p.set_defaults(func=cmd_usage)
    p = sub.add_parser("budget", help="your privacy budget on a dataset", description="your ε budget on a dataset")
    common(p)
    p.add_argument("dataset")
    p.add_argument("--purpose", help="for budgets kept per purpose")
    p.set_defaults(func=cmd_budget)
