"""``veil usage report`` and ``veil budget show``: metered use and the privacy budget.

    veil usage report [--since 2026-01-01] [--until ...] [--dataset NAME]
    veil budget show DATASET [--purpose P]
"""

from __future__ import annotations

import argparse

from ..usage import parse_time, usage_table
from .command import Commands
from .connection import connect
from .output import emit


def report(args: argparse.Namespace) -> None:
    with connect(args) as node:
        rows = node.usage(since=parse_time(args.since), until=parse_time(args.until), dataset=args.dataset or "")
    emit(args, rows, usage_table(rows))


def budget(args: argparse.Namespace) -> None:
    with connect(args) as node:
        b = node.budget(args.dataset, purpose=args.purpose or "")
    if not b.dp_enabled:
        text = f"{b.dataset}: exact release (the owner's choice); no ε budget"
    else:
        text = (f"{b.dataset}: you spent ε {b.spent:g} of {b.limit:g}; all analysts together "
                f"{b.dataset_spent:g} of {b.dataset_limit:g}; {b.remaining:g} left for you "
                f"({b.epsilon_per_query:g} per query by default, at most {b.max_epsilon_per_query:g})")
    emit(args, b, text)


def register(cli: Commands) -> None:
    usage = cli.noun("usage", "metered use: queries, rows, cells, ε per principal, dataset and purpose")
    p = usage.verb("report", report, "metered use over a time range", connects=True)
    p.add_argument("--since", help="start (ISO 8601 date or date-time, UTC by default)")
    p.add_argument("--until", help="end, exclusive (ISO 8601)")
    p.add_argument("--dataset", help="only this dataset")
    b = cli.noun("budget", "privacy budgets")
    p = b.verb("show", budget, "your ε budget on a dataset", connects=True)
    p.add_argument("dataset")
    p.add_argument("--purpose", help="for budgets kept per purpose")
