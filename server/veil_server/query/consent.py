"""Consent as data the node enforces: a dataset's lawful basis, its consent source, and the
filter every query on a ``basis = "consent"`` dataset runs under.

A dataset declares its lawful basis (``basis``): ``"consent"``, ``"contract"``, ``"public-task"``
or ``"anonymous"``. The basis is recorded in the dataset's certificate. Only ``"consent"`` changes
what the engine reads: such a dataset names a *consent source*, a table in the same engine as the
data (a CSV or Parquet file read by DuckDB next to a file dataset; a table or view in the same
PostgreSQL database as a PostgreSQL dataset), one row per consent record:

================  =========================================================================
column (default)  meaning
================  =========================================================================
``subject_id``    the data subject, matched against the dataset's ``subject_column`` as text
``purpose``       the purpose the record is about (one of the dataset's purposes)
``status``        ``granted``, ``withdrawn`` or ``expired`` (any other value grants nothing)
``granted_at``    when the consent was given (UTC timestamp)
``expires_at``    when it lapses (UTC timestamp), or empty/NULL for no expiry
================  =========================================================================

A subject's consent for purpose P is **valid at time T** iff some record for (subject, P) has
status ``granted``, ``granted_at <= T`` and (``expires_at`` is NULL or ``T < expires_at``), and
no record for (subject, P) has status ``withdrawn`` or ``expired``: either wins over every grant
(a new grant after a withdrawal replaces the withdrawn record). Rows whose subject is NULL match
nothing. A consent table holding a record the node could misread (an unknown status, a purpose
differing from a declared one only in case or spaces, an id with spaces or leading zeros) makes
the dataset unreadable until the owner corrects it (:func:`invalid_records_sql`, fail closed).
Times are UTC: every engine compares in UTC whatever the host's time zone.

**Where the filter is applied.** Every SQL statement an engine runs for a consent dataset reads
the dataset through :func:`consented_relation`: a derived table that keeps only rows whose subject
has a valid consent for the query's purpose at the execution time T (a semi-join on the valid subjects: the granted
ones ``EXCEPT`` the withdrawn ones, the same statement the snapshot reads). The renderer builds it in its constructor
(:class:`veil_server.query.engine.SqlRenderer`), which every aggregate, dominance and atom query
of every engine goes through; the analyst's SQL is parsed into a plan that names only the
dataset, so nothing the analyst writes can reach or remove it. A consent dataset reaching a
renderer without a bound :class:`ConsentScope` is refused (deny by default), as is one whose
consent source cannot be read.

**The consent snapshot.** At execution the node reads the set of subjects with a valid consent
for the purpose at T and digests it (:func:`snapshot_digest`: SHA-256 of canonical JSON of the
purpose and the sorted subject ids). The digest is read before and after the query's scans; if
the consent table changed between the two, the node reads everything again (a few times, then
refuses with ``CONSENT_SOURCE_CHANGING``). The digest goes into the release's audit entry and
the result (``QueryResult.consent_snapshot``), so an auditor holding the consent table as of that
time can recompute it and show which consent state a release relied on.

What the digest reveals: it is an HMAC under a secret derived from the node key, so nobody
without that key can test a guess of the consent set against it (an unkeyed hash would let an
analyst who can enumerate the subject ids find exactly who withdrew, offline, at no privacy
cost). The node's operator recomputes it for an auditor from the consent table as of that time
(:func:`snapshot_digest` with ``NodeKey.derived_key(CONSENT_KEY_LABEL)`` of the node's key). That two results carry different digests tells that the consent
state for the purpose changed between them, never whose.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterable

BASES = ("consent", "contract", "public-task", "anonymous")
CONSENT = "consent"

GRANTED = "granted"
WITHDRAWN = "withdrawn"
EXPIRED = "expired"

DEFAULT_COLUMNS = {"subject": "subject_id", "purpose": "purpose", "status": "status",
                   "granted_at": "granted_at", "expires_at": "expires_at"}

SNAPSHOT_FORMAT = "veil.consent.snapshot.v1"
# Reads of a consent dataset before giving up when its consent table keeps changing under the scans.
CONSENT_READS = 3


@dataclass(frozen=True)
class ConsentSource:
    """Where a consent dataset's consent records live, and the names of their columns.

    ``source``: a file path (csv / parquet, for a file dataset) or ``schema.table`` (for a
    PostgreSQL dataset, in the same database). ``subject_column``: the dataset's column holding the
    subject id."""

    source: str
    format: str
    subject_column: str
    subject: str = DEFAULT_COLUMNS["subject"]
    purpose: str = DEFAULT_COLUMNS["purpose"]
    status: str = DEFAULT_COLUMNS["status"]
    granted_at: str = DEFAULT_COLUMNS["granted_at"]
    expires_at: str = DEFAULT_COLUMNS["expires_at"]

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "format": self.format, "subject_column": self.subject_column,
                "columns": {k: getattr(self, k) for k in DEFAULT_COLUMNS}}


@dataclass(frozen=True)
class ConsentScope:
    """A query's consent terms, bound at execution: the purpose, the instant T consents are valid
    at (UTC), and the digest of the valid set (filled once it has been read)."""

    purpose: str
    as_of: datetime
    snapshot: str = ""
    # The owner's own checks when a version is listed (declared-domain completeness, the noisy
    # row count and quality profile of the certificate): every row, bound explicitly by the
    # steward, never by a query.
    all_rows: bool = False

    def as_of_text(self) -> str:
        """T as ``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC, no zone): what the SQL literals carry."""
        return self.as_of.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def now_scope(purpose: str) -> ConsentScope:
    return ConsentScope(purpose, datetime.now(timezone.utc))


def listing_scope() -> ConsentScope:
    return ConsentScope("", datetime.now(timezone.utc), all_rows=True)


@dataclass(frozen=True)
class Dialect:
    """How an engine spells what the consent filter needs."""

    ident: Callable[[str], str]
    text_type: str  # the type subject ids are compared as
    timestamp: Callable[[str], str]  # a UTC instant literal from ConsentScope.as_of_text()
    # "text matches the whole of the regular expression" (the pattern is the node's, not data)
    full_match: Callable[[str, str], str] = lambda text, pattern: f"regexp_full_match({text}, {_string(pattern)})"


def _string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def valid_condition(src: ConsentSource, scope: ConsentScope, d: Dialect, alias: str) -> str:
    """The SQL condition on consent rows ``alias`` that grant ``scope.purpose`` at ``scope.as_of``.

    Every literal is the owner's (the purpose is one the dataset declares; the instant is the
    node's clock): quoted here, never the analyst's text."""
    c = lambda name: f"{alias}.{d.ident(name)}"  # noqa: E731
    t = d.timestamp(scope.as_of_text())
    return (f"{c(src.purpose)} = {_string(scope.purpose)} AND LOWER({c(src.status)}) = {_string(GRANTED)} "
            f"AND {c(src.granted_at)} <= {t} AND ({c(src.expires_at)} IS NULL OR {c(src.expires_at)} > {t})")


def withdrawn_condition(src: ConsentSource, scope: ConsentScope, d: Dialect, alias: str) -> str:
    """A record that ends the subject's consent for the purpose: withdrawn, or marked expired."""
    c = lambda name: f"{alias}.{d.ident(name)}"  # noqa: E731
    return (f"{c(src.purpose)} = {_string(scope.purpose)} AND LOWER({c(src.status)}) IN "
            f"({_string(WITHDRAWN)}, {_string(EXPIRED)})")


