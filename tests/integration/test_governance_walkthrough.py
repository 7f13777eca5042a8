"""The governance walkthrough, every step through real gRPC, with the node restarted between
steps (nothing acknowledged may be lost): registration, review, listing with a certificate,
grants, a query under manual approval, its result, and every refusal along the way."""

from __future__ import annotations

import contextlib
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import veil
from veil.accuracy import Noise
from veil.certificates import verify_bytes
from veil_server.config import load_config
from veil_server.cli.demo import init_node_folder, patients_table, write_table
from veil_server.api.server import run_server

SPEC = {
    "name": "admissions",
    "source": "",
    "description": "Admissions of a second hospital",
    "purposes": ["research", "planning"],
    "classification": "sensitive",
    "rights": ["holding", "processing"],
    "auto_approve": False,
    "approvals_required": 1,
    "min_group_size": 20,
    "columns": [
        {"name": "patient_id", "type": "integer", "controls": ["hidden"]},
        {"name": "region", "type": "text", "controls": ["group", "filter"],
         "categories": ["North", "South", "East", "West", "Central", "Coast", "Highlands", "Islands"]},
        {"name": "sex", "type": "text", "controls": ["group"], "categories": ["F", "M"]},
        {"name": "age", "type": "integer", "controls": ["filter", "aggregate"], "range": [0, 110]},
        {"name": "cost", "type": "decimal", "controls": ["aggregate"], "range": [0, 500000], "scale": 2},
    ],
}
SQL = "SELECT region, COUNT(*) AS n, AVG(cost) AS avg_cost FROM admissions GROUP BY region"


class Walk:
    """A node folder that can be started and stopped between steps."""

    def __init__(self, folder: Path, tokens: dict[str, str], home: Path) -> None:
        self.folder, self.tokens, self.home = folder, tokens, home
        self._stack: contextlib.ExitStack | None = None
        self.target = ""
        self.node_key = b""

    def start(self):
        self._stack = contextlib.ExitStack()
        running = self._stack.enter_context(
            run_server(load_config(self.folder / "veil.toml", env={}), listen="127.0.0.1:0", grace=1))
        self.target, self.running = running.target, running
        self.node_key = running.node.audit.key.public_key_pem

    def restart(self):
        self._stack.close()
        self.start()

    def stop(self):
        self._stack.close()

    def as_(self, who: str) -> veil.Node:
        return veil.connect(self.target, token=self.tokens[who], home=self.home, node_key=self.node_key)


def use_postgres_state(folder: Path, conninfo: str) -> None:
    """Keep the node's state in a schema of its own in PostgreSQL (issue 9) instead of SQLite."""
    import secrets

    cfg = folder / "veil.toml"
    cfg.write_text(cfg.read_text().replace(
        "[node]", f'[state]\nbackend = "postgres"\nconninfo = "{conninfo}"\nschema = "w_{secrets.token_hex(4)}"\n\n[node]', 1))


@pytest.fixture(params=["sqlite", "postgres"])
def walk(request, tmp_path, analyst_home):
    """The walkthrough with the node's state in SQLite files, and again in PostgreSQL."""
    tokens = init_node_folder(tmp_path / "node", rows=1_000, disclosure="exact")
    if request.param == "postgres":
        use_postgres_state(tmp_path / "node", request.getfixturevalue("state_postgres"))
    write_table(patients_table(4_000, seed=7), tmp_path / "admissions.csv")
    SPEC["source"] = str(tmp_path / "admissions.csv")
    w = Walk(tmp_path / "node", tokens, analyst_home)
    w.start()
    yield w
    w.stop()


def refused(fn, exc, reason):
    with pytest.raises(exc) as e:
        fn()
    assert e.value.reason == reason, (e.value.reason, e.value.message)
    return e.value


