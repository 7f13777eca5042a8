"""``veil node init | serve``: set up and run a node (data owner / operator).

The node's verbs live here, in the server package, so the library never imports the node: the
``veil`` command of the library (:mod:`veil.cli`) finds :func:`register` through the
``veil.cli`` entry-point group this package declares.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from .node_config import add_config_option, config_path, load_node_config

# Every `veil` command builds this parser, so the node's modules load only in the verb that runs.


def cmd_init(args: argparse.Namespace) -> None:
    from veil.cli.output import emit

    from ..audit.events import public_key_path
    from ..config import load_config
    from .demo import init_node_folder

    folder = Path(args.folder)
    if args.federation or args.members:
        return _init_federation(args, folder)
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]{0,62}", args.name):
        raise ValueError("--name: letters, digits, '_', '.' and '-', starting with a letter (at most 63)")
    try:
        tokens = init_node_folder(folder, rows=args.rows, listen=args.listen, data_format=args.format,
                                  force=args.force, tls=not args.dev, disclosure=args.disclosure,
                                  node_name=args.name)
    except FileExistsError as e:
        raise ValueError(str(e)) from None
    config, ca = folder / "veil.toml", None if args.dev else folder / "tls" / "ca.pem"
    state = load_config(config, env={}).state_dir
    trust = f"VEIL_CA={ca} " if ca else ""
    text = [f"wrote {config}, {args.rows} synthetic rows and tokens for {', '.join(tokens)}",
            f"serve it:   veil node serve --config {config}",
            f"query it:   {trust}VEIL_TOKEN_FILE={folder / 'tokens' / 'alice.token'} veil dataset list"]
    if ca:
        text.append(f"TLS:        development CA {ca} (replace tls/ for production); "
                    f"more tokens: veil token issue --principal alice --ttl 8h --config {config} --out FILE")
    text.append(f"node key:   {public_key_path(state)} (Ed25519, written when the node first starts;"
                f" give it to auditors; the private key stays in {state})")
    emit(args, {"config": config, "rows": args.rows, "ca": ca, "node_key": public_key_path(state),
                "tokens": {name: folder / "tokens" / f"{name}.token" for name in tokens}}, "\n".join(text))


def _init_federation(args: argparse.Namespace, root: Path) -> None:
    from veil.cli.output import emit

    from .federation_init import FEDERATED_DATASET, init_federation_folders

    if not (args.federation and args.members):
        raise ValueError("a federation needs both --federation NAME and --members a,b,c")
    if args.dev:
        raise ValueError("--federation writes TLS members (one shared development CA); drop --dev")
    members = [m.strip() for m in args.members.split(",") if m.strip()]
    ports = [int(p) for p in args.ports.split(",")] if args.ports else None
    host = args.listen.rpartition(":")[0] or "127.0.0.1"
    try:
        out = init_federation_folders(root, federation=args.federation, members=members, rows=args.rows,
                                      host=host, ports=ports, force=args.force)
    except FileExistsError as e:
        raise ValueError(str(e)) from None
    first = out[members[0]]
    text = [f"wrote federation {args.federation!r}: {', '.join(members)} under {root} (shared CA {root / 'ca'})"]
    text += [f"serve {m}:   veil node serve --config {out[m]['folder'] / 'veil.toml'}" for m in members]
    text.append(f"query it:   VEIL_TARGET={first['address']} VEIL_CA={first['folder'] / 'tls' / 'ca.pem'} "
                f"VEIL_TOKEN=$(cat {first['folder'] / 'tokens' / 'alice.token'}) python -c \"import veil; "
                f"print(veil.connect().federated_query('SELECT region, COUNT(*) AS n FROM {FEDERATED_DATASET} "
                f"GROUP BY region', purpose='research'))\"")
    emit(args, {"federation": args.federation, "ca": root / "ca" / "ca.pem",
                "members": {m: {"config": v["folder"] / "veil.toml", "address": v["address"]} for m, v in out.items()}},
         "\n".join(text))


def cmd_check(args: argparse.Namespace) -> int:
    """Every problem of the config, listed; exit 0 when the node would accept it, 2 when not."""
    from veil.cli.output import emit

    from ..config_check import check_config

    path = config_path(args)
    problems = check_config(path)
    if args.json or not problems:
        emit(args, {"config": path, "ok": not problems,
                    "errors": [{"key": p.key, "message": p.message} for p in problems]}, f"{path}: ok")
    else:
        for p in problems:
            print(f"veil: {path}: {p}", file=sys.stderr)
        print(f"veil: {path}: {len(problems)} error(s); the node would refuse to start", file=sys.stderr)
    return 2 if problems else 0


def cmd_health(args: argparse.Namespace) -> int:
    """gRPC health of a node (``grpc.health.v1``): exit 0 when SERVING, 1 when not, 3 when it
    cannot be reached. What a container HEALTHCHECK or a load balancer probe runs; no token."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from veil.cli.connection import DEFAULT_TARGET
    from veil.cli.output import emit
    from veil.errors import Unavailable
    from veil.transport import open_channel

    target = args.target or os.environ.get("VEIL_TARGET") or DEFAULT_TARGET
    with open_channel(target, ca=args.ca, cert=args.cert, key=args.key_file) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                raise ValueError(f"the node at {target} has no service {args.service!r}") from None
            raise Unavailable(f"no health answer from {target} ({e.code().name})", reason="UNAVAILABLE") from None
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    emit(args, {"target": target, "service": args.service, "status": status}, status)
    return 0 if status == "SERVING" else 1