def invalid_records_sql(consent_table: str, src: ConsentSource, purposes: Iterable[str], d: Dialect, *,
                        integer_subjects: bool, relation: str) -> str:
    """How many consent records the node could misread (fail closed: any makes the dataset
    unreadable, ``CONSENT_SOURCE_INVALID``): a status other than granted, withdrawn or expired
    (in any case, but nothing else: "withdrawn " or "revoked" would otherwise revoke nothing); a
    purpose that is not exactly one the dataset declares (a closed set, like the statuses: a
    withdrawal for "research\t" or with a look-alike letter would miss "research"); a missing
    subject or purpose, a grant without granted_at; for a dataset whose subject column is an
    integer, an id not in canonical integer text ("019" would miss 19); for a text subject
    column, an id with anything but printable ASCII without spaces (tabs, zero-width or
    look-alike characters), or a withdrawal or expiry whose id equals a row's id only up to case
    (it would miss that row). ``relation``: the dataset, unfiltered."""
    c = lambda name: f"veil_v.{d.ident(name)}"  # noqa: E731
    declared = sorted(set(purposes))
    exact = ", ".join(_string(p) for p in declared) or "''"
    subject = subject_text(c(src.subject), d)
    statuses = ", ".join(_string(x) for x in (GRANTED, WITHDRAWN, EXPIRED))
    conditions = [
        f"{c(src.status)} IS NULL", f"LOWER({c(src.status)}) NOT IN ({statuses})",
        f"{c(src.purpose)} IS NULL", f"{c(src.purpose)} NOT IN ({exact})",
        f"{c(src.subject)} IS NULL",
        f"(LOWER({c(src.status)}) = {_string(GRANTED)} AND {c(src.granted_at)} IS NULL)",
    ]
    if integer_subjects:  # canonical integer text only ("019", "+7", "7.0" would match no row's id)
        conditions.append(f"NOT {d.full_match(subject, '-?[1-9][0-9]*|0')}")
    else:
        row_id = subject_text(f"veil_r.{d.ident(src.subject_column)}", d)
        conditions += [
            f"NOT {d.full_match(subject, '[!-~]+')}",
            f"(LOWER({c(src.status)}) IN ({_string(WITHDRAWN)}, {_string(EXPIRED)}) AND LOWER({subject}) IN "
            f"(SELECT LOWER({row_id}) FROM {relation} AS veil_r) AND {subject} NOT IN "
            f"(SELECT {row_id} FROM {relation} AS veil_r WHERE {row_id} IS NOT NULL))",
        ]
    return f"SELECT COUNT(*) FROM {consent_table} AS veil_v WHERE " + " OR ".join(conditions)


