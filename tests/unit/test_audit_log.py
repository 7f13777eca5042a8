"""The node's audit log on a real SQLite file: append, reopen, proofs, search, export, receipts,
the node key, and failing closed when storage fails."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from veil.audit import merkle, release_details, verify_export
from veil_server.audit import AuditLog, AuditUnavailable, store
from veil_server.errors import InvalidArgument, Unavailable
from veil_server.access.node_key import NodeKey, NodeKeyError
from veil_server.state.statedb import SQLiteDatabase

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


class Clock:
    def __init__(self, step: timedelta = timedelta(milliseconds=1)) -> None:
        self.now, self.step = T0, step

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now


@pytest.fixture(scope="module")
def key() -> NodeKey:
    return NodeKey.generate()


def open_log(path: Path, key: NodeKey, **kw: object) -> AuditLog:
    return AuditLog(path, key, node_id="node-a", clock=kw.pop("clock", Clock()), **kw)  # type: ignore[arg-type]


def fill(log: AuditLog, n: int) -> None:
    kinds = ["catalog.read", "query.submit", "query.decision", "admin.grant.create"]
    for i in range(n):
        log.append(kinds[i % 4], principal=f"user{i % 3}", outcome="ok" if i % 5 else "denied",
                   dataset="patients" if i % 2 else "claims", query=f"q-{i}", details={"i": i})


def leaf_hashes(log: AuditLog) -> list[bytes]:
    return [e.leaf_hash() for e in log.entries(0)]


# --- node key ------------------------------------------------------------------------------


def test_node_key_is_created_private_and_reloaded(tmp_path: Path) -> None:
    state = tmp_path / "state"
    k1 = NodeKey.load_or_create(state)
    assert stat.S_IMODE(os.stat(state / "node_key.pem").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    k2 = NodeKey.load_or_create(state)
    assert k1.key_id == k2.key_id and len(k1.public_key_bytes) == 32
    assert k1.public_key_pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    k1.public_key.verify(k2.sign(b"msg"), b"msg")
    assert [p.name for p in state.iterdir()] == ["node_key.pem"]  # no temp file left


def test_node_key_refuses_a_key_readable_by_others(tmp_path: Path) -> None:
    NodeKey.load_or_create(tmp_path)
    os.chmod(tmp_path / "node_key.pem", 0o644)
    with pytest.raises(NodeKeyError):
        NodeKey.load_or_create(tmp_path)
    os.chmod(tmp_path / "node_key.pem", 0o600)
    (tmp_path / "node_key.pem").write_bytes(b"not a key")
    with pytest.raises(NodeKeyError):
        NodeKey.load(tmp_path / "node_key.pem")


def test_node_key_concurrent_creation_yields_one_key(tmp_path: Path) -> None:
    ids: list[str] = []
    threads = [threading.Thread(target=lambda: ids.append(NodeKey.load_or_create(tmp_path).key_id))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1 and len(ids) == 8


# --- append, reopen, proofs ----------------------------------------------------------------


def test_append_reopen_and_proofs(tmp_path: Path, key: NodeKey) -> None:
    path = tmp_path / "audit.db"
    log = open_log(path, key)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert (log.tree_size, log.root_hash) == (0, merkle.EMPTY_ROOT)
    fill(log, 19)
    leaves = leaf_hashes(log)
    assert log.root_hash == merkle.root(leaves)
    log.close()

    log = open_log(path, key)
    assert log.tree_size == 19 and log.root_hash == merkle.root(leaves)
    assert log.append("query.cancel", principal="user1", outcome="ok", query="q-3") == 19
    leaves = leaf_hashes(log)
    assert log.entries(19)[0].prev == leaves[18]
    for size in (1, 2, 7, 8, 13, 20):
        root = merkle.root(leaves[:size])
        for i in range(size):
            proof = log.inclusion_proof(i, size)
            assert proof == merkle.inclusion_proof(leaves, i, size)
            merkle.verify_inclusion(leaves[i], i, size, proof, root)
        for old in range(0, size + 1):
            proof = log.consistency_proof(old, size)
            merkle.verify_consistency(old, size, merkle.root(leaves[:old]), root, proof)
    for bad in ((20, 20), (0, 21), (-1, 5)):
        with pytest.raises(InvalidArgument):
            log.inclusion_proof(*bad)
    with pytest.raises(InvalidArgument):
        log.consistency_proof(6, 5)
    log.close()


def test_entries_are_canonical_and_times_never_go_back(tmp_path: Path, key: NodeKey) -> None:
    log = open_log(tmp_path / "a.db", key, clock=Clock(step=timedelta(seconds=-1)))
    fill(log, 3)
    times = [e.time for e in log.entries(0)]
    assert times == sorted(times)
    with pytest.raises(ValueError):
        log.append("query.unheard_of", principal="a", outcome="ok")
    with pytest.raises(TypeError):
        log.append("catalog.read", principal="a", outcome="ok", details={"mean": 1.5})
    assert log.tree_size == 3


def test_checkpoints_are_signed_stored_and_reused(tmp_path: Path, key: NodeKey) -> None:
    log = open_log(tmp_path / "a.db", key)
    assert log.latest_checkpoint() is None
    fill(log, 5)
    cp = log.checkpoint()
    cp.verify(key.public_key_bytes)
    assert (cp.tree_size, cp.root_hash, cp.origin) == (5, log.root_hash, "node-a")
    assert log.checkpoint() == cp and log.latest_checkpoint() == cp
    fill(log, 2)
    cp2 = log.checkpoint()
    merkle.verify_consistency(5, 7, cp.root_hash, cp2.root_hash, log.consistency_proof(5, 7))
    assert [c.tree_size for c in log.checkpoints()] == [7, 5]


def test_a_batch_is_one_transaction_with_its_checkpoint(tmp_path: Path, key: NodeKey) -> None:
    from veil_server.audit.log import Event

    path = tmp_path / "a.db"
    log = open_log(path, key)
    fill(log, 3)
    indices, cp = log.append_many([Event("query.execute", "u", "ok", query="q"),
                                   Event("query.release", "u", "ok", query="q", details={"ciphertexts": 2})],
                                  checkpoint=True)
    assert indices == [3, 4]
    assert cp is not None and (cp.tree_size, cp.root_hash) == (5, log.root_hash)
    cp.verify(key.public_key_bytes)
    assert log.latest_checkpoint() == cp
    entries = log.entries(0)
    assert entries[4].prev == entries[3].leaf_hash() and entries[3].prev == entries[2].leaf_hash()
    # A batch that cannot be written leaves no entry and no checkpoint: the second event is bad.
    for bad in ([Event("query.submit", "u", "ok"), Event("query.decision", "u", "ok", details={"x": 0.5})],
                [Event("query.submit", "u", "ok"), Event("query.unheard_of", "u", "ok")]):
        with pytest.raises((TypeError, ValueError)):
            log.append_many(bad, checkpoint=True)
        assert log.tree_size == 5 and log.latest_checkpoint() == cp
    assert log.append("catalog.read", principal="u", outcome="ok") == 5  # the log goes on
    log.close()
    log = open_log(path, key)  # and re-checks end to end
    assert log.tree_size == 6 and [c.tree_size for c in log.checkpoints()] == [5]
    log.close()


def test_search_filters_and_pages(tmp_path: Path, key: NodeKey) -> None:
    log = open_log(tmp_path / "a.db", key)
    fill(log, 24)
    page = log.search(principal="user1", page_size=3)
    seen = []
    while True:
        seen += [e.index for e in page.entries]
        if not page.next_page_token:
            break
        page = log.search(principal="user1", page_size=3, page_token=page.next_page_token)
    assert seen == [i for i in range(24) if i % 3 == 1]
    assert [e.index for e in log.search(kind="admin.*").entries] == [3, 7, 11, 15, 19, 23]
    assert all(e.outcome == "denied" for e in log.search(outcome="denied").entries)
    assert [e.index for e in log.search(dataset="claims", kind="query.submit").entries] == [
        i for i in range(24) if i % 4 == 1 and i % 2 == 0
    ]
    t5 = log.entries(5, 6)[0].time
    assert [e.index for e in log.search(since=t5, until=log.entries(8, 9)[0].time).entries] == [5, 6, 7]
    token = log.search(principal="user1", page_size=1).next_page_token
    with pytest.raises(InvalidArgument):
        log.search(principal="user2", page_token=token)
    with pytest.raises(InvalidArgument):
        log.search(page_token="garbage")


def test_concurrent_appends_are_serialised(tmp_path: Path, key: NodeKey) -> None:
    log = open_log(tmp_path / "a.db", key)
    got: list[int] = []

    def work() -> None:
        for _ in range(5):
            got.append(log.append("catalog.read", principal="t", outcome="ok"))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(20))
    log.close()
    assert open_log(tmp_path / "a.db", key).tree_size == 20


def test_export_and_receipt_verify_offline(tmp_path: Path, key: NodeKey) -> None:
    log = open_log(tmp_path / "a.db", key)
    fill(log, 6)
    old = log.checkpoint()
    idx = log.append("query.release", principal="alice", outcome="ok", dataset="patients",
                     query="q-77", details=release_details(b"\x01" * 32, "cert-3", b"\x02" * 32))
    fill(log, 3)
    receipt = log.receipt(idx)
    receipt.verify(key.public_key_pem)
    assert receipt.checkpoint.tree_size == 10
    with pytest.raises(InvalidArgument):
        log.receipt(0)
    buf = io.BytesIO()
    cp = log.export(buf)
    assert cp.tree_size == 10
    report = verify_export(io.BytesIO(buf.getvalue()), key.public_key_bytes, old_checkpoint=old)
    assert report.ok, report.problems
    assert report.tree_size == 10 and report.root_hash == log.root_hash
    assert {c.tree_size for c in report.checkpoints} == {6, 10}
    wrong = verify_export(io.BytesIO(buf.getvalue()), NodeKey.generate().public_key_bytes)
    assert not wrong.ok


def test_log_refuses_another_nodes_key_or_id(tmp_path: Path, key: NodeKey) -> None:
    open_log(tmp_path / "a.db", key).close()
    with pytest.raises(AuditUnavailable):
        open_log(tmp_path / "a.db", NodeKey.generate())
    with pytest.raises(AuditUnavailable):
        AuditLog(tmp_path / "a.db", key, node_id="node-b")


# --- fail closed ---------------------------------------------------------------------------


def test_audit_unavailable_is_unavailable_with_its_reason() -> None:
    err = AuditUnavailable("disk full")
    assert isinstance(err, Unavailable)
    assert err.reason == "AUDIT_UNAVAILABLE" and "disk" not in err.message and err.private


def test_append_fails_closed_on_a_read_only_database(tmp_path: Path, key: NodeKey) -> None:
    """Mechanism: the log's connection is swapped for one opened ``mode=ro`` (chmod does not
    stop root, and an open descriptor keeps its write access anyway)."""
    path = tmp_path / "a.db"
    log = open_log(path, key)
    fill(log, 3)
    writable = log._conn
    log._conn = SQLiteDatabase(store.connect(path, read_only=True))
    with pytest.raises(AuditUnavailable) as exc:
        log.append("query.execute", principal="a", outcome="ok")
    assert "readonly" in (exc.value.private or "")
    with pytest.raises(AuditUnavailable):
        log.checkpoint()
    assert log.tree_size == 3
    log._conn.close()
    log._conn = writable
    assert log.append("query.execute", principal="a", outcome="ok") == 3
    log.close()
    assert open_log(path, key).tree_size == 4


class FailingCommit:
    """A connection whose COMMIT fails: before writing (``land=False``) or after (``True``),
    the second being the case where the caller cannot know whether the entry landed."""

    def __init__(self, conn: SQLiteDatabase, land: bool) -> None:
        self.conn, self.land = conn, land

    def execute(self, sql: str, *args: object) -> object:
        if sql == "COMMIT":
            if self.land:
                self.conn.execute(sql)
            raise sqlite3.OperationalError("disk I/O error")
        return self.conn.execute(sql, *args)

    def commit(self) -> None:
        self.execute("COMMIT")

    def __getattr__(self, name: str) -> object:
        return getattr(self.conn, name)


@pytest.mark.parametrize("land", [False, True])
def test_append_fails_closed_when_commit_fails(tmp_path: Path, key: NodeKey, land: bool) -> None:
    path = tmp_path / "a.db"
    log = open_log(path, key)
    fill(log, 3)
    real = log._conn
    log._conn = FailingCommit(real, land)  # type: ignore[assignment]
    with pytest.raises(AuditUnavailable):
        log.append("query.execute", principal="a", outcome="ok")
    log._conn = real
    # The next append first learns whether the failed one landed; indices stay contiguous.
    assert log.append("query.release", principal="a", outcome="ok") == (4 if land else 3)
    log.close()
    assert open_log(path, key).tree_size == (5 if land else 4)


DISK_FULL = textwrap.dedent("""
    import resource, signal, sys
    from pathlib import Path
    from veil_server.audit import AuditLog, AuditUnavailable
    from veil_server.access.node_key import NodeKey
    path = Path(sys.argv[1])
    log = AuditLog(path, NodeKey.load_or_create(path.parent), node_id="node-a")
    for _ in range(3):
        log.append("catalog.read", principal="a", outcome="ok")
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
    limit = max(f.stat().st_size for f in path.parent.iterdir())
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    try:
        log.append("catalog.read", principal="a", outcome="ok", details={"pad": "x" * 20000})
    except AuditUnavailable as exc:
        print("refused", exc.reason)
    else:
        print("appended")
