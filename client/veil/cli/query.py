"""``veil query submit | status | result | cancel | list | explain``: an analyst's queries.

    veil query submit "SELECT region, AVG(cost) FROM patients GROUP BY region" --purpose research
    veil query submit "..." --purpose research --no-wait      # then: status, result, cancel ID
    veil query explain "..." --purpose research               # what policy would decide; nothing runs
    veil query submit "..." --purpose research --epsilon 0.25  # DP datasets: spend less, get more noise

Results print exactly: decimals as the node computed them (strings in ``--json``), counts as
integers, suppressed groups marked.
"""

from __future__ import annotations

import argparse

from .command import Commands
from .connection import connect
from .output import emit, frame_records, frame_text, plain, table
from .progress import Progress


def _query_text(info) -> str:
    return (f"{info.name}  {info.state}  ({info.state_reason}: {info.state_message})\n"
            f"  dataset: {info.dataset}   purpose: {info.purpose}\n"
            f"  plan:    {info.canonical_sql}")


def _print_frame(args: argparse.Namespace, frame) -> None:
    text = frame_text(frame)
    noise = frame.attrs.get("noise") or {}
    if noise:  # a DP release: say how far each column may be from the exact figure
        text += (f"\ndifferential privacy, ε = {frame.attrs.get('epsilon', 0):g}; 95 % error bound per cell"
                 " (AVG/VAR/STDDEV: at the smallest releasable group):\n"
                 + "".join(f"  {c}: ± {_num(n['error_bound_95'])}\n" for c, n in noise.items()).rstrip())
    emit(args, frame_records(frame), text)


def _num(x: float) -> str:
    return f"{x:.4g}"


def submit(args: argparse.Namespace) -> None:
    with connect(args) as node:
        info = node.submit(args.sql, purpose=args.purpose, epsilon=args.epsilon)
        if args.no_wait:
            emit(args, info, _query_text(info))
            return
        # On a terminal, one line on stderr says what the query waits for (never with --json,
        # never into a pipe).
        progress = Progress(enabled=None if not args.json else False)
        progress(info)
        try:
            frame = node.wait(info.name, timeout=args.timeout, exact=True,
                              progress=progress if progress.enabled else None)
        finally:
            progress.done()
    _print_frame(args, frame)


def _about(method: str):
    """``veil query status|cancel ID``: call ``node.<method>(ID)`` and print the query."""
    def run(args: argparse.Namespace) -> None:
        with connect(args) as node:
            info = getattr(node, method)(args.query)
        emit(args, info, _query_text(info))
    return run


def result(args: argparse.Namespace) -> None:
    with connect(args) as node:
        frame = node.result(args.query, exact=True)
    _print_frame(args, frame)


def list_queries(args: argparse.Namespace) -> None:
    with connect(args) as node:
        items = node.queries(limit=args.limit)
    emit(args, items, table([{"query": q.id, "state": q.state, "dataset": q.dataset, "purpose": q.purpose,
                              "sql": q.sql[:60]} for q in items]))


def explain(args: argparse.Namespace) -> None:
    with connect(args) as node:
        e = node.explain(args.sql, purpose=args.purpose, epsilon=args.epsilon)
    accuracy = e.get("accuracy") or []
    text = "\n".join(f"{k}: {v}" for k, v in plain(e).items() if k != "accuracy")
    if accuracy:
        text += (f"\nnoise at ε = {e['epsilon_cost']:g} (nothing spent yet):\n"
                 + table([{"column": a["column"], "function": a["function"], "std": _num(a["std"]),
                           "95% bound": _num(a["error_bound_95"])} for a in accuracy]))
    emit(args, e, text)


def register(cli: Commands) -> None:
    q = cli.noun("query", "submit SQL aggregates, follow them, fetch their decrypted results")
    p = q.verb("submit", submit, "submit an SQL aggregate; wait and print the decrypted result",
               connects=True, key_bits=True)
    p.add_argument("sql")
    p.add_argument("--purpose", required=True, help="the declared purpose (see `veil dataset show NAME`)")
    p.add_argument("--no-wait", action="store_true", help="print the submitted query and return")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the result")
    p.add_argument("--epsilon", type=float, help="DP datasets: the ε to spend (default: the dataset's)")
    q.verb("status", _about("get"), "show a query's state", connects=True).add_argument("query")
    q.verb("result", result, "fetch, check and decrypt a finished query's result", connects=True,
           key_bits=True).add_argument("query")
    q.verb("cancel", _about("cancel"), "cancel an unfinished query", connects=True).add_argument("query")
    q.verb("list", list_queries, "list your queries", connects=True).add_argument("--limit", type=int, default=50)
    p = q.verb("explain", explain, "what policy would decide for a query, and its noise (nothing is recorded, run "
                                   "or spent)", connects=True)
    p.add_argument("sql")
    p.add_argument("--purpose", required=True)
    p.add_argument("--epsilon", type=float, help="DP datasets: the ε to explain (default: the dataset's)")
