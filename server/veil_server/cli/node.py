"""The ``veil`` command: the analyst commands of :mod:`veil.cli` plus ``veil node ...``.

The node commands live here, in the server package, so the client library never imports the
server; the console script points at this module.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from veil.cli.main import build_parser, run

from ..audit.events import LOG_FILE, public_key_path
from ..config import ConfigError, load_config
from .demo import init_node_folder
from .refusals import start_refusal
from . import recover as recover_verb
from . import token as token_verbs
from . import witness as witness_verbs


def cmd_init(args: argparse.Namespace) -> None:
    folder = Path(args.folder)
    try:
        tokens = init_node_folder(folder, rows=args.rows, listen=args.listen, data_format=args.format,
                                  force=args.force, tls=not args.dev, disclosure=args.disclosure)
    except FileExistsError as e:
        raise ValueError(str(e)) from None
    print(f"wrote {folder / 'veil.toml'}, {args.rows} synthetic rows and tokens for {', '.join(tokens)}")
    print(f"serve it:   veil node serve --config {folder / 'veil.toml'}")
    ca = "" if args.dev else f"VEIL_CA={folder / 'tls' / 'ca.pem'} "
    print(f"query it:   {ca}VEIL_TOKEN_FILE={folder / 'tokens' / 'alice.token'} veil datasets")
    if not args.dev:
        print(f"TLS:        development CA {folder / 'tls' / 'ca.pem'} (replace tls/ for production); "
              f"more tokens: veil token issue --principal alice --ttl 8h --config {folder / 'veil.toml'}")
    state = load_config(folder / "veil.toml", env={}).state_dir
    print(f"node key:   {public_key_path(state)} (Ed25519, written when the node first starts;"
          f" give it to auditors; the private key stays in {state})")


def cmd_serve(args: argparse.Namespace) -> None:
    from ..api.server import serve_forever

    logging.basicConfig(level=os.environ.get("VEIL_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = _config(args)
    try:
        serve_forever(config)
    except Exception as e:  # a refusal to start is one line naming the file and the fix
        line = start_refusal(e, config.state_dir)
        if line is None:
            raise
        raise ValueError(f"node refused to start: {line}") from None
    # Everything the node owns is closed and durable by now. Skip interpreter finalisation: it
    # can kill library threads (gRPC, DuckDB) mid-call, which aborts the process after a clean
    # stop ("exception not rethrown") and would make a graceful SIGTERM look like a crash.
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(0)


def _config(args: argparse.Namespace):
    try:
        return load_config(args.config or os.environ.get("VEIL_CONFIG") or "veil.toml")
    except ConfigError as e:
        raise ValueError(f"configuration: {e}") from None


def cmd_audit_export(args: argparse.Namespace) -> None:
    """The operator's raw export, straight from the file, for a log that refuses to open."""
    from ..audit import export_raw

    config = _config(args)
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
    print(f"wrote {args.file} from {source} (unverified: run `veil audit verify {args.file} --key NODE.pub`)")


def main(argv: list[str] | None = None) -> int:
    parser, sub = build_parser()
    node = sub.add_parser("node", help="run and set up a node (data owner / operator)")
    node_sub = node.add_subparsers(dest="node_command", metavar="NODE_COMMAND")
    node_sub.required = True
    p = node_sub.add_parser("init", help="write a node folder: config, synthetic demo data, tokens")
    p.add_argument("folder")
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--listen", default="127.0.0.1:50051")
    p.add_argument("--format", choices=("csv", "parquet"), default="csv")
    p.add_argument("--force", action="store_true", help="overwrite an existing config")
    p.add_argument("--dev", action="store_true",
                   help="development mode: plaintext on loopback and static tokens, no CA (default: TLS)")
    p.add_argument("--disclosure", choices=("dp", "exact"), default="dp",
                   help="the demo dataset's disclosure mode (default: differential privacy)")
    p.set_defaults(func=cmd_init)
    p = node_sub.add_parser("serve", help="serve a node until SIGINT/SIGTERM")
    p.add_argument("--config", help="path to veil.toml (env VEIL_CONFIG, default ./veil.toml)")
    p.set_defaults(func=cmd_serve)
    p = node_sub.add_parser("audit-export", help="export the audit log file as stored, without a running node")
    p.add_argument("file")
    p.add_argument("--config", help="path to veil.toml (env VEIL_CONFIG, default ./veil.toml)")
    p.set_defaults(func=cmd_audit_export)
    recover_verb.register(node_sub, _config)  # issue 15: veil node recover
    token_verbs.register(sub, _config)  # issue 8: veil token issue | revoke | list
    witness_verbs.register(sub)  # issue 15: veil witness init | serve | key
    return run(parser, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
