"""``veil audit dump FILE --config veil.toml``: the operator's export of the audit log, read from
the node's own files (or its PostgreSQL schema) without a running node -- for a log that refuses
to open, so that ``veil audit verify`` can name the entry that changed. ``veil audit export``
asks a running node instead (an auditor's token).
"""

from __future__ import annotations

import argparse
from typing import Any

from .node_config import add_config_option, load_node_config


def cmd_dump(args: argparse.Namespace) -> None:
    """The operator's raw export, straight from the file, for a log that refuses to open."""
    from veil.cli.output import emit

    from ..audit import export_raw
    from ..audit.events import LOG_FILE

    config = load_node_config(args)
    if config.state.shared:  # the log of replicas, in PostgreSQL
        from ..state.statedb import describe_conninfo, open_database

        db = open_database(config.state, sqlite_path=config.state_dir / LOG_FILE, audit=True)
        source = f"schema {config.state.schema}_audit of {describe_conninfo(config.state.conninfo)}"
        try:
            with open(args.file, "wb") as f:
                export_raw(db, f)
        finally:
            db.close()
    else:
        path = source = config.state_dir / LOG_FILE
        if not path.exists():
            raise ValueError(f"no audit log at {path}")
        with open(args.file, "wb") as f:
            export_raw(path, f)
    emit(args, {"file": args.file, "source": str(source), "verified": False},
         f"wrote {args.file} from {source} (unverified: run `veil audit verify {args.file} --key NODE.pub`)")


def register(cli: Any) -> None:
    """Add ``veil audit dump`` to the ``veil`` command (``cli``: ``veil.cli.command.Commands``)."""
    audit = cli.noun("audit", "read, export and verify the node's audit log")
    p = audit.verb("dump", cmd_dump, "operator: export the audit log as stored, without a running node")
    p.add_argument("file")
    add_config_option(p)
