"""Runs and replicas (issue 9): who may take a RUNNING query back, and the fence that keeps a
replica presumed dead from releasing a query another replica took over."""

from __future__ import annotations

import pytest

from veil_server.errors import FailedPrecondition
from veil_server.state.lifecycle import QueryState
from veil_server.state.replicas import Replicas
from veil_server.state.store import NewQuery, StateStore


def running_query(store: StateStore, replicas: Replicas, rid: str) -> tuple[str, str]:
    q, _ = store.create_query(NewQuery("alice", rid, "d", "research", "s", "s", "{}", "dg", b"k", "fp"), "S", "m")
    store.transition(q.id, QueryState.APPROVED, "OK", "m")
    run: list[str] = []
    store.transition(q.id, QueryState.RUNNING, "GO", "m", expect=[QueryState.APPROVED],
                     write_ahead=lambda r: run.append(replicas.claim(r.id)))
    return q.id, run[0]


def test_a_single_node_takes_back_every_run_at_start_only(tmp_path):
    store = StateStore(tmp_path / "state.db")
    node = Replicas(store, "solo")
    qid, run = running_query(store, node, "r1")
    assert node.reclaimable(at_start=False) == []
    store.close()
    restarted = Replicas(StateStore(tmp_path / "state.db"), "other-name")
    assert restarted.reclaimable(at_start=True) == [qid]  # one writer per file: every run is ours


def test_shared_state_takes_back_only_dead_or_own_runs_and_fences_the_old_run(state_postgres):
    import secrets

    from veil_server.state.statedb import StateSettings, open_database

    settings = StateSettings("postgres", state_postgres, "p_" + secrets.token_hex(4))
    sa, sb = StateStore(open_database(settings, sqlite_path=None)), StateStore(open_database(settings, sqlite_path=None))
    a, b = Replicas(sa, "a", lease_s=15), Replicas(sb, "b", lease_s=15)
    qid, run_a = running_query(sa, a, "r1")
    assert b.reclaimable(at_start=False) == []  # a is alive: its run is its own
    assert b.reclaimable(at_start=True) == []  # b's start takes back b's runs only
    assert sorted(a.live()) == ["a", "b"]

    # a restarts under its name: it takes its own run back at once.
    a_again = Replicas(StateStore(open_database(settings, sqlite_path=None)), "a")
    assert a_again.reclaimable(at_start=True) == [qid]

    # a stops beating (a crash, or a pause past its lease): b takes the run over...
    with sb.joined_tx() as db:
        db.execute("UPDATE replicas SET heartbeat_us = 0 WHERE name = 'a'")
    assert b.reclaimable(at_start=False) == [qid] and b.live() == ["b"]
    sb.transition(qid, QueryState.APPROVED, "NODE_RESTARTED", "m", expect=[QueryState.RUNNING])
    run: list[str] = []
    sb.transition(qid, QueryState.RUNNING, "GO", "m", expect=[QueryState.APPROVED],
                  write_ahead=lambda r: run.append(b.claim(r.id)))
    # ...and when a wakes up, its release is refused inside the release transaction.
    with pytest.raises(FailedPrecondition) as e:
        sa.transition(qid, QueryState.SUCCEEDED, "RESULT_RELEASED", "m", expect=[QueryState.RUNNING],
                      result=(b"x", "d"), write_ahead=lambda r: a.check_owner(r.id, run_a))
    assert e.value.reason == "RUN_SUPERSEDED"
    assert sa.get(qid).state is QueryState.RUNNING and sa.result(qid) is None
    sb.transition(qid, QueryState.SUCCEEDED, "RESULT_RELEASED", "m", expect=[QueryState.RUNNING],
                  result=(b"y", "d"), write_ahead=lambda r: b.check_owner(r.id, run[0]))
    assert sa.result(qid) == b"y"


def test_a_committed_move_on_one_replica_wakes_the_other(state_postgres):
    """WaitQuery across replicas: a state change committed on one replica is announced to the
    other (LISTEN/NOTIFY); one rolled back is not."""
    import secrets
    import threading

    from veil_server.state.statedb import StateSettings, open_database

    settings = StateSettings("postgres", state_postgres, "n_" + secrets.token_hex(4))
    sa, sb = StateStore(open_database(settings, sqlite_path=None)), StateStore(open_database(settings, sqlite_path=None))
    heard: list[str] = []
    got = threading.Event()
    stop = threading.Event()

    def hear(qid: str) -> None:
        heard.append(qid)
        got.set()

    def refuse(_record) -> None:
        raise RuntimeError("the audit entry could not be written")

    assert sb.on_change(hear, stop).wait(10), "the listener did not connect"
    try:
        q, _ = sa.create_query(NewQuery("alice", "n1", "d", "research", "s", "s", "{}", "dg", b"k", "fp"), "S", "m")
        lost, _ = sa.create_query(NewQuery("alice", "n2", "d", "research", "s", "s", "{}", "dg", b"k", "fp"), "S", "m")
        with pytest.raises(RuntimeError):  # rolled back: never announced
            sa.transition(lost.id, QueryState.REJECTED, "NO", "m", write_ahead=refuse)
        sa.transition(q.id, QueryState.APPROVED, "OK", "m")
        assert got.wait(10), "no notification arrived"
        # Notifications arrive in commit order: had the rolled-back move been announced, its
        # query would be heard before this one.
        assert heard == [q.id]
        assert sb.get(q.id).state is QueryState.APPROVED
    finally:
        stop.set()
