"""Subject statements: which releases relied on a consent snapshot that included a given subject.

A data subject, or a digital-space service acting for them (role ``subject_agent``), asks the
node for a signed statement about one subject of one consent dataset. The node answers from what
it recorded at each release of that dataset (:meth:`SubjectLedger.record_release`, in the
release's own transaction): the consent snapshot the release was computed on, and the subjects
that snapshot included. The statement is canonical JSON signed (Ed25519) with the node's audit
key, so the subject can show it to anyone holding the node's public key.

**What a statement reveals, and to whom.** To the caller: for this one subject, the releases on
the dataset whose consent snapshot included them -- each release's query id, purpose, time,
result digest and snapshot digest. Nothing about other subjects (no count, no other id, no value;
a snapshot digest is a keyed hash of the whole set) and nothing about the analyst or the query's
SQL. A subject with no rows in the dataset is in no snapshot (the snapshot holds the consenting
subjects whose rows were counted), so its statement lists nothing, exactly as for a subject
without consent: an empty statement does not say which. The node logs each statement with the
subject id under a keyed hash, never in clear.

**Who may ask, for whom.** Principals with the ``subject_agent`` role, which the operator gives
only to the subjects' own digital-space services (a client certificate or a signed token), and
only with the subject's **statement code**: a keyed function of (dataset, subject id) under the
node's consent key (:func:`subject_code`), which the data owner hands to each subject (``veil
node subject-code``, e.g. with the consent receipt) and the subject gives to the services acting
for them. Without the code for that subject the request is refused (``SUBJECT_CODE_INVALID``,
the same answer whether the subject exists or not), so an agent cannot read the consent history
of someone who did not give it their code. Rate limits, kept in the state database (they survive
a restart and hold across processes sharing it): ``per_hour`` statements per agent and
``NODE_PER_HOUR`` for the whole node (against many agents), on top of the node's call limits.

Storage: each distinct snapshot is stored once, with its subject ids (the node already reads
them from the consent table), and each release names its snapshot.
"""
from __future__ import annotations

import hashlib
import hmac
import base64
from datetime import datetime, timezone
from typing import Any, Iterable

from veil.audit import canonical
from veil.audit.canonical import format_time

from ..errors import FailedPrecondition, InvalidArgument, PermissionDenied, ResourceExhausted
from ..state.store import now_us

STATEMENT_TYPE = "veil.subject.statement"
STATEMENT_VERSION = 1
MAX_SUBJECT = 256
PER_HOUR = 30
NODE_PER_HOUR = 600
WINDOW_S = 3600.0
CODE_LENGTH = 20  # base32 characters: 100 bits

_SCHEMA = """
CREATE TABLE IF NOT EXISTS consent_snapshots (
    digest TEXT PRIMARY KEY,
    dataset TEXT NOT NULL,
    purpose TEXT NOT NULL,
    subjects INTEGER NOT NULL,
    at_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS consent_snapshot_subjects (
    digest TEXT NOT NULL,
    subject TEXT NOT NULL,
    PRIMARY KEY (digest, subject)
);
CREATE INDEX IF NOT EXISTS consent_snapshot_subjects_by_subject ON consent_snapshot_subjects (subject, digest);
CREATE TABLE IF NOT EXISTS subject_statement_requests (
    agent TEXT NOT NULL,
    at_us INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS subject_statement_requests_at ON subject_statement_requests (at_us);
CREATE TABLE IF NOT EXISTS consent_releases (
    query_id TEXT PRIMARY KEY,
    dataset TEXT NOT NULL,
    purpose TEXT NOT NULL,
    snapshot TEXT NOT NULL,
    result_digest TEXT NOT NULL,
    released_us INTEGER NOT NULL
)
"""


