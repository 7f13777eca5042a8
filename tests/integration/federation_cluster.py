"""A federation of real nodes for tests: each member its own folder, data, key, audit log and
gRPC server on loopback (in this process, via ``run_server``), pinned to each other."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import duckdb
import pandas as pd
import pytest

import veil
from veil_server.config import load_config
from veil_server.cli.federation_demo import MemberFolder, init_federation
from veil_server.api.server import RunningNode, run_server


# Generous DP terms for tests that check the combination itself: noise small next to the
# partials, and budgets for many queries. The product's defaults are tested elsewhere.
TEST_DP = "dp = { epsilon_per_query = 5.0, max_epsilon_per_query = 10.0, analyst_budget = 1000.0, dataset_budget = 1000.0 }"


@dataclass
class Recorder:
    """Every peer message each node receives: (node, what, sender, bytes); and every member's
    noisy partial as it contributed it, by (member, federated query)."""

    messages: list[tuple[str, str, str, bytes]] = field(default_factory=list)
    partials: dict[tuple[str, str], list[list[int]]] = field(default_factory=dict)

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


def summed_partials(cluster: "Cluster", df: pd.DataFrame) -> list[list[int]]:
    """What the combination must give for ``df``'s query: per statistic (the layout's order),
    per group, the sum of the members' noisy partials."""
    q = df.attrs["federated_query"].removeprefix("federatedQueries/")
    parts = [m for (name, query), m in cluster.recorder.partials.items() if query == q]
    assert len(parts) == len(cluster.members)
    return [list(map(sum, zip(*rows))) for rows in zip(*parts)]


@contextlib.contextmanager
def federation(root: Path, *, edit: dict[str, tuple[str, str]] | None = None, **kwargs) -> Iterator[Cluster]:
    """Start every member; ``edit`` maps a member to a (old, new) text replacement in its config.
    Each member's noisy partial is recorded (the combination is checked against their sum)."""
    from veil_server.federation.participant import Participant

    kwargs.setdefault("dp_terms", TEST_DP)
    members = init_federation(root, **kwargs)
    for name, (old, new) in (edit or {}).items():
        text = members[name].config.read_text()
        assert old in text
        members[name].config.write_text(text.replace(old, new))
    recorder = Recorder()
    contribute = Participant._contribute

    def recording(self, s, v):
        body = contribute(self, s, v)
        if s.matrix is not None:  # a model release (issue 18) keeps no grouped partial
            recorder.partials[(self.name, s.query)] = [list(row) for row in s.matrix]
        return body

    with contextlib.ExitStack() as stack:
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        patch.setattr(Participant, "_contribute", recording)
        running = {n: stack.enter_context(run_server(load_config(m.config, env={}), grace=0.2))
                   for n, m in members.items()}
        for r in running.values():
            r.federation.observe(recorder)
        yield Cluster(members, running, recorder)
