"""A federation of real nodes for tests: each member its own folder, data, key, audit log and
gRPC server on loopback (in this process, via ``run_server``), pinned to each other."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import duckdb
import pandas as pd

import veil
from veil_server.config import load_config
from veil_server.cli.federation_demo import MemberFolder, init_federation
from veil_server.api.server import RunningNode, run_server


@dataclass
class Recorder:
    """Every peer message each node receives: (node, what, sender, bytes)."""

    messages: list[tuple[str, str, str, bytes]] = field(default_factory=list)

    def __call__(self, node: str, what: str, sender: str, data: bytes) -> None:
        self.messages.append((node, what, sender, data))

    def received(self, node: str | None = None, what: str | None = None) -> list[tuple[str, str, str, bytes]]:
        return [m for m in self.messages if (node is None or m[0] == node) and (what is None or m[1] == what)]


@dataclass
class Cluster:
    members: dict[str, MemberFolder]
    running: dict[str, RunningNode]
    recorder: Recorder

    def connect(self, member: str, home: Path, who: str = "alice") -> veil.Node:
        m = self.members[member]
        return veil.connect(m.target, token=m.tokens[who], home=home)

    def union(self, sql_body: str) -> pd.DataFrame:
        """``sql_body`` with {t} over the union of every member's raw part: the reference."""
        parts = ", ".join(f"'{m.part}'" for m in self.members.values())
        return duckdb.connect().execute(sql_body.format(t=f"read_csv_auto([{parts}], union_by_name = true)")).df()

    def part(self, member: str, sql_body: str) -> pd.DataFrame:
        return duckdb.connect().execute(sql_body.format(t=f"read_csv_auto('{self.members[member].part}')")).df()

    def entries(self, member: str, kind: str) -> list:
        log = self.running[member].node.audit.log
        out, token = [], ""
        while True:
            page = log.search(kind=kind, page_token=token)
            out += page.entries
            token = page.next_page_token
            if not token:
                return out


@contextlib.contextmanager
def federation(root: Path, *, edit: dict[str, tuple[str, str]] | None = None, **kwargs) -> Iterator[Cluster]:
    """Start every member; ``edit`` maps a member to a (old, new) text replacement in its config."""
    members = init_federation(root, **kwargs)
    for name, (old, new) in (edit or {}).items():
        text = members[name].config.read_text()
        assert old in text
        members[name].config.write_text(text.replace(old, new))
    recorder = Recorder()
    with contextlib.ExitStack() as stack:
        running = {n: stack.enter_context(run_server(load_config(m.config, env={}), grace=0.2))
                   for n, m in members.items()}
        for r in running.values():
            r.federation.observe(recorder)
        yield Cluster(members, running, recorder)
