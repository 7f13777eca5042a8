"""Replicas: which node process runs which query, and which processes are still alive.

Several node processes (replicas) may serve one node's state from a shared PostgreSQL database.
Any replica may take an APPROVED query (the move to RUNNING is a compare-and-set, so exactly one
wins), and every replica must be able to finish what a dead one started. Two records make that
safe:

* ``replicas``: each replica's name and a heartbeat it renews every ``BEAT_S`` seconds. A replica
  whose heartbeat is older than the lease is dead; its RUNNING queries go back to APPROVED and
  run again elsewhere. A replica that restarts under the same name takes its own back at once.
* ``query_runs``: the run that owns a RUNNING query, written in the same transaction as the move
  to RUNNING, with a random run id. The release (and a failure) checks, in its own transaction,
  that its run id is still the owner: a replica that was presumed dead (a long pause past its
  lease) and wakes up finds its run superseded and releases nothing. This is the fencing token
  that keeps "release once" true even when the lease guess is wrong.

On SQLite there is one replica by construction (the file has one writer), so at start every
RUNNING query is this node's own and is re-queued at once, as before replicas existed.
"""

from __future__ import annotations

import os
import secrets
import socket

from ..errors import FailedPrecondition
from .store import StateStore, now_us

BEAT_S = 2.0
LEASE_S = 15.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replicas (
    name TEXT PRIMARY KEY,
    started_us INTEGER NOT NULL,
    heartbeat_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS query_runs (
    query_id TEXT PRIMARY KEY,
    replica TEXT NOT NULL,
    run_id TEXT NOT NULL,
    started_us INTEGER NOT NULL
)
"""


def default_name() -> str:
    """Host and process: unique among live replicas; a restart is a new replica (its old runs
    are taken back once its lease runs out). Name replicas in config to take them back at once."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Replicas:
    def __init__(self, store: StateStore, name: str = "", *, lease_s: float = LEASE_S) -> None:
        self.store = store
        self.name = name or default_name()
        self.lease_us = int(lease_s * 1_000_000)
        store.ensure_schema(_SCHEMA)
        self.beat(started=True)

    def beat(self, *, started: bool = False) -> None:
        t = now_us()
        with self.store.joined_tx() as db:
            if started:
                db.execute("INSERT INTO replicas VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                           "started_us = excluded.started_us, heartbeat_us = excluded.heartbeat_us",
                           (self.name, t, t))
            else:
                db.execute("UPDATE replicas SET heartbeat_us = ? WHERE name = ?", (t, self.name))

    def claim(self, query_id: str) -> str:
        """In the move to RUNNING: this replica owns the run. Returns the run id (the fence)."""
        run_id = secrets.token_hex(8)
        with self.store.joined_tx() as db:
            db.execute("INSERT INTO query_runs VALUES (?, ?, ?, ?) ON CONFLICT (query_id) DO UPDATE SET "
                       "replica = excluded.replica, run_id = excluded.run_id, started_us = excluded.started_us",
                       (query_id, self.name, run_id, now_us()))
        return run_id

    def check_owner(self, query_id: str, run_id: str) -> None:
        """In the release (or failure) transaction: refuse if another run took the query over."""
        with self.store.joined_tx() as db:
            row = db.execute("SELECT run_id FROM query_runs WHERE query_id = ?", (query_id,)).fetchone()
        if row is None or row[0] != run_id:
            raise FailedPrecondition("another replica took this run over; it releases the result",
                                     reason="RUN_SUPERSEDED")

    def reclaimable(self, *, at_start: bool) -> list[str]:
        """RUNNING queries whose run is lost: this replica's own at its start, a dead replica's,
        or, when no other replica can exist (SQLite), every one at start."""
        if not self.store.shared:
            if not at_start:
                return []
            with self.store.reading() as db:
                return [r[0] for r in db.execute("SELECT id FROM queries WHERE state = 'RUNNING' ORDER BY seq")]
        with self.store.reading() as db:
            rows = db.execute(
                "SELECT q.id FROM queries q LEFT JOIN query_runs r ON r.query_id = q.id "
                "LEFT JOIN replicas p ON p.name = r.replica WHERE q.state = 'RUNNING' AND "
                "(r.replica IS NULL OR r.replica = ? OR p.heartbeat_us IS NULL OR p.heartbeat_us < ?) ORDER BY q.seq",
                (self.name if at_start else "", now_us() - self.lease_us)).fetchall()
        return [r[0] for r in rows]

    def live(self) -> list[str]:
        cutoff = now_us() - self.lease_us
        with self.store.reading() as db:
            return [r[0] for r in db.execute("SELECT name FROM replicas WHERE heartbeat_us >= ? ORDER BY name",
                                              (cutoff,)).fetchall()]