def test_walkthrough(walk, tmp_path):
    # 1. The owner registers a dataset: a DRAFT, invisible to analysts.
    with walk.as_("olivia") as olivia:
        v = olivia.governance.register(SPEC)
        assert (v.name, v.version, v.state, v.owners) == ("admissions", 1, "DRAFT", ("olivia",))
        refused(lambda: olivia.governance.register({**SPEC, "min_group_size": 10}), veil.InvalidRequest,
                "BELOW_CLASSIFICATION_FLOOR")  # a sensitive dataset cannot lower k below 20
    walk.restart()
    with walk.as_("alice") as alice:
        assert [d.name for d in alice.datasets()] == ["patients"]
        refused(lambda: alice.query(SQL, purpose="research"), veil.NotFound, "DATASET_NOT_FOUND")  # unlisted

    # 2. Submitted for review; the registrant cannot list it, a reviewer can.
    with walk.as_("olivia") as olivia:
        assert olivia.governance.submit("admissions").state == "UNDER_REVIEW"
        refused(lambda: olivia.governance.approve_listing("admissions", "mine"), veil.PermissionDenied,
                "ROLE_NOT_ALLOWED")  # self-approval of a listing
    walk.restart()
    with walk.as_("rita") as rita:
        assert rita.governance.versions("admissions")[0].state == "UNDER_REVIEW"
        listed = rita.governance.approve_listing("admissions", "schema, rules and purposes reviewed")
        assert listed.state == "LISTED" and listed.listed_by == "rita" and len(listed.certificate_id) == 64
    walk.restart()

    # 3. The certificate verifies offline with the node's public key alone.
    with walk.as_("alice") as alice:
        cert, raw = alice.governance.certificate("admissions")
        (tmp_path / "admissions.cert").write_bytes(raw)
        (tmp_path / "node.pub").write_bytes(walk.node_key)
        assert verify_bytes((tmp_path / "admissions.cert").read_bytes(), walk.node_key).certificate_id \
            == listed.certificate_id
        # A DP dataset states its size with noise (ε 0.1), to two significant digits.
        assert cert.classification == "sensitive" and abs(cert.row_count - 4_000) <= 100 and cert.owner == "olivia"
        ds = alice.dataset("admissions")
        assert (ds.state, ds.certificate_id, ds.classification) == ("LISTED", listed.certificate_id, "sensitive")
        # 4. No grant, no query.
        refused(lambda: alice.submit(SQL, purpose="research"), veil.PermissionDenied, "NO_GRANT")
        refused(lambda: alice.submit(SQL, purpose="marketing"), veil.PermissionDenied, "PURPOSE_NOT_ALLOWED")

    now = datetime.now(timezone.utc)
    with walk.as_("olivia") as olivia:
        olivia.governance.grant("alice", "admissions", "research", valid_from=now - timedelta(days=2),
                                valid_until=now - timedelta(days=1))
    with walk.as_("alice") as alice:
        refused(lambda: alice.submit(SQL, purpose="research"), veil.PermissionDenied, "GRANT_EXPIRED")
    with walk.as_("olivia") as olivia:
        grant = olivia.governance.grant("alice", "admissions", "research", max_queries=10)
        refused(lambda: olivia.governance.grant("alice", "admissions", "gossip"), veil.InvalidRequest,
                "PURPOSE_NOT_ALLOWED")
    walk.restart()

    # 5. A query on a sensitive dataset waits for an owner.
    with walk.as_("alice") as alice:
        assert alice.explain(SQL, purpose="research")["outcome"] == "REVIEW"
        refused(lambda: alice.submit(SQL, purpose="planning"), veil.PermissionDenied, "NO_GRANT")  # wrong purpose
        q = alice.submit(SQL, purpose="research", request_id="walk-1")
        assert q.state == "PENDING_APPROVAL"
    walk.restart()
    with walk.as_("otto") as otto:  # an owner, but of another dataset
        refused(lambda: otto.review.approve(q.name, "looks fine"), veil.PermissionDenied, "NOT_DATASET_OWNER")
    with walk.as_("bob") as bob:
        refused(lambda: bob.review.approve(q.name, "looks fine"), veil.PermissionDenied, "ROLE_NOT_ALLOWED")
    with walk.as_("olivia") as olivia:
        pending = olivia.review.pending()
        assert [p.query for p in pending] == [q.name]
        p = pending[0]
        assert p.principal == "alice" and p.purpose == "research" and p.expected_groups == 8
        assert p.rules[0][0] == "MANUAL_APPROVAL_REQUIRED" and set(p.columns) == {"region", "cost"}
        refused(lambda: olivia.review.approve(q.name, " "), veil.InvalidRequest, "REASON_REQUIRED")
        olivia.review.approve(q.name, "fits the approved study protocol")
    walk.restart()  # approved (and maybe running) when the node stops: it completes after the restart
    with walk.as_("alice") as alice:
        df = alice.wait(q.name, timeout=60)
        # A sensitive dataset releases with DP only: 8 counts, each with the discrete Laplace
        # noise its column reports; the total is off by more than this bound once in 10^9.
        noise = df.attrs["noise"]["n"]
        assert df.attrs["disclosure"] == "dp" and noise["epsilon"] == 0.5
        bound = Noise(noise["count_scale"], terms=8).bound(1 - 1e-9)
        assert len(df) == 8 and abs(df["n"].sum() - 4_000) <= bound
        info = alice.get(q.name)
        assert [h[0] for h in info.history][:2] == ["PENDING_APPROVAL", "APPROVED"]
        assert alice.receipt(q.name).dataset_certificate_id == listed.certificate_id

        # 6. A rejection: the analyst sees the reason.
        q2 = alice.submit("SELECT sex, AVG(age) FROM admissions GROUP BY sex", purpose="research")
    with walk.as_("olivia") as olivia:
        olivia.review.reject(q2.name, "age by sex is outside the protocol")
    walk.restart()
    with walk.as_("alice") as alice:
        err = refused(lambda: alice.wait(q2.name), veil.QueryFailed, "REJECTED_BY_OWNER")
        assert err.state == "REJECTED" and "outside the protocol" in err.message

        # 7. A revoked grant stops a query that was not released yet, and every new one.
        q3 = alice.submit("SELECT COUNT(*) FROM admissions", purpose="research")
    with walk.as_("olivia") as olivia:
        olivia.governance.revoke(grant.id, "study closed")
        olivia.review.approve(q3.name, "approved after the revocation")
    walk.restart()
    with walk.as_("alice") as alice:
        err = refused(lambda: alice.wait(q3.name, timeout=60), veil.QueryFailed, "GRANT_REVOKED")
        assert err.state == "FAILED"
        refused(lambda: alice.submit(SQL, purpose="research"), veil.PermissionDenied, "GRANT_REVOKED")
        used = [g for g in alice.governance.grants() if g.id == grant.id][0]
        assert used.revoked and used.used == 3


