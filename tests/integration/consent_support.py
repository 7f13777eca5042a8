"""A consent table for the demo admissions, and the reference the node's results are checked
against: the documented rule (README "Consent"), applied in Python to the consent rows and then
to the raw data with DuckDB."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv

from veil_server.query.consent import snapshot_digest

UTC = timezone.utc
PAST = datetime(2020, 1, 1, tzinfo=UTC)
LAPSED = datetime(2021, 6, 1, tzinfo=UTC)
FUTURE = datetime(2999, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Record:
    subject: int
    purpose: str
    status: str
    granted_at: datetime
    expires_at: datetime | None = None


def consent_records(rows: int, other: str = "marketing") -> list[Record]:
    """Per subject 1..rows (and 50 subjects without data): research granted to most, some of
    those lapsed, not yet valid or withdrawn, some with status "expired"; ``other`` (a second
    purpose the dataset declares: marketing by default) to a fifth."""
    out = []
    for i in range(1, rows + 51):
        if i % 3:
            expires = LAPSED if i % 11 == 0 else None
            granted = FUTURE if i % 13 == 0 else PAST
            out.append(Record(i, "research", "granted", granted, expires))
            if i % 17 == 0:
                out.append(Record(i, "research", "withdrawn", PAST))
        elif i % 2 == 0:
            out.append(Record(i, "research", "expired", PAST, LAPSED))
        if i % 5 == 0:
            out.append(Record(i, other, "granted", PAST, FUTURE))
    return out


def valid_subjects(records: list[Record], purpose: str, at: datetime | None = None) -> set[int]:
    at = at or datetime.now(UTC)
    withdrawn = {r.subject for r in records if r.purpose == purpose and r.status in ("withdrawn", "expired")}
    granted = {r.subject for r in records if r.purpose == purpose and r.status == "granted"
               and r.granted_at <= at and (r.expires_at is None or at < r.expires_at)}
    return granted - withdrawn


def digest_of(records: list[Record], purpose: str, node, present) -> str:
    """The snapshot digest recomputed from the consent records and the subject ids ``present``
    in the data (not by the node's code path: only the documented serialisation and the node's
    consent key are shared)."""
    ids = valid_subjects(records, purpose) & set(present)
    return snapshot_digest(purpose, (str(s) for s in ids), node.consent_key)


def arrow_table(records: list[Record]) -> pa.Table:
    ts = pa.timestamp("us")
    return pa.table({
        "subject_id": pa.array([r.subject for r in records], pa.int64()),
        "purpose": pa.array([r.purpose for r in records]),
        "status": pa.array([r.status for r in records]),
        "granted_at": pa.array([r.granted_at.replace(tzinfo=None) for r in records], ts),
        "expires_at": pa.array([r.expires_at.replace(tzinfo=None) if r.expires_at else None for r in records], ts),
    })


def write_consent_csv(records: list[Record], path: Path) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    pacsv.write_csv(arrow_table(records), tmp)
    tmp.replace(path)  # atomically: a reader sees the old table or the new one
    return path


def load_consent_pg(conninfo: str, relation: str, records: list[Record]) -> None:
    import psycopg

    quoted = ".".join(f'"{p}"' for p in relation.split("."))
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {quoted}")
        conn.execute(f"CREATE TABLE {quoted} (subject_id BIGINT, purpose TEXT, status TEXT, "
                     "granted_at TIMESTAMPTZ, expires_at TIMESTAMPTZ)")
        with conn.cursor() as cur, cur.copy(f"COPY {quoted} FROM STDIN") as copy:
            for r in records:
                copy.write_row((r.subject, r.purpose, r.status, r.granted_at, r.expires_at))


def raw_reference(data_sql_source: str, sql: str, subjects: set[int]) -> dict[tuple, tuple]:
    """``sql`` (with ``{src}`` for the rows) on the raw rows of the given subjects, by group key:
    the same filter the node applies, applied directly to the raw file."""
    con = duckdb.connect()
    con.register("consented", pa.table({"id": pa.array(sorted(subjects), pa.int64())}))
    src = f"(SELECT * FROM {data_sql_source} WHERE patient_id IN (SELECT id FROM consented))"
    rows = con.execute(sql.format(src=src)).fetchall()
    return {tuple(r[:-2]): tuple(int(x) for x in r[-2:]) for r in rows}
