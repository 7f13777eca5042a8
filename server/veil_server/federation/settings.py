"""The ``[federation]`` section of a node's configuration: its peers and federated datasets.

```toml
[federation]
name = "north"                 # this node's name among peers (default: node.name)
timeout_seconds = 30           # per node-to-node call
retries = 2                    # extra attempts on UNAVAILABLE / DEADLINE_EXCEEDED
max_clock_skew_seconds = 300   # signed envelopes older or newer than this are refused

[[federation.peers]]
name = "south"
address = "10.0.0.2:50051"
public_key = "9f3c...64 hex digits"   # the peer's Ed25519 node key (raw, hex), pinned
# or: public_key_file = "peers/south.pub"   (PEM, as in the peer's state_dir/node_key.pub)

[[federation.datasets]]
name = "admissions"            # the federated name used in SQL
local = "patients"             # this node's part: a dataset declared in [[datasets]]
members = ["north", "south", "east"]   # every member, this node included
protocols = ["paillier", "sharing"]    # optional: the protocols this node allows
```

Peers are trusted by their pinned key only: a node that is not listed here cannot prepare,
contribute to or read anything of a federated query on this node. Every member of a federated
dataset must be a pinned peer (or this node).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

PROTOCOLS = ("paillier", "sharing")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class Peer:
    name: str
    address: str
    public_key: str  # raw Ed25519 public key, hex (kept as text so the config digest covers it)

    def verifier(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(self.public_key))


@dataclass(frozen=True)
class FederatedDataset:
    name: str
    local: str
    members: tuple[str, ...]  # sorted
    protocols: tuple[str, ...]


@dataclass(frozen=True)
class FederationConfig:
    name: str
    peers: tuple[Peer, ...]
    datasets: tuple[FederatedDataset, ...]
    timeout_seconds: float = 30.0
    retries: int = 2
    max_clock_skew_seconds: float = 300.0

    def peer(self, name: str) -> Peer | None:
        return next((p for p in self.peers if p.name == name), None)

    def dataset(self, name: str) -> FederatedDataset | None:
        return next((d for d in self.datasets if d.name.lower() == name.lower()), None)


def parse_federation(raw: Any, *, base_dir: Path, node_name: str, local_datasets: set[str],
                     error: type[Exception] = ValueError) -> FederationConfig | None:
    """The parsed section, or None if the file has none. Raises ``error`` naming the key."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise error("federation must be a table")
    name = _name(raw.get("name", node_name), "federation.name", error)
    timeout = _number(raw.get("timeout_seconds", 30), "federation.timeout_seconds", error, 0.1, 3600)
    retries = int(_number(raw.get("retries", 2), "federation.retries", error, 0, 10))
    skew = _number(raw.get("max_clock_skew_seconds", 300), "federation.max_clock_skew_seconds", error, 1, 86400)

    peers: list[Peer] = []
    for i, p in enumerate(raw.get("peers", [])):
        where = f"federation.peers[{i}]"
        pname = _name(p.get("name"), f"{where}.name", error)
        if pname == name or any(x.name == pname for x in peers):
            raise error(f"{where}.name: peer {pname!r} is declared twice (or is this node)")
        address = p.get("address")
        if not isinstance(address, str) or ":" not in address:
            raise error(f"{where}.address must be host:port")
        peers.append(Peer(pname, address, _public_key(p, where, base_dir, error)))

    known = {name} | {p.name for p in peers}
    datasets: list[FederatedDataset] = []
    for i, d in enumerate(raw.get("datasets", [])):
        where = f"federation.datasets[{i}]"
        dname = _name(d.get("name"), f"{where}.name", error)
        local = d.get("local")
        if not isinstance(local, str) or local.lower() not in local_datasets:
            raise error(f"{where}.local must name a dataset declared in [[datasets]]")
        members = d.get("members")
        # With two members, each could subtract its own part from the released total and read
        # the other's: three is the least number for which no single partial is disclosed.
        if not isinstance(members, list) or len(set(members)) != len(members) or len(members) < 3:
            raise error(f"{where}.members must list at least three distinct member names (with two, "
                        "each member could read the other's part off the total)")
        if name not in members:
            raise error(f"{where}.members must include this node ({name!r})")
        unknown = [m for m in members if m not in known]
        if unknown:
            raise error(f"{where}.members: {unknown} are not declared in [[federation.peers]]")
        protocols = tuple(d.get("protocols", PROTOCOLS))
        if not protocols or any(p not in PROTOCOLS for p in protocols):
            raise error(f"{where}.protocols must be a subset of {list(PROTOCOLS)}")
        if any(x.name.lower() == dname.lower() for x in datasets):
            raise error(f"{where}.name: federated dataset {dname!r} is declared twice")
        datasets.append(FederatedDataset(dname, local, tuple(sorted(members)), protocols))
    return FederationConfig(name, tuple(peers), tuple(datasets), float(timeout), retries, float(skew))


def _name(value: Any, where: str, error: type[Exception]) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise error(f"{where} must be a name of letters, digits, '_', '-' or '.'")
    return value


def _number(value: Any, where: str, error: type[Exception], low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise error(f"{where} must be a number between {low} and {high}")
    return float(value)


def _public_key(p: Mapping[str, Any], where: str, base_dir: Path, error: type[Exception]) -> str:
    if "public_key" in p:
        text = p["public_key"]
        # As 64 hex digits of the raw key, or the PEM the peer node writes (node_key.pub), pasted.
        if isinstance(text, str) and "-----BEGIN PUBLIC KEY-----" in text:
            try:
                key = serialization.load_pem_public_key(text.strip().encode("ascii"))
            except (ValueError, UnicodeEncodeError):
                raise error(f"{where}.public_key: not a readable PEM public key") from None
            if not isinstance(key, Ed25519PublicKey):
                raise error(f"{where}.public_key: not an Ed25519 key")
            return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
        if not isinstance(text, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", text):
            raise error(f"{where}.public_key must be the peer's Ed25519 key: its node_key.pub (PEM, pasted as a "
                        "multi-line string) or the raw key as 64 hex digits")
        return text.lower()
    if "public_key_file" in p:
        path = Path(str(p["public_key_file"])).expanduser()
        path = path if path.is_absolute() else (base_dir / path).resolve()
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except (OSError, ValueError) as e:
            raise error(f"{where}.public_key_file: cannot read a PEM public key from {path}: {e}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise error(f"{where}.public_key_file: not an Ed25519 key")
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
    raise error(f"{where} needs the peer's pinned key: public_key (hex) or public_key_file (PEM)")
