"""What a witness remembers: per log, the latest checkpoint it cosigned; and what it refused.

Threat: a witness that forgets (or can be made to forget) the latest size it cosigned would
cosign a rolled-back log. The table is SQLite in WAL with ``synchronous=FULL``, written before
the cosignature is returned, so a cosignature is never handed out for a state the witness could
lose on a crash. The file is created 0600.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from veil.audit.merkle import EMPTY_ROOT

from ..state.statedb import SQLiteDatabase

_SCHEMA = """
CREATE TABLE IF NOT EXISTS witnessed (origin TEXT PRIMARY KEY, size INTEGER NOT NULL, root BLOB NOT NULL,
                                      at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS refusals (at INTEGER NOT NULL, origin TEXT NOT NULL, status INTEGER NOT NULL,
                                     reason TEXT NOT NULL, size INTEGER NOT NULL)
"""


@dataclass(frozen=True)
class Witnessed:
    size: int
    root: bytes


class WitnessState:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db = SQLiteDatabase.open(self.path)
        self._lock = threading.Lock()
        with self._lock:
            self._db.begin()
            self._db.script(_SCHEMA)
            self._db.commit()

    def latest(self, origin: str) -> Witnessed:
        with self._lock:
            row = self._db.execute("SELECT size, root FROM witnessed WHERE origin = ?", (origin,)).fetchone()
        return Witnessed(0, EMPTY_ROOT) if row is None else Witnessed(int(row[0]), bytes(row[1]))

    def advance(self, origin: str, expect_size: int, new: Witnessed) -> bool:
        """Compare-and-set: record ``new`` if the stored size is still ``expect_size``."""
        with self._lock:
            self._db.begin()
            try:
                row = self._db.execute("SELECT size FROM witnessed WHERE origin = ?", (origin,)).fetchone()
                if (0 if row is None else int(row[0])) != expect_size:
                    self._db.rollback()
                    return False
                self._db.execute(
                    "INSERT INTO witnessed (origin, size, root, at) VALUES (?, ?, ?, ?) ON CONFLICT (origin) "
                    "DO UPDATE SET size = excluded.size, root = excluded.root, at = excluded.at",
                    (origin, new.size, new.root, int(time.time())))
                self._db.commit()
                return True
            except BaseException:
                self._db.rollback()
                raise

    def refused(self, origin: str, status: int, reason: str, size: int) -> None:
        with self._lock:
            self._db.begin()
            self._db.execute("INSERT INTO refusals VALUES (?, ?, ?, ?, ?)", (int(time.time()), origin, status, reason,
                                                                             size))
            self._db.commit()

    def refusals(self) -> list[tuple[str, int, str, int]]:
        with self._lock:
            rows = self._db.execute("SELECT origin, status, reason, size FROM refusals ORDER BY rowid").fetchall()
        return [(str(o), int(s), str(r), int(z)) for o, s, r, z in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
