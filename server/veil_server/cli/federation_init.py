"""``veil node init ROOT --federation NAME --members a,b,c``: a federation's member folders at once.

Each member gets a complete node folder (``veil node init``'s: config, synthetic part of the data,
signed tokens) with, in addition:

- one development CA for the whole federation (``ROOT/ca``: its key stays there, outside every
  member folder); each member's certificate is issued by it for the member's own name, loopback
  and its listen host, so members verify one another over TLS;
- its node key made now (``state/node_key.pem``), so that every member's ``[federation]`` pins
  every other member's key before anything starts (as 64 hex digits of the raw Ed25519 key, with
  the PEM beside it as ``state/node_key.pub``);
- a distinct ``[node] name`` (the member's), and a ``[federation]`` section naming the peers, their
  addresses and keys, and the federated dataset over the members' ``patients`` tables.

Development only: the shared CA and the demo data are for trying a federation on one machine;
production members use their own PKI and exchange keys out of band.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..access.dev_ca import DevCA
from ..access.node_key import NodeKey
from ..audit.events import public_key_path
from .demo import init_node_folder

FEDERATED_DATASET = "admissions"
_MEMBER = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")


def init_federation_folders(root: Path, *, federation: str, members: list[str], rows: int = 10_000,
                            host: str = "127.0.0.1", ports: list[int] | None = None,
                            force: bool = False) -> dict[str, dict]:
    """Write ``root/<member>`` for each member and ``root/ca``; returns, per member, its folder,
    address and tokens."""
    if len(members) < 3 or len(set(members)) != len(members):
        raise ValueError("a federation needs at least three distinct members (with two, each could read the "
                         "other's part off the total)")
    bad = [m for m in members if not _MEMBER.match(m)]
    if bad or not _MEMBER.match(federation):
        raise ValueError(f"member and federation names are letters, digits, '_' and '-': {bad or [federation]}")
    # Each member listens on a port and its mutual-TLS port on the next one.
    ports = ports or [50051 + 2 * i for i in range(len(members))]
    if len(ports) != len(members):
        raise ValueError("give one port per member")
    root = Path(root).resolve()
    if (root / "ca" / "ca.pem").exists() and not force:
        raise FileExistsError(f"{root / 'ca'} exists; pass --force to overwrite the federation")
    ca = DevCA.create(root / "ca", f"Veil development CA (federation {federation})")
    out: dict[str, dict] = {}
    keys: dict[str, str] = {}
    for i, (name, port) in enumerate(zip(members, ports)):
        folder = root / name
        tokens = init_node_folder(folder, rows=rows, listen=f"{host}:{port}", tls=True, force=force,
                                  node_name=name, shared_ca=ca, seed=20261123 + 7919 * (i + 1))
        key = NodeKey.load_or_create(folder / "state")
        pub = public_key_path(folder / "state")
        pub.write_bytes(key.public_key_pem)
        pub.chmod(0o600)  # as the node writes it
        keys[name] = key.public_key_bytes.hex()
        out[name] = {"folder": folder, "address": f"{host}:{port}", "tokens": tokens}
    for name in members:
        # [federation] name is this member's name among its peers: its node name, the default.
        lines = ["", f"# Federation {federation!r} (written by `veil node init --federation`).", "[federation]", ""]
        for other in members:
            if other != name:
                lines += ["[[federation.peers]]", f'name = "{other}"', f'address = "{out[other]["address"]}"',
                          f'public_key = "{keys[other]}"  # {other}/state/node_key.pub, raw Ed25519 in hex', ""]
        lines += ["[[federation.datasets]]", f'name = "{FEDERATED_DATASET}"', 'local = "patients"',
                  "members = [" + ", ".join(f'"{m}"' for m in members) + "]", ""]
        config = out[name]["folder"] / "veil.toml"
        config.write_text(config.read_text(encoding="utf-8") + "\n".join(lines), encoding="utf-8")
    return out
