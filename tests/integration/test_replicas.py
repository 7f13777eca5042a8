"""Two node replicas sharing one PostgreSQL state (issue 9), as real `veil node serve` processes
on their own loopback ports: a query submitted on one and approved on the other is released
once; ε debits racing across replicas never overspend; both serve one audit log that verifies
offline; a replica killed mid-life leaves nothing half done that the other cannot finish."""

from __future__ import annotations

import re

import io
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pytest

import veil
from veil.audit import verify_export
from veil_server.cli.demo import init_node_folder

from .replica_process import VEIL, start

SQL = "SELECT region, COUNT(*) AS n, SUM(length_of_stay) AS stay FROM patients GROUP BY region"


@pytest.fixture()
def node_folder(tmp_path, state_postgres):
    """A demo node whose state lives in its own schema of the scratch PostgreSQL database; the
    replicas share its folder (config, data, node and token keys) and that database."""
    import secrets

    folder = tmp_path / "node"
    tokens = init_node_folder(folder, rows=4_000, disclosure="exact")
    schema = "r_" + secrets.token_hex(4)
    cfg = folder / "veil.toml"
    cfg.write_text(cfg.read_text().replace("[node]", f'[state]\nbackend = "postgres"\nconninfo = "{state_postgres}"\n'
                                                     f'schema = "{schema}"\n\n[node]', 1))
    return folder, tokens


def plain(folder: Path, sql: str) -> dict[str, tuple[int, int]]:
    rows = duckdb.sql(sql.replace("FROM patients", f"FROM read_csv_auto('{folder / 'data' / 'patients.csv'}')"))
    return {r[0]: (int(r[1]), int(r[2])) for r in rows.fetchall()}


def test_submit_on_one_approve_on_the_other_release_once(node_folder, analyst_home, tmp_path):
    folder, tokens = node_folder
    cfg = folder / "veil.toml"
    cfg.write_text(cfg.read_text().replace("auto_approve = true", "auto_approve = false"))
    a, b = start(folder, "a", "b")
    try:
        key = None
        with veil.connect(a.target, token=tokens["alice"], home=analyst_home) as alice_a, \
                veil.connect(b.target, token=tokens["olivia"], home=tmp_path / "olivia") as olivia_b:
            key = alice_a.node_key()
            q = alice_a.submit(SQL, purpose="research", request_id="replica-1")
            assert q.state == "PENDING_APPROVAL"
            # The owner on replica B sees the query submitted on A, and approves it there.
            assert [p.query for p in olivia_b.review.pending()] == [q.name]
            olivia_b.review.approve(q.name, "study protocol 7 covers it")
            # A retry of the submission on B is the same query (idempotent across replicas).
            with veil.connect(b.target, token=tokens["alice"], home=analyst_home) as alice_b:
                assert alice_b.submit(SQL, purpose="research", request_id="replica-1").name == q.name
                frame = alice_a.wait(q.name, timeout=60)
                again = alice_b.result(q.name)
        assert frame.equals(again)
        want = plain(folder, SQL)
        got = {r.region: (int(r.n), int(r.stay)) for r in frame.itertuples() if not r.suppressed}
        assert got == want  # exact against DuckDB on the raw file
        # Released once: one execution start and one release entry in the one shared log, which
        # verifies offline against the node key, whichever replica exports it.
        with veil.connect(b.target, token=tokens["audra"], home=tmp_path / "audra") as audra_b, \
                veil.connect(a.target, token=tokens["audra"], home=tmp_path / "audra") as audra_a:
            events = audra_b.audit.events(query=q.id)
            kinds = [e.kind for e in events]
            assert kinds.count("query.release") == 1 and kinds.count("query.approve") == 1, kinds
            buf = io.BytesIO()
            audra_a.audit.export(buf)
            assert audra_a.audit.checkpoint().tree_size >= 1
            cp_b = audra_b.audit.checkpoint(sign_now=True)
        report = verify_export(io.BytesIO(buf.getvalue()), key)
        assert report.ok, report.problems
        assert cp_b.tree_size >= report.tree_size
        # The operator's raw export straight from the shared database verifies too.
        raw = tmp_path / "raw.jsonl"
        subprocess.run([VEIL, "audit", "dump", str(raw), "--config", str(folder / "veil.toml")],
                       check=True, capture_output=True, timeout=60)
        offline = verify_export(raw, key)
        assert offline.ok, offline.problems
        assert offline.tree_size >= cp_b.tree_size
    finally:
        for r in (a, b):
            r.stop()


def test_epsilon_debits_racing_across_replicas_never_overspend(node_folder, analyst_home):
    folder, tokens = node_folder
    cfg = folder / "veil.toml"
    # 0.25 per query against a budget of 1.0: four releases at most, whichever replica runs them.
    text = cfg.read_text().replace('disclosure = "exact"', 'disclosure = "dp"')
    text = re.sub(r"(?m)^exact_reason = .*$", "dp = { epsilon_per_query = 0.25, analyst_budget = 1.0 }", text)
    cfg.write_text(text)
    a, b = start(folder, "a", "b")
    try:
        targets = [a.target, b.target]

        def one(i: int) -> str:
            with veil.connect(targets[i % 2], token=tokens["alice"], home=analyst_home) as alice:
                try:
                    q = alice.submit(f"SELECT COUNT(*) FROM patients WHERE age >= {i}", purpose="research",
                                     request_id=f"race-{i}")
                except veil.VeilError as e:  # refused at submission: the budget is already spent
                    return e.reason
                deadline = time.monotonic() + 60
                info = alice.get(q.name)
                while not info.finished and time.monotonic() < deadline:
                    time.sleep(0.05)
                    info = alice.get(q.name)
                return info.state if info.state == "SUCCEEDED" else info.state_reason

        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(one, range(12)))
        assert outcomes.count("SUCCEEDED") == 4, outcomes
        assert set(outcomes) - {"SUCCEEDED"} == {"PRIVACY_BUDGET_EXHAUSTED"}, outcomes
        for t in targets:  # both replicas read the one budget
            with veil.connect(t, token=tokens["alice"], home=analyst_home) as alice:
                budget = alice.budget("patients")
                assert budget.spent == pytest.approx(1.0) and budget.remaining == 0
    finally:
        for r in (a, b):
            r.stop()


def test_a_killed_replica_leaves_the_other_serving(node_folder, analyst_home):
    """SIGKILL one replica: the other keeps serving everything acknowledged, and a restarted
    replica under the same name starts cleanly against the shared log (full check at open)."""
    folder, tokens = node_folder
    a, b = start(folder, "a", "b")
    try:
        with veil.connect(a.target, token=tokens["alice"], home=analyst_home) as alice_a:
            names = [alice_a.submit(SQL, purpose="research", request_id=f"k{i}").name for i in range(3)]
        a.stop(signal.SIGKILL)
        with veil.connect(b.target, token=tokens["alice"], home=analyst_home) as alice_b:
            for n in names:
                frame = alice_b.wait(n, timeout=60)
                assert {r.region: (int(r.n), int(r.stay)) for r in frame.itertuples() if not r.suppressed} \
                    == plain(folder, SQL)
        (a2,) = start(folder, "a")
        try:
            with veil.connect(a2.target, token=tokens["alice"], home=analyst_home) as alice_a2:
                assert [alice_a2.get(n).state for n in names] == ["SUCCEEDED"] * 3
        finally:
            a2.stop()
    finally:
        for r in (a, b):
            r.stop()
