"""The ``veil`` command line for analysts: datasets, queries, results.

Connection settings come from flags or the environment: ``--target`` / ``VEIL_TARGET``,
``--token`` / ``VEIL_TOKEN`` or ``--token-file`` / ``VEIL_TOKEN_FILE``. Every command can print
JSON (``--json``) for scripts. Errors print the node's reason code and message and exit with a
non-zero status (2 for refusals, 3 for connection problems).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from typing import Any, Callable

import pandas as pd

from . import audit as audit_cli, governance as governance_cli, usage as usage_cli
from ..errors import Unavailable, VeilError
from ..sdk import DEFAULT_TARGET, Node, QueryInfo


def _token(args: argparse.Namespace) -> str | None:
    if args.token:
        return args.token
    path = args.token_file or os.environ.get("VEIL_TOKEN_FILE")
    if path:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    return os.environ.get("VEIL_TOKEN")


def _node(args: argparse.Namespace) -> Node:
    return Node(args.target or os.environ.get("VEIL_TARGET") or DEFAULT_TARGET, token=_token(args),
                key_bits=args.key_bits)


def _print_frame(frame: pd.DataFrame, as_json: bool) -> None:
    if as_json:
        print(frame.to_json(orient="records", double_precision=15))
    else:
        with pd.option_context("display.max_rows", 500, "display.width", 200, "display.max_columns", 50):
            print(frame.to_string(index=False))


def _print_query(info: QueryInfo, as_json: bool) -> None:
    if as_json:
        print(json.dumps(asdict(info)))
        return
    print(f"{info.name}  {info.state}  ({info.state_reason}: {info.state_message})")
    print(f"  dataset: {info.dataset}   purpose: {info.purpose}")
    print(f"  plan:    {info.canonical_sql}")


def cmd_datasets(args: argparse.Namespace) -> None:
    with _node(args) as node:
        items = node.datasets()
    if args.json:
        print(json.dumps([asdict(d) for d in items]))
        return
    frame = pd.DataFrame([{"dataset": d.name, "rows (approx.)": d.approximate_row_count,
                           "min group": d.min_group_size, "purposes": ",".join(d.purposes),
                           "description": d.description} for d in items])
    _print_frame(frame, False)


def cmd_dataset(args: argparse.Namespace) -> None:
    with _node(args) as node:
        d = node.dataset(args.name)
    if args.json:
        print(json.dumps(asdict(d)))
        return
    print(f"{d.name}: {d.description}")
    print(f"  about {d.approximate_row_count} rows; groups under {d.min_group_size} rows are suppressed;"
          f" purposes: {', '.join(d.purposes)}")
    _print_frame(d.columns_frame(), False)


def cmd_query(args: argparse.Namespace) -> None:
    with _node(args) as node:
        info = node.submit(args.sql, purpose=args.purpose)
        if args.no_wait:
            _print_query(info, args.json)
            return
        frame = node.wait(info.name, timeout=args.timeout)
    _print_frame(frame, args.json)


def cmd_queries(args: argparse.Namespace) -> None:
    with _node(args) as node:
        items = node.queries(limit=args.limit)
    if args.json:
        print(json.dumps([asdict(q) for q in items]))
        return
    _print_frame(pd.DataFrame([{"query": q.id, "state": q.state, "dataset": q.dataset, "purpose": q.purpose,
                                "sql": q.sql[:60]} for q in items]), False)


def cmd_status(args: argparse.Namespace) -> None:
    with _node(args) as node:
        _print_query(node.get(args.query), args.json)


def cmd_cancel(args: argparse.Namespace) -> None:
    with _node(args) as node:
        _print_query(node.cancel(args.query), args.json)


def cmd_result(args: argparse.Namespace) -> None:
    with _node(args) as node:
        _print_frame(node.result(args.query), args.json)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", help=f"node address host:port (env VEIL_TARGET, default {DEFAULT_TARGET})")
    p.add_argument("--token", help="bearer token (env VEIL_TOKEN)")
    p.add_argument("--token-file", help="file holding the bearer token (env VEIL_TOKEN_FILE)")
    p.add_argument("--key-bits", type=int, default=2048, choices=(2048, 3072, 4096),
                   help="Paillier key size of your keyring (default 2048)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def build_parser() -> tuple[argparse.ArgumentParser, Any]:
    parser = argparse.ArgumentParser(prog="veil", description="Veil: query data you cannot see.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add(name: str, fn: Callable[[argparse.Namespace], None], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        _common(p)
        p.set_defaults(func=fn)
        return p

    add("datasets", cmd_datasets, "list the datasets the node serves")
    p = add("query", cmd_query, "run an SQL aggregate and print the decrypted result")
    p.add_argument("sql")
    p.add_argument("--purpose", required=True, help="the declared purpose (see `veil dataset NAME`)")
    p.add_argument("--no-wait", action="store_true", help="submit and print the query, do not wait")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the result")
    add("queries", cmd_queries, "list your queries").add_argument("--limit", type=int, default=50)
    add("status", cmd_status, "show a query's state").add_argument("query")
    add("cancel", cmd_cancel, "cancel an unfinished query").add_argument("query")
    add("result", cmd_result, "fetch and decrypt a finished query's result").add_argument("query")
    audit_cli.register(sub, _common, _node)
    governance_cli.register(sub, _common, _node, cmd_dataset)
    usage_cli.register(sub, _common, _node)  # issue 4: veil usage, veil budget
    return parser, sub


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    args = parser.parse_args(argv)
    try:
        code = args.func(args)  # commands that verify return 1 when verification fails
    except Unavailable as e:
        print(f"veil: cannot reach the node [{e.reason or 'UNAVAILABLE'}]: {e.message}", file=sys.stderr)
        return 3
    except VeilError as e:
        print(f"veil: {e}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        print(f"veil: {e}", file=sys.stderr)
        return 2
    return code or 0


def main(argv: list[str] | None = None) -> int:
    parser, _ = build_parser()
    return run(parser, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
