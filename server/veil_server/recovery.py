"""``veil node recover``: rebuild the node's state from its audit log, on purpose, audited.

When the start refuses because the *state* is missing, older than the log or disagrees with it,
the log (verified end to end, and witnessed) is the record of what happened. Recovery rebuilds
from it what it can prove, and nothing else:

* **queries**: every query the log records as submitted. A surviving row that agrees with the
  log is kept; a row the log contradicts, or a missing one, is rebuilt: its canonical SQL and
  plan from the log (the plan is planned again and must hash to the logged plan digest, else the
  query is not rebuilt), its state as the log's last word on it. What the log does not hold is
  not invented: the analyst's public key and encrypted inputs (so a rebuilt query that had not
  finished ends FAILED, ``STATE_RECOVERED``, with a ``query.fail`` entry: submit it again) and the
  encrypted result (a rebuilt release is SUCCEEDED without a result: ``RESULT_LOST``; its receipt
  in the log stands). Rows the log never recorded are removed.
* **decisions and releases**: the lifecycle above; a stored result that is not the one the log
  says was released is removed.
* **budgets spent**: every logged release (a query's, or a model's: ``model.release``) on a DP
  dataset is a debit of the ε its release entry
  records (``epsilon_micro``; an entry from before that field counts the dataset's maximum ε per
  query); every logged failure of a query that ran on a DP dataset is a debit of the dataset's
  maximum ε per query (a failure is charged like a release; the log does not say what ε was
  asked, so the most it could have been). Debits are only ever added: ε spent never goes down.
  (A DP listing's 0.1 for its certificate's row count is charged again when the start lists the
  configured datasets anew.)
* **exact-mode history**: every logged release on an exact dataset adds its plan's cell
  populations to the dataset's release history (with the consent snapshot its entry logged, for
  a consent dataset), each counted as *released* (whether a cell was
  suppressed depended on the rows, which recovery does not read; counting it released only
  makes later secondary suppression stricter). Not rebuilt: the sub-cells of an encrypted-input
  release's key column, which the log does not record (its categories came with the analyst's
  inputs); the history's own entries that survived are kept.
* **grant uses**: each grant's count is raised to the number of logged submissions it admitted
  (a rebuilt query is counted against the oldest grant for its analyst, dataset and purpose).

It refuses when the log itself is what is missing, older or forked: a log cannot be rebuilt from
state. The whole run is one ``admin.state.recover`` entry (with counts), in the transaction that
writes the rebuilt state and its anchor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from .audit.anchoring import LogReading, StartRefused, lifecycle_of, row_matches, void_groups_of
from .audit.log import Event
from .errors import VeilError
from .query.catalog import Catalog
from .query.planner import plan_query
from .state.anchor import Anchor
from .state.lifecycle import QueryState
from .state.store import now_us

Node = Any  # the node being started in recovery mode (not imported: it imports this module)

log = logging.getLogger("veil.recovery")

# What the start may refuse that recovery repairs: the state's problems, never the log's.
RECOVERABLE = {"STATE_MISSING", "STATE_ROLLED_BACK", "STATE_CHANGED_WHILE_STOPPED", "QUERY_NOT_IN_LOG",
               "QUERY_ROW_MODIFIED", "QUERY_STATE_DISAGREES", "RESULT_DISAGREES", "RESULT_MODIFIED",
               "QUERY_MISSING"}
_STATES = {"released": QueryState.SUCCEEDED, "rejected": QueryState.REJECTED, "cancelled": QueryState.CANCELLED,
           "failed": QueryState.FAILED}


@dataclass
class RecoveryReport:
    refused: str = ""  # what the start said, "" if state and log agreed
    kept: int = 0
    rebuilt: int = 0
    ended: int = 0  # unfinished queries ended FAILED (key and inputs lost)
    removed: int = 0
    results_removed: int = 0
    debits_added: int = 0
    epsilon_added: float = 0.0
    history_added: int = 0  # exact-mode releases whose populations were added to the history
    grant_uses_raised: int = 0
    not_rebuilt: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k != "not_rebuilt"} | {"not_rebuilt": len(self.not_rebuilt)}


def check_recoverable(refusal: StartRefused | None) -> None:
    if refusal is not None and refusal.problem not in RECOVERABLE:
        raise StartRefused(refusal.problem, refusal.where, refusal.position, refusal.detail + " (recover rebuilds "
                           "state from the log, never the log)", refusal.fix)


def rebuild_queries(node: Node, reading: LogReading, refusal: StartRefused | None) -> RecoveryReport:
    """Phase one, before the node's start entry: queries, results, debits and the anchor, with
    the ``admin.state.recover`` entry, in one state transaction."""
    report = RecoveryReport(refused=refusal.line() if refusal else "")
    logged = lifecycle_of(reading, void_groups_of(reading, None))
    store = node.store
    with store.joined_tx() as db:
        rows = {r[0]: r for r in db.execute(
            "SELECT id, state, sql, plan_digest, key_fingerprint, canonical_sql, plan_json FROM queries").fetchall()}
        results = dict(db.execute("SELECT query_id, digest FROM results").fetchall())
        debited = {r[0] for r in db.execute("SELECT query_id FROM dp_debits").fetchall()}
        fails: list[Event] = []
        for qid in [q for q in rows if q not in logged or logged[q].submit_index < 0]:
            db.execute("DELETE FROM queries WHERE id = ?", (qid,))
            db.execute("DELETE FROM transitions WHERE query_id = ?", (qid,))
            db.execute("DELETE FROM results WHERE query_id = ?", (qid,))
            report.removed += 1
        for qid, q in logged.items():
            if q.submit_index < 0:
                continue
            row = rows.get(qid)
            want = _STATES.get(q.status)
            agrees = row is not None and _row_agrees(row, q) and (
                QueryState(row[1]) in _allowed(q.status) or (q.void_release and q.status != "released"))
            if agrees:
                report.kept += 1
                if QueryState(row[1]) is QueryState.SUCCEEDED and results.get(qid) not in (None, q.release_digest):
                    db.execute("DELETE FROM results WHERE query_id = ?", (qid,))
                    report.results_removed += 1
            else:
                if not _rebuild(node, db, qid, q, row, want, report, fails):
                    continue
                report.rebuilt += 1
            _debit(node, db, qid, q, debited, report)
            _history(node, db, qid, q, report)
        _model_debits(node, db, reading, debited, report)
        last = reading.groups[-1] if reading.groups else None
        if last is not None:
            # The state now describes the log up to its last anchored change.
            from .state.anchor import StateAnchor

            StateAnchor.write(db, Anchor(last[0], last[2] + 1, reading.leaves[last[2]].hex()))
        node.audit._append_all([*fails, Event("admin.state.recover", "node", "ok", details={
            k: (round(v, 6) if isinstance(v, float) else v) for k, v in report.summary().items()
            if k != "refused" and not isinstance(v, float)} | {
            "epsilon_added_micro": round(report.epsilon_added * 1_000_000),
            "refused": report.refused[:500]})], checkpoint=True)
    return report


def raise_grant_uses(node: Node, reading: LogReading, report: RecoveryReport) -> None:
    """Phase two, after the config's grants exist again: each grant counts at least the logged
    submissions it admitted."""
    logged = lifecycle_of(reading, void_groups_of(reading, None))
    with node.store.joined_tx() as db:
        linked = dict(db.execute("SELECT query_id, grant_id FROM query_grants").fetchall())
        grants = db.execute("SELECT id, principal, dataset, purpose FROM grants ORDER BY created_us").fetchall()
        queries = dict((r[0], r[1:]) for r in db.execute("SELECT id, principal, dataset, purpose FROM queries"))
        for qid, q in logged.items():
            if q.submit_index < 0 or qid in linked or qid not in queries:
                continue
            principal, dataset, purpose = queries[qid]
            grant = next((g[0] for g in grants if (g[1], g[2].lower(), g[3]) == (principal, dataset.lower(), purpose)),
                         None)
            if grant is not None:
                db.execute("INSERT INTO query_grants VALUES (?, ?)", (qid, grant))
                linked[qid] = grant
        counts: dict[str, int] = {}
        for grant in linked.values():
            counts[grant] = counts.get(grant, 0) + 1
        for grant, n in counts.items():
            cur = db.execute("UPDATE grants SET used = ? WHERE id = ? AND used < ?", (n, grant, n))
            report.grant_uses_raised += max(0, getattr(cur, "rowcount", 0) or 0)


def _catalog(node: Node) -> Catalog:
    """The config's datasets: with the state lost, none is listed yet (the start lists them
    after recovery), and the logged plans were made against these column rules."""
    return Catalog(node.config.datasets)


def _allowed(status: str) -> set[QueryState]:
    from .audit.anchoring import ALLOWED

    return ALLOWED.get(status, set())


def _row_agrees(row, q) -> bool:
    return row_matches(q, *row[2:7])


def _rebuild(node: Node, db, qid: str, q, row, want: QueryState | None, report: RecoveryReport,
             fails: list[Event]) -> bool:
    """Write the row the log proves; ``False`` if the log does not prove enough."""
    if row is not None and _row_agrees(row, q):
        # The row itself is the submitted one: only its state moves to the log's.
        state = want or (QueryState.APPROVED if q.status == "approved" else QueryState.PENDING_APPROVAL)
        if state is QueryState.SUCCEEDED:  # released per the log, but its result is not the one logged
            db.execute("DELETE FROM results WHERE query_id = ?", (qid,))
            _set_state(db, qid, state, "RESULT_LOST", "released; the encrypted result was lost with the node's "
                       "state (the receipt in the audit log stands)")
        else:
            _set_state(db, qid, state, "RECOVERED_FROM_LOG", "set to what the audit log records by `veil node recover`")
        return True
    try:
        plan = plan_query(q.canonical_sql, _catalog(node))
    except VeilError:
        plan = None
    if plan is None or plan.digest() != q.plan_digest:
        report.not_rebuilt.append(qid)
        log.warning("query %s: its logged SQL no longer plans to the logged digest; not rebuilt", qid)
        return False
    db.execute("DELETE FROM queries WHERE id = ?", (qid,))
    db.execute("DELETE FROM transitions WHERE query_id = ?", (qid,))
    db.execute("DELETE FROM results WHERE query_id = ?", (qid,))
    if want is None:  # pending or approved: without the analyst's key it cannot run
        state, reason, message = QueryState.FAILED, "STATE_RECOVERED", (
            "the node's state was rebuilt from its audit log, which holds no public key or inputs; submit it again")
        fails.append(Event("query.fail", q.principal, "error", dataset=q.dataset, query=qid,
                           details={"reason": reason, "from_state": "RECOVERED"}))
        report.ended += 1
    elif want is QueryState.SUCCEEDED:
        state, reason, message = want, "RESULT_LOST", (
            "released; the encrypted result was lost with the node's state (the receipt in the audit log stands)")
    else:
        state, reason, message = want, "RECOVERED_FROM_LOG", "rebuilt from the audit log by `veil node recover`"
    t = now_us()
    db.execute(
        "INSERT INTO queries (id, principal, request_id, dataset, purpose, sql, canonical_sql, plan_json, plan_digest,"
        " public_key, key_fingerprint, state, state_reason, state_message, created_us, updated_us, inputs)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (qid, q.principal, q.request_id, plan.dataset, q.purpose, q.canonical_sql, q.canonical_sql, plan.to_json(),
         q.plan_digest, b"", q.key_fingerprint, state.value, reason, message, t, t, b""))
    db.execute("INSERT INTO transitions VALUES (?, 0, NULL, ?, ?, ?, ?)", (qid, state.value, reason, message, t))
    return True


def _set_state(db, qid: str, state: QueryState, reason: str, message: str) -> None:
    t = now_us()
    n = db.execute("SELECT COUNT(*) FROM transitions WHERE query_id = ?", (qid,)).fetchone()[0]
    cur = db.execute("SELECT state FROM queries WHERE id = ?", (qid,)).fetchone()[0]
    db.execute("UPDATE queries SET state = ?, state_reason = ?, state_message = ?, updated_us = ? WHERE id = ?",
               (state.value, reason, message, t, qid))
    db.execute("INSERT INTO transitions VALUES (?, ?, ?, ?, ?, ?, ?)", (qid, n, cur, state.value, reason, message, t))


def _debit(node: Node, db, qid: str, q, debited: set[str], report: RecoveryReport) -> None:
    """A logged release, or failure after running, on a DP dataset is ε spent, whatever the state lost."""
    from .disclosure.control import FAILURES_INDEPENDENT_OF_DATA

    ran_and_failed = q.status == "failed" and q.fail_reason not in FAILURES_INDEPENDENT_OF_DATA | {"STATE_RECOVERED"}
    if (q.status != "released" and not ran_and_failed) or qid in debited:
        return
    ds = _catalog(node).get(q.dataset)
    if ds is None or not ds.disclosure.dp:
        return
    micro = q.epsilon_micro if q.status == "released" and q.epsilon_micro is not None else round(
        ds.disclosure.max_epsilon_per_query * 1_000_000)
    db.execute("INSERT INTO dp_debits (query_id, principal, dataset, purpose, micro_epsilon, refunded, at_us) "
               "VALUES (?, ?, ?, ?, ?, 0, ?)", (qid, q.principal, ds.name.lower(),
                                                ds.disclosure.budget_purpose(q.purpose), micro, now_us()))
    debited.add(qid)
    report.debits_added += 1
    report.epsilon_added += micro / 1_000_000


def _model_debits(node: Node, db, reading: LogReading, debited: set[str], report: RecoveryReport) -> None:
    """Every logged model release (issue 18) on a DP dataset is the ε its entry records. An entry
    of a torn commit (a void group) was never released: the release leaves after its commit."""
    void = void_groups_of(reading, None)
    group_of: dict[int, tuple[int, int]] = {}
    for seq, first, last in reading.groups:
        for i in range(first, last + 1):
            group_of[i] = (seq, first)
    for index, release, principal, dataset, details in reading.models:
        micro = details.get("epsilon_micro")
        if group_of.get(index) in void or release in debited or not isinstance(micro, int) or isinstance(
                micro, bool) or micro <= 0:
            continue
        ds = _catalog(node).get(dataset)
        if ds is None or not ds.disclosure.dp:
            continue
        db.execute("INSERT INTO dp_debits (query_id, principal, dataset, purpose, micro_epsilon, refunded, at_us) "
                   "VALUES (?, ?, ?, ?, ?, 0, ?)", (release, principal, ds.name.lower(),
                                                    ds.disclosure.budget_purpose(str(details.get("purpose", ""))),
                                                    micro, now_us()))
        debited.add(release)
        report.debits_added += 1
        report.epsilon_added += micro / 1_000_000


def _history(node: Node, db, qid: str, q, report: RecoveryReport) -> None:
    """A logged release on an exact dataset: its cells join the dataset's history (as released)."""
    if q.status != "released":
        return
    ds = _catalog(node).get(q.dataset)
    if ds is None or ds.disclosure.dp:
        return
    if db.execute("SELECT 1 FROM exact_populations WHERE query_id = ? LIMIT 1", (qid,)).fetchone() is not None:
        return  # the history kept it
    try:
        plan = plan_query(q.canonical_sql, _catalog(node))
        boxes = node.disclosure.populations(plan, ds)
    except VeilError:
        report.not_rebuilt.append(qid)
        log.warning("query %s: its logged SQL no longer plans on datasets/%s; its history not rebuilt", qid, ds.name)
        return
    # Which cells were released is in the release entry; an entry from before it was recorded
    # counts every cell released for the plan's columns.
    from .audit.events import unpack_flags

    flags = unpack_flags(q.exact_released) if q.exact_released else None
    if flags is None or len(flags) != len(boxes):
        flags = [True] * len(boxes)
    told = node.disclosure.release_columns(plan)
    node.disclosure.history.record(ds.name, qid, [(b, told if f else frozenset()) for b, f in zip(boxes, flags)])
    if q.consent_snapshot:  # a consent dataset: the snapshot its release entry logged
        node.disclosure.history.record_snapshot(ds.name, qid, q.consent_snapshot)
    node.disclosure.history.forget(ds.name)
    report.history_added += 1
