"""The state store's reads from other threads (issue 22): on SQLite they run on reader connections
of their own, so they never wait for a writer's commit; they must still see exactly the committed
state, a thread inside its own write transaction must see that transaction, and a read block must
never write."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from veil_server.state.store import StateStore


@pytest.fixture
def store(tmp_path):
    s = StateStore(tmp_path / "state.db")
    s.ensure_schema("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
    yield s
    s.close()


def read(store: StateStore, key: str):
    with store.reading() as db:
        row = db.execute("SELECT v FROM t WHERE k=?", (key,)).fetchone()
    return None if row is None else row[0]


def test_a_reader_sees_committed_state_only_and_does_not_wait_for_the_writer(store):
    with store.joined_tx() as db:
        db.execute("INSERT INTO t VALUES ('a', 1)")
    inside, seen_from_other = threading.Event(), []
    release = threading.Event()

    def writer():
        with store.joined_tx() as db:
            db.execute("UPDATE t SET v=2 WHERE k='a'")
            assert read(store, "a") == 2  # the writer's own thread reads its transaction
            inside.set()
            release.wait(10)

    t = threading.Thread(target=writer)
    t.start()
    assert inside.wait(10)
    # The write transaction is open (and holds the store's lock): another thread's read returns at
    # once, with the last committed value.
    reader = threading.Thread(target=lambda: seen_from_other.append(read(store, "a")))
    reader.start()
    reader.join(5)
    assert not reader.is_alive() and seen_from_other == [1]
    release.set()
    t.join(10)
    assert read(store, "a") == 2  # committed: every reader sees it


def test_a_read_block_is_one_snapshot(store):
    with store.joined_tx() as db:
        db.execute("INSERT INTO t VALUES ('a', 1)")
    with store.reading() as db:
        first = db.execute("SELECT v FROM t WHERE k='a'").fetchone()[0]
        done = threading.Event()

        def write():
            with store.joined_tx() as w:
                w.execute("UPDATE t SET v=5 WHERE k='a'")
            done.set()

        threading.Thread(target=write).start()
        assert done.wait(10)
        assert db.execute("SELECT v FROM t WHERE k='a'").fetchone()[0] == first == 1
    assert read(store, "a") == 5


def test_a_read_block_cannot_write(store):
    with pytest.raises(sqlite3.OperationalError):
        with store.reading() as db:
            db.execute("INSERT INTO t VALUES ('x', 1)")
    assert read(store, "x") is None
