"""The ε budget under charge, refund, restart and concurrency (property-based): spent never
exceeds the limit and always equals the committed, unrefunded debits."""

from __future__ import annotations

import threading

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from veil_server.disclosure.budget import MICRO, BudgetExhausted, PrivacyBudget, to_micro
from veil_server.errors import InvalidArgument
from veil_server.state.store import StateStore

LIMIT = 2.0
ops = st.lists(st.one_of(
    st.tuples(st.just("charge"), st.sampled_from([0.1, 0.25, 0.3, 0.5, 0.7, 1.0])),
    st.tuples(st.just("refund"), st.integers(0, 30)),
    st.tuples(st.just("release"), st.integers(0, 30)),
    st.tuples(st.just("restart"), st.none()),
), max_size=40)


def _open(path_or_db):
    store = StateStore(path_or_db)  # with the results table the refund rule consults
    return store, PrivacyBudget(store)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops)
def test_spent_never_exceeds_limit_and_equals_debits(tmp_path_factory, sequence):
    path = tmp_path_factory.mktemp("budget") / "state.db"
    store, budget = _open(path)
    committed: dict[str, int] = {}  # the model: query -> micro-ε of its live debit
    released: set[str] = set()
    n = 0
    try:
        for op, arg in sequence:
            if op == "charge":
                qid = f"q{n}"
                n += 1
                try:
                    budget.debit(qid, "alice", "d", "", epsilon=arg, limit=LIMIT)
                    committed[qid] = to_micro(arg)
                except BudgetExhausted:
                    assert sum(committed.values()) + to_micro(arg) > to_micro(LIMIT)
            elif op == "release" and f"q{arg}" in committed:
                with store.joined_tx() as db:
                    db.execute("INSERT OR IGNORE INTO results VALUES (?, x'', '', 0)", (f"q{arg}",))
                released.add(f"q{arg}")
            elif op == "refund":
                qid = f"q{arg}"
                try:
                    if budget.refund(qid):
                        committed.pop(qid)
                except Exception as e:  # a released result is never refunded
                    assert qid in released and getattr(e, "reason", "") == "NOT_REFUNDABLE"
            elif op == "restart":
                store.close()
                store, budget = _open(path)
            spent = budget.spent_micro("alice", "d", "")
            assert spent <= to_micro(LIMIT)
            assert spent == sum(committed.values())
    finally:
        store.close()


def test_debit_that_rolls_back_is_not_spent(open_state):
    """The node debits inside the release transaction: if the release fails, so does the debit."""
    store, budget = _open(open_state())
    with pytest.raises(RuntimeError):
        with store.joined_tx():
            budget.debit("q1", "alice", "d", "", epsilon=1.0, limit=LIMIT)
            raise RuntimeError("the release failed")
    assert budget.spent_micro("alice", "d", "") == 0
    with pytest.raises(InvalidArgument):
        budget.debit("q2", "alice", "d", "", epsilon=float("nan"), limit=LIMIT)
    store.close()


@pytest.mark.parametrize("replicas", [1, 2])
def test_concurrent_debits_never_overspend(open_state, replicas):
    """40 threads debit one budget through one store, or through two replicas (two connections
    to one state, each with its own process lock): the database's write lock keeps the total
    within it either way."""
    replicas = [_open(open_state()) for _ in range(replicas)]
    ok, refused = [], []
    lock = threading.Lock()

    def run(i):
        _, budget = replicas[i % len(replicas)]
        try:
            budget.debit(f"q{i}", "alice", "d", "", epsilon=0.3, limit=LIMIT)
            with lock:
                ok.append(i)
        except BudgetExhausted:
            with lock:
                refused.append(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ok) == 6 and len(refused) == 34  # 6 x 0.3 = 1.8 <= 2.0 < 2.1
    for _, budget in replicas:
        assert budget.spent_micro("alice", "d", "") == 6 * to_micro(0.3) <= LIMIT * MICRO
    for store, _ in replicas:
        store.close()
