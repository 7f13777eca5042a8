"""`veil node recover` (issue 15): what is rebuilt from the log equals what was there, ε spent
never goes down, nothing is invented, and the log's own damage is refused."""

from __future__ import annotations

import subprocess
import sys

import pytest

from veil_server.audit.anchoring import StartRefused
from veil_server.node import Node
from veil_server.errors import DataLoss, VeilError
from veil_server.state.lifecycle import QueryState

from tests.integration.state_damage import SQLS, node_files


def snapshot(config):
    """What recovery must preserve: each query's state, ε spent and grant uses."""
    node = Node(config)
    try:
        ds = node.dataset("patients")
        budget = node.disclosure.budget_state("alice", ds, "research")
        states = {q.id: q.state for q in node.store.list_for("alice", page_size=100, before_seq=None)}
        grants = {g.id: g.used for g in node.steward.grants.list()}
        return states, budget.spent, budget.dataset_spent, grants
    finally:
        node.close()


def recover(config, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "veil_server.cli", "node", "recover", "--config",
                           str(config.source), *extra], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_recover_after_the_state_was_deleted(tmp_path, analyst_home, backend, request):
    files = node_files(tmp_path, analyst_home, backend,
                       request.getfixturevalue("state_postgres") if backend == "postgres" else "")
    files.run(3)
    states, spent, dataset_spent, grants = snapshot(files.config)
    if backend == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            (files.state_db.parent / (files.state_db.name + suffix)).unlink(missing_ok=True)
    else:
        files.execute(f'DROP SCHEMA "{files.config.state.schema}" CASCADE')
    with pytest.raises(StartRefused):
        Node(files.config).close()
    out = recover(files.config)
    assert out.returncode == 0, out.stderr
    assert "rebuilt from the log 3" in out.stdout
    after = snapshot(files.config)
    assert after[0] == states and all(s is QueryState.SUCCEEDED for s in after[0].values())
    assert after[1] == pytest.approx(spent) and after[2] == pytest.approx(dataset_spent)
    assert sorted(after[3].values()) == sorted(grants.values())
    node = Node(files.config)
    try:
        alice = next(p for p in files.config.principals if p.name == "alice")
        with pytest.raises(DataLoss) as e:
            node.result(alice, files.released[0])
        assert e.value.reason == "RESULT_LOST"
        assert node.audit.log.search(kind="admin.state.recover").entries
    finally:
        node.close()


def test_recover_after_an_older_state_was_restored_never_lowers_epsilon(tmp_path, analyst_home):
    files = node_files(tmp_path, analyst_home)
    files.run(2)
    backup = files.copy("backup")
    files.run(3)
    states, spent, dataset_spent, grants = snapshot(files.config)
    files.restore(backup, "state.db")
    assert recover(files.config).returncode == 0
    after = snapshot(files.config)
    assert after[0] == states  # the 2 that survived keep their results; 3 rebuilt from the log
    assert after[1] >= spent and after[1] == pytest.approx(spent)
    assert after[2] == pytest.approx(dataset_spent)
    assert after[3] == grants
    node = Node(files.config)
    try:
        alice = next(p for p in files.config.principals if p.name == "alice")
        assert node.result(alice, files.released[0])  # a surviving result is kept
    finally:
        node.close()


def test_recover_ends_unfinished_queries_it_cannot_run_and_logs_it(tmp_path, analyst_home):
    from tests.integration.test_node_lifecycle import crash_with_acknowledged_query

    files = node_files(tmp_path, analyst_home)
    files.run(1)
    rec = crash_with_acknowledged_query(files.config, files.pk, running=False)
    for suffix in ("", "-wal", "-shm"):
        (files.state_db.parent / (files.state_db.name + suffix)).unlink(missing_ok=True)
    out = recover(files.config, "--json")
    assert out.returncode == 0, out.stderr
    node = Node(files.config)
    try:
        got = node.store.get(rec.id)
        assert got.state is QueryState.FAILED and got.state_reason == "STATE_RECOVERED"
        fails = node.audit.log.search(kind="query.fail", query=rec.id).entries
        assert fails and fails[-1].details["reason"] == "STATE_RECOVERED"
    finally:
        node.close()


