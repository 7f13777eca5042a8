"""A witness's configuration: its name, address, folder, and the logs it follows.

```toml
# witness.toml (``veil witness init DIR`` writes one)
name = "audit.example/witness-1"   # the key name in its cosignature lines
listen = "127.0.0.1:50070"         # HTTP; add-checkpoint carries only signed, public data
state_dir = "state"                 # its key (node_key.pem, 0600) and witnessed.db

[[logs]]                            # a log it follows: the node's key (its origin follows from it)
public_key_file = "logs/north.pub"  # the node's state_dir/node_key.pub (PEM), or public_key = hex
```

A node that witnesses its federation peers takes the logs from ``[federation]``'s pinned peer
keys instead (:func:`peer_logs`).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veil.audit.records import key_id
from veil.audit.witness import VerifierKey, log_verifier

from ..federation.settings import _public_key as peer_public_key


class WitnessConfigError(ValueError):
    pass


def origin_for(public_key: bytes) -> str:
    """A Veil log's origin from its node key (as ``audit.events.node_id_for``)."""
    return f"veil-{key_id(public_key)[:16]}"


def log_key(public_key: bytes) -> VerifierKey:
    return log_verifier(origin_for(public_key), public_key)


@dataclass(frozen=True)
class WitnessConfig:
    name: str
    listen: str
    state_dir: Path
    logs: tuple[VerifierKey, ...]


def _raw_key(entry: dict[str, Any], where: str, base_dir: Path) -> bytes:
    """A log's raw Ed25519 key from ``public_key`` (hex) or ``public_key_file`` (PEM), read as
    ``[federation]`` reads its peers' keys."""
    return bytes.fromhex(peer_public_key(entry, where, base_dir, WitnessConfigError))


def load_witness_config(path: str | Path) -> WitnessConfig:
    path = Path(path).resolve()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WitnessConfigError(f"{path} does not exist; write one with `veil witness init DIR`") from None
    except tomllib.TOMLDecodeError as e:
        raise WitnessConfigError(f"{path}: {e}") from None
    unknown = set(raw) - {"name", "listen", "state_dir", "logs"}
    if unknown:
        raise WitnessConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    name = str(raw.get("name", ""))
    if not name or " " in name or "+" in name:
        raise WitnessConfigError(f"{path}: name must be a non-empty key name without spaces or '+'")
    state_dir = Path(str(raw.get("state_dir", "state")))
    logs = tuple(log_key(_raw_key(e, f"logs[{i}]", path.parent)) for i, e in enumerate(raw.get("logs", [])))
    return WitnessConfig(name, str(raw.get("listen", "127.0.0.1:50070")),
                         state_dir if state_dir.is_absolute() else path.parent / state_dir, logs)


def peer_logs(federation: Any) -> tuple[VerifierKey, ...]:
    """The logs a node witnesses for its federation: its pinned peers' node keys."""
    if federation is None:
        return ()
    return tuple(log_key(bytes.fromhex(p.public_key)) for p in federation.peers)
