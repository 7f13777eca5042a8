"""Damaged state: how a corrupt file or row becomes a named refusal instead of INTERNAL.

Threat: bytes of ``state.db`` changed while the node was stopped (a bad disk, a careless
restore, an insider with a hex editor). SQLite then raises "database disk image is malformed",
Python fails to decode a text column, or a row holds a value no code path writes. Each of those
would otherwise escape as an unhandled exception and reach the caller as INTERNAL, which reads
as a node bug and tells the operator nothing. :func:`corruption` recognises them and returns a
:class:`StateCorrupted` (DATA_LOSS) that names the file and the fix; the message carries no
stored value.
"""

from __future__ import annotations

import sqlite3

from ..errors import DataLoss

# SQLite's words for a damaged file (as opposed to a full disk or a read-only file system,
# which storage.storage_error maps to UNAVAILABLE).
_SQLITE_DAMAGE = ("malformed", "not a database", "file is encrypted", "corrupt", "database disk image",
                  # a damaged schema record: the tables the node created are no longer there as made
                  "no such column", "no such table", "has no column")


class StateCorrupted(DataLoss):
    """The node's state cannot be read as stored. ``problem`` is an UPPER_SNAKE code, ``where``
    the file (or schema); the public message names both and the fix."""

    default_reason = "STATE_CORRUPTED"

    def __init__(self, problem: str, where: str, detail: str) -> None:
        self.problem, self.where, self.detail = problem, where, detail
        place = f"{where}: " if where else ""
        super().__init__(
            f"the node's state is damaged ({place}{problem}); the operator must restore it from a backup that "
            "matches the audit log or run `veil node recover`", private=detail,
            metadata={"problem": problem, **({"file": where} if where else {})})


def corruption(exc: BaseException, where: str) -> StateCorrupted | None:
    """The :class:`StateCorrupted` for ``exc`` if it is a sign of damaged stored bytes."""
    if isinstance(exc, StateCorrupted):
        if not exc.where and where:
            return StateCorrupted(exc.problem, where, exc.detail)
        return exc
    if isinstance(exc, UnicodeDecodeError):
        return StateCorrupted("STATE_ROW_UNREADABLE", where, "a text column is not valid UTF-8")
    if not isinstance(exc, sqlite3.DatabaseError) or isinstance(exc, sqlite3.IntegrityError):
        return None
    text = str(exc).lower()
    if "could not decode" in text:
        return StateCorrupted("STATE_ROW_UNREADABLE", where, "a text column is not valid UTF-8")
    if type(exc) is sqlite3.DatabaseError or any(s in text for s in _SQLITE_DAMAGE):
        return StateCorrupted("STATE_FILE_DAMAGED", where, f"SQLite: {exc}")
    return None


def check_file(db, path) -> None:
    """SQLite's own check of every page and index of a file, at open: a flipped byte in an
    index would otherwise make lookups (is this query already released?) silently wrong.
    Linear in the file's size; raises :class:`StateCorrupted` naming the first problem."""
    rows = db.execute("PRAGMA integrity_check(1)").fetchall()
    if not rows or rows[0][0] != "ok":
        raise StateCorrupted("STATE_FILE_DAMAGED", str(path), f"SQLite integrity check: {rows[0][0] if rows else '?'}")
