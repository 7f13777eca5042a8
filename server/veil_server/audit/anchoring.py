"""The log's half of the state ↔ log anchor, and the check at start that compares the two.

:mod:`veil_server.state.anchor` says why. Here:

* :class:`LogReading` collects, while the log's own integrity check reads every entry at open,
  what the comparison needs: per ``state_seq`` the entries that carry it, per query its
  lifecycle as the log tells it (submitted, decided, approved, released, rejected, cancelled,
  failed) and the digests the log holds of its row.
* :func:`check_at_start` compares that with the state store and raises :class:`StartRefused`
  naming the file, the first disagreeing position and the fix, for: a missing or emptied log
  beside non-empty state, missing or emptied state beside a non-empty log, state older than the
  log, a log older than the state or not the one the state was written with, state changed while
  the node was stopped (the stop entry's digest), and any query row whose history disagrees with
  the log (e.g. APPROVED while the log has its release).

What is tolerated, and why: the log commits before the state (the entry is written ahead, inside
the state transaction), so a crash between the two commits leaves the log one anchored
transaction ahead of the state. The start accepts exactly that (the last group of entries, with
``state_seq`` one above the state's) and treats its entries as void; a release among them is not
repeated (the release-at-most-once check finds it and the query fails instead). A state restored
from a copy exactly one transaction old passes as such a tear; the stop entry's digest catches
it after a clean stop, and witnesses catch a rolled-back log.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from veil.audit.records import RESULT_DIGEST, Entry
from veil.results import result_digest
from veil.v1 import query_pb2

from ..errors import FailedPrecondition
from ..query.plan import QueryPlan
from ..state.anchor import Anchor, StateAnchor, state_digest
from ..state.lifecycle import QueryState
from ..state.store import StateStore

STATE_SEQ = "state_seq"  # details key of an anchored entry
STATE_DIGEST = "state_digest"  # details key of the clean stop's entry
MAX_LOGGED_TEXT = 4000  # characters of SQL an entry keeps (audit.events.MAX_TEXT)

# What the log's last word on a query allows its row to say. RUNNING is not logged (it is the
# claim of a run), a failure is logged best-effort, and a run interrupted by a restart goes back
# to APPROVED unlogged.
ALLOWED = {
    "pending": {QueryState.PENDING_APPROVAL},
    "approved": {QueryState.APPROVED, QueryState.RUNNING, QueryState.FAILED},
    "released": {QueryState.SUCCEEDED},
    "rejected": {QueryState.REJECTED, QueryState.EXPIRED},
    "cancelled": {QueryState.CANCELLED},
    "failed": {QueryState.FAILED},
}


class StartRefused(FailedPrecondition):
    """The node must not start on these files. ``line()`` is what the operator reads: the file,
    the first disagreeing position and the fix, on one line."""

    default_reason = "START_REFUSED"

    def __init__(self, problem: str, where: str, position: str, detail: str, fix: str) -> None:
        self.problem, self.where, self.position, self.detail, self.fix = problem, where, position, detail, fix
        super().__init__(self.line(), reason=problem, private=detail)

    def line(self) -> str:
        return f"{self.where}: {self.problem} at {self.position}: {self.detail}; fix: {self.fix}"


@dataclass
class _Query:
    submit_index: int = -1
    seq: int = 0
    sql_sha256: str = ""
    plan_digest: str = ""
    key_fingerprint: str = ""
    principal: str = ""
    dataset: str = ""
    purpose: str = ""
    request_id: str = ""
    canonical_sql: str = ""
    epsilon_micro: int | None = None  # of its release, when the entry records it
    consent_snapshot: str = ""  # of its release on a consent dataset, when the entry records it
    status: str = ""  # a key of _ALLOWED
    status_index: int = -1
    release_digest: str = ""
    release_index: int = -1
    void_release: bool = False
    fail_reason: str = ""  # of its query.fail entry
    exact_released: str = ""  # of its release: which plan cells were released (exact mode)


@dataclass
class LogReading:
    """Filled by :meth:`visit` during the log's integrity check (one pass over the log)."""

    size: int = 0
    leaves: dict[int, bytes] = field(default_factory=dict)  # only of the last entry of each group
    groups: list[tuple[int, int, int]] = field(default_factory=list)  # (seq, first index, last index)
    queries: dict[str, _Query] = field(default_factory=dict)
    events: list[tuple[int, int, str, str, dict[str, Any]]] = field(default_factory=list)
    # Model releases (issue 18): (index, release id, principal, dataset, details), for recovery's ε.
    models: list[tuple[int, str, str, str, dict[str, Any]]] = field(default_factory=list)
    stop_digest: tuple[int, str] | None = None  # (seq, digest) of the last clean stop

    def visit(self, entry: Entry, leaf: bytes) -> None:
        self.size = entry.index + 1
        details = entry.details
        seq = details.get(STATE_SEQ)
        if isinstance(seq, int) and not isinstance(seq, bool):
            # One append is one group. Two appends share a number only when the start after a
            # torn commit reuses it (its first anchored entry is the start's), which begins anew.
            if self.groups and self.groups[-1][0] == seq and self.groups[-1][2] == entry.index - 1 \
                    and entry.kind != "admin.node.start":
                self.groups[-1] = (seq, self.groups[-1][1], entry.index)
                self.leaves.pop(entry.index - 1, None)
            else:
                self.groups.append((seq, entry.index, entry.index))
            self.leaves[entry.index] = leaf
            if entry.kind == "admin.node.stop" and isinstance(details.get(STATE_DIGEST), str):
                self.stop_digest = (seq, details[STATE_DIGEST])
        else:
            seq = 0
        if entry.kind == "model.release" and entry.outcome == "ok" and entry.query:
            self.models.append((entry.index, entry.query, entry.principal, entry.dataset or "", details))
        # A query's lifecycle: its ok entries, and its failure (logged with outcome "error").
        if entry.query and entry.kind.startswith("query.") and (entry.outcome == "ok" or entry.kind == "query.fail"):
            self.events.append((entry.index, seq, entry.kind, entry.query,
                                {**details, "_principal": entry.principal, "_dataset": entry.dataset or ""}))

    @property
    def last_seq(self) -> int:
        return self.groups[-1][0] if self.groups else 0


