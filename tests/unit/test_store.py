"""The state store: idempotent creation, compare-and-set transitions, durable history."""

from __future__ import annotations

import threading

import pytest

from veil_server.errors import AlreadyExists, FailedPrecondition, QueryNotFound
from veil_server.state.lifecycle import QueryState
from veil_server.state.store import NewQuery, StateStore


def new(request_id="r1", sql="SELECT COUNT(*) FROM d", key=b"k"):
    return NewQuery("alice", request_id, "d", "research", sql, sql, "{}", "digest", key, "fp")


def test_create_is_idempotent_per_request_id(open_state):
    s = StateStore(open_state())
    a, created = s.create_query(new(), "SUBMITTED", "m")
    b, created_again = s.create_query(new(), "SUBMITTED", "m")
    assert created and not created_again and a.id == b.id
    with pytest.raises(AlreadyExists):
        s.create_query(new(sql="SELECT 1"), "SUBMITTED", "m")
    with pytest.raises(AlreadyExists):
        s.create_query(new(key=b"other"), "SUBMITTED", "m")
    c, _ = s.create_query(new(request_id="r2"), "SUBMITTED", "m")
    assert c.id != a.id


def test_transitions_follow_the_lifecycle(open_state):
    s = StateStore(open_state())
    q, _ = s.create_query(new(), "SUBMITTED", "m")
    with pytest.raises(FailedPrecondition):
        s.transition(q.id, QueryState.SUCCEEDED, "X", "skipping states is refused")
    s.transition(q.id, QueryState.APPROVED, "OK", "m")
    s.transition(q.id, QueryState.RUNNING, "GO", "m", expect=[QueryState.APPROVED])
    with pytest.raises(FailedPrecondition):
        s.transition(q.id, QueryState.RUNNING, "GO", "m", expect=[QueryState.APPROVED])
    done = s.transition(q.id, QueryState.SUCCEEDED, "DONE", "m", result=(b"ciphertexts", "d1"))
    assert done.state is QueryState.SUCCEEDED and s.result(q.id) == b"ciphertexts"
    with pytest.raises(FailedPrecondition):
        s.transition(q.id, QueryState.CANCELLED, "LATE", "finished queries stay finished")
    assert [t.to_state for t in s.history(q.id)] == [
        QueryState.PENDING_APPROVAL, QueryState.APPROVED, QueryState.RUNNING, QueryState.SUCCEEDED]
    with pytest.raises(QueryNotFound):
        s.get("nope")


def test_reopen_keeps_everything(open_state):
    s = StateStore(open_state())
    q, _ = s.create_query(new(), "SUBMITTED", "m")
    s.transition(q.id, QueryState.CANCELLED, "BYE", "m")
    s.close()
    s2 = StateStore(open_state())
    assert s2.get(q.id).state is QueryState.CANCELLED and len(s2.history(q.id)) == 2


def test_concurrent_compare_and_set_has_one_winner(open_state):
    s = StateStore(open_state())
    q, _ = s.create_query(new(), "SUBMITTED", "m")
    s.transition(q.id, QueryState.APPROVED, "OK", "m")
    wins, errors = [], []

    def take():
        try:
            s.transition(q.id, QueryState.RUNNING, "GO", "m", expect=[QueryState.APPROVED])
            wins.append(1)
        except FailedPrecondition:
            errors.append(1)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(errors) == 7


def test_paging_by_principal(open_state):
    s = StateStore(open_state())
    ids = [s.create_query(new(request_id=f"r{i}"), "SUBMITTED", "m")[0].id for i in range(5)]
    page1 = s.list_for("alice", page_size=2, before_seq=None)
    page2 = s.list_for("alice", page_size=2, before_seq=page1[-1].seq)
    page3 = s.list_for("alice", page_size=2, before_seq=page2[-1].seq)
    assert [r.id for r in page1 + page2 + page3] == ids[::-1]
    assert s.list_for("bob", page_size=10, before_seq=None) == []


def test_two_replicas_racing_on_one_state_have_one_winner(open_state):
    """Two stores on one state (two replicas: two connections, each with its own in-process
    lock), racing the same compare-and-set: the database's write lock leaves one winner."""
    stores = [StateStore(open_state()), StateStore(open_state())]
    queries = []
    for i in range(10):
        q, _ = stores[i % 2].create_query(new(request_id=f"race{i}"), "SUBMITTED", "m")
        stores[(i + 1) % 2].transition(q.id, QueryState.APPROVED, "OK", "m")
        queries.append(q.id)
    wins: list[tuple[int, str]] = []
    lock = threading.Lock()

    def take(n: int) -> None:
        for qid in queries:
            try:
                stores[n % 2].transition(qid, QueryState.RUNNING, "GO", "m", expect=[QueryState.APPROVED])
                with lock:
                    wins.append((n, qid))
            except FailedPrecondition:
                pass

    threads = [threading.Thread(target=take, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(q for _, q in wins) == sorted(queries)  # each query taken exactly once
    for qid in queries:  # and both replicas see the one history
        assert [t.to_state for t in stores[0].history(qid)] == [t.to_state for t in stores[1].history(qid)] == [
            QueryState.PENDING_APPROVAL, QueryState.APPROVED, QueryState.RUNNING]
