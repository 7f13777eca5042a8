"""SIGKILL the node at random moments while analysts submit, retry and cancel; restart; repeat.

Afterwards: the audit log opens (its full integrity check passes) and verifies offline; every
submission, approval and cancellation a client saw acknowledged has its entry; every query the
state store holds has its submission entry, every approved one its approval entry; and every
SUCCEEDED query's stored result digest is named by one of its release entries: no release
without its entry, whatever moment the node died at.

Each iteration forks a node from a pre-imported zygote (``crash_zygote.py``), so a restart costs
tens of milliseconds; the dataset is tiny so executions are cheap too. ``VEIL_CRASH_SEED``
reproduces a run, ``VEIL_CRASH_ITERATIONS`` changes its length.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import grpc
import pytest

import veil

from veil.audit import verify_export
from veil.crypto import PublicKey
from veil.v1 import query_pb2, query_pb2_grpc
from veil_server.audit import AuditLog
from veil_server.audit.events import LOG_FILE, node_id_for
from veil_server.config import load_config
from veil_server.cli.demo import init_node_folder
from veil_server.state.lifecycle import QueryState
from veil_server.node import decode_result
from veil_server.access.node_key import NodeKey
from veil_server.state.statedb import open_database
from veil_server.state.store import StateStore

ITERATIONS = int(os.environ.get("VEIL_CRASH_ITERATIONS", "250"))
BUDGET_S = 45.0  # stop early on a slow machine, but never below MIN_ITERATIONS
MIN_ITERATIONS = 100
MAX_DELAY_S = 0.15
SQLS = [
    # An exact-mode dataset (many queries, no budget to run out): tables that nest.
    "SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex",
    "SELECT sex, region, AVG(cost) AS c FROM patients GROUP BY sex, region",
    "SELECT COUNT(*) AS n, SUM(length_of_stay) AS s FROM patients WHERE sex = 'F' AND region = 'North' AND age >= 40",
]


class Zygote:
    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("crash_zygote.py")), str(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def _say(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def start(self) -> tuple[int, int]:
        reply = self._say("start")
        assert reply.startswith("READY"), f"the node did not restart: {reply!r}"
        _, pid, port = reply.split()
        return int(pid), int(port)

    def reap(self, pid: int) -> None:
        assert self._say(f"reap {pid}").startswith("REAPED")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


class Analyst:
    """Drives one node incarnation until it dies; remembers what was acknowledged."""

    def __init__(self, token: str, key: PublicKey, rng: random.Random) -> None:
        self.md = [("authorization", f"Bearer {token}")]
        self.key = query_pb2.PaillierPublicKey(n=key.to_bytes())
        self.rng = rng
        self.submitted: dict[str, str] = {}  # acknowledged: query id -> request id
        self.unacked: list[tuple[str, str]] = []  # (request id, sql) sent but never answered
        self.cancelled: set[str] = set()
        self.last = ""

    def run(self, port: int, max_ops: int) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = query_pb2_grpc.QueryServiceStub(ch)
            try:
                for _ in range(max_ops):
                    if self.submitted and self.rng.random() < 0.3:
                        self._cancel(stub)
                    else:
                        self._submit(stub)
            except grpc.RpcError as e:
                assert e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                                    grpc.StatusCode.DEADLINE_EXCEEDED), e

    def _submit(self, stub) -> None:
        if self.unacked and self.rng.random() < 0.3:  # a client retrying after the crash
            request_id, sql = self.unacked.pop(self.rng.randrange(len(self.unacked)))
        else:
            request_id, sql = str(uuid.uuid4()), self.rng.choice(SQLS)
        self.unacked.append((request_id, sql))
        q = stub.SubmitQuery(query_pb2.SubmitQueryRequest(sql=sql, purpose="research", public_key=self.key,
                                                          request_id=request_id), metadata=self.md, timeout=5)
        self.unacked.remove((request_id, sql))
        self.last = q.name.removeprefix("queries/")
        self.submitted[self.last] = request_id

    def _cancel(self, stub) -> None:
        # Mostly the latest query: tiny queries finish fast, and only unfinished ones can be cancelled.
        qid = self.last if self.rng.random() < 0.8 else self.rng.choice(sorted(self.submitted))
        try:
            stub.CancelQuery(query_pb2.CancelQueryRequest(name=f"queries/{qid}"), metadata=self.md, timeout=5)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.FAILED_PRECONDITION:  # finished already: not a cancel
                raise
            return
        self.cancelled.add(qid)


def open_store(config) -> StateStore:
    if config.state.shared:
        return StateStore(open_database(config.state, sqlite_path=config.state_dir / "state.db"))
    return StateStore(config.state_dir / "state.db")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sigkill_at_random_moments_never_loses_an_entry(tmp_path, analyst_home, backend, request):
    """On SQLite files, and with the state and log in PostgreSQL (each restart is the same
    named replica, which takes its own runs back at once)."""
    seed = int(os.environ.get("VEIL_CRASH_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    folder = tmp_path / "node"
    tokens = init_node_folder(folder, rows=300, disclosure="exact")
    if backend == "postgres":
        from tests.integration.test_governance_walkthrough import use_postgres_state

        use_postgres_state(folder, request.getfixturevalue("state_postgres"))
        cfg = folder / "veil.toml"
        cfg.write_text(cfg.read_text().replace("[state]\n", '[state]\nreplica = "crash-node"\n', 1))
    config = load_config(folder / "veil.toml", env={})
    with veil.connect("127.0.0.1:1", home=analyst_home) as offline:
        analyst = Analyst(tokens["alice"], offline.keys[0], rng)

    zygote = Zygote(folder / "veil.toml")
    started, done, starting = time.monotonic(), 0, 0.0
    try:
        for done in range(1, ITERATIONS + 1):
            t = time.monotonic()
            pid, port = zygote.start()
            starting += time.monotonic() - t
            # On a machine so loaded that no life yet lasted until a submission was acknowledged,
            # each further life lasts longer (the kills must still land amid acknowledged work).
            stretch = 1.0 if analyst.submitted or done < MIN_ITERATIONS // 2 else 1.0 + done / 10
            killer = threading.Timer(rng.uniform(0, MAX_DELAY_S * stretch), os.kill, (pid, signal.SIGKILL))
            killer.start()
            analyst.run(port, max_ops=rng.randint(1, 4))
            killer.join()
            zygote.reap(pid)
            if time.monotonic() - started > BUDGET_S and done >= MIN_ITERATIONS and analyst.submitted:
                break
        # One last, clean life: recovery runs every acknowledged query to the end.
        pid, port = zygote.start()
        _wait_until_settled(config)
        os.kill(pid, signal.SIGTERM)
        zygote.reap(pid)
    finally:
        zygote.close()

    why = f"seed {seed}, {done} kills"
    assert analyst.submitted, why
    key = NodeKey.load(config.state_dir / "node_key.pem")
    log_at = open_database(config.state, sqlite_path=None, audit=True) if config.state.shared \
        else config.state_dir / LOG_FILE
    with AuditLog(log_at, key, node_id=node_id_for(key)) as audit:  # full check at open
        export = tmp_path / "audit.jsonl"
        with open(export, "wb") as f:
            audit.export(f)
        entries = audit.entries(0)
    report = verify_export(export, key.public_key_pem)
    assert report.ok, (why, report.problems[:3])

    logged: dict[str, set[str]] = defaultdict(set)  # kind -> query ids
    releases: dict[str, set[str]] = defaultdict(set)  # query id -> result digests
    for e in entries:
        if e.query and e.outcome == "ok":
            logged[e.kind].add(e.query)
        if e.kind == "query.release":
            releases[e.query].add(e.details["result_digest"])
    assert set(analyst.submitted) <= logged["query.submit"], why
    assert set(analyst.submitted) <= logged["query.approve"], why
    assert analyst.cancelled <= logged["query.cancel"], why

    store = open_store(config)
    try:
        records = store.in_states(list(QueryState))
        assert {r.id for r in records} <= logged["query.submit"], why
        succeeded = 0
        for r in records:
            states = {t.to_state for t in store.history(r.id)}
            if QueryState.APPROVED in states:
                assert r.id in logged["query.approve"], (why, r.id)
            if r.state is QueryState.CANCELLED:
                assert r.id in logged["query.cancel"], (why, r.id)
            if r.state is QueryState.SUCCEEDED:
                succeeded += 1
                digest = decode_result(store.result(r.id)).result_digest
                assert digest in releases[r.id], (why, r.id, "released without its entry")
            assert r.state not in (QueryState.APPROVED, QueryState.RUNNING), (why, r.id, r.state)
    finally:
        store.close()
    assert succeeded > 0 and sum(map(len, releases.values())) >= succeeded, why
    print(f"\n{why}: {len(records)} queries, {succeeded} released, {len(analyst.cancelled)} cancelled, "
          f"{len(entries)} entries, {time.monotonic() - started:.1f} s ({starting:.1f} s restarting)")


def _wait_until_settled(config, timeout: float = 60.0) -> None:
    """Until no query is APPROVED or RUNNING (a peek at the node's own store, read only)."""
    import sqlite3

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if config.state.shared:
            db = open_database(config.state, sqlite_path=None)
            try:
                (n,) = db.execute("SELECT COUNT(*) FROM queries WHERE state IN ('APPROVED', 'RUNNING')").fetchone()
            finally:
                db.close()
        else:
            with sqlite3.connect(f"file:{config.state_dir / 'state.db'}?mode=ro", uri=True) as db:
                (n,) = db.execute("SELECT COUNT(*) FROM queries WHERE state IN ('APPROVED', 'RUNNING')").fetchone()
        if n == 0:
            return
        time.sleep(0.05)
    raise AssertionError("queries did not finish after the last restart")