class SubjectLedger:
    def __init__(self, store: Any, *, per_hour: int = PER_HOUR, node_per_hour: int = NODE_PER_HOUR) -> None:
        self.store = store
        store.ensure_schema(_SCHEMA)
        self.per_hour = per_hour
        self.node_per_hour = node_per_hour

    def record_release(self, query_id: str, dataset: str, purpose: str, snapshot: str, subjects: Iterable[str],
                       result_digest: str) -> None:
        """In the release's transaction: the release and (once per snapshot) its subjects."""
        now = now_us()
        with self.store.joined_tx() as db:
            if db.execute("SELECT 1 FROM consent_snapshots WHERE digest=?", (snapshot,)).fetchone() is None:
                ids = sorted(set(subjects))
                db.execute("INSERT INTO consent_snapshots (digest, dataset, purpose, subjects, at_us) VALUES "
                           "(?,?,?,?,?)", (snapshot, dataset.lower(), purpose, len(ids), now))
                for s in ids:
                    db.execute("INSERT INTO consent_snapshot_subjects (digest, subject) VALUES (?,?)", (snapshot, s))
            db.execute("INSERT INTO consent_releases (query_id, dataset, purpose, snapshot, result_digest, "
                       "released_us) VALUES (?,?,?,?,?,?)",
                       (query_id, dataset.lower(), purpose, snapshot, result_digest, now))

    def admit(self, principal: str) -> None:
        """The rate limits (refused before anything is read): per agent and for the node, over
        the last hour, counted in the state database in the transaction that records this ask."""
        now = now_us()
        since = now - int(WINDOW_S * 1_000_000)
        with self.store.joined_tx() as db:
            db.execute("DELETE FROM subject_statement_requests WHERE at_us < ?", (since,))
            mine = db.execute("SELECT COUNT(*) FROM subject_statement_requests WHERE agent = ? AND at_us >= ?",
                              (principal, since)).fetchone()[0]
            total = db.execute("SELECT COUNT(*) FROM subject_statement_requests WHERE at_us >= ?",
                               (since,)).fetchone()[0]
            if mine >= self.per_hour or total >= self.node_per_hour:
                raise ResourceExhausted(
                    f"at most {self.per_hour} subject statements per hour per agent (and {self.node_per_hour} for "
                    "the node); ask again later", reason="SUBJECT_STATEMENT_RATE_LIMITED",
                    metadata={"per_hour": str(self.per_hour)})
            db.execute("INSERT INTO subject_statement_requests (agent, at_us) VALUES (?, ?)", (principal, now))

    def statement(self, *, dataset: str, consent_dataset: bool, subject: str, purpose: str, node_id: str,
                  key: Any) -> tuple[bytes, str]:
        """(the canonical document, its hex Ed25519 signature)."""
        if not subject or len(subject) > MAX_SUBJECT or subject != subject.strip():
            raise InvalidArgument(f"subject_id must be 1 to {MAX_SUBJECT} characters without surrounding spaces",
                                  reason="INVALID_SUBJECT_ID")
        if not consent_dataset:
            raise FailedPrecondition(f"datasets/{dataset} does not declare basis \"consent\": no per-subject "
                                     "consent is recorded for it", reason="NOT_A_CONSENT_DATASET",
                                     metadata={"dataset": dataset})
        sql = ("SELECT r.query_id, r.purpose, r.snapshot, r.result_digest, r.released_us FROM consent_releases r "
               "JOIN consent_snapshot_subjects s ON s.digest = r.snapshot WHERE s.subject = ? AND r.dataset = ?")
        args: list[Any] = [subject, dataset.lower()]
        if purpose:
            sql += " AND r.purpose = ?"
            args.append(purpose)
        with self.store.reading() as db:
            rows = db.execute(sql + " ORDER BY r.released_us, r.query_id", tuple(args)).fetchall()
        body = {
            "type": STATEMENT_TYPE, "v": STATEMENT_VERSION, "node_id": node_id, "key_id": key.key_id,
            "dataset": dataset, "subject_id": subject, "purpose": purpose,
            "issued_at": format_time(datetime.now(timezone.utc)),
            "releases": [{"query": q, "purpose": p, "consent_snapshot": snap, "result_digest": digest,
                          "released_at": format_time(datetime.fromtimestamp(us / 1e6, timezone.utc))}
                         for q, p, snap, digest, us in rows],
        }
        document = canonical.encode(body)
        return document, key.sign(document).hex()


def subject_code(key: bytes, dataset: str, subject: str) -> str:
    """The statement code of ``subject`` in ``dataset``: base32 of HMAC-SHA256 under the node's
    consent key, 20 characters (100 bits). Only the node (and its operator) can compute it."""
    mac = hmac.new(key, b"veil.subject-code.v1|" + dataset.lower().encode() + b"|" + subject.encode(),
                   hashlib.sha256).digest()
    return base64.b32encode(mac).decode()[:CODE_LENGTH]


def check_subject_code(key: bytes, dataset: str, subject: str, code: str) -> None:
    """Refuses unless ``code`` is the subject's statement code (compared in constant time)."""
    given = code.strip().upper().replace("-", "")
    if not given or not hmac.compare_digest(given.encode(), subject_code(key, dataset, subject).encode()):
        raise PermissionDenied("a subject statement needs the subject's statement code, which the data owner gives "
                               "to each subject (veil node subject-code); pass it as subject_code",
                               reason="SUBJECT_CODE_INVALID")


def subject_hash(subject: str, key: bytes) -> str:
    """How the audit log names a subject: never in clear, and keyed (HMAC-SHA256 under the node's
    consent key) so that a reader of the log cannot test guesses of an id; the operator can."""
    return hmac.new(key, subject.encode(), hashlib.sha256).hexdigest()
