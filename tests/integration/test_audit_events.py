"""What the running node writes to its audit log, in what order, and what it never writes."""

from __future__ import annotations

import threading

import pytest

import veil
from veil.audit.canonical import parse_time
from veil.audit.records import Entry
from veil_server.audit.events import config_digest

from .audit_support import GROUPED, entries, make_folder, serve


@pytest.fixture()
def folder(tmp_path):
    f = tmp_path / "node"
    return f, make_folder(f)


def by_kind(es: list[Entry], kind: str) -> list[Entry]:
    return [e for e in es if e.kind == kind]


def test_a_query_lifecycle_is_logged_before_each_step_with_checkpoints(folder, analyst_home):
    path, tokens = folder
    with serve(path) as running:
        log = running.node.audit.log
        first = entries(running)
        # Then the operator's config is applied, each change logged: the dataset is listed and
        # the three demo grants are created.
        assert [e.kind for e in first] == ["admin.key.create", "admin.node.start", "admin.dataset.list",
                                           "admin.grant.create", "admin.grant.create", "admin.grant.create"]
        assert first[1].details["config_digest"] == config_digest(running.node.config)
        with veil.connect(running.target, token=tokens["alice"], home=analyst_home) as alice:
            alice.dataset("patients")
            info = alice.submit(GROUPED, purpose="research", request_id="life-1")
            alice.wait(info.name)
            receipt = alice.receipt(info.name)
        es = [e for e in entries(running) if e.query == info.id]
        assert [e.kind for e in es] == ["query.submit", "query.decision", "query.approve", "query.execute",
                                        "query.release"]
        submit, decision, approve, execute, release = es
        assert submit.principal == "alice" and submit.dataset == "patients"
        assert submit.details["request_id"] == "life-1" and submit.details["purpose"] == "research"
        assert submit.details["canonical_sql"] == info.canonical_sql
        assert decision.details["decision"] == "auto_approve" and decision.details["rules"] == []
        assert approve.details["approvers"] == ["policy"]
        assert execute.details["groups_released"] == 2 and execute.details["rows_scanned_approx"] == 2000
        assert release.details["result_digest"] == receipt.result_digest.hex()
        # A signed checkpoint right after every approval and every release.
        sizes = {cp.tree_size for cp in log.checkpoints()}
        assert {approve.index + 1, release.index + 1} <= sizes
        catalog = [e for e in by_kind(entries(running), "catalog.read") if e.principal == "alice"]
        assert [(e.details["method"], e.dataset) for e in catalog] == [("GetDataset", "patients")]


def test_refusals_are_logged_with_the_rules_that_fired(folder, analyst_home):
    path, tokens = folder
    with serve(path) as running:
        with veil.connect(running.target, token=tokens["alice"], home=analyst_home) as alice:
            with pytest.raises(veil.PermissionDenied):
                alice.submit("SELECT COUNT(*) AS n FROM patients", purpose="gossip", request_id="r-1")
            with pytest.raises(veil.PermissionDenied):
                alice.submit("SELECT postcode, COUNT(*) FROM patients GROUP BY postcode", purpose="research")
        es = entries(running)
    (policy,) = [e for e in by_kind(es, "query.decision") if e.outcome == "denied"]
    assert policy.principal == "alice" and policy.dataset == "patients" and policy.query is None
    assert [r["rule"] for r in policy.details["rules"]] == ["PURPOSE_NOT_ALLOWED"]
    assert policy.details["decision"] == "reject" and policy.details["request_id"] == "r-1"
    assert policy.details["plan_digest"] and "COUNT(*)" in policy.details["canonical_sql"]
    (sql,) = [e for e in by_kind(es, "query.submit") if e.outcome == "denied"]
    assert sql.details["reason"] == "GROUP_BY_NOT_ALLOWED" and "postcode" in sql.details["sql"]


def test_a_cancellation_is_logged_and_a_cancelled_query_is_never_released(folder, analyst_home):
    path, tokens = folder
    with serve(path) as running:
        gate, entered = threading.Event(), threading.Event()
        real = running.node.engine.aggregate

        def slow(plan, ds):
            entered.set()
            gate.wait(10)
            return real(plan, ds)

        running.node.engine.aggregate = slow
        with veil.connect(running.target, token=tokens["alice"], home=analyst_home) as alice:
            info = alice.submit(GROUPED, purpose="research")
            assert entered.wait(10)
            assert alice.cancel(info.name).state == "CANCELLED"
            gate.set()
            with pytest.raises(veil.QueryFailed):
                alice.wait(info.name, timeout=10)
        running.node.engine.aggregate = real
        kinds = [e.kind for e in entries(running) if e.query == info.id]
    assert kinds == ["query.submit", "query.decision", "query.approve", "query.cancel"]


def test_restart_logs_stop_and_start_with_the_config_digest_and_no_new_key(folder):
    path, _ = folder
    with serve(path) as running:
        digest = config_digest(running.node.config)
    with serve(path, env={"VEIL_WORKERS": "2"}) as running:
        es = entries(running)
    node_events = [e.kind for e in es if not e.kind.startswith(("admin.dataset.", "admin.grant."))]
    assert node_events == ["admin.key.create", "admin.node.start", "admin.node.stop", "admin.node.start"]
    # The config's dataset and grants are applied once, not again on restart.
    assert sum(e.kind == "admin.dataset.list" for e in es) == 1
    starts = [e for e in es if e.kind == "admin.node.start"]
    assert starts[0].details["config_digest"] == digest != starts[1].details["config_digest"]
    assert all(parse_time(a.time) <= parse_time(b.time) for a, b in zip(es, es[1:]))