""")


def test_append_fails_closed_when_the_disk_is_full(tmp_path: Path) -> None:
    """Mechanism: RLIMIT_FSIZE in a child process makes the kernel refuse to grow the files
    (EFBIG), which binds root too; the child is separate so the limit cannot leak."""
    path = tmp_path / "a.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", DISK_FULL, str(path)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "refused AUDIT_UNAVAILABLE", out.stderr
    log = AuditLog(path, NodeKey.load_or_create(tmp_path), node_id="node-a")
    assert log.tree_size == 3


@contextlib.contextmanager
def read_only(*paths: Path) -> Iterator[None]:
    """Make files or directories unwritable in a way that binds root too: the immutable
    attribute (``chattr +i``) when running as root, plain ``chmod`` otherwise."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            pytest.skip("running as root without chattr: no way to make a file read-only")
        probe = subprocess.run(["chattr", "+i", *map(str, paths)], capture_output=True)
        if probe.returncode != 0:
            pytest.skip(f"chattr +i not permitted here: {probe.stderr.decode().strip()}")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", *map(str, paths)], check=True)
    else:
        modes = [stat.S_IMODE(os.stat(p).st_mode) for p in paths]
        for p in paths:
            os.chmod(p, 0o500 if p.is_dir() else 0o400)
        try:
            yield
        finally:
            for p, mode in zip(paths, modes, strict=True):
                os.chmod(p, mode)


