"""A flipped byte in SQLite's stored schema text renames a column or a table without failing
SQLite's integrity check: the node would start and then fail (or read an empty new table). The
stores compare the stored definitions with the declared ones at open and refuse by name."""

from __future__ import annotations

import sqlite3

import pytest

from veil_server.state.damage import StateCorrupted
from veil_server.state.store import StateStore


def _edit_schema(path, table: str, old: str, new: str, *, rename: bool = False) -> None:
    con = sqlite3.connect(path)
    con.execute("PRAGMA writable_schema = ON")
    if rename:
        con.execute("UPDATE sqlite_master SET name = ?, tbl_name = ?, sql = replace(sql, ?, ?) WHERE name = ?",
                    (new, new, old, new, table))
    else:
        con.execute("UPDATE sqlite_master SET sql = replace(sql, ?, ?) WHERE name = ?", (old, new, table))
    con.commit()
    con.close()


@pytest.mark.parametrize("edit", [
    ("queries", "canonical_sql TEXT", "canonical_sqm TEXT", False),  # one bit: l -> m
    ("queries", "queries", "quesies", True),  # the table's name
])
def test_a_damaged_stored_definition_is_refused_by_name(tmp_path, edit):
    path = tmp_path / "state.db"
    StateStore(path).close()
    table, old, new, rename = edit
    _edit_schema(path, table, old, new, rename=rename)
    with pytest.raises(StateCorrupted) as e:
        StateStore(path).close()
    assert e.value.problem == "STATE_FILE_DAMAGED" and "state.db" in str(e.value.where)


def test_an_intact_store_reopens(tmp_path):
    path = tmp_path / "state.db"
    StateStore(path).close()
    StateStore(path).close()
