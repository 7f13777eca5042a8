"""The node: catalog, planner, policy, engine, store and release, wired into one lifecycle.

Nothing here knows gRPC. Submission validates everything it can synchronously (key, SQL,
purpose, policy) so the analyst gets the refusal at once; an accepted query is persisted
before it is acknowledged and executed by a worker pool. On start, queries that were approved
or running when the node stopped are re-queued, so nothing acknowledged is lost.

Replicas (issue 9): with ``[state] backend = "postgres"`` several node processes serve one state.
Any of them may take an approved query, one wins the move to RUNNING; a dead replica's runs are
taken back by the living ones, and a release checks that its run still owns the query
(:mod:`veil_server.state.replicas`). Waiting for a query is woken by PostgreSQL notifications, since
the replica that finishes it may be another one.

Every step is audited before it happens: the entry is appended inside the state change's
transaction (``write_ahead=``), so if it cannot be made durable the step does not happen
(:mod:`veil_server.audit.events`).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from veil.certificates import DatasetCertificate
from veil.crypto import InvalidKey, PublicKey, configure_table_cache
from veil.v1 import query_pb2

from . import recovery
from .query import encrypted_input
from .audit.events import AuditTrail
from .audit.witnessing import settings_of as witness_settings
from .disclosure.control import DisclosureControl
from .query.catalog import Dataset
from .query.consent import CONSENT_KEY_LABEL, CONSENT_READS, now_scope, snapshot_digest
from .governance.subject_statements import SubjectLedger, check_subject_code, subject_hash
from .config import NodeConfig, Principal, Role
from .query.engine import Engine
from .query.routing import RoutingEngine
from .errors import (DataLoss, DatasetNotFound, FailedPrecondition, InvalidArgument, NotReady, PermissionDenied,
                     QueryNotFound, Unavailable, VeilError)
from .governance.registry import OPERATOR, Governance
from .governance.steward import Steward, round_significant
from .disclosure.budget import PrivacyBudget
from .state.lifecycle import QueryState
from .query.plan import QueryPlan
from .query.planner import plan_query
from .query.policy import Decision, evaluate
from .query.release import Randomness, RandomnessRefill, build_result, result_digest
from .state.replicas import BEAT_S, Replicas
from .state.statedb import open_database, private_dir
from .state.store import NewQuery, QueryRecord, StateStore, now_us
from .telemetry import NULL_METRICS

log = logging.getLogger("veil.node")

MAX_REQUEST_ID = 128
MIN_KEY_BITS = 2048


@dataclass(frozen=True)
class Submission:
    query: QueryRecord
    created: bool


class Node:
    def __init__(self, config: NodeConfig, *, engine: Engine | None = None, recover: bool = False,
                 metrics=NULL_METRICS) -> None:
        self.config = config
        # Issue 20: Prometheus metrics (veil_server.telemetry), a no-op unless [metrics] is on.
        self.metrics = metrics
        private_dir(config.state_dir)  # 0700; its files are created 0600 whatever the umask
        shared = config.state.shared  # PostgreSQL: replicas may share this state
        # Fail closed: a log that cannot be opened, or fails its integrity check, stops the start.
        self.audit = AuditTrail.open(config.state_dir, database=open_database(
            config.state, sqlite_path=config.state_dir / "audit.db", audit=True) if shared else None)
        try:
            self.store = StateStore(open_database(config.state, sqlite_path=config.state_dir / "state.db")
                                    if shared else config.state_dir / "state.db")
            reading, refused = self.audit.anchor_to(self.store, recovering=recover)  # they agree, or no start
            if recover:
                recovery.check_recoverable(refused)
        except BaseException:
            if getattr(self, "store", None) is not None:
                self.store.close()
            self.audit.close()
            raise
        # The log and the store know nothing of metrics: the node times its calls into them.
        metrics.instrument(self.audit.log, "append_many", "audit_append")
        for operation in ("create_query", "transition", "get", "result"):
            metrics.instrument(self.store, operation, operation)
        metrics.open_queries(self._open_query_counts)
        self.replicas = Replicas(self.store, config.state.replica)
        self.engine = engine or RoutingEngine(config.datasets)  # DuckDB, PostgreSQL or Spark by format
        self.steward = Steward(self.store, key=self.audit.key, config=config, row_count=self.engine.row_count,
                               budget=PrivacyBudget(self.store),
                               engine=self.engine)
        self.catalog = self.steward.catalog  # what analysts and the planner see: serving versions only
        # Issue 4: DP budget, differencing audit, dominance, usage ledger and quotas.
        self.disclosure = DisclosureControl(self.store, self.engine, config.disclosure)
        self.subjects = SubjectLedger(self.store)  # consent snapshots of releases, subject statements
        # Keys the consent snapshot digests and the log's subject names (query.consent).
        self.consent_key = self.audit.key.derived_key(CONSENT_KEY_LABEL)
        self._pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="veil-query")
        # Analyst keys' encryption randomness, topped up between queries (off the request path),
        # of the kind [crypto] obfuscation asks for.
        self.obfuscation = getattr(config.crypto, "obfuscation", "djn")
        # The analyst keys' fixed-base tables: [crypto] table_memory, "auto" by default.
        table_memory = getattr(config.crypto, "table_memory", None)
        if table_memory is not None:
            configure_table_cache(table_memory)
        self.refill = RandomnessRefill()
        self._closed = threading.Event()
        self._changed = threading.Condition()
        # Which query moved when (issue 22): a WaitQuery re-reads the store only when its own query
        # moved (or when a move it cannot tell apart happened), not on every move of any query --
        # sixteen analysts waiting used to make sixteen store reads per move, under this lock.
        self._move_seq = 0  # bumped on every move this process sees
        self._moved_at: collections.OrderedDict[str, int] = collections.OrderedDict()  # query -> its last move
        self._unattributed_seq = 0  # the last move not attributed to one query (other replicas, pruning)
        self._queued: set[str] = set()  # approved queries this replica has queued and not yet started
        self._queued_lock = threading.Lock()
        self.recovered = recovery.rebuild_queries(self, reading, refused) if recover else None  # `node recover`
        self.audit.node_started(config)
        self.audit.start_witnessing(witness_settings(config))  # a witness that caught a rollback stops the start
        with self.store.named_lock("bootstrap"):  # replicas starting together list once
            self._bootstrap()
        if self.recovered is not None:
            recovery.raise_grant_uses(self, reading, self.recovered)
        self._recover(at_start=True)
        self._sweeper = threading.Thread(target=self._sweep_expired, name="veil-expiry", daemon=True)
        self._sweeper.start()
        if self.store.shared:  # wake WaitQuery when another replica moves a query
            self.store.on_change(lambda _id: self._notify_changed(None), self._closed)

    # -- lifecycle of the node ------------------------------------------------------------

    def _bootstrap(self) -> None:
        """The operator's config: list its datasets and add its grants, once, with audit entries."""
        governance = {}
        for name, g in self.config.governance.items():
            governance[name] = Governance(g["classification"], tuple(g["rights"]), g["auto_approve"],
                                          g["approvals_required"])
        for ds in self.config.datasets:
            if self.steward.registry.versions(ds.name):
                continue
            self.audit.admin("dataset.list", OPERATOR, dataset=ds.name,
                             details={"source": "config", "classification": governance[ds.name].classification})
            self.steward.bootstrap([ds], governance)
            owners = self.config.governance.get(ds.name, {}).get("owners", [])
            if owners:
                self.steward.registry.add_owners(ds.name, owners)
        existing = {(g.principal, g.dataset.lower(), g.purpose) for g in self.steward.grants.list()
                    if g.created_by == OPERATOR}
        for g in self.config.grants:
            if (g["principal"], g["dataset"].lower(), g["purpose"]) in existing:
                continue
            self.audit.admin("grant.create", OPERATOR, dataset=g["dataset"],
                             details={"principal": g["principal"], "purpose": g["purpose"], "source": "config"})
            self.steward.grants.add(principal=g["principal"], dataset=g["dataset"], purpose=g["purpose"],
                                    created_by=OPERATOR, columns=g["columns"], max_queries=g["max_queries"])

    def _sweep_expired(self) -> None:
        """Pending queries nobody decided on in time become EXPIRED; with replicas, the heartbeat,
        and runs of dead replicas (or approved queries nobody queued) taken over."""
        last_beat = time.monotonic()
        while not self._closed.wait(1.0):
            if self.store.shared and time.monotonic() - last_beat >= BEAT_S:
                last_beat = time.monotonic()
                try:
                    self.replicas.beat()
                    self.metrics.replica_heartbeat(ok=True)
                    self._recover(at_start=False)
                except Exception:
                    self.metrics.replica_heartbeat(ok=False)
                    log.exception("replica heartbeat failed")
            try:
                for qid in self.steward.reviews.expired(now_us()):
                    try:
                        self._move(qid, QueryState.EXPIRED, "APPROVAL_EXPIRED",
                                   "no owner decided before the approval deadline; submit it again if still needed",
                                   expect=[QueryState.PENDING_APPROVAL],
                                   write_ahead=lambda r: self.audit.rejected(r, None, "approval expired",
                                                                             "APPROVAL_EXPIRED"))
                    except VeilError:
                        pass
            except Exception:  # the sweeper must outlive a transient store error
                log.exception("expiry sweep failed")

    def _recover(self, *, at_start: bool) -> None:
        for qid in self.replicas.reclaimable(at_start=at_start):
            try:
                self._move(qid, QueryState.APPROVED, "NODE_RESTARTED",
                           "the node restarted while the query ran; it will run again", expect=[QueryState.RUNNING])
            except VeilError:
                continue  # it finished meanwhile
        for q in self.store.in_states([QueryState.APPROVED]):
            self._enqueue(q.id)

    def _enqueue(self, query_id: str) -> None:
        """Run an approved query on this replica's pool, once per replica (the move to RUNNING
        decides between replicas)."""
        with self._queued_lock:
            if query_id in self._queued or self._closed.is_set():
                return
            self._queued.add(query_id)
        try:
            self._pool.submit(self._execute, query_id)
        except RuntimeError:  # the pool is shut down: the node is stopping
            with self._queued_lock:
                self._queued.discard(query_id)

    def _open_query_counts(self) -> dict[str, int]:
        unfinished = (QueryState.PENDING_APPROVAL, QueryState.APPROVED, QueryState.RUNNING)
        counts = {s.name: 0 for s in unfinished}
        for q in self.store.in_states(list(unfinished)):
            counts[q.state.name] += 1
        return counts

    def _move(self, query_id: str, to: QueryState, reason: str, message: str, **kw) -> QueryRecord:
        rec = self.store.transition(query_id, to, reason, message, **kw)
        self.metrics.query_state(to.name)
        self._notify_changed(query_id)
        return rec

    _MOVES_KEPT = 4096  # how many queries' last moves are remembered; older ones count as unattributed

    def _notify_changed(self, query_id: str | None) -> None:
        """Wake waiters after ``query_id`` moved (``None``: some query, unknown which)."""
        with self._changed:
            self._move_seq += 1
            if query_id is None:
                self._unattributed_seq = self._move_seq
            else:
                self._moved_at[query_id] = self._move_seq
                self._moved_at.move_to_end(query_id)
                if len(self._moved_at) > self._MOVES_KEPT:
                    self._moved_at.popitem(last=False)
                    self._unattributed_seq = self._move_seq  # a waiter on it must re-read to be safe
            self._changed.notify_all()

    def _moved_since(self, query_id: str, seq: int) -> bool:
        """Under ``self._changed``: may ``query_id`` have moved after move number ``seq``?"""
        return self._moved_at.get(query_id, 0) > seq or self._unattributed_seq > seq

    def close(self, *, wait: bool = True) -> None:
        self._closed.set()
        self.refill.close()
        with self._changed:
            self._changed.notify_all()
        self._pool.shutdown(wait=wait, cancel_futures=True)
        self.audit.node_stopping()
        self.store.close()
        close_engine = getattr(self.engine, "close", None)
        if close_engine is not None:
            close_engine()  # database connections of PostgreSQL sources, a Spark session
        self.audit.close()

    # -- catalog --------------------------------------------------------------------------

    def dataset(self, name: str) -> Dataset:
        bare = name.removeprefix("datasets/")
        ds = self.catalog.get(bare)
        if ds is None:
            raise DatasetNotFound(f"no dataset named datasets/{bare}; list them with ListDatasets",
                                  metadata={"dataset": bare})
        return ds

    def certificate_id(self, name: str) -> str:
        rec = self.steward.registry.serving(name)
        if rec is None or rec.certificate is None:
            return ""
        return _certificate_id(rec.certificate)

    def approximate_rows(self, ds: Dataset) -> int:
        """The size the catalog states: two significant digits (small tables: "about 100"); for a
        DP dataset, and a consent dataset in any mode (it counts people without consent too),
        the noisy size its certificate states, released once per version."""
        if ds.disclosure.dp or ds.needs_consent:
            rec = self.steward.registry.serving(ds.name)
            if rec is not None and rec.certificate is not None:
                return _certified_rows(rec.certificate)
        return round_significant(self.engine.row_count(ds))

    # -- queries --------------------------------------------------------------------------

    def submit(self, principal: Principal, **request) -> Submission:
        """Validate, log and store a query (``_submit``). Refusals are logged, and an analyst's
        are counted (its daily refusal quota; the owners' usage report)."""
        try:
            return self._submit(principal, **request)
        except VeilError as e:
            context = self._refusal_context(principal, request.get("sql", ""), request.get("purpose", ""))
            self.audit.refused(principal, e, sql=request.get("sql", ""), purpose=request.get("purpose", ""),
                               request_id=request.get("request_id", ""), **context)
            if principal.role is Role.ANALYST:
                plan = context.get("plan")
                self.disclosure.refused(principal.name, e, dataset=plan.dataset if plan is not None else "",
                                        purpose=request.get("purpose", ""))
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
                request_id: str, weighted_sums: list | None = None, epsilon: float = 0.0) -> Submission:
        self.disclosure.check_refusals(principal)
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
        served = self.steward.queryable(plan.dataset)  # refuses suspended datasets and changed data
        ds = served.dataset
        decision = evaluate(plan, ds, principal=principal, purpose=purpose, governance=served.governance)
        decision.raise_if_rejected()
        weighted = list(weighted_sums or [])
        specs = encrypted_input.validate(weighted, plan, ds, key)
        eps = self.disclosure.epsilon(ds, epsilon)  # DP: the ε it will spend (refused above the maximum)
        inputs = query_pb2.SubmitQueryRequest(weighted_sums=weighted, epsilon=eps).SerializeToString(
            deterministic=True)

        def admit(new: QueryRecord) -> None:
            # In the query's own transaction: no grant, no query; the grant's use is counted here.
            self.steward.grants.charge(query_id=new.id, principal=principal.name, dataset=ds.name,
                                       purpose=purpose, columns=plan.columns_touched())
            if not decision.auto_approve:
                self.steward.reviews.open(
                    new.id, rules=[(r.name, r.message) for r in decision.rules], columns=plan.columns_touched(),
                    expected_groups=decision.expected_groups, approvals_required=decision.approvals_required,
                    ttl_us=self.config.approval_ttl_seconds * 1_000_000)
            self.disclosure.admit(new, plan, ds, weighted=specs, rows=self.approximate_rows(ds), epsilon=eps)
            self.audit.submitted(new, decision)

        record, created = self.store.create_query(
            NewQuery(principal.name, request_id, ds.name, purpose, sql, plan.canonical_sql(), plan.to_json(),
                     plan.digest(), bytes(public_key), key.fingerprint(), inputs),
            "SUBMITTED", "query received and validated",
            write_ahead=admit,
        )
        if created:
            self.metrics.query_state(record.state.name)  # a new query enters its first state
        if created or record.state is QueryState.PENDING_APPROVAL:  # a retry finishes the decision
            record = self._decide(record, decision)
        return Submission(record, created)

    def _decide(self, record: QueryRecord, decision: Decision) -> QueryRecord:
        if decision.auto_approve:
            try:
                record = self._move(record.id, QueryState.APPROVED, "POLICY_AUTO_APPROVED", decision.summary(),
                                    expect=[QueryState.PENDING_APPROVAL],
                                    write_ahead=lambda r: (self.disclosure.approved(r),
                                                           self.audit.approved(r, approvers=["policy"],
                                                                               reason=decision.summary())))
            except FailedPrecondition:
                return self.store.get(record.id)  # a concurrent retry decided (or it was cancelled)
            self._enqueue(record.id)
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
        with self._changed:
            seen = self._move_seq  # taken before the read: a move after it is not missed
        rec = self.get(principal, query_id)
        while not rec.state.terminal and not self._closed.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            # Woken by this replica's moves of this query, and by other replicas' moves
            # (LISTEN/NOTIFY); at least once a second regardless, the fallback if a notification
            # is lost. The store is read outside the lock, so a move never waits for a reader.
            wake = time.monotonic() + min(left, 1.0)
            with self._changed:
                while not self._moved_since(rec.id, seen) and not self._closed.is_set():
                    remaining = wake - time.monotonic()
                    if remaining <= 0:
                        break
                    self._changed.wait(remaining)
                seen = self._move_seq
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
        if data is None and rec.state_reason == "RESULT_LOST":  # rebuilt by `veil node recover`
            raise DataLoss("the result was lost with the node's state; its receipt in the audit log stands",
                           reason="RESULT_LOST")
        if data is None:  # the store writes both in one transaction; this is corruption
            raise NotReady("the result is missing", reason="RESULT_MISSING")
        return data

    # -- review and explanation -----------------------------------------------------------

    def explain(self, principal: Principal, *, sql: str, purpose: str, epsilon: float = 0.0) -> dict:
        """The decision a submission would get, without recording, charging or running anything;
        on a DP dataset, the noise each column would carry at the ε asked (or the default)."""
        out: dict = {"outcome": "REJECT", "rules": [], "canonical_sql": "", "columns": [], "groups": 0,
                     "grant": "", "approvals": 0, "certificate_id": "", "reason": "", "message": "",
                     "epsilon": 0.0, "budget_remaining": 0.0, "disclosure_mode": "", "accuracy": [],
                     "dataset_budget_remaining": 0.0, "max_epsilon": 0.0}
        try:
            if not purpose:
                raise InvalidArgument("every query declares a purpose", reason="PURPOSE_REQUIRED")
            plan = plan_query(sql, self.catalog)
            out |= {"canonical_sql": plan.canonical_sql(), "columns": plan.columns_touched()}
            served = self.steward.queryable(plan.dataset)
            out["certificate_id"] = self.certificate_id(served.name)
            decision = evaluate(plan, served.dataset, principal=principal, purpose=purpose,
                                governance=served.governance)
            out |= {"groups": decision.expected_groups, "rules": [(r.name, r.message) for r in decision.rules],
                    "disclosure_mode": served.dataset.disclosure.mode}
            decision.raise_if_rejected()
            ds = served.dataset
            if ds.disclosure.dp:  # what the analyst would get, before spending anything
                eps = self.disclosure.epsilon(ds, epsilon)
                out |= {"epsilon": eps, "accuracy": self.disclosure.accuracy(plan, ds, eps),
                        "max_epsilon": ds.disclosure.max_epsilon_per_query}
            else:
                self.disclosure.check_exact(plan, ds, [])
            grant = self.steward.grants.find(principal=principal.name, dataset=served.name, purpose=purpose,
                                             columns=plan.columns_touched())
            out |= {"grant": grant.resource_name, "outcome": decision.outcome,
                    "approvals": decision.approvals_required}
            # Issue 4: the query's ε cost and what the caller's budget has left (DP datasets).
            budget = self.disclosure.budget_state(principal.name, served.dataset, purpose)
            if budget is not None:
                out |= {"budget_remaining": budget.remaining, "dataset_budget_remaining": budget.dataset_remaining}
        except VeilError as e:
            out |= {"outcome": "REJECT", "reason": e.reason, "message": e.message}
            if (e.reason, e.message) not in out["rules"]:
                out["rules"] = [*out["rules"], (e.reason, e.message)]
        return out

    def pending(self, principal: Principal, dataset: str = "") -> list[tuple[QueryRecord, object]]:
        """Queries awaiting the caller's decision: pending, on datasets the caller owns."""
        out = []
        for rec in self.store.in_states([QueryState.PENDING_APPROVAL]):
            if dataset and rec.dataset.lower() != dataset.removeprefix("datasets/").lower():
                continue
            ds = self.steward.registry.serving(rec.dataset) or self.steward.registry.latest(rec.dataset)
            if principal.role is Role.ADMIN or ds.owned_by(principal.name):
                out.append((rec, self.steward.reviews.context(rec.id)))
        return out

    def _reviewable(self, principal: Principal, query_id: str) -> QueryRecord:
        rec = self.store.get(_bare(query_id))
        ds = self.steward.registry.serving(rec.dataset) or self.steward.registry.latest(rec.dataset)
        if not ds.owned_by(principal.name):
            raise PermissionDenied(f"only an owner of datasets/{rec.dataset} may review its queries",
                                   reason="NOT_DATASET_OWNER", metadata={"dataset": rec.dataset})
        if rec.principal == principal.name:
            raise PermissionDenied("nobody approves their own query", reason="SELF_APPROVAL")
        if rec.state is not QueryState.PENDING_APPROVAL:
            raise FailedPrecondition(f"query is {rec.state.value}; only pending queries are reviewed",
                                     reason="NOT_PENDING", metadata={"state": rec.state.value})
        return rec

    def approve(self, principal: Principal, query_id: str, reason: str) -> QueryRecord:
        if not reason.strip():
            raise InvalidArgument("say why: an approval needs a reason", reason="REASON_REQUIRED")
        rec = self._reviewable(principal, query_id)
        ctx = self.steward.reviews.context(rec.id)
        need = ctx.approvals_required if ctx is not None else 1
        have = len(ctx.approvals) + 1 if ctx is not None else 1
        if have < need:
            with self.store.joined_tx():
                self.steward.reviews.approve(rec.id, principal.name, reason)
                self.audit.partial_approval(rec, principal, reason, have, need)
            return self.store.get(rec.id)
        approvers = [a[0] for a in (ctx.approvals if ctx else ())] + [principal.name]

        def record(r: QueryRecord) -> None:
            self.steward.reviews.approve(r.id, principal.name, reason)
            self.disclosure.approved(r)
            self.audit.approved(r, approvers=approvers, reason=reason)

        rec = self._move(rec.id, QueryState.APPROVED, "APPROVED_BY_OWNER",
                         f"approved by {', '.join(approvers)}: {reason}", expect=[QueryState.PENDING_APPROVAL],
                         write_ahead=record)
        self._enqueue(rec.id)
        return rec

    def reject(self, principal: Principal, query_id: str, reason: str) -> QueryRecord:
        if not reason.strip():
            raise InvalidArgument("say why: the analyst sees the reason of a rejection", reason="REASON_REQUIRED")
        rec = self._reviewable(principal, query_id)
        return self._move(rec.id, QueryState.REJECTED, "REJECTED_BY_OWNER", f"rejected by {principal.name}: {reason}",
                          expect=[QueryState.PENDING_APPROVAL],
                          write_ahead=lambda r: self.audit.rejected(r, principal, reason, "REJECTED_BY_OWNER"))

    # -- execution ------------------------------------------------------------------------

    def _execute(self, query_id: str) -> None:
        with self.refill.executing():  # no randomness top-up competes with a query for the CPUs
            self._execute_query(query_id)

    def _execute_query(self, query_id: str) -> None:
        with self._queued_lock:
            self._queued.discard(query_id)
        if self._closed.is_set():
            return
        run: list[str] = []
        try:
            rec = self._move(query_id, QueryState.RUNNING, "EXECUTION_STARTED",
                             "running inside the domain", expect=[QueryState.APPROVED],
                             write_ahead=lambda r: run.append(self.replicas.claim(r.id)))
        except VeilError:
            return  # cancelled (or taken by another worker or replica) before it started
        try:
            plan = QueryPlan.from_json(rec.plan_json)
            key = PublicKey.from_bytes(rec.public_key, min_bits=MIN_KEY_BITS)
            inputs = query_pb2.SubmitQueryRequest.FromString(rec.inputs)
            for _ in range(CONSENT_READS):
                # A consent dataset: the purpose and this instant bound, the valid consent set
                # read and digested (every scan below filters on the same terms).
                ds, subjects = self.consent_bound(self.dataset(plan.dataset), rec.purpose)
                # The ciphertexts' randomness, made during the scan (what the stock lacks).
                randomness = Randomness(plan, ds, key, obfuscation=self.obfuscation)
                try:
                    with self.metrics.engine(ds.format):
                        stats = self.engine.aggregate(plan, ds)
                finally:
                    randomness.stop()
                specs = encrypted_input.validate(list(inputs.weighted_sums), plan, ds, key)
                weighted = []
                for s in specs:
                    with self.metrics.engine(ds.format):
                        weighted.append((s, self.engine.aggregate(encrypted_input.statistics_plan(plan, s), ds)))
                # DP noise on every statistic (sub-cells included), or exact mode's dominance rule,
                # before anything is encrypted.
                epsilon = self.disclosure.epsilon(ds, inputs.epsilon)
                prepared = self.disclosure.prepare(plan, ds, stats, weighted, epsilon)
                if self.consent_unchanged(ds):
                    break
            else:
                raise Unavailable("the consent table changed during every attempt to compute this query; try "
                                  "again when consent updates pause", reason="CONSENT_SOURCE_CHANGING")
            now = Timestamp()
            now.GetCurrentTime()
            certificate = self.certificate_id(ds.name)
            scanned = self.approximate_rows(ds)  # the catalog's rounding: the log holds no exact count

            def release(r: QueryRecord) -> None:
                self.replicas.check_owner(r.id, run[0])  # a replica presumed dead releases nothing
                # Revocation reaches every query not yet released: check the grant in the
                # release's own transaction (a revoke commits before or after, never between).
                grant = self.steward.grants.grant_of(r.id)
                problem = grant.problem(now_us()) if grant is not None else None
                if problem is not None:
                    raise PermissionDenied(problem[1], reason=problem[0])
                # The ε debits (or exact mode's history) and the ledger commit iff the result is
                # released (raises if a budget is spent).
                self.disclosure.released(r, plan, ds, prepared=prepared, audited=audited, counters=counters,
                                         rows=scanned,
                                         ciphertexts=len(result.cells.ciphertexts) + len(result.weighted_cells))
                self.audit.released(r, result, counters, rows_scanned_approx=scanned,
                                    exact_cells=None if ds.disclosure.dp else audited.cell_flags)
                if ds.consent_scope is not None:  # what a subject statement answers from
                    self.subjects.record_release(r.id, ds.name, r.purpose, ds.consent_scope.snapshot, subjects,
                                                 result.result_digest)

            # Exact mode: the history audit under the dataset's lock, held until the release commits.
            with self.disclosure.releasing(rec, plan, ds, stats, prepared, certificate=certificate) as audited:
                with self.metrics.crypto("encrypt_result") as made:  # packing and encryption under the key
                    result, counters = build_result(rec.resource_name, plan, ds, stats, key, now=now,
                                                    weighted=prepared.weighted,
                                                    suppress=audited.suppress | prepared.dominated,
                                                    zero=audited.zero | prepared.zero, obfuscation=self.obfuscation,
                                                    dp=prepared.dp)
                    made(len(result.cells.ciphertexts) + len(result.weighted_cells))
                result.certificate_id = certificate
                result.consent_snapshot = ds.consent_scope.snapshot if ds.consent_scope is not None else ""
                result.result_digest = result_digest(result)
                self._move(
                    query_id, QueryState.SUCCEEDED, "RESULT_RELEASED",
                    f"{counters['groups_released']} groups released, {counters['groups_suppressed']} suppressed",
                    expect=[QueryState.RUNNING],
                    result=(result.SerializeToString(deterministic=True), result.result_digest),
                    # No release without its entry: if the append fails, the query fails unreleased.
                    write_ahead=release,
                )
            self.metrics.released(ds.name, len(result.cells.ciphertexts) + len(result.weighted_cells), epsilon)
            # The analyst's next result under this key finds its randomness made while idle.
            self.refill.request(key, len(result.cells.ciphertexts) + len(result.weighted_cells), self.obfuscation)
        except VeilError as e:
            if e.private:
                log.warning("query %s failed: %s (%s)", query_id, e.reason, e.private)
            if e.reason == "RUN_SUPERSEDED":
                return  # the replica that took the run over finishes it
            # A structural refusal found at release counts too.
            if e.reason in ("EXACT_TABLE_OVERLAPS", "EXACT_CONSENT_CHANGED"):
                self.disclosure.refused(rec.principal, e, dataset=rec.dataset, purpose=rec.purpose, query_id=query_id)
            self._fail(query_id, e.reason, e.message, run[0])
        except Exception:
            log.exception("query %s failed", query_id)
            self._fail(query_id, "EXECUTION_FAILED", "the query could not be computed; the operator has the details",
                       run[0])

    def consent_bound(self, ds: Dataset, purpose: str) -> tuple[Dataset, list[str]]:
        """``ds`` with its consent scope bound (purpose, now, and the valid set's digest) and the
        consenting subject ids, if its basis is consent; other datasets unchanged, no subjects.
        Raises CONSENT_SOURCE_UNAVAILABLE."""
        if not ds.needs_consent:
            return ds, []
        scope = now_scope(purpose)
        engine: Any = self.engine
        subjects = engine.consent_subjects(dataclasses.replace(ds, consent_scope=scope))
        scope = dataclasses.replace(scope, snapshot=snapshot_digest(purpose, subjects, self.consent_key))
        return dataclasses.replace(ds, consent_scope=scope), subjects

    def consent_unchanged(self, ds: Dataset) -> bool:
        """After the scans: whether the consent set they read is still the digested one (the
        digest then describes exactly the rows the result was computed on)."""
        scope = ds.consent_scope
        if scope is None:
            return True
        engine: Any = self.engine
        # The records were checked by the first read; a change since gives another digest (and a
        # new first read, checked again), so the re-read skips the check.
        subjects = engine.consent_subjects(ds, validate=False)
        return snapshot_digest(scope.purpose, subjects, self.consent_key) == scope.snapshot

    def subject_statement(self, principal: Principal, dataset: str, subject: str, purpose: str,
                          code: str = "") -> tuple[bytes, str]:
        """A signed statement of the releases of ``dataset`` whose consent snapshot included
        ``subject`` (governance.subject_statements): rate-limited per agent, logged with the
        subject hashed."""
        self.subjects.admit(principal.name)
        ds = self.dataset(dataset)
        try:
            check_subject_code(self.consent_key, ds.name, subject, code)  # the agent acts for this subject
        except VeilError as e:
            self.audit.admin("subject.statement.refused", principal.name, dataset=ds.name,
                             details={"subject_hmac": subject_hash(subject, self.consent_key), "reason": e.reason})
            raise
        self.audit.admin("subject.statement", principal.name, dataset=ds.name,
                         details={"subject_hmac": subject_hash(subject, self.consent_key), "purpose": purpose[:200]})
        return self.subjects.statement(dataset=ds.name, consent_dataset=ds.needs_consent, subject=subject,
                                       purpose=purpose, node_id=self.config.name, key=self.audit.key)

    def _fail(self, query_id: str, reason: str, message: str, run_id: str) -> None:
        def record(r: QueryRecord) -> None:
            self.replicas.check_owner(r.id, run_id)
            # A query that ran and failed is charged as if released: whether it fails must not be
            # a free answer about the data (no failure should depend on it; this is the backstop).
            self.disclosure.failed(r, self.catalog.get(r.dataset), reason)
            self.audit.failed(r, reason)

        try:
            self._move(query_id, QueryState.FAILED, reason, message, expect=[QueryState.RUNNING],
                       write_ahead=record)
        except VeilError:
            pass  # cancelled meanwhile: the cancellation stands


@functools.lru_cache(maxsize=256)
def _certified_rows(certificate: bytes) -> int:
    return DatasetCertificate.from_json(certificate).row_count


@functools.lru_cache(maxsize=256)
def _certificate_id(certificate: bytes) -> str:
    """SHA-256 of a certificate's signed bytes (a certificate never changes: cached by content)."""
    return hashlib.sha256(DatasetCertificate.from_json(certificate).signed_bytes()).hexdigest()


def _bare(name: str) -> str:
    return name.removeprefix("queries/")


def decode_result(data: bytes) -> query_pb2.QueryResult:
    r = query_pb2.QueryResult()
    r.ParseFromString(data)
    return r