def void_groups_of(reading: LogReading, torn: tuple[int, int, int] | None) -> set[tuple[int, int]]:
    return _void_groups(reading.groups, torn)


def _void_groups(groups: list[tuple[int, int, int]], torn: tuple[int, int, int] | None) -> set[tuple[int, int]]:
    """(seq, first index) of groups whose transaction did not commit in the state: one whose
    seq a later group reuses (its state transaction rolled back after the append), and the
    torn last one."""
    void, later = set(), set()
    for seq, first, _last in reversed(groups):
        if seq in later:
            void.add((seq, first))
        later.add(seq)
    if torn is not None:
        void.add((torn[0], torn[1]))
    return void


def lifecycle_of(reading: LogReading, void: set[tuple[int, int]]) -> dict[str, _Query]:
    group_of: dict[int, tuple[int, int]] = {}
    for seq, first, last in reading.groups:
        for i in range(first, last + 1):
            group_of[i] = (seq, first)
    out: dict[str, _Query] = {}
    for index, seq, kind, qid, details in reading.events:
        is_void = group_of.get(index) in void
        q = out.setdefault(qid, _Query())
        if kind == "query.submit":
            q.submit_index, q.seq = index, seq
            q.sql_sha256 = str(details.get("sql_sha256", ""))
            q.plan_digest = str(details.get("plan_digest", ""))
            q.key_fingerprint = str(details.get("key_fingerprint", ""))
            q.principal, q.dataset = str(details["_principal"]), str(details["_dataset"])
            q.purpose, q.request_id = str(details.get("purpose", "")), str(details.get("request_id", ""))
            q.canonical_sql = str(details.get("canonical_sql", ""))
            if is_void:
                q.submit_index = -2  # logged, never stored
            continue
        if is_void:
            if kind == "query.release":
                q.void_release = True
            continue
        status = {"query.release": "released", "query.reject": "rejected", "query.cancel": "cancelled",
                  "query.fail": "failed"}.get(kind)
        if kind == "query.decision":
            status = "pending"  # stored PENDING_APPROVAL; an auto-approval is its own transaction
        elif kind == "query.approve":
            need, have = details.get("approvals_required"), details.get("approvals")
            status = "pending" if isinstance(need, int) and isinstance(have, int) and have < need else "approved"
        if status is None:
            continue
        q.status, q.status_index = status, index
        if kind == "query.fail":
            q.fail_reason = str(details.get("reason", ""))
        if kind == "query.release":
            q.release_digest, q.release_index = str(details.get(RESULT_DIGEST, "")), index
            micro = details.get("epsilon_micro")
            q.epsilon_micro = micro if isinstance(micro, int) and not isinstance(micro, bool) else None
            flags = details.get("exact_released")
            q.exact_released = flags if isinstance(flags, str) else ""
            snapshot = details.get("consent_snapshot")
            q.consent_snapshot = snapshot if isinstance(snapshot, str) else ""
    return out