def test_recover_refuses_to_rebuild_a_log(tmp_path, analyst_home):
    files = node_files(tmp_path, analyst_home)
    files.run(1)
    files.audit_db.unlink()
    out = recover(files.config)
    assert out.returncode != 0
    assert "LOG_MISSING" in out.stderr and "never the log" in out.stderr and "Traceback" not in out.stderr


def test_recover_after_a_released_query_was_set_back(tmp_path, analyst_home):
    """A row the log contradicts is set to what the log says, and the next start agrees."""
    files = node_files(tmp_path, analyst_home)
    files.run(2, clean=False)
    files.execute("UPDATE queries SET state = 'APPROVED' WHERE id = ?", (files.released[0],))
    files.execute("DELETE FROM results WHERE query_id = ?", (files.released[0],))
    assert recover(files.config).returncode == 0
    node = Node(files.config)
    try:
        got = node.store.get(files.released[0])
        assert got.state is QueryState.SUCCEEDED and got.state_reason == "RESULT_LOST"
        assert len(node.audit.log.search(kind="query.release", query=files.released[0]).entries) == 1
    finally:
        node.close()


def _delete_state(files) -> None:
    for suffix in ("", "-wal", "-shm"):
        (files.state_db.parent / (files.state_db.name + suffix)).unlink(missing_ok=True)


def _ask(config, sql: str, pk) -> tuple[QueryState, str]:
    node = Node(config)
    try:
        alice = next(p for p in config.principals if p.name == "alice")
        sub = node.submit(alice, sql=sql, purpose="research", public_key=pk.to_bytes(), request_id="probe")
        rec = node.wait(alice, sub.query.id, 60)
        return rec.state, rec.state_reason
    except VeilError as e:
        return QueryState.REJECTED, e.reason
    finally:
        node.close()


CROSSING = "SELECT COUNT(*) FROM patients WHERE age >= 40"  # partly overlaps every region's population


def test_recover_rebuilds_the_exact_history_so_a_crossing_table_stays_refused(tmp_path, analyst_home):
    files = node_files(tmp_path, analyst_home, disclosure="exact")
    files.run(1)  # SELECT region, COUNT(*) ... GROUP BY region: one population per region
    node = Node(files.config)
    try:
        recorded = node.disclosure.history.count("patients")
    finally:
        node.close()
    assert recorded > 0
    _delete_state(files)
    out = recover(files.config)
    assert out.returncode == 0, out.stderr
    assert "releases added to the history 1" in out.stdout
    node = Node(files.config)
    try:
        assert node.disclosure.history.count("patients") == recorded
    finally:
        node.close()
    assert _ask(files.config, CROSSING, files.pk)[1] == "EXACT_TABLE_OVERLAPS"


def test_without_the_history_the_crossing_table_would_be_answered(tmp_path, analyst_home):
    """Control for the test above: the same table on a fresh history is released."""
    files = node_files(tmp_path, analyst_home, disclosure="exact")
    assert _ask(files.config, CROSSING, files.pk)[0] is QueryState.SUCCEEDED


def test_recover_charges_a_failure_after_running_like_a_release(tmp_path, analyst_home, monkeypatch):
    files = node_files(tmp_path, analyst_home)
    files.run(1)

    def broken(self, plan, ds):
        raise RuntimeError("the engine broke mid-query")

    node = Node(files.config)
    try:
        monkeypatch.setattr(type(node.engine), "aggregate", broken)
        alice = next(p for p in files.config.principals if p.name == "alice")
        sub = node.submit(alice, sql=SQLS[1], purpose="research", public_key=files.pk.to_bytes(), request_id="boom")
        assert node.wait(alice, sub.query.id, 60).state is QueryState.FAILED
    finally:
        node.close()
    monkeypatch.undo()
    _, spent, dataset_spent, _ = snapshot(files.config)
    assert spent > 0.5  # the release and the failure
    _delete_state(files)
    out = recover(files.config)
    assert out.returncode == 0, out.stderr
    after = snapshot(files.config)
    # The failure was charged at the dataset's maximum ε per query: never less than before.
    assert after[1] >= spent - 1e-9 and after[2] >= dataset_spent - 1e-9
