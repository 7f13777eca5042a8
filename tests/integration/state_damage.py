"""A stopped node with some history, and the ways an operator damages its files (issue 15).

``NodeFiles`` runs a real node (the :class:`Node`, its real SQLite files or PostgreSQL schemas,
its real engine) long enough to release a few queries, then stops it cleanly or "crashes" it
(closes its files without the stop entry), so tests can damage what is left and start again.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import veil
from veil_server.config import NodeConfig, load_config
from veil_server.cli.demo import init_node_folder
from veil_server.node import Node
from veil_server.state.lifecycle import QueryState
from veil_server.state.statedb import open_database

SQLS = ["SELECT region, COUNT(*) FROM patients GROUP BY region",
        "SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex",
        "SELECT region, SUM(cost) AS c FROM patients GROUP BY region",
        "SELECT sex, AVG(cost) AS c FROM patients GROUP BY sex"]


@dataclass
class NodeFiles:
    folder: Path
    analyst_home: Path
    config: NodeConfig = field(init=False)
    released: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.config = load_config(self.folder / "veil.toml", env={})
        with veil.connect("127.0.0.1:1", home=self.analyst_home) as offline:
            self.pk = offline.keys[0]

    @property
    def state_db(self) -> Path:
        return self.config.state_dir / "state.db"

    @property
    def audit_db(self) -> Path:
        return self.config.state_dir / "audit.db"

    def run(self, queries: int, *, clean: bool = True, epsilon_check=None) -> Node:
        """Start a node, release ``queries`` queries, stop it (``clean``) or drop it mid-life."""
        node = Node(self.config)
        try:
            alice = next(p for p in self.config.principals if p.name == "alice")
            for i in range(queries):
                sub = node.submit(alice, sql=SQLS[(len(self.released) + i) % len(SQLS)], purpose="research",
                                  public_key=self.pk.to_bytes(), request_id=f"r{len(self.released) + i}")
                rec = node.wait(alice, sub.query.id, 60)
                assert rec.state is QueryState.SUCCEEDED, (rec.state, rec.state_reason, rec.state_message)
                self.released.append(rec.id)
        finally:
            if clean:
                node.close()
            else:
                crash(node)
        return node

    def copy(self, name: str) -> Path:
        """A copy of the stopped node's state directory (a backup)."""
        dest = self.folder.parent / name
        shutil.copytree(self.config.state_dir, dest)
        return dest

    def restore(self, backup: Path, filename: str) -> None:
        for suffix in ("", "-wal", "-shm"):
            (self.config.state_dir / (filename + suffix)).unlink(missing_ok=True)
            if (backup / (filename + suffix)).exists():
                shutil.copy2(backup / (filename + suffix), self.config.state_dir / (filename + suffix))

    def state(self, audit: bool = False):
        """A raw connection to the stopped node's state (or log): SQLite file or PostgreSQL schema."""
        return open_database(self.config.state, sqlite_path=self.audit_db if audit else self.state_db, audit=audit)

    def execute(self, sql: str, params=(), *, audit: bool = False) -> None:
        db = self.state(audit)
        try:
            db.begin()
            db.execute(sql, params)
            db.commit()
        finally:
            db.close()


def crash(node: Node) -> None:
    """The node dies: no stop entry; what was committed stays."""
    node._closed.set()
    node._pool.shutdown(wait=True)
    node.store.close()
    node.audit.close()


def node_files(tmp_path: Path, analyst_home: Path, backend: str = "sqlite", conninfo: str = "", *,
               disclosure: str = "dp") -> NodeFiles:
    init_node_folder(tmp_path / "node", rows=2_000, disclosure=disclosure)
    if backend == "postgres":
        from tests.integration.test_governance_walkthrough import use_postgres_state

        use_postgres_state(tmp_path / "node", conninfo)
    return NodeFiles(tmp_path / "node", analyst_home)