def test_suspension_and_changed_data(walk, tmp_path):
    with walk.as_("olivia") as olivia:
        olivia.governance.suspend("patients", "data quality incident")
    walk.restart()
    with walk.as_("alice") as alice:
        ds = alice.dataset("patients")
        assert ds.state == "SUSPENDED"  # visible as suspended, not NOT_FOUND
        refused(lambda: alice.submit("SELECT COUNT(*) FROM patients", purpose="research"), veil.WrongState,
                "DATASET_SUSPENDED")
    with walk.as_("otto") as otto:  # a co-owner of the demo dataset
        otto.governance.resume("patients", "incident closed")
    with walk.as_("alice") as alice:
        assert alice.query("SELECT COUNT(*) FROM patients", purpose="research")["count"][0] == 1_000
        with open(walk.folder / "data" / "patients.csv", "a") as f:
            f.write(f"999999,North,F,40,renal,12345,2020,3,{123.45}\n")
        refused(lambda: alice.submit("SELECT COUNT(*) FROM patients", purpose="research"), veil.WrongState,
                "DATA_CHANGED_SINCE_LISTING")


def test_pending_queries_expire(tmp_path, analyst_home):
    tokens = init_node_folder(tmp_path / "node", rows=500, disclosure="exact")
    cfg = (tmp_path / "node" / "veil.toml")
    text = cfg.read_text().replace("workers = 4", "workers = 2\napproval_ttl_seconds = 1")
    cfg.write_text(text.replace("auto_approve = true", "auto_approve = false"))
    walk = Walk(tmp_path / "node", tokens, analyst_home)
    walk.start()
    try:
        with walk.as_("alice") as alice:
            q = alice.submit("SELECT COUNT(*) FROM patients", purpose="research")
            assert q.state == "PENDING_APPROVAL"
            deadline = time.monotonic() + 10
            while alice.get(q.name).state == "PENDING_APPROVAL" and time.monotonic() < deadline:
                time.sleep(0.2)
            info = alice.get(q.name)
            assert (info.state, info.state_reason) == ("EXPIRED", "APPROVAL_EXPIRED")
    finally:
        walk.stop()
