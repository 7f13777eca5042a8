"""The audit log on both state backends, and shared by replicas (issue 9): two writers on one
log (two connections, as two node processes would have) keep one hash chain and one Merkle tree;
each sees the other's entries, proofs verify, a full re-check and an offline export verify."""

from __future__ import annotations

import io
import threading
from datetime import datetime, timedelta, timezone

import pytest

from veil.audit import merkle, verify_export
from veil_server.audit import AuditCorrupted, AuditLog
from veil_server.access.node_key import NodeKey


@pytest.fixture(scope="module")
def key() -> NodeKey:
    return NodeKey.generate()


def clock():
    t = [datetime(2026, 1, 1, tzinfo=timezone.utc)]
    lock = threading.Lock()

    def now() -> datetime:
        with lock:
            t[0] += timedelta(milliseconds=1)
            return t[0]
    return now


def open_log(open_state, key: NodeKey) -> AuditLog:
    target = open_state(audit=True)
    if open_state.backend == "sqlite":  # the file path, as the node opens it
        target.close()
        from veil_server.state.statedb import SQLiteDatabase

        assert isinstance(target, SQLiteDatabase)
        path = target.identity.removeprefix("sqlite:")
        return AuditLog(__import__("pathlib").Path(path), key, node_id="node-a", clock=clock())
    return AuditLog(target, key, node_id="node-a", clock=clock())


def test_append_reopen_and_proofs_on_each_backend(open_state, key: NodeKey) -> None:
    log = open_log(open_state, key)
    for i in range(13):
        log.append("query.submit", principal=f"user{i % 3}", outcome="ok", dataset="d", query=f"q{i}",
                   details={"i": i})
    leaves = [e.leaf_hash() for e in log.entries(0)]
    assert log.root_hash == merkle.root(leaves)
    cp = log.checkpoint()
    assert cp.tree_size == 13 and log.checkpoint() == cp  # one checkpoint per size
    log.close()
    log = open_log(open_state, key)  # the full check at open passes
    assert log.tree_size == 13
    for i in (0, 5, 12):
        merkle.verify_inclusion(leaves[i], i, 13, log.inclusion_proof(i, 13), cp.root_hash)
    page = log.search(kind="query.*", principal="user1")
    assert [e.details["i"] for e in page.entries] == [1, 4, 7, 10]
    log.close()


@pytest.fixture()
def shared_state(state_postgres):
    """PostgreSQL only: SQLite has one writer process per log file by design."""
    import secrets

    from veil_server.state.statedb import StateSettings, open_database

    settings = StateSettings("postgres", state_postgres, "a_" + secrets.token_hex(4))
    opened = []

    def open_(audit: bool = True):
        opened.append(open_database(settings, sqlite_path=None, audit=audit))  # type: ignore[arg-type]
        return opened[-1]

    open_.backend = "postgres"
    yield open_
    for db in opened:
        db.close()


def test_two_writers_keep_one_tree(shared_state, key: NodeKey) -> None:
    writers = 2
    logs = [open_log(shared_state, key) for _ in range(writers)]
    indices: list[list[int]] = [[] for _ in logs]

    def write(n: int) -> None:
        for i in range(40):
            indices[n].append(logs[n].append("query.execute", principal=f"replica{n}", outcome="ok",
                                              query=f"q{n}-{i}", details={"i": i}))
            if i % 10 == 9:
                logs[n].checkpoint()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = 40 * writers
    # Every index handed out once, contiguous, whichever replica wrote it.
    assert sorted(i for ix in indices for i in ix) == list(range(total))
    for log in logs:
        assert log.tree_size == total
    assert logs[0].root_hash == logs[1].root_hash
    entries = logs[1].entries(0)
    for prev, entry in zip(entries, entries[1:]):
        assert entry.prev == prev.leaf_hash()  # one hash chain through both writers' entries
    # A replica proves inclusion of an entry the other one wrote.
    leaves = [e.leaf_hash() for e in entries]
    mine = indices[0][7]
    merkle.verify_inclusion(leaves[mine], mine, total, logs[1].inclusion_proof(mine, total), merkle.root(leaves))
    out = io.BytesIO()
    cp = logs[0].export(out)
    report = verify_export(io.BytesIO(out.getvalue()), key.public_key_bytes)
    assert report.ok, report.problems
    assert report.tree_size == cp.tree_size == total
    for log in logs:
        log.close()
    fresh = open_log(shared_state, key)  # the full end-to-end check at open
    assert fresh.tree_size == total
    fresh.close()


def test_a_replica_detects_an_entry_tampered_with_by_another_writer(shared_state, key: NodeKey) -> None:
    """Catch-up checks what others appended: a row edited in the shared database is refused."""
    a, b = open_log(shared_state, key), open_log(shared_state, key)
    a.append("query.submit", principal="alice", outcome="ok")
    assert b.tree_size == 1
    a.append("query.submit", principal="alice", outcome="ok", details={"n": 1})
    raw = shared_state(audit=True)
    raw.execute("UPDATE entry SET body = convert_to(replace(convert_from(body, 'UTF8'), '\"n\":1', '\"n\":2'), "
                "'UTF8') WHERE idx = 1")
    with pytest.raises(AuditCorrupted):
        b.append("query.submit", principal="bob", outcome="ok")
    a.close()
    b.close()