def cmd_serve(args: argparse.Namespace) -> None:
    from ..api.server import serve_forever
    from ..config_check import check_config
    from ..telemetry.logs import configure_logging, log_format, log_level

    fmt, level = log_format(args.log_format), log_level()
    configure_logging(fmt, level)
    from .refusals import start_refusal

    # The same check as `veil node check`, before anything is bound or written: a typo'd key
    # refuses the start instead of leaving a default silently in force.
    problems = check_config(config_path(args))
    if problems:
        raise ValueError(f"node refused to start: {len(problems)} configuration error(s) "
                         f"(see `veil node check --config {config_path(args)}`): " + "; ".join(map(str, problems)))
    config = load_node_config(args)
    configure_logging(fmt, level, node=config.name)  # JSON lines name the node
    try:
        serve_forever(config, metrics_listen=args.metrics_listen)
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


def register(cli: Any) -> None:
    """Add ``veil node init | serve`` to the ``veil`` command (``cli``: ``veil.cli.command.Commands``)."""
    node = cli.noun("node", "run and set up a node (data owner / operator)")
    p = node.verb("init", cmd_init, "write a node folder: config, synthetic demo data, development CA, tokens")
    p.add_argument("folder")
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--listen", default="127.0.0.1:50051")
    p.add_argument("--format", choices=("csv", "parquet"), default="csv")
    p.add_argument("--force", action="store_true", help="overwrite an existing config")
    p.add_argument("--dev", action="store_true",
                   help="development mode: plaintext on loopback and static tokens, no CA (default: TLS)")
    p.add_argument("--disclosure", choices=("dp", "exact"), default="dp",
                   help="the demo dataset's disclosure mode (default: differential privacy)")
    p.add_argument("--name", default="demo-node",
                   help="the node's name ([node] name: its tokens' issuer and its name among peers; "
                        "default demo-node)")
    p.add_argument("--federation", metavar="NAME",
                   help="write one member folder per --members under FOLDER, sharing a development CA, "
                        "pinning each other's keys")
    p.add_argument("--members", metavar="A,B,C", help="with --federation: at least three member names")
    p.add_argument("--ports", metavar="P1,P2,P3",
                   help="with --federation: one port per member (default 50051, 50053, ...; each +1 is its mTLS port)")
    # Serving prints the node's log, not a record: no --json.
    serve = node.verb("serve", cmd_serve, "serve a node until SIGINT/SIGTERM", json=False)
    add_config_option(serve)
    serve.add_argument("--log-format", choices=("text", "json"),
                       help="text (default) or json: one JSON object per event (env VEIL_LOG_FORMAT); "
                            "VEIL_LOG_LEVEL sets the level (default INFO: every RPC)")
    serve.add_argument("--metrics-listen", metavar="HOST:PORT",
                       help="serve Prometheus metrics at http://HOST:PORT/metrics ([metrics], VEIL_METRICS_LISTEN)")
    health = node.verb("health", cmd_health, "ask a running node's gRPC health service; exit 0 when SERVING",
                       connects=True)
    health.add_argument("--service", default="", help="a service name (default: the whole node)")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default 5)")
    add_config_option(node.verb("check", cmd_check,
                                "validate a config without binding ports or writing anything; lists every error"))
    add_config_option(node.verb("recover", cmd_recover,
                                "rebuild a stopped node's state from its verified audit log (audited)"))
    codes = node.verb("subject-code", cmd_subject_code,
                      "print the statement code of each subject of a consent dataset (give it to the subject)")
    add_config_option(codes)
    codes.add_argument("--dataset", required=True, help="the consent dataset")
    codes.add_argument("subjects", nargs="+", help="subject ids, as the consent table holds them")


def cmd_subject_code(args: argparse.Namespace) -> None:
    """The statement codes (governance.subject_statements.subject_code), from the node key in the
    state directory: the operator's side, like ``veil token issue``. A subject (or a service acting
    for them) needs its code to ask for its subject statement."""
    import json

    from ..access.node_key import NodeKey
    from ..governance.subject_statements import subject_code
    from ..query.consent import CONSENT_KEY_LABEL

    config = load_node_config(args)
    key = NodeKey.load(config.state_dir / "node_key.pem").derived_key(CONSENT_KEY_LABEL)
    codes = {s: subject_code(key, args.dataset.removeprefix("datasets/"), s) for s in args.subjects}
    if getattr(args, "json", False):
        print(json.dumps(codes))
        return
    for s, c in codes.items():
        print(f"{s}\t{c}")


def cmd_recover(args: argparse.Namespace) -> None:
    from .recover import cmd_recover as run

    run(args, load_node_config(args))
