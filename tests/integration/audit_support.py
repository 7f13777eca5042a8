"""Shared by the audit tests: a small node of one's own, its log, and the CLI run in-process."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Iterator

from veil.audit.records import Entry
from veil.cli import main as veil_main
from veil_server.config import load_config
from veil_server.cli.demo import init_node_folder
from veil_server.api.server import RunningNode, run_server

GROUPED = "SELECT sex, COUNT(*) AS n, AVG(cost) AS c FROM patients GROUP BY sex"


def make_folder(folder: Path, rows: int = 2000) -> dict[str, str]:
    return init_node_folder(folder, rows=rows)  # differential privacy, as a new node is


@contextlib.contextmanager
def serve(folder: Path, env: dict[str, str] | None = None) -> Iterator[RunningNode]:
    config = load_config(folder / "veil.toml", env=env or {})
    with run_server(config, listen="127.0.0.1:0", grace=1) as running:
        yield running


def entries(running: RunningNode) -> list[Entry]:
    return running.node.audit.log.entries(0)


def kinds(running: RunningNode, query: str | None = None) -> list[str]:
    return [e.kind for e in entries(running) if query is None or e.query == query]


def cli(*args: str) -> tuple[int, str, str]:
    """``veil ARGS...`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = veil_main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def online(running: RunningNode, token: str) -> list[str]:
    return ["--target", running.target, f"--token={token}"]  # tokens may start with "-"
