"""Tampering with a stored log or an export is detected, and the bad entry is named.

On the SQLite file: the node refuses to open it (``AuditCorrupted.index``), and the offline
verifier, given ``export_raw`` of the file, names the same entry. On an export: every single-byte
flip, a deleted line, two swapped lines, a truncation; against an older checkpoint: rollback and
fork.
"""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veil.audit import Checkpoint, ProofError, merkle, verify_checkpoint_consistency, verify_export
from veil_server.audit import AuditCorrupted, AuditLog, export_raw
from veil_server.access.node_key import NodeKey

N = 12
KEY = NodeKey.generate()


def clock() -> datetime:
    clock.now += timedelta(seconds=1)  # type: ignore[attr-defined]
    return clock.now  # type: ignore[attr-defined]


clock.now = datetime(2025, 1, 1, tzinfo=timezone.utc)  # type: ignore[attr-defined]


def open_log(path: Path) -> AuditLog:
    return AuditLog(path, KEY, node_id="node-a", clock=clock)


def make_log(path: Path, n: int = N, checkpoints: tuple[int, ...] = (5,)) -> list[bytes]:
    """A closed log of ``n`` entries with checkpoints at the given sizes and at ``n``."""
    log = open_log(path)
    for i in range(n):
        log.append("query.submit" if i % 2 else "catalog.read", principal=f"user{i % 3}",
                   outcome="ok", dataset="patients", query=f"q-{i}", details={"rows": i * 7})
        if i + 1 in checkpoints:
            log.checkpoint()
    log.checkpoint()
    bodies = [e.to_bytes() for e in log.entries(0)]
    log.close()
    return bodies


def raw_report(path: Path, **kw: object):
    buf = io.BytesIO()
    export_raw(path, buf)
    return verify_export(io.BytesIO(buf.getvalue()), KEY.public_key_bytes, **kw)  # type: ignore[arg-type]


def assert_named(path: Path, index: int) -> None:
    """Both the node (at open) and the offline verifier (on a raw export) name ``index``."""
    with pytest.raises(AuditCorrupted) as exc:
        open_log(path)
    assert exc.value.index == index, exc.value.private
    report = raw_report(path)
    assert not report.ok
    assert report.index == index, report.problems


# --- the SQLite file -----------------------------------------------------------------------

FIELDS = ['"principal":"user', '"prev":"', '"time":"2025', '"index":', '"rows":', '"kind":"']


@pytest.mark.parametrize("index", [0, 1, 6, N - 1])
@pytest.mark.parametrize("field", FIELDS)
def test_flipped_byte_in_the_database_file_is_named(tmp_path: Path, index: int, field: str) -> None:
    path = tmp_path / "audit.db"
    bodies = make_log(path)
    data = bytearray(path.read_bytes())
    at = data.find(bodies[index])
    assert at >= 0 and data.find(bodies[index], at + 1) < 0
    at += bodies[index].find(field.encode()) + len(field)
    data[at] ^= 0x01  # a digit or letter becomes its neighbour: still a valid-looking entry
    path.write_bytes(bytes(data))
    assert_named(path, index)