def check_at_start(reading: LogReading, store: StateStore, anchor: StateAnchor, *, log_where: str,
                   state_where: str) -> None:
    """Compare state and log; raise :class:`StartRefused` on the first disagreement."""
    a = anchor.read()
    last = reading.groups[-1] if reading.groups else None
    recover = f"`veil node recover --config CONFIG` rebuilds {state_where} from the log"
    if a is None:
        if last is not None:
            raise StartRefused(
                "STATE_MISSING", state_where, f"log entry {last[2]}",
                f"the state is missing or empty, but the log records {last[0]} state changes",
                f"restore {state_where} from a backup taken at or after log entry {last[2]}, or {recover}")
        if reading.size == 0 and anchor.query_count():
            raise StartRefused(
                "LOG_MISSING", log_where, "entry 0",
                f"the log is missing or empty, but {state_where} holds queries",
                f"restore {log_where} from its backup; a log cannot be rebuilt from state")
        return  # a new node, or state and log from before anchoring: anchored from now on
    if last is None:
        raise StartRefused(
            "LOG_MISSING", log_where, f"entry {a.log_size}",
            f"the log is missing, emptied or cut before the state's {a.seq} anchored changes "
            f"({reading.size} entries, the state was written with {a.log_size})",
            f"restore {log_where} from its backup (the newest); a log cannot be rebuilt from state")
    if a.seq > last[0] or a.log_size > reading.size:
        raise StartRefused(
            "LOG_ROLLED_BACK", log_where, f"entry {reading.size}",
            f"the log is older than the state: it has {reading.size} entries and state change {last[0]}, "
            f"the state was written with {a.log_size} entries and change {a.seq}",
            f"restore the newest {log_where}; the state must not run ahead of its log")
    torn = None
    if a.seq == last[0] - 1:
        torn = last  # a crash between the log's commit and the state's: the last group is void
    elif a.seq < last[0]:
        first = next(g for g in reading.groups if g[0] > a.seq)
        raise StartRefused(
            "STATE_ROLLED_BACK", state_where, f"log entry {first[1]}",
            f"the state is older than the log: it ends at change {a.seq}, the log goes on to change {last[0]}",
            f"restore the newest {state_where}, or {recover}")
    anchored = _group_end(reading, a.seq, before=torn)
    if anchored is None or anchored[2] + 1 != a.log_size or reading.leaves.get(anchored[2], b"").hex() != a.log_leaf:
        raise StartRefused(
            "LOG_FORKED", log_where, f"entry {a.log_size - 1}",
            "the log at the position the state was written with is not the one the state saw",
            f"restore the {log_where} that belongs with {state_where}")
    if torn is None and reading.stop_digest is not None and reading.stop_digest[0] == a.seq:
        with store.reading() as db:
            now = state_digest(db)
        if now != reading.stop_digest[1]:
            raise StartRefused(
                "STATE_CHANGED_WHILE_STOPPED", state_where, f"log entry {anchored[2]}",
                "the state differs from the state the node recorded in the log when it stopped",
                f"restore {state_where} as it was at that stop, or {recover}")
    _check_rows(reading, store, _void_groups(reading.groups, torn), state_where=state_where, recover=recover)


