"""`veil query submit` shows the query's state while it waits, on a terminal only (issue 20).

A dataset that needs an owner's approval keeps the query waiting; the command runs with its
stderr on a pseudo-terminal and must show the id, "awaiting approval" and the elapsed time, then
clear the line before the result. With stderr on a pipe it must write nothing there at all."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading
import time

import pytest

import veil
from veil_server.api.server import run_server
from veil_server.cli.demo import init_node_folder
from veil_server.config import load_config

VEIL = [sys.executable, "-m", "veil.cli"]
SQL = "SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex"


@pytest.fixture()
def reviewed_node(tmp_path):
    folder = tmp_path / "node"
    tokens = init_node_folder(folder, rows=500)  # development mode: plaintext on loopback
    config = folder / "veil.toml"
    config.write_text(config.read_text().replace("auto_approve = true", "auto_approve = false"))
    (tmp_path / "alice.token").write_text(tokens["alice"])
    with run_server(load_config(config, env={}), listen="127.0.0.1:0", grace=1.0) as running:
        yield running, tokens, tmp_path / "alice.token"


def _env(running, token_file, home):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VEIL_")}
    env.update(VEIL_TARGET=running.target, VEIL_TOKEN_FILE=str(token_file), VEIL_HOME=str(home))
    return env


def _approve_when_pending(running, tokens, home, count: int = 1) -> list[str]:
    """The owner approves the next ``count`` pending queries (waits for them to appear)."""
    approved: list[str] = []
    with veil.connect(running.target, token=tokens["olivia"], home=home) as olivia:
        for _ in range(600):
            for p in olivia.review.pending():
                if p.query not in approved:
                    olivia.review.approve(p.query, reason="fine for research")
                    approved.append(p.query)
            if len(approved) >= count:
                return approved
            time.sleep(0.2)
    raise AssertionError("no query became pending")


def test_on_a_terminal_the_wait_is_shown_then_cleared(reviewed_node, analyst_home):
    running, tokens, token_file = reviewed_node
    master, slave = pty.openpty()
    proc = subprocess.Popen(VEIL + ["query", "submit", SQL, "--purpose", "research"],
                            env=_env(running, token_file, analyst_home), stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    for _ in range(600):  # until the terminal shows the wait (or the command ends)
        if b"awaiting approval" in seen or proc.poll() is not None:
            break
        time.sleep(0.1)
    assert b"awaiting approval" in seen, bytes(seen)
    approved = _approve_when_pending(running, tokens, analyst_home)
    out, _ = proc.communicate(timeout=300)
    reader.join(timeout=10)
    os.close(master)
    assert proc.returncode == 0
    text = seen.decode()
    query_id = approved[0].removeprefix("queries/")
    assert f"{query_id}  awaiting approval" in text and " s" in text
    assert text.endswith("\r")  # the line was cleared before the result
    assert b"sex" in out and b"n" in out  # the result table went to stdout


def test_into_a_pipe_nothing_extra_is_written(reviewed_node, analyst_home):
    running, tokens, token_file = reviewed_node
    proc = subprocess.Popen(VEIL + ["query", "submit", SQL, "--purpose", "research"],
                            env=_env(running, token_file, analyst_home), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    _approve_when_pending(running, tokens, analyst_home)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and err == b""
    assert b"awaiting" not in out and b"sex" in out
