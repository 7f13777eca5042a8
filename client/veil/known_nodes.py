"""Pinned node keys, trust on first use: ``VEIL_HOME/known_nodes`` (or ``VEIL_KNOWN_NODES``).

What each party learns: nothing new. The node's Ed25519 public key is public; pinning it lets
the SDK notice when the key that signs receipts changes under a node's address (a different
node answering, or a node whose log identity was replaced), as SSH's known_hosts does.

One line per node address::

    <target> <node_id> <key_id> <base64 raw 32-byte Ed25519 key>

The first time the SDK needs a node's key it fetches it (``AuditService.GetNodeKey``) and
appends a line; from then on the pinned key is used and never silently replaced. A key the user
passes explicitly (``veil.connect(..., node_key=...)``) takes precedence over both.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from .audit.records import key_id as _key_id
from .keys import veil_home


@dataclass(frozen=True)
class KnownNode:
    target: str
    node_id: str
    key_id: str
    public_key: bytes  # raw 32 bytes


def known_nodes_path(home: str | os.PathLike[str] | None = None) -> Path:
    override = os.environ.get("VEIL_KNOWN_NODES")
    return Path(override).expanduser() if override else veil_home(home) / "known_nodes"


class KnownNodes:
    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.path = known_nodes_path(home)

    def _read(self) -> list[KnownNode]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) != 4 or line.startswith("#"):
                continue
            try:
                out.append(KnownNode(parts[0], parts[1], parts[2], base64.b64decode(parts[3], validate=True)))
            except ValueError:
                continue  # a damaged line pins nothing; the next fetch appends a fresh one
        return out

    def get(self, target: str) -> KnownNode | None:
        """The key pinned for ``target`` (the first line wins: a pin is never overridden)."""
        return next((n for n in self._read() if n.target == target), None)

    def by_key_id(self, key_id: str) -> KnownNode | None:
        return next((n for n in self._read() if n.key_id == key_id), None)

    def pin(self, target: str, node_id: str, public_key: bytes) -> KnownNode:
        """Pin ``public_key`` for ``target`` unless a key is pinned already; returns the pin."""
        existing = self.get(target)
        if existing is not None:
            return existing
        node = KnownNode(target, node_id or "-", _key_id(public_key), bytes(public_key))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = f"{node.target} {node.node_id} {node.key_id} {base64.b64encode(node.public_key).decode()}\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line.encode())  # one write with O_APPEND: concurrent pins do not interleave
        finally:
            os.close(fd)
        return self.get(target) or node
