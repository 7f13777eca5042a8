"""State and log vouch for each other (issue 15): each way of damaging a stopped node's files
is refused at the next start, naming the file, the first disagreeing position and the fix."""

from __future__ import annotations

import pytest

from veil_server.audit.anchoring import StartRefused
from veil_server.errors import FailedPrecondition
from veil_server.node import Node
from veil_server.state.lifecycle import QueryState

from tests.integration.state_damage import node_files


@pytest.fixture()
def files(tmp_path, analyst_home):
    return node_files(tmp_path, analyst_home)


def refusal(config) -> StartRefused:
    with pytest.raises(StartRefused) as e:
        Node(config).close()
    assert e.value.fix and e.value.position and e.value.where
    return e.value


def test_restart_of_untouched_files_starts(files):
    files.run(2)
    files.run(1, clean=False)  # a crash: no stop entry
    files.run(1)
    Node(files.config).close()


@pytest.mark.parametrize("how", ["deleted", "truncated"])
def test_log_deleted_or_emptied_beside_state_is_refused(files, how):
    files.run(2)
    if how == "deleted":
        files.audit_db.unlink()
    else:
        files.audit_db.write_bytes(b"")
    e = refusal(files.config)
    assert e.problem == "LOG_MISSING" and e.where.endswith("audit.db")
    assert "restore" in e.fix


@pytest.mark.parametrize("how", ["deleted", "truncated"])
def test_state_deleted_or_emptied_beside_log_is_refused(files, how):
    files.run(2)
    for suffix in ("-wal", "-shm"):
        (files.state_db.parent / (files.state_db.name + suffix)).unlink(missing_ok=True)
    if how == "deleted":
        files.state_db.unlink()
    else:
        files.state_db.write_bytes(b"")
    e = refusal(files.config)
    assert e.problem == "STATE_MISSING" and e.where.endswith("state.db")
    assert "veil node recover" in e.fix


def test_state_restored_from_an_older_copy_is_refused(files):
    files.run(2)
    backup = files.copy("backup")
    files.run(3)
    files.restore(backup, "state.db")
    e = refusal(files.config)
    assert e.problem == "STATE_ROLLED_BACK" and e.where.endswith("state.db")
    assert e.position.startswith("log entry ")


def test_log_restored_from_an_older_copy_is_refused(files):
    files.run(2)
    backup = files.copy("backup")
    files.run(2)
    files.restore(backup, "audit.db")
    e = refusal(files.config)
    assert e.problem == "LOG_ROLLED_BACK" and e.where.endswith("audit.db")


def test_a_log_of_the_same_node_but_another_history_is_refused(files, tmp_path, analyst_home):
    """Both files of one node, but the log of a sibling history (a fork): same key, same
    anchored change count, other entries."""
    files.run(1)
    backup = files.copy("backup")
    files.run(1)  # history A
    fork = files.copy("fork-a")
    files.restore(backup, "audit.db")
    files.restore(backup, "state.db")
    files.run(1)  # history B from the same point
    files.restore(fork, "audit.db")  # A's log beside B's state
    e = refusal(files.config)
    assert e.problem in ("LOG_FORKED", "STATE_CHANGED_WHILE_STOPPED", "QUERY_MISSING", "QUERY_NOT_IN_LOG")


def test_released_query_set_back_to_approved_after_a_clean_stop_is_refused(files):
    files.run(2)
    files.execute("UPDATE queries SET state = 'APPROVED' WHERE id = ?", (files.released[0],))
    e = refusal(files.config)
    assert e.problem == "STATE_CHANGED_WHILE_STOPPED"


def test_released_query_set_back_to_approved_after_a_crash_is_refused(files):
    """No stop entry to compare with: the row itself disagrees with the log."""
    files.run(2, clean=False)
    files.execute("UPDATE queries SET state = 'APPROVED' WHERE id = ?", (files.released[1],))
    e = refusal(files.config)
    assert e.problem == "QUERY_STATE_DISAGREES"
    assert files.released[1] in e.detail and e.position.startswith("log entry ")


