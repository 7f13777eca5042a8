"""``veil node recover --config veil.toml``: rebuild the node's state from its audit log.

For a node that refuses to start because its state is missing, older than its log or disagrees
with it (:mod:`veil_server.recovery` says what is rebuilt and what is not). The node must be
stopped. Registered as a verb of ``veil node`` (:mod:`veil_server.cli.node`).
"""

from __future__ import annotations

import argparse
import json

from ..audit.anchoring import StartRefused
from .refusals import start_refusal


def cmd_recover(args: argparse.Namespace, config) -> None:
    from ..node import Node

    try:
        node = Node(config, recover=True)
    except StartRefused as e:
        raise ValueError(f"not recovered: {e.line()}") from None
    except Exception as e:
        line = start_refusal(e, config.state_dir)
        if line is None:
            raise
        raise ValueError(f"not recovered: {line}") from None
    report = node.recovered
    node.close()
    summary = report.summary() | {"not_rebuilt_ids": report.not_rebuilt}
    if args.json:
        print(json.dumps(summary))
        return
    if not report.refused:
        print("state and log already agree; nothing was rebuilt (the run is logged as admin.state.recover)")
        return
    print(f"recovered from: {report.refused}")
    print(f"queries kept {report.kept}, rebuilt from the log {report.rebuilt} (of which ended FAILED, "
          f"key and inputs lost: {report.ended}), removed (not in the log) {report.removed}; results removed "
          f"{report.results_removed}; ε debits added {report.debits_added} ({report.epsilon_added:g}); exact-mode "
          f"releases added to the history {report.history_added}; grant "
          f"counts raised {report.grant_uses_raised}"
          + (f"; not rebuilt (logged SQL no longer plans the same): {', '.join(report.not_rebuilt)}"
             if report.not_rebuilt else ""))
