"""Fail closed: when an entry cannot be made durable, the action it records does not happen.

Storage failures are injected at the log's append (and checkpoint) for chosen kinds only, so
everything else keeps working and the test can see exactly what was, and was not, done.
"""

from __future__ import annotations

import threading

import pytest

import veil
from veil_server.audit import AuditUnavailable

from .audit_support import GROUPED, kinds, make_folder, serve


@pytest.fixture()
def node(tmp_path):
    folder = tmp_path / "node"
    tokens = make_folder(folder)
    with serve(folder) as running:
        yield running, tokens


class Broken:
    """Makes the log's appends fail for the given kinds (and its checkpoints if asked), whether
    an entry is appended alone or in a batch (``append_many``: then none of the batch is)."""

    def __init__(self, running, *kinds: str, checkpoint: bool = False) -> None:
        self.log, self.kinds, self.checkpoint = running.node.audit.log, set(kinds), checkpoint
        self._append, self._append_many, self._checkpoint = self.log.append, self.log.append_many, self.log.checkpoint

    def __enter__(self):
        def append(kind, **kw):
            if kind in self.kinds:
                raise AuditUnavailable(f"injected: {kind}")
            return self._append(kind, **kw)

        def append_many(events, *, checkpoint=False, **kw):
            for e in events:
                if e.kind in self.kinds:
                    raise AuditUnavailable(f"injected: {e.kind}")
            if checkpoint and self.checkpoint:
                raise AuditUnavailable("injected: checkpoint")
            return self._append_many(events, checkpoint=checkpoint, **kw)

        def checkpoint():
            if self.checkpoint:
                raise AuditUnavailable("injected: checkpoint")
            return self._checkpoint()

        self.log.append, self.log.append_many, self.log.checkpoint = append, append_many, checkpoint
        return self

    def __exit__(self, *exc):
        del self.log.append, self.log.append_many, self.log.checkpoint


def analyst(running, tokens, home, who="alice"):
    return veil.connect(running.target, token=tokens[who], home=home, retries=0)


def test_a_submission_without_its_entry_is_refused_and_not_stored(node, analyst_home):
    running, tokens = node
    with analyst(running, tokens, analyst_home) as alice:
        with Broken(running, "query.submit"), pytest.raises(veil.Unavailable) as e:
            alice.submit(GROUPED, purpose="research", request_id="nope")
        assert e.value.reason == "AUDIT_UNAVAILABLE"
        assert alice.queries() == []
        # Once the log is back, the retry goes through as a fresh submission.
        info = alice.submit(GROUPED, purpose="research", request_id="nope")
        assert not alice.wait(info.name).empty


def test_an_approval_without_its_entry_does_not_happen_and_a_retry_completes_it(node, analyst_home):
    running, tokens = node
    with analyst(running, tokens, analyst_home) as alice:
        with Broken(running, "query.approve"), pytest.raises(veil.Unavailable):
            alice.submit(GROUPED, purpose="research", request_id="pending")
        (stuck,) = alice.queries()
        assert stuck.state == "PENDING_APPROVAL"
        retried = alice.submit(GROUPED, purpose="research", request_id="pending")
        assert retried.name == stuck.name and retried.state in ("APPROVED", "RUNNING", "SUCCEEDED")
        alice.wait(retried.name)
    assert kinds(running, stuck.id).count("query.approve") == 1


@pytest.mark.parametrize("broken", [{"kinds": ["query.release"]}, {"kinds": ["query.execute"]},
                                    {"kinds": [], "checkpoint": True}])
def test_no_release_without_its_entry(node, analyst_home, broken):
    running, tokens = node
    with analyst(running, tokens, analyst_home) as alice:
        gate = threading.Event()
        real = running.node.engine.aggregate
        running.node.engine.aggregate = lambda plan, ds: (gate.wait(10), real(plan, ds))[1]
        try:
            info = alice.submit(GROUPED, purpose="planning")  # approved while the log still works
            with Broken(running, *broken["kinds"], checkpoint=broken.get("checkpoint", False)):
                gate.set()
                with pytest.raises(veil.QueryFailed) as e:
                    alice.wait(info.name, timeout=20)
        finally:
            running.node.engine.aggregate = real
        assert e.value.reason == "AUDIT_UNAVAILABLE"
        with pytest.raises(veil.NotReady):
            alice.result(info.name)
    assert running.node.store.result(info.id) is None
    # The execution, release and checkpoint are one transaction: a failure of any leaves none.
    assert not {"query.execute", "query.release"} & set(kinds(running, info.id))


def test_a_catalog_read_without_its_entry_is_refused(node, analyst_home):
    running, tokens = node
    with analyst(running, tokens, analyst_home) as alice:
        with Broken(running, "catalog.read"):
            with pytest.raises(veil.Unavailable):
                alice.datasets()
            with pytest.raises(veil.Unavailable):
                alice.dataset("patients")
        assert alice.datasets()[0].name == "patients"


def test_a_cancellation_without_its_entry_does_not_happen(node, analyst_home):
    running, tokens = node
    gate = threading.Event()
    real = running.node.engine.aggregate
    running.node.engine.aggregate = lambda plan, ds: (gate.wait(10), real(plan, ds))[1]
    try:
        with analyst(running, tokens, analyst_home) as alice:
            info = alice.submit(GROUPED, purpose="research")
            with Broken(running, "query.cancel"), pytest.raises(veil.Unavailable):
                alice.cancel(info.name)
            assert alice.get(info.name).state in ("APPROVED", "RUNNING")
            gate.set()
            assert not alice.wait(info.name).empty
    finally:
        gate.set()
        running.node.engine.aggregate = real
    assert "query.cancel" not in kinds(running, info.id)
