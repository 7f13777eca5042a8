"""``veil witness init | serve | key``: the small witness an auditor runs (issue 15).

Registered through the ``veil.cli`` entry-point group (server/pyproject.toml).
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from typing import Any

# Every `veil` command builds the parser: the witness's modules load only in the verb that runs.

TEMPLATE = """# A Veil witness: cosigns a log's checkpoint only if it is consistent with the last one it
# cosigned (C2SP tlog-witness add-checkpoint). Give nodes its key: `veil witness key --config {config}`.
name = "{name}"
listen = "{listen}"
state_dir = "state"

# One [[logs]] per node it follows: the node's state_dir/node_key.pub.
# [[logs]]
# public_key_file = "logs/north.pub"
"""


def cmd_init(args: argparse.Namespace) -> None:
    folder = Path(args.folder)
    config = folder / "witness.toml"
    if config.exists() and not args.force:
        raise ValueError(f"{config} exists; pass --force to overwrite it")
    folder.mkdir(parents=True, exist_ok=True)
    config.write_text(TEMPLATE.format(name=args.name, listen=args.listen, config=config))
    (folder / "logs").mkdir(exist_ok=True)
    from ..access.node_key import NodeKey

    key = NodeKey.load_or_create(_state_dir(folder))
    print(f"wrote {config}; add the nodes' node_key.pub under {folder / 'logs'} as [[logs]] entries")
    print(f"witness key: {_vkey(args.name, key)}")


def _state_dir(folder: Path) -> Path:
    state = folder / "state"
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    return state


def _vkey(name: str, key) -> str:
    from veil.audit.witness import witness_verifier

    return witness_verifier(name, key.public_key_bytes).text()


def _load(args: argparse.Namespace):
    from ..witness import load_witness_config
    from ..witness.settings import WitnessConfigError

    try:
        return load_witness_config(args.config)
    except WitnessConfigError as e:
        raise ValueError(f"witness configuration: {e}") from None


def cmd_key(args: argparse.Namespace) -> None:
    from ..access.node_key import NodeKey

    cfg = _load(args)
    print(_vkey(cfg.name, NodeKey.load_or_create(cfg.state_dir)))


def cmd_serve(args: argparse.Namespace) -> None:
    from ..witness import serve_witness

    cfg = _load(args)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server = serve_witness(cfg.name, cfg.state_dir, cfg.listen, cfg.logs)
    try:
        print(f"veil witness '{cfg.name}' following {len(cfg.logs)} log(s) on {server.url}", flush=True)
        stop.wait()
    finally:
        server.close()


def register(cli: Any) -> None:
    """Add ``veil witness init | serve | key`` to the ``veil`` command (``cli``: ``veil.cli.command.Commands``)."""
    w = cli.noun("witness", "run a witness that cosigns nodes' consistent checkpoints (auditor)")
    p = w.verb("init", cmd_init, "write a witness folder: witness.toml and a key", json=False)
    p.add_argument("folder")
    p.add_argument("--name", required=True, help="the witness's key name, e.g. audit.example/witness-1")
    p.add_argument("--listen", default="127.0.0.1:50070")
    p.add_argument("--force", action="store_true")
    # Serving prints a log; the key is one line of text others paste: neither is a record.
    w.verb("serve", cmd_serve, "serve add-checkpoint until SIGINT/SIGTERM",
           json=False).add_argument("--config", default="witness.toml")
    w.verb("key", cmd_key, "print the witness's verifier key (give it to nodes and analysts)",
           json=False).add_argument("--config", default="witness.toml")
