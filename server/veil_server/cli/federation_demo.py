"""Member node folders for a federated demo (and tests, benchmarks): N nodes, one part each.

Each member gets its own folder with its own synthetic part of the hospital admissions table
(a different seed per member, so no two parts are alike), its own principals and tokens, its
own Ed25519 node key (created here so that the others can pin it), and a ``[federation]``
section naming every other member with its loopback address and pinned key. The parts share
the schema and public group domains of ``veil_server.cli.demo.dataset_toml``; each member may set
its own minimum group size (the federated k is the largest).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from .demo import DEMO_GRANTS, PRINCIPALS, dataset_toml, grants_toml, patients_table, write_table
from ..access.node_key import NodeKey

FEDERATED_DATASET = "admissions"


@dataclass(frozen=True)
class MemberFolder:
    name: str
    folder: Path
    port: int
    tokens: dict[str, str]

    @property
    def config(self) -> Path:
        return self.folder / "veil.toml"

    @property
    def part(self) -> Path:
        return self.folder / "data" / "patients.csv"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def free_ports(count: int) -> list[int]:
    """Loopback ports free right now (each config must name its peers' ports before they start)."""
    sockets, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
        ports.append(s.getsockname()[1])
    for s in sockets:
        s.close()
    return ports


def init_federation(root: Path, *, members: tuple[str, ...] = ("north", "south", "east"),
                    rows: tuple[int, ...] = (20_000, 15_000, 10_000), min_group_size: tuple[int, ...] | None = None,
                    ports: list[int] | None = None, timeout_seconds: float = 30.0, retries: int = 2,
                    protocols: tuple[str, ...] = ("paillier", "sharing"),
                    dp_terms: str | None = None) -> dict[str, MemberFolder]:
    """Write one node folder per member under ``root``; returns them by name. Every part
    releases with differential privacy (``dp_terms``: a ``dp = {...}`` line instead of the demo's)."""
    if len(rows) != len(members):
        raise ValueError("one row count per member")
    ks = min_group_size or tuple(10 for _ in members)
    ports = ports or free_ports(len(members))
    root = Path(root).resolve()
    keys: dict[str, str] = {}
    out: dict[str, MemberFolder] = {}
    for i, name in enumerate(members):
        folder = root / name
        (folder / "data").mkdir(parents=True, exist_ok=True)
        write_table(patients_table(rows[i], seed=20261123 + 7919 * (i + 1)), folder / "data" / "patients.csv")
        key = NodeKey.load_or_create(folder / "state")
        keys[name] = key.public_key_bytes.hex()
        out[name] = MemberFolder(name, folder, ports[i], _tokens(folder))
    for i, name in enumerate(members):
        m = out[name]
        lines = ["# Veil member node (federated demo). Paths are relative to this file.",
                 "[node]", f'name = "{name}"', f'listen = "127.0.0.1:{m.port}"', 'state_dir = "state"',
                 f"min_group_size = {ks[i]}", "workers = 2", "dev_mode = true  # loopback, static tokens", ""]
        for pname, role in PRINCIPALS:
            digest = hashlib.sha256(m.tokens[pname].encode()).hexdigest()
            lines += ["[[principals]]", f'name = "{pname}"', f'role = "{role}"', f'token_sha256 = "{digest}"', ""]
        lines += ["[federation]", f"timeout_seconds = {timeout_seconds}", f"retries = {retries}", ""]
        for other in members:
            if other != name:
                lines += ["[[federation.peers]]", f'name = "{other}"', f'address = "{out[other].target}"',
                          f'public_key = "{keys[other]}"', ""]
        lines += ["[[federation.datasets]]", f'name = "{FEDERATED_DATASET}"', 'local = "patients"',
                  "members = [" + ", ".join(f'"{x}"' for x in members) + "]",
                  "protocols = [" + ", ".join(f'"{p}"' for p in protocols) + "]", ""]
        body = "\n".join(lines) + dataset_toml("patients", "data/patients.csv", min_group_size=ks[i],
                                                 dp_terms=dp_terms) + grants_toml("patients", DEMO_GRANTS)
        m.config.write_text(body, encoding="utf-8")
    return out


def _tokens(folder: Path) -> dict[str, str]:
    token_dir = folder / "tokens"
    token_dir.mkdir(exist_ok=True)
    os.chmod(token_dir, 0o700)
    tokens = {}
    for name, _ in PRINCIPALS:
        tokens[name] = secrets.token_urlsafe(32)
        path = token_dir / f"{name}.token"
        path.write_text(tokens[name] + "\n", encoding="utf-8")
        os.chmod(path, 0o600)
    return tokens