def invalid_source(count: int) -> Exception | None:
    """The refusal when the consent table holds records the node could misread, else None."""
    if not count:
        return None
    from ..errors import FailedPrecondition

    return FailedPrecondition(
        "the dataset's consent table holds records the node cannot interpret safely (a status other than granted, "
        "withdrawn or expired; a purpose the dataset does not declare, exactly; a subject id that is not an "
        "integer's canonical text, or not printable ASCII without spaces, or a withdrawal whose id matches a row only "
        "up to case; a grant without granted_at), so no row may be used; the owner must correct it",
        reason="CONSENT_SOURCE_INVALID", private=f"{count} invalid consent records")


def subject_text(expr: str, d: Dialect) -> str:
    return f"CAST({expr} AS {d.text_type})"


def valid_subjects_sql(consent_table: str, src: ConsentSource, scope: ConsentScope, d: Dialect) -> str:
    """The distinct subject ids (as text) with a valid consent for the purpose at T: the granted
    ones EXCEPT the withdrawn ones (set semantics: distinct, hashed by the engine). The filter and
    the snapshot both use exactly this statement."""
    granted = subject_text(f"veil_g.{d.ident(src.subject)}", d)
    withdrawn = subject_text(f"veil_w.{d.ident(src.subject)}", d)
    return (f"SELECT {granted} FROM {consent_table} AS veil_g WHERE veil_g.{d.ident(src.subject)} IS NOT NULL AND "
            f"{valid_condition(src, scope, d, 'veil_g')} EXCEPT SELECT {withdrawn} FROM {consent_table} AS veil_w "
            f"WHERE {withdrawn_condition(src, scope, d, 'veil_w')}")


def consented_relation(relation: str, consent_table: str, src: ConsentSource, scope: ConsentScope,
                       d: Dialect) -> str:
    """``relation`` restricted to rows whose subject holds a valid consent (a derived table: a
    semi-join on the valid subjects; a NULL subject matches nothing)."""
    subject = subject_text(f"veil_d.{d.ident(src.subject_column)}", d)
    return (f"(SELECT veil_d.* FROM {relation} AS veil_d WHERE {subject} IN "
            f"({valid_subjects_sql(consent_table, src, scope, d)})) AS veil_consented")


def snapshot_sql(consent_table: str, src: ConsentSource, scope: ConsentScope, d: Dialect, relation: str) -> str:
    """The subjects the consent filter keeps rows of: those with a valid consent for the purpose
    at T that have rows in ``relation`` (the dataset, unfiltered). A consent record of someone
    without rows changes neither the rows counted nor the snapshot (so it cannot mark every
    earlier exact release as another snapshot's)."""
    subject = subject_text(f"veil_d.{d.ident(src.subject_column)}", d)
    return (f"SELECT DISTINCT {subject} FROM {relation} AS veil_d WHERE {subject} IN "
            f"({valid_subjects_sql(consent_table, src, scope, d)})")


def snapshot_digest(purpose: str, subjects: Iterable[str], key: bytes) -> str:
    """``hmac-sha256:`` + hex HMAC-SHA256, under ``key`` (the node's consent key, derived from
    its node key: ``NodeKey.derived_key(CONSENT_KEY_LABEL)``), of the canonical JSON
    ``{"format":"veil.consent.snapshot.v1","purpose":P,"subjects":[sorted ids]}`` (ids as text,
    sorted by their UTF-8 bytes, no duplicates, no spaces in the JSON)."""
    ids = sorted(set(subjects))  # code point order is UTF-8 byte order
    doc = json.dumps({"format": SNAPSHOT_FORMAT, "purpose": purpose, "subjects": ids}, sort_keys=True,
                     separators=(",", ":"), ensure_ascii=False)
    return "hmac-sha256:" + hmac.new(key, doc.encode(), hashlib.sha256).hexdigest()


# The label of the node-key-derived secret the snapshot digests and the log's subject names are
# keyed with (veil_server.access.node_key.NodeKey.derived_key).
CONSENT_KEY_LABEL = b"consent-snapshot"