def db(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


@pytest.mark.parametrize("index", [0, 4, N - 1])
def test_deleted_row_is_named(tmp_path: Path, index: int) -> None:
    path = tmp_path / "audit.db"
    make_log(path)
    with db(path) as conn:
        conn.execute("DELETE FROM entry WHERE idx = ?", (index,))
    assert_named(path, index)


@pytest.mark.parametrize(("i", "j"), [(0, 1), (3, 9), (10, 11)])
def test_reordered_rows_are_named(tmp_path: Path, i: int, j: int) -> None:
    path = tmp_path / "audit.db"
    make_log(path)
    with db(path) as conn:  # swap everything but the row number
        rows = {r[0]: r[1:] for r in conn.execute(
            "SELECT idx, body, leaf_hash, time, kind, principal, outcome, dataset, query "
            "FROM entry WHERE idx IN (?, ?)", (i, j))}
        for a, b in ((i, j), (j, i)):
            conn.execute(
                "UPDATE entry SET body=?, leaf_hash=?, time=?, kind=?, principal=?, outcome=?, "
                "dataset=?, query=? WHERE idx=?", (*rows[b], a))
    assert_named(path, i)


def test_rewritten_entry_with_its_stored_hash_is_named(tmp_path: Path) -> None:
    """A tamperer who also fixes the stored leaf hash still breaks the chain and the root."""
    path = tmp_path / "audit.db"
    bodies = make_log(path)
    forged = bodies[3].replace(b'"principal":"user0"', b'"principal":"user9"')
    with db(path) as conn:
        conn.execute("UPDATE entry SET body=?, leaf_hash=?, principal='user9' WHERE idx=3",
                     (forged, merkle.leaf_hash(forged)))
    with pytest.raises(AuditCorrupted) as exc:
        open_log(path)
    assert exc.value.index == 3
    assert raw_report(path).index == 3


def test_truncation_is_named_by_the_stored_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    make_log(path)
    with db(path) as conn:
        conn.execute("DELETE FROM entry WHERE idx >= 9")
    assert_named(path, 9)


def truncate_cleanly(path: Path, size: int) -> None:
    """What a careful operator would do: cut entries, their subtree hashes and checkpoints."""
    with db(path) as conn:
        conn.execute("DELETE FROM entry WHERE idx >= ?", (size,))
        conn.execute("DELETE FROM node WHERE ((idx + 1) << level) > ?", (size,))
        conn.execute("DELETE FROM checkpoint WHERE tree_size > ?", (size,))


def test_clean_truncation_is_caught_only_by_an_older_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    make_log(path)
    log = open_log(path)
    kept = log.latest_checkpoint()  # the auditor kept this one
    log.close()
    assert kept is not None and kept.tree_size == N
    truncate_cleanly(path, 7)
    log = open_log(path)  # consistent with itself: the node cannot tell
    assert log.tree_size == 7
    buf = io.BytesIO()
    log.export(buf)
    assert verify_export(io.BytesIO(buf.getvalue()), KEY.public_key_bytes).ok
    report = verify_export(io.BytesIO(buf.getvalue()), KEY.public_key_bytes, old_checkpoint=kept)
    assert (report.ok, report.first.code, report.index) == (False, "ROLLBACK", 7)


def test_rollback_to_a_backup_and_fork_are_caught_by_an_older_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    make_log(path, n=6)
    shutil.copy(path, tmp_path / "backup.db")
    log = open_log(path)
    for i in range(5):
        log.append("query.execute", principal="user1", outcome="ok", query=f"q-{i}")
    kept = log.checkpoint()
    log.close()

    shutil.copy(tmp_path / "backup.db", path)  # roll back
    log = open_log(path)
    buf = io.BytesIO()
    log.export(buf)
    report = verify_export(io.BytesIO(buf.getvalue()), KEY.public_key_bytes, old_checkpoint=kept)
    assert (report.first.code, report.index) == ("ROLLBACK", 6)

    for i in range(7):  # ... and write a different history past the kept size: a fork
        log.append("query.execute", principal="user2", outcome="ok", query=f"other-{i}")
    buf = io.BytesIO()
    latest = log.export(buf)
    report = verify_export(io.BytesIO(buf.getvalue()), KEY.public_key_bytes, old_checkpoint=kept)
    assert report.first.code == "FORK"
    with pytest.raises(ProofError):  # the online check catches it too
        verify_checkpoint_consistency(kept, latest, log.consistency_proof(kept.tree_size),
                                      KEY.public_key_bytes)
    log.close()


# --- the export ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def export_lines(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    path = tmp_path_factory.mktemp("export") / "audit.db"
    make_log(path, checkpoints=(3, 8))
    buf = io.BytesIO()
    open_log(path).export(buf)
    return buf.getvalue().split(b"\n")[:-1]


def entry_positions(lines: list[bytes]) -> list[int]:
    return [i for i, line in enumerate(lines[1:], 1) if not line.startswith(b'{"checkpoint"')]


def verify_lines(lines: list[bytes], **kw: object):
    return verify_export(io.BytesIO(b"\n".join(lines) + b"\n"), KEY.public_key_bytes, **kw)  # type: ignore[arg-type]


def test_clean_export_verifies(export_lines: list[bytes]) -> None:
    report = verify_lines(export_lines)
    assert report.ok, report.problems
    assert report.tree_size == N and [c.tree_size for c in report.checkpoints] == [3, 8, N]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_flipped_byte_in_an_exported_entry_is_named(export_lines: list[bytes], data) -> None:
    positions = entry_positions(export_lines)
    index = data.draw(st.integers(0, N - 1), label="entry")
    line = bytearray(export_lines[positions[index]])
    offset = data.draw(st.integers(0, len(line) - 1), label="offset")
    line[offset] ^= data.draw(st.integers(1, 255), label="xor")
    lines = list(export_lines)
    lines[positions[index]] = bytes(line)
    report = verify_lines(lines)
    assert not report.ok
    assert report.index == index, report.problems


@pytest.mark.parametrize("index", range(N))
def test_deleted_exported_entry_is_named(export_lines: list[bytes], index: int) -> None:
    lines = list(export_lines)
    del lines[entry_positions(lines)[index]]
    assert verify_lines(lines).index == index


@pytest.mark.parametrize(("i", "j"), [(0, 1), (2, 3), (0, N - 1), (5, 9), (N - 2, N - 1)])
def test_swapped_exported_entries_are_named(export_lines: list[bytes], i: int, j: int) -> None:
    lines = list(export_lines)
    pi, pj = entry_positions(lines)[i], entry_positions(lines)[j]
    lines[pi], lines[pj] = lines[pj], lines[pi]
    report = verify_lines(lines)
    assert (report.first.code, report.index) == ("ENTRY_OUT_OF_ORDER", i)


def test_truncated_export_is_named(export_lines: list[bytes]) -> None:
    positions = entry_positions(export_lines)
    # Entries cut, the final checkpoint kept: the export convicts itself.
    lines = [line for k, line in enumerate(export_lines) if k not in positions[9:]]
    report = verify_lines(lines)
    assert (report.first.code, report.index) == ("TRUNCATED", 9)
    # Entries and the checkpoints after them cut: only an older checkpoint tells.
    cut = export_lines[: positions[7] + 1] + [export_lines[positions[7] + 1]]
    assert cut[-1].startswith(b'{"checkpoint"')  # the checkpoint at size 8
    assert verify_lines(cut).first.code == "HEADER_MISMATCH"  # the (unsigned) header tells...
    cut[0] = cut[0].replace(b'"tree_size":12', b'"tree_size":8')
    assert verify_lines(cut).ok  # ... until it is edited too
    kept = Checkpoint.from_json(json.loads(export_lines[-1]))
    report = verify_lines(cut, old_checkpoint=kept)
    assert (report.first.code, report.index) == ("ROLLBACK", 8)


def test_tail_without_a_checkpoint_is_flagged(export_lines: list[bytes]) -> None:
    report = verify_lines(export_lines[:-1])  # drop the final checkpoint line
    assert (report.first.code, report.index) == ("UNSIGNED_TAIL", 8)


def test_tampered_checkpoint_is_refused(export_lines: list[bytes]) -> None:
    lines = list(export_lines)
    lines[-1] = lines[-1].replace(b'"tree_size":12', b'"tree_size":11')
    report = verify_lines(lines)
    assert not report.ok and any(p.code == "CHECKPOINT_INVALID" for p in report.problems)