def _group_end(reading: LogReading, seq: int, *, before: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
    for g in reversed(reading.groups):
        if g is before:
            continue
        if g[0] == seq:
            return g
    return None


def _check_rows(reading: LogReading, store: StateStore, void: set[tuple[int, int]], *, state_where: str,
                recover: str) -> None:
    logged = lifecycle_of(reading, void)
    with store.reading() as db:
        rows = db.execute("SELECT id, state, sql, plan_digest, key_fingerprint, canonical_sql, plan_json, "
                          "state_reason FROM queries").fetchall()
        results = dict(db.execute("SELECT query_id, digest FROM results").fetchall())
    problems: list[tuple[int, str, str, str]] = []  # (log position, problem, position text, detail)
    seen = set()
    for qid, state_text, sql, plan_digest, fingerprint, canonical, plan_json, reason in rows:
        seen.add(qid)
        q = logged.get(qid)
        state = QueryState(state_text) if state_text in QueryState._value2member_map_ else None
        if q is None or q.submit_index < 0:
            problems.append((reading.size, "QUERY_NOT_IN_LOG", f"query {qid}",
                             "a query row the log never recorded as submitted"))
            continue
        if not row_matches(q, sql, plan_digest, fingerprint, canonical, plan_json):
            problems.append((q.submit_index, "QUERY_ROW_MODIFIED", f"log entry {q.submit_index}",
                             f"query {qid}'s SQL, plan or key differs from its submission in the log"))
            continue
        allowed = ALLOWED.get(q.status, set())
        if state not in allowed:
            if q.status != "released" and q.void_release and state in ALLOWED["approved"]:
                continue  # its release was logged, then the state's commit did not happen
            problems.append((max(q.status_index, 0), "QUERY_STATE_DISAGREES", f"log entry {q.status_index}",
                             f"query {qid} is {state_text} in the state, the log says {q.status or 'submitted'}"))
            continue
        if state is QueryState.SUCCEEDED and results.get(qid, "" if reason == "RESULT_LOST" else None) not in (
                q.release_digest, ""):
            problems.append((q.release_index, "RESULT_DISAGREES", f"log entry {q.release_index}",
                             f"query {qid}'s stored result is not the one the log says was released"))
    for qid, q in logged.items():
        if qid not in seen and q.submit_index >= 0 and q.seq > 0:
            problems.append((q.submit_index, "QUERY_MISSING", f"log entry {q.submit_index}",
                             f"query {qid} is in the log but not in the state"))
    if not problems:
        _check_results(store, state_where=state_where, recover=recover)
        return
    problems.sort(key=lambda p: p[0])
    _, problem, position, detail = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    raise StartRefused(problem, state_where, position, detail + more, f"restore {state_where} from a backup that "
                       f"matches the log, or {recover}")


def row_matches(q: _Query, sql: str, plan_digest: str, fingerprint: str, canonical: str, plan_json: str) -> bool:
    """A query row is the one the log recorded: its SQL (or, rebuilt by recovery, the canonical
    SQL the log holds), its plan -- what actually runs -- and its key."""
    sql_ok = hashlib.sha256(str(sql).encode("utf-8", "replace")).hexdigest() == q.sql_sha256 or sql == canonical
    logged = q.canonical_sql
    canonical_ok = canonical == logged or (len(logged) >= MAX_LOGGED_TEXT and str(canonical).startswith(logged))
    try:
        plan_ok = QueryPlan.from_json(plan_json).digest() == plan_digest
    except Exception:  # a plan that does not decode is a damaged row
        plan_ok = False
    return sql_ok and canonical_ok and plan_ok and (plan_digest, fingerprint) == (q.plan_digest, q.key_fingerprint)


def _check_results(store: StateStore, *, state_where: str, recover: str) -> None:
    """Each stored result still hashes to its digest (the log vouched for the digest above)."""
    with store.reading() as db:
        rows = db.execute("SELECT query_id, result, digest FROM results").fetchall()
    for qid, blob, digest in rows:
        try:
            ok = result_digest(query_pb2.QueryResult.FromString(bytes(blob))) == digest
        except Exception:  # DecodeError: damaged bytes
            ok = False
        if not ok:
            raise StartRefused("RESULT_MODIFIED", state_where, f"query {qid}",
                               "a stored result does not hash to its logged digest",
                               f"restore {state_where} from a backup that matches the log, or {recover}")


def next_seq(base: Anchor | None) -> int:
    """The ``state_seq`` of the next anchored transaction: one above the state's. After a torn
    commit this reuses the void group's number, which is what marks that group void for good."""
    return (base.seq if base else 0) + 1