def test_log_refuses_to_open_a_read_only_file(tmp_path: Path, key: NodeKey) -> None:
    path = tmp_path / "a.db"
    log = open_log(path, key)
    fill(log, 2)
    log.close()
    with read_only(path), pytest.raises(AuditUnavailable):
        open_log(path, key)


def test_log_refuses_to_open_in_an_unwritable_directory(tmp_path: Path, key: NodeKey) -> None:
    d = tmp_path / "state"
    d.mkdir()
    log = open_log(d / "a.db", key)
    fill(log, 2)
    log.close()  # a clean close removes the -wal and -shm files, so reopening must create them
    assert sorted(p.name for p in d.iterdir()) == ["a.db"]
    with read_only(d):
        with pytest.raises(AuditUnavailable):
            open_log(d / "b.db", key)
        with pytest.raises(AuditUnavailable):
            open_log(d / "a.db", key)
    assert open_log(d / "a.db", key).tree_size == 2


def test_empty_log_exports_and_verifies(tmp_path: Path, key: NodeKey) -> None:
    log = open_log(tmp_path / "a.db", key)
    buf = io.BytesIO()
    cp = log.export(buf)
    assert (cp.tree_size, cp.root_hash) == (0, merkle.EMPTY_ROOT)
    report = verify_export(io.BytesIO(buf.getvalue()), key.public_key_pem)
    assert report.ok and report.tree_size == 0, report.problems
