"""Damaged files of a stopped node (issue 15): every way an operator, a bad restore or an
insider damages them is refused at start with a named reason and one readable line; 200 random
byte flips either start intact or are refused by name, never INTERNAL, never a silent loss."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys

import pytest

from veil_server.audit.anchoring import StartRefused
from veil_server.audit.errors import AuditUnavailable
from veil_server.cli.refusals import start_refusal
from veil_server.errors import DataLoss
from veil_server.node import Node
from veil_server.state.damage import StateCorrupted

from tests.integration.state_damage import node_files
from tests.security import ledger

FLIPS = 200


def snapshot(node: Node) -> tuple:
    """Everything a start must keep: queries with their states and results, ε spent, grant uses."""
    with node.store.reading() as db:
        queries = sorted(db.execute("SELECT id, state, sql, plan_json FROM queries").fetchall())
        results = sorted((q, bytes(r)) for q, r in db.execute("SELECT query_id, result FROM results").fetchall())
        debits = sorted(db.execute("SELECT query_id, micro_epsilon, refunded FROM dp_debits").fetchall())
        grants = sorted(db.execute("SELECT id, used FROM grants").fetchall())
    releases = [e.query for e in node.audit.log.search(kind="query.release", page_size=1000).entries]
    return queries, results, debits, grants, sorted(releases)


def serve_line(config_path) -> subprocess.CompletedProcess:
    """`veil node serve` as an operator runs it; it must refuse before binding anything."""
    return subprocess.run([sys.executable, "-m", "veil_server.cli", "node", "serve", "--config", str(config_path)],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture()
def files(tmp_path, analyst_home):
    return node_files(tmp_path, analyst_home)


def test_every_damage_is_refused_on_one_readable_line(files, tmp_path):
    """The issue's list, each on the files of a stopped node, through `veil node serve`."""
    files.run(2)
    pristine = files.copy("pristine")
    cases = {}

    def reset():
        shutil.rmtree(files.config.state_dir)
        shutil.copytree(pristine, files.config.state_dir)

    def damage_log_deleted():
        files.audit_db.unlink()

    def damage_log_truncated():
        files.audit_db.write_bytes(b"")

    def damage_state_deleted():
        files.state_db.unlink()

    def damage_state_older():
        backup = files.copy("older")
        files.run(2)
        files.restore(backup, "state.db")

    def damage_released_set_back():
        files.execute("UPDATE queries SET state = 'APPROVED' WHERE id = ?", (files.released[0],))

    def damage_entry_tampered():
        files.execute("UPDATE entry SET body = CAST(replace(CAST(body AS TEXT), 'research', 'researcX') AS BLOB) "
                      "WHERE kind = 'query.submit'", audit=True)

    def damage_key_replaced():
        (files.config.state_dir / "node_key.pem").unlink()

    def damage_file_truncated():
        data = files.state_db.read_bytes()
        files.state_db.write_bytes(data[: len(data) // 2])

    expected = {
        damage_log_deleted: ("audit.db", "LOG_MISSING"), damage_log_truncated: ("audit.db", "LOG_MISSING"),
        damage_state_deleted: ("state.db", "STATE_MISSING"), damage_state_older: ("state.db", "STATE_ROLLED_BACK"),
        damage_released_set_back: ("state.db", "STATE_CHANGED_WHILE_STOPPED"),
        damage_entry_tampered: ("audit.db", "ENTRY_MODIFIED"),
        damage_key_replaced: ("audit.db", "NODE_KEY_REPLACED"),
        damage_file_truncated: ("state.db", "STATE_FILE_DAMAGED"),
    }
    for damage, (file, problem) in expected.items():
        reset()
        damage()
        out = serve_line(files.config.source)
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        cases[damage.__name__] = lines[-1] if lines else ""
        assert out.returncode == 2, (damage.__name__, out.stderr)
        assert "Traceback" not in out.stderr, (damage.__name__, out.stderr)
        assert len(lines) == 1 and file in lines[0] and problem in lines[0] and "fix:" in lines[0], \
            (damage.__name__, out.stderr)
    ledger.figure("start_refusals", cases)
    ledger.record("fault", "damaged-files", "stopped node's files damaged: log deleted or emptied, state deleted, "
                  "older state restored, released query set back, entry edited, node key replaced, state file "
                  "cut: each start refused on one line naming file, position and fix", len(expected))


def test_random_byte_flips_start_intact_or_are_refused_by_name(files):
    files.run(3)
    node = Node(files.config)
    before = snapshot(node)
    node.close()
    pristine = files.copy("pristine")
    outcomes = {"started intact": 0, "refused": 0}
    reasons: dict[str, int] = {}
    for _ in range(FLIPS):
        shutil.rmtree(files.config.state_dir)
        shutil.copytree(pristine, files.config.state_dir)
        target = secrets.choice([files.state_db, files.audit_db])
        data = bytearray(target.read_bytes())
        for _ in range(1 + secrets.randbelow(16)):
            data[secrets.randbelow(len(data))] ^= 1 << secrets.randbelow(8)
        target.write_bytes(bytes(data))
        try:
            node = Node(files.config)
        except (StartRefused, AuditUnavailable, StateCorrupted, DataLoss) as e:
            line = start_refusal(e, files.config.state_dir)
            assert line and target.name in line or "node_key" in line, line
            outcomes["refused"] += 1
            key = getattr(e, "problem", None) or e.reason
            reasons[key] = reasons.get(key, 0) + 1
            continue
        try:
            assert snapshot(node) == before, f"started on {target.name} with a silent change"
            outcomes["started intact"] += 1
        finally:
            node.close()
    assert sum(outcomes.values()) == FLIPS
    ledger.figure("file_flips", {"outcomes": outcomes, "reasons": reasons})
    ledger.record("fuzz", "file-flips", f"1-16 random bit flips in a stopped node's state.db or audit.db: each "
                  "start intact and equal, or refused by name (outcome counts in the figures file)", FLIPS)
