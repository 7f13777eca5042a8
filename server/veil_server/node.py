"""The node: catalog, planner, policy, engine, store and release, wired into one lifecycle.

Nothing here knows gRPC. Submission validates everything it can synchronously (key, SQL,
purpose, policy) so the analyst gets the refusal at once; an accepted query is persisted
before it is acknowledged and executed by a worker pool. On start, queries that were approved
or running when the node stopped are re-queued, so nothing acknowledged is lost.

Every step is audited before it happens: the entry is appended inside the state change's
transaction (``write_ahead=``), so if it cannot be made durable the step does not happen
(:mod:`veil_server.audit.events`).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from veil.crypto import InvalidKey, PublicKey
from veil.v1 import query_pb2

from . import encrypted_input
from .audit.events import AuditTrail
from .catalog import Catalog, Dataset
from .config import NodeConfig, Principal
from .engine import DuckDBEngine, Engine
from .errors import DatasetNotFound, FailedPrecondition, InvalidArgument, NotReady, QueryNotFound, VeilError
from .lifecycle import QueryState
from .plan import QueryPlan
from .planner import plan_query
from .policy import Decision, evaluate
from .release import build_result
from .store import NewQuery, QueryRecord, StateStore

log = logging.getLogger("veil.node")

MAX_REQUEST_ID = 128
MIN_KEY_BITS = 2048


@dataclass(frozen=True)
class Submission:
    query: QueryRecord
    created: bool


class Node:
    def __init__(self, config: NodeConfig, *, engine: Engine | None = None) -> None:
        self.config = config
        self.catalog = Catalog(config.datasets)
        config.state_dir.mkdir(parents=True, exist_ok=True)
        # Fail closed: a log that cannot be opened, or fails its integrity check, stops the start.
        self.audit = AuditTrail.open(config.state_dir)
        self.store = StateStore(config.state_dir / "state.db")
        self.engine = engine or DuckDBEngine(config.datasets)
        self._pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="veil-query")
        self._closed = threading.Event()
        self._changed = threading.Condition()
        self.audit.node_started(config)
        self._recover()

    # -- lifecycle of the node ------------------------------------------------------------

    def _recover(self) -> None:
        for q in self.store.in_states([QueryState.RUNNING]):
            self._move(q.id, QueryState.APPROVED, "NODE_RESTARTED",
                                  "the node restarted while the query ran; it will run again")
        for q in self.store.in_states([QueryState.APPROVED]):
            self._pool.submit(self._execute, q.id)

    def _move(self, query_id: str, to: QueryState, reason: str, message: str, **kw) -> QueryRecord:
        rec = self.store.transition(query_id, to, reason, message, **kw)
        with self._changed:
            self._changed.notify_all()
        return rec

    def close(self, *, wait: bool = True) -> None:
        self._closed.set()
        with self._changed:
            self._changed.notify_all()
        self._pool.shutdown(wait=wait, cancel_futures=True)
        self.audit.node_stopping()
        self.store.close()
        self.audit.close()

    # -- catalog --------------------------------------------------------------------------

    def dataset(self, name: str) -> Dataset:
        bare = name.removeprefix("datasets/")
        ds = self.catalog.get(bare)
        if ds is None:
            raise DatasetNotFound(f"no dataset named datasets/{bare}; list them with ListDatasets",
                                  metadata={"dataset": bare})
        return ds

    def approximate_rows(self, ds: Dataset) -> int:
        n = self.engine.row_count(ds)
        if n < 100:
            return 0 if n == 0 else 100  # small tables are reported as "about 100"
        digits = len(str(n)) - 2
        return round(n, -digits)

    # -- queries --------------------------------------------------------------------------

    def submit(self, principal: Principal, **request) -> Submission:
        """Validate, log and store a query (``_submit``). Refusals are logged too."""
        try:
            return self._submit(principal, **request)
        except VeilError as e:
            self.audit.refused(principal, e, sql=request.get("sql", ""), purpose=request.get("purpose", ""),
                               request_id=request.get("request_id", ""),
                               **self._refusal_context(principal, request.get("sql", ""), request.get("purpose", "")))
            raise

    def _refusal_context(self, principal: Principal, sql: str, purpose: str) -> dict:
        """The plan and policy decision of a refused submission, when it got that far: the log
        names the canonical SQL and the rules that fired."""
        try:
            plan = plan_query(sql, self.catalog)
            return {"plan": plan, "decision": evaluate(plan, self.dataset(plan.dataset), principal=principal,
                                                       purpose=purpose)}
        except VeilError:
            return {}

    def _submit(self, principal: Principal, *, sql: str, purpose: str, public_key: bytes,
                request_id: str, weighted_sums: list | None = None) -> Submission:
        if len(request_id) > MAX_REQUEST_ID:
            raise InvalidArgument(f"request_id is longer than {MAX_REQUEST_ID} characters",
                                  reason="INVALID_REQUEST_ID")
        try:
            key = PublicKey.from_bytes(public_key, min_bits=MIN_KEY_BITS)
        except InvalidKey as e:
            raise InvalidArgument(f"the Paillier public key is not acceptable: {e}",
                                  reason="INVALID_PUBLIC_KEY") from None
        if not purpose:
            raise InvalidArgument("every query declares a purpose; set purpose to one the dataset allows",
                                  reason="PURPOSE_REQUIRED")
        plan = plan_query(sql, self.catalog)
        ds = self.dataset(plan.dataset)
        decision = evaluate(plan, ds, principal=principal, purpose=purpose)
        decision.raise_if_rejected()
        weighted = list(weighted_sums or [])
        encrypted_input.validate(weighted, plan, ds, key)
        inputs = query_pb2.SubmitQueryRequest(weighted_sums=weighted).SerializeToString(deterministic=True)
        record, created = self.store.create_query(
            NewQuery(principal.name, request_id, ds.name, purpose, sql, plan.canonical_sql(), plan.to_json(),
                     plan.digest(), bytes(public_key), key.fingerprint(), inputs),
            "SUBMITTED", "query received and validated",
            write_ahead=lambda new: self.audit.submitted(new, decision),
        )
        if created or record.state is QueryState.PENDING_APPROVAL:  # a retry finishes the decision
            record = self._decide(record, decision)
        return Submission(record, created)

    def _decide(self, record: QueryRecord, decision: Decision) -> QueryRecord:
        if decision.auto_approve:
            try:
                record = self._move(record.id, QueryState.APPROVED, "POLICY_AUTO_APPROVED", decision.summary(),
                                    expect=[QueryState.PENDING_APPROVAL],
                                    write_ahead=lambda r: self.audit.approved(r, approvers=["policy"],
                                                                              reason=decision.summary()))
            except FailedPrecondition:
                return self.store.get(record.id)  # a concurrent retry decided (or it was cancelled)
            self._pool.submit(self._execute, record.id)
        return record

    def get(self, principal: Principal, query_id: str) -> QueryRecord:
        rec = self.store.get(_bare(query_id))
        if rec.principal != principal.name and principal.role.value == "analyst":
            # Another analyst's query does not exist, as far as this caller can tell.
            raise QueryNotFound(f"no query named queries/{_bare(query_id)}; list yours with ListQueries")
        return rec

    def wait(self, principal: Principal, query_id: str, timeout: float) -> QueryRecord:
        """The query once it is finished, or as it is when ``timeout`` seconds have passed."""
        deadline = time.monotonic() + timeout
        with self._changed:  # read under the condition's lock so no notification is missed
            rec = self.get(principal, query_id)
            while not rec.state.terminal and not self._closed.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(min(left, 1.0))
                rec = self.store.get(rec.id)
        return rec

    def cancel(self, principal: Principal, query_id: str) -> QueryRecord:
        rec = self.get(principal, query_id)
        if rec.state is QueryState.CANCELLED:
            return rec
        if rec.state.terminal:
            raise FailedPrecondition(f"query is {rec.state.value}; only unfinished queries can be cancelled",
                                     reason="QUERY_FINISHED", metadata={"state": rec.state.value})
        return self._move(rec.id, QueryState.CANCELLED, "CANCELLED_BY_ANALYST",
                          "cancelled at the analyst's request",
                          write_ahead=lambda r: self.audit.cancelled(r, principal))

    def result(self, principal: Principal, query_id: str) -> bytes:
        rec = self.get(principal, query_id)
        if rec.state is not QueryState.SUCCEEDED:
            raise NotReady(f"query is {rec.state.value}; a result exists only once it has SUCCEEDED",
                           metadata={"state": rec.state.value})
        data = self.store.result(rec.id)
        if data is None:  # the store writes both in one transaction; this is corruption
            raise NotReady("the result is missing", reason="RESULT_MISSING")
        return data

    # -- execution ------------------------------------------------------------------------

    def _execute(self, query_id: str) -> None:
        if self._closed.is_set():
            return
        try:
            rec = self._move(query_id, QueryState.RUNNING, "EXECUTION_STARTED",
                                        "running inside the domain", expect=[QueryState.APPROVED])
        except VeilError:
            return  # cancelled (or taken by another worker) before it started
        try:
            plan = QueryPlan.from_json(rec.plan_json)
            ds = self.dataset(plan.dataset)
            key = PublicKey.from_bytes(rec.public_key, min_bits=MIN_KEY_BITS)
            stats = self.engine.aggregate(plan, ds)
            specs = encrypted_input.validate(
                list(query_pb2.SubmitQueryRequest.FromString(rec.inputs).weighted_sums), plan, ds, key)
            weighted = [(s, self.engine.aggregate(encrypted_input.statistics_plan(plan, s), ds)) for s in specs]
            now = Timestamp()
            now.GetCurrentTime()
            result, counters = build_result(rec.resource_name, plan, ds, stats, key, now=now, weighted=weighted)
            scanned = self.approximate_rows(ds)  # the catalog's rounding: the log holds no exact count
            self._move(
                query_id, QueryState.SUCCEEDED, "RESULT_RELEASED",
                f"{counters['groups_released']} groups released, {counters['groups_suppressed']} suppressed",
                expect=[QueryState.RUNNING],
                result=(result.SerializeToString(deterministic=True), result.result_digest),
                # No release without its entry: if the append fails, the query fails unreleased.
                write_ahead=lambda r: self.audit.released(r, result, counters, rows_scanned_approx=scanned),
            )
        except VeilError as e:
            if e.private:
                log.warning("query %s failed: %s (%s)", query_id, e.reason, e.private)
            self._fail(query_id, e.reason, e.message)
        except Exception:
            log.exception("query %s failed", query_id)
            self._fail(query_id, "EXECUTION_FAILED", "the query could not be computed; the operator has the details")

    def _fail(self, query_id: str, reason: str, message: str) -> None:
        try:
            self._move(query_id, QueryState.FAILED, reason, message, expect=[QueryState.RUNNING],
                       write_ahead=lambda r: self.audit.failed(r, reason))
        except VeilError:
            pass  # cancelled meanwhile: the cancellation stands


def _bare(name: str) -> str:
    return name.removeprefix("queries/")


def decode_result(data: bytes) -> query_pb2.QueryResult:
    r = query_pb2.QueryResult()
    r.ParseFromString(data)
    return r