def test_edited_sql_and_swapped_result_after_a_crash_are_refused(files):
    files.run(2, clean=False)
    files.execute("UPDATE queries SET sql = sql || ' ' WHERE id = ?", (files.released[0],))
    assert refusal(files.config).problem == "QUERY_ROW_MODIFIED"
    files.execute("UPDATE queries SET sql = rtrim(sql) WHERE id = ?", (files.released[0],))
    a, b = files.released
    db = files.state(False)
    blob = bytes(db.execute("SELECT result FROM results WHERE query_id = ?", (a,)).fetchone()[0])
    db.close()
    files.execute("UPDATE results SET result = ? WHERE query_id = ?", (blob, b))
    assert refusal(files.config).problem == "RESULT_MODIFIED"


def test_a_release_happens_at_most_once_whatever_the_state_says(files):
    """Even with the start check out of the way (a state edited under a running node), the
    release transaction looks for the query's release in the log first."""
    files.run(1)
    node = Node(files.config)
    try:
        qid = files.released[0]
        node.store.database.begin()
        node.store.database.execute("UPDATE queries SET state = 'APPROVED' WHERE id = ?", (qid,))
        node.store.database.execute("DELETE FROM results WHERE query_id = ?", (qid,))
        node.store.database.execute("DELETE FROM dp_debits WHERE query_id = ?", (qid,))  # as if never spent
        node.store.database.commit()
        node._enqueue(qid)
        rec = node.store.get(qid)
        alice = next(p for p in files.config.principals if p.name == "alice")
        rec = node.wait(alice, qid, 60)
        assert rec.state is QueryState.FAILED and rec.state_reason == "ALREADY_RELEASED"
        releases = node.audit.log.search(kind="query.release", query=qid).entries
        assert len(releases) == 1
        with pytest.raises(FailedPrecondition) as e:
            node.audit.released(rec, None, {}, rows_scanned_approx=0)
        assert e.value.reason == "ALREADY_RELEASED"
    finally:
        node._closed.set()
        node._pool.shutdown()
        node.store.close()
        node.audit.close()


@pytest.mark.parametrize("damage,problem", [
    ("truncate_log", "LOG_MISSING"),
    ("drop_state", "STATE_MISSING"),
    ("rewind_state", "STATE_ROLLED_BACK"),
    ("approve_again", "QUERY_STATE_DISAGREES"),
])
def test_postgres_state_and_log_vouch_for_each_other(tmp_path, analyst_home, state_postgres, damage, problem):
    files = node_files(tmp_path, analyst_home, "postgres", state_postgres)
    files.run(3, clean=False)
    schema = files.config.state.schema
    if damage == "truncate_log":
        files.execute("TRUNCATE entry, node, checkpoint", audit=True)
    elif damage == "drop_state":
        files.execute(f'DROP SCHEMA "{schema}" CASCADE')
    elif damage == "rewind_state":  # what restoring an older dump of the state schema leaves
        files.execute("UPDATE log_anchor SET seq = seq - 4")
    else:
        files.execute("UPDATE queries SET state = 'APPROVED' WHERE id = ?", (files.released[0],))
    e = refusal(files.config)
    assert e.problem == problem
    assert schema in e.where


def test_files_under_the_state_directory_are_private_whatever_the_umask(tmp_path, analyst_home):
    import os

    old = os.umask(0)
    try:
        files = node_files(tmp_path, analyst_home)
        node = files.run(1, clean=False)  # the -wal and -shm files are still there after a crash
        del node
    finally:
        os.umask(old)
    state = files.config.state_dir
    assert state.stat().st_mode & 0o077 == 0
    found = {p.name: p.stat().st_mode & 0o777 for p in state.iterdir() if p.is_file()}
    assert {"state.db", "audit.db", "node_key.pem", "node_key.pub"} <= set(found)
    assert all(mode & 0o077 == 0 for mode in found.values()), found
