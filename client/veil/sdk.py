"""The analyst's SDK: ``with veil.connect(target, token=...) as node: node.query(sql, purpose=...)``.

The SDK keeps the analyst's Paillier keys (``veil.keys``), sends only the public key with each
query and decrypts results locally. Submission is idempotent: the SDK picks a request id once
and retries transient failures with it, so a retry never creates a second query.
"""

from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

from .connection import DEFAULT_TARGET, Connection
from .errors import IntegrityError, QueryFailed, Timeout, VeilError
from .quality import quality_dict
from .v1 import audit_pb2, catalog_pb2, catalog_pb2_grpc, query_pb2, query_pb2_grpc
from .weights import WeightedSum, encrypt_all

# What only some calls need loads on their first use, so that `import veil` stays about as cheap
# as importing gRPC: pandas (results), the crypto layer (keys, decryption), signature checks
# (receipts), and the owner's and auditor's APIs.
if TYPE_CHECKING:
    import pandas as pd

    from .audit.records import Receipt
    from .auditor import AuditAPI
    from .stewardship import GovernanceAPI, ReviewAPI
_CONTROLS = {v: k.removeprefix("COLUMN_CONTROL_").lower() for k, v in catalog_pb2.ColumnControl.items()}
_TYPES = {v: k.removeprefix("COLUMN_TYPE_").lower() for k, v in catalog_pb2.ColumnType.items()}


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str
    controls: tuple[str, ...]
    description: str = ""
    categories: tuple[str, ...] = ()
    range: tuple[str, str] | None = None
    scale: int = 0
    bin_width: str | None = None


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    columns: tuple[ColumnInfo, ...]
    purposes: tuple[str, ...]
    min_group_size: int
    max_groups: int
    approximate_row_count: int
    state: str = "LISTED"
    version: int = 0
    classification: str = ""
    certificate_id: str = ""
    disclosure_mode: str = ""  # "dp" (differential privacy) or "exact"
    epsilon_per_query: float = 0.0  # DP: the default ε of a query...
    max_epsilon_per_query: float = 0.0  # ...and the most one may ask for
    exact_reason: str = ""  # exact: the owner's recorded reason
    basis: str = ""  # the lawful basis the certificate states ("consent", "contract", ...)
    # The quality profile the certificate states (veil.quality.quality_dict: rows, mode, columns, ...)
    quality: dict = field(default_factory=dict, compare=False)

    @classmethod
    def from_proto(cls, d: catalog_pb2.Dataset) -> "DatasetInfo":
        return cls(
            name=d.name.removeprefix("datasets/"),
            description=d.description,
            columns=tuple(
                ColumnInfo(
                    name=c.name, type=_TYPES[c.type], controls=tuple(_CONTROLS[x] for x in c.controls),
                    description=c.description, categories=tuple(c.categories),
                    range=(c.range_low, c.range_high) if c.range_low or c.range_high else None,
                    scale=c.scale, bin_width=c.bin_width or None,
                )
                for c in d.columns
            ),
            purposes=tuple(d.purposes),
            min_group_size=d.min_group_size,
            max_groups=d.max_groups,
            approximate_row_count=d.approximate_row_count,
            state=d.state or "LISTED",
            version=d.version,
            classification=d.classification,
            certificate_id=d.certificate_id,
            disclosure_mode=d.disclosure_mode,
            epsilon_per_query=d.epsilon_per_query,
            max_epsilon_per_query=d.max_epsilon_per_query,
            exact_reason=d.exact_reason,
            basis=d.basis,
            quality=quality_dict(d.quality) if d.HasField("quality") else {},
        )

    def columns_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(
            [{"column": c.name, "type": c.type, "controls": ",".join(c.controls),
              "domain": ",".join(c.categories) or (f"bins of {c.bin_width}" if c.bin_width else ""),
              "range": f"[{c.range[0]}, {c.range[1]}]" if c.range else ""} for c in self.columns]
        )


@dataclass(frozen=True)
class QueryInfo:
    name: str
    state: str
    state_reason: str
    state_message: str
    dataset: str
    purpose: str
    sql: str
    canonical_sql: str
    history: tuple[tuple[str, str, str], ...] = field(default=())

    @property
    def id(self) -> str:
        return self.name.removeprefix("queries/")

    @property
    def finished(self) -> bool:
        return self.state in ("SUCCEEDED", "FAILED", "REJECTED", "CANCELLED", "EXPIRED")

    @classmethod
    def from_proto(cls, q: query_pb2.Query) -> "QueryInfo":
        st = query_pb2.QueryState.Name
        return cls(
            name=q.name, state=st(q.state).removeprefix("QUERY_STATE_"), state_reason=q.state_reason,
            state_message=q.state_message, dataset=q.dataset.removeprefix("datasets/"), purpose=q.purpose,
            sql=q.sql, canonical_sql=q.canonical_sql,
            history=tuple((st(h.to_state).removeprefix("QUERY_STATE_"), h.reason, h.message) for h in q.history),
        )


class Node(Connection):
    """A connection to one Veil node, as one principal."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        verify_receipts: bool = True,
        witnesses: Sequence[str] = (),
        witness_quorum: int | None = None,
        crypto_workers: int | None = None,
        crypto_executor: Executor | None = None,
        **connection,
    ) -> None:
        """``crypto_workers``: how many ciphertexts decrypt at once. By default every CPU, on
        threads of this process, where decryption runs outside the GIL (OpenSSL's constant-time
        routine, ``veil.crypto.consttime``, the usual case), else 1. Without OpenSSL's routine,
        ``crypto_workers > 1`` decrypts in that many spawned processes, so the script needs the
        ``if __name__ == "__main__":`` guard. ``crypto_executor`` (any ``concurrent.futures.Executor``, e.g.
        ``veil.crypto.cluster.connect(...)``) decrypts there instead: it receives the private key's
        p and q, so only an executor inside the analyst's own domain (``veil.crypto.pool``).

        ``node_key``: the node's Ed25519 public key (PEM or raw), to verify receipts against;
        by default the key pinned for ``target`` in ``VEIL_HOME/known_nodes``, fetched and pinned
        on first use. ``verify_receipts=False`` skips receipt checks (not recommended).

        ``witnesses``: verifier keys (C2SP vkey text, ``veil witness key`` prints one) of the
        witnesses this analyst trusts; a receipt's checkpoint must carry cosignatures of at
        least ``witness_quorum`` of them (default: all of them), else the result is refused
        (``IntegrityError``, ``WITNESS_QUORUM_NOT_MET``). Default from ``VEIL_WITNESSES``
        (comma-separated) and ``VEIL_WITNESS_QUORUM``.

        The other keywords open the connection (:class:`veil.connection.Connection`): ``token``,
        ``ca``, ``cert``, ``key``, ``server_name``, ``insecure``, ``home`` (``VEIL_HOME``),
        ``key_bits``, ``timeout``, ``retries``, ``channel``, ``node_key``."""
        super().__init__(target, **connection)
        from .receipts import witness_policy

        self._catalog = catalog_pb2_grpc.CatalogServiceStub(self._channel)
        self._queries = query_pb2_grpc.QueryServiceStub(self._channel)
        self._crypto_workers = None if crypto_workers is None else max(1, int(crypto_workers))
        self._crypto_executor = crypto_executor
        self._verify_receipts = verify_receipts
        self._witnesses, self._witness_quorum = witness_policy(witnesses, witness_quorum)

    # -- catalog --------------------------------------------------------------------------

    def datasets(self) -> list[DatasetInfo]:
        out, token = [], ""
        while True:
            resp = self._call(self._catalog.ListDatasets, catalog_pb2.ListDatasetsRequest(page_token=token),
                              retry=True)
            out += [DatasetInfo.from_proto(d) for d in resp.datasets]
            token = resp.next_page_token
            if not token:
                return out

    def dataset(self, name: str) -> DatasetInfo:
        return DatasetInfo.from_proto(
            self._call(self._catalog.GetDataset, catalog_pb2.GetDatasetRequest(name=_ds(name)), retry=True)
        )

    # -- queries --------------------------------------------------------------------------

    def submit(self, sql: str, *, purpose: str, request_id: str | None = None,
               weighted_sums: Sequence[WeightedSum] = (), epsilon: float | None = None) -> QueryInfo:
        """Submit without waiting; safe to retry (one request id for every attempt).

        ``weighted_sums`` add encrypted-input columns (see :class:`veil.WeightedSum`): the weights
        are encrypted here, under your key, and the node never reads them. ``epsilon``: on a DP
        dataset, the ε to spend (default: the dataset's; see :meth:`explain` for what it buys)."""
        pk, _ = self.keys
        req = query_pb2.SubmitQueryRequest(
            sql=sql, purpose=purpose, request_id=request_id or str(uuid.uuid4()),
            public_key=query_pb2.PaillierPublicKey(n=pk.to_bytes()),
            weighted_sums=encrypt_all(weighted_sums, pk), epsilon=epsilon or 0.0,
        )
        return QueryInfo.from_proto(self._call(self._queries.SubmitQuery, req, retry=True))

    def get(self, query: str) -> QueryInfo:
        return QueryInfo.from_proto(
            self._call(self._queries.GetQuery, query_pb2.GetQueryRequest(name=_q(query)), retry=True)
        )

    def queries(self, *, limit: int = 100) -> list[QueryInfo]:
        out: list[QueryInfo] = []
        token = ""
        while len(out) < limit:
            resp = self._call(self._queries.ListQueries,
                              query_pb2.ListQueriesRequest(page_size=min(500, limit - len(out)), page_token=token),
                              retry=True)
            out += [QueryInfo.from_proto(q) for q in resp.queries]
            token = resp.next_page_token
            if not token:
                break
        return out

    def cancel(self, query: str) -> QueryInfo:
        return QueryInfo.from_proto(
            self._call(self._queries.CancelQuery, query_pb2.CancelQueryRequest(name=_q(query)), retry=True)
        )

    def result(self, query: str, *, exact: bool = False, _info: QueryInfo | None = None) -> pd.DataFrame:
        """Fetch the result of a SUCCEEDED query, check its receipt, decrypt it.

        Raises :class:`veil.IntegrityError` if the receipt does not prove this result's release."""
        from .receipts import check_receipt, receipt_from_proto
        from .results import to_frame

        receipt_request = audit_pb2.GetReceiptRequest(name=_q(query))
        # The receipt is fetched while the result streams in and is decrypted (decryption is
        # local); nothing is returned, and no decryption error reported, before the receipt is
        # checked.
        pending = self._start(self._audit.GetReceipt, receipt_request) if self._verify_receipts else None
        try:
            res, raw = self._stream_result(query)
        except BaseException:
            if pending is not None:
                pending.cancel()
            raise
        try:
            frame, failure = to_frame(res, self.keys[1], exact=exact, workers=self._decrypt_workers(),
                                      executor=self._crypto_executor, raw_cells=raw), None
        except Exception as e:  # reported after the receipt check, as if decrypted after it
            frame, failure = None, e
        if self._verify_receipts:
            info = _info or self.get(query)
            try:
                receipt = receipt_from_proto(self._finish(pending, self._audit.GetReceipt, receipt_request))
            except VeilError as e:
                if e.reason != "RECEIPT_MISSING":
                    raise
                raise IntegrityError("the node released this result without logging it", reason=e.reason) from None
            check_receipt(receipt, self.node_key(), query_id=info.id, result=res, canonical_sql=info.canonical_sql,
                          witnesses=self._witnesses, quorum=self._witness_quorum)
        if failure is not None:
            raise failure
        return frame

    def _stream_result(self, query: str) -> tuple[query_pb2.QueryResult, list[int] | None]:
        """The result through StreamQueryResult, its packed ciphertexts decrypted chunk by chunk
        on every core while the rest arrives (when OpenSSL's constant-time routine lets threads run
        in parallel and no executor is set); the plaintexts are checked against the result's
        digest and shape before anything is returned. A node without the stream (UNIMPLEMENTED)
        answers through GetQueryResult. Transient failures restart the stream."""
        from concurrent.futures import ThreadPoolExecutor

        import grpc

        from .connection import _RETRYABLE
        from .crypto import Ciphertext, consttime
        from .errors import Unavailable, from_rpc_error
        from .results import assemble_stream

        sk = self.keys[1]
        pk = sk.public_key
        workers = self._decrypt_workers()
        pipelined = self._crypto_executor is None and workers > 1 and consttime.backend() == "openssl"
        request = query_pb2.StreamQueryResultRequest(name=_q(query))
        for attempt in range(self._retries + 1):
            pool = ThreadPoolExecutor(workers, thread_name_prefix="veil-decrypt") if pipelined else None
            futures: list = []
            broken: list[Exception] = []

            def on_cells(blobs: list[bytes]) -> None:
                if broken:
                    return
                try:
                    cts = [Ciphertext.from_bytes(pk, b) for b in blobs]
                except Exception as e:  # noqa: BLE001 -- reported by the ordinary path, after the receipt
                    broken.append(e)
                    return
                futures.append(pool.submit(sk.decrypt_raw_many, cts, workers=1))

            try:
                chunks = self._queries.StreamQueryResult(request, metadata=self._metadata(), timeout=self._timeout)
                res = assemble_stream(chunks, on_cells if pool is not None else None)
                raw = None
                if pool is not None and not broken:
                    try:
                        raw = [m for f in futures for m in f.result()]
                    except Exception:  # noqa: BLE001 -- decrypted again, and reported, after the receipt
                        raw = None
                return res, raw
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                    legacy = query_pb2.GetQueryResultRequest(name=_q(query))
                    return self._call(self._queries.GetQueryResult, legacy, retry=True), None
                if e.code() in _RETRYABLE and attempt < self._retries:
                    time.sleep(min(2.0, 0.1 * 2**attempt))
                    continue
                raise from_rpc_error(e) from None
            finally:
                if pool is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
        raise Unavailable("unreachable")  # pragma: no cover

    # -- receipts -----------------------------------------------------------------------

    def _decrypt_workers(self) -> int:
        if self._crypto_workers is None:
            from .crypto import consttime
            from .crypto.pool import available_cpus

            self._crypto_workers = available_cpus() if consttime.backend() == "openssl" else 1
        return self._crypto_workers

    def receipt(self, query: str, *, verify: bool = True) -> Receipt:
        """The signed receipt of a released result (``veil.audit.Receipt``; save it with
        ``json.dumps(r.to_json())``). Checked against the node key unless ``verify=False``."""
        from .receipts import check_receipt, receipt_from_proto

        r = receipt_from_proto(self._call(self._audit.GetReceipt, audit_pb2.GetReceiptRequest(name=_q(query)),
                                          retry=True))
        if verify:
            check_receipt(r, self.node_key(), query_id=_q(query), witnesses=self._witnesses,
                          quorum=self._witness_quorum)
        return r

    @property
    def audit(self) -> AuditAPI:
        """Auditor calls: events, export, checkpoints, consistency (auditor tokens only)."""
        from .auditor import AuditAPI

        return AuditAPI(self)

    @property
    def governance(self) -> GovernanceAPI:
        """Owner and reviewer calls: register and list datasets, certificates, grants."""
        from .stewardship import GovernanceAPI

        return GovernanceAPI(self)

    @property
    def review(self) -> ReviewAPI:
        """Owner calls: queries awaiting approval; approve or reject them with a reason."""
        from .stewardship import ReviewAPI

        return ReviewAPI(self)

    def explain(self, sql: str, *, purpose: str, epsilon: float | None = None) -> dict:
        """What policy would decide for this query (nothing is recorded, run or spent): outcome
        (AUTO_APPROVE, REVIEW or REJECT), reason, message, the rules that fired, the grant; on a
        DP dataset the ε it would spend and, per aggregate column, the noise and the 95 % error
        bound of its cells at that ε (``accuracy``)."""
        e = self._call(self._queries.ExplainQuery,
                       query_pb2.ExplainQueryRequest(sql=sql, purpose=purpose, epsilon=epsilon or 0.0), retry=True)
        return {"outcome": query_pb2.QueryExplanation.Outcome.Name(e.outcome).removeprefix("OUTCOME_"),
                "reason": e.reason, "message": e.message, "rules": [(r.rule, r.message) for r in e.rules],
                "canonical_sql": e.canonical_sql, "columns": list(e.columns_touched),
                "expected_groups": e.expected_groups, "grant": e.grant,
                "approvals_required": e.approvals_required, "certificate_id": e.certificate_id,
                "epsilon_cost": e.epsilon_cost, "budget_remaining": e.budget_remaining,
                "dataset_budget_remaining": e.dataset_budget_remaining, "disclosure_mode": e.disclosure_mode,
                "max_epsilon_per_query": e.max_epsilon_per_query,
                "accuracy": [_noise_dict(a) for a in e.accuracy]}

    def wait(self, query: str, *, timeout: float | None = 300.0, exact: bool = False,
             progress: Callable[[QueryInfo], None] | None = None) -> pd.DataFrame:
        """Wait until the query finishes; return its decrypted result or raise QueryFailed.
        ``progress(info)`` is called about once a second while it is unfinished."""
        info = self._wait_finished(query, timeout, progress)
        if info.state != "SUCCEEDED":
            raise QueryFailed(f"query {info.id} is {info.state}: {info.state_message}",
                              state=info.state, reason=info.state_reason)
        return self.result(info.name, exact=exact, _info=info)

    def _wait_finished(self, query: str, timeout: float | None,
                       progress: Callable[[QueryInfo], None] | None = None) -> QueryInfo:
        """Server-side waiting (WaitQuery) in slices of at most 30 s: no polling. With
        ``progress`` (the CLI on a terminal), slices of 1 s, and ``progress(info)`` after each."""
        deadline = None if timeout is None else time.monotonic() + timeout
        slice_s = 1.0 if progress is not None else 30.0
        while True:
            left = slice_s if deadline is None else max(0.0, min(slice_s, deadline - time.monotonic()))
            req = query_pb2.WaitQueryRequest(name=_q(query))
            req.timeout.FromNanoseconds(int(left * 1e9))
            info = QueryInfo.from_proto(self._call(self._queries.WaitQuery, req, retry=True,
                                                   timeout=left + self._timeout))
            if info.finished:
                return info
            if progress is not None:
                progress(info)
            if deadline is not None and time.monotonic() >= deadline:
                raise Timeout(f"query {info.id} is still {info.state} after {timeout} s; "
                              f"wait again or check it with get()", reason="WAIT_TIMEOUT")

    def query(self, sql: str, *, purpose: str, timeout: float | None = 300.0, exact: bool = False,
              weighted_sums: Sequence[WeightedSum] = (), epsilon: float | None = None) -> pd.DataFrame:
        """Submit, wait and decrypt: the result as a DataFrame (group keys, aggregates, suppressed).

        On a DP dataset ``df.attrs`` holds ``disclosure`` ("dp"), ``epsilon`` and, per aggregate
        column, ``noise`` (scales, standard deviation and 95 % error bound; see veil.accuracy)."""
        info = self.submit(sql, purpose=purpose, weighted_sums=weighted_sums, epsilon=epsilon)
        return self.wait(info.name, timeout=timeout, exact=exact)

    # -- federation (issue 6): see veil.federation ------------------------------------------

    def federated_query(self, sql: str, *, purpose: str, protocol: str = "paillier",
                        compute_parties: Sequence[str] = (), exact: bool = False,
                        timeout: float = 120.0, epsilon: float | None = None) -> pd.DataFrame:
        """Run ``sql`` over a federated dataset with this node as coordinator; decrypt the total.

        ``protocol`` is ``"paillier"`` or ``"sharing"`` (``compute_parties``: sharing only,
        default every member). Every member noises its own part (differential privacy) and
        charges ``epsilon`` (default: the members' common default) to its own budgets; the
        frame's ``attrs["noise"]`` says how much noise each column carries. Raises
        ``veil.federation.FederationFailed`` naming the member that refused or could not be
        reached; nothing is released then."""
        from . import federation

        result = federation.run(self, sql, purpose=purpose, protocol=protocol, compute_parties=compute_parties,
                                timeout=timeout, epsilon=epsilon)
        return federation.to_frame(result, self.keys[1], exact=exact, workers=self._decrypt_workers(),
                                   executor=self._crypto_executor)

    # -- issue 4: privacy budget and metered use --------------------------------------------

    def fit(self, formula: str, *, dataset: str, purpose: str, family: str = "gaussian",
            epsilon: float | None = None, tol: float = 1e-10, max_iter: int | None = None):
        """Fit a regression inside the node (issue 18) and return a statsmodels-like result
        (:class:`veil.models.RegressionResults`: params, bse, conf_int(), nobs, summary()).

        ``formula``: ``"y ~ a + b + C(g)"``; ``family``: ``"gaussian"`` (OLS, one release) or
        ``"binomial"`` (logistic regression by Newton steps, one release each) or ``"poisson"`` (log
        link, the same Newton steps; the mean is clipped to the response's declared maximum). On a DP dataset
        every release spends ``epsilon`` (default: the dataset's) and a logistic fit takes
        ``max_iter`` Newton steps (default 6; exact data: until the step is below ``tol``, at most
        the node's cap); a budget that runs out stops
        the fit with :class:`veil.QuotaExceeded` (reason ``PRIVACY_BUDGET_EXHAUSTED``) naming the iteration."""
        from .models import fit
        from .v1 import model_pb2, model_pb2_grpc

        pk, sk = self.keys
        stub = model_pb2_grpc.ModelServiceStub(self._channel)

        def request_of(fit_id: str, iteration: int, coefficients: list[float]):
            return model_pb2.ComputeModelStatisticsRequest(
                dataset=_ds(dataset), formula=formula, family=family, purpose=purpose,
                public_key=query_pb2.PaillierPublicKey(n=pk.to_bytes()), fit_id=fit_id, iteration=iteration,
                coefficients=coefficients, epsilon=epsilon or 0.0)

        def check(request, msg):
            """The final release's receipt: in the node's log, as released, for this model."""
            if not self._verify_receipts or not msg.release:
                return None
            from .models import model_digest
            from .receipts import check_receipt, receipt_from_proto

            receipt = receipt_from_proto(self._call(stub.GetModelReceipt, model_pb2.GetModelReceiptRequest(
                release=msg.release), retry=True))
            check_receipt(receipt, self.node_key(), query_id=msg.release, witnesses=self._witnesses,
                          quorum=self._witness_quorum)
            coefficients = list(request.coefficients) or ([0.0] * len(msg.terms) if family != "gaussian" else [])
            asked = model_digest(dataset, formula, family, coefficients, request.iteration, request.fit_id,
                                 pk.fingerprint())
            if receipt.result_digest.hex() != msg.release_digest or receipt.query_digest.hex() != asked:
                raise IntegrityError("the receipt does not prove the release of this model's statistics",
                                     reason="RECEIPT_MISMATCH")
            return receipt

        # Not retried: each call is a release that is charged (a retry would pay twice).
        return fit(lambda req: self._call(stub.ComputeModelStatistics, req), sk, request_of, formula=formula,
                   dataset=_ds(dataset), family=family, tol=tol, max_iter=max_iter, check=check)

    def model_releases(self, dataset: str = "") -> list[dict]:
        """Owners, admins and auditors: every model release logged on ``dataset`` (owners: one
        they own) -- who fitted what (formula, terms, family, iteration, ε, when), never a value."""
        from google.protobuf.json_format import MessageToDict

        from .v1 import model_pb2, model_pb2_grpc

        stub = model_pb2_grpc.ModelServiceStub(self._channel)
        out, token = [], ""
        while True:
            resp = self._call(stub.ListModelReleases, model_pb2.ListModelReleasesRequest(
                dataset=_ds(dataset) if dataset else "", page_token=token), retry=True)
            out += [MessageToDict(r, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
                    for r in resp.releases]
            token = resp.next_page_token
            if not token:
                return out

    def model_reviews(self, dataset: str = "", *, state: str = "pending") -> list[dict]:
        """Owners (and admins): the models waiting for a decision on ``dataset`` (empty: every
        dataset you own) -- who asked, formula, terms, family, purpose, approvals so far;
        ``state`` "pending" (default), "approved", "rejected" or "all". Never a value."""
        from google.protobuf.json_format import MessageToDict

        from .v1 import model_pb2, model_pb2_grpc

        stub = model_pb2_grpc.ModelServiceStub(self._channel)
        resp = self._call(stub.ListModelReviews, model_pb2.ListModelReviewsRequest(
            dataset=_ds(dataset) if dataset else "", state=state), retry=True)
        return [MessageToDict(r, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
                for r in resp.reviews]

    def approve_model(self, review: str, *, reason: str = "") -> dict:
        """Owners: approve a model review (``modelReviews/ID`` or ``ID``); once the policy's
        number of owners approved, the analyst's fits of that model run."""
        return self._decide_model(review, reason, approve=True)

    def reject_model(self, review: str, *, reason: str) -> dict:
        """Owners: reject a model review with a reason the analyst is told."""
        return self._decide_model(review, reason, approve=False)

    def _decide_model(self, review: str, reason: str, *, approve: bool) -> dict:
        from google.protobuf.json_format import MessageToDict

        from .v1 import model_pb2, model_pb2_grpc

        stub = model_pb2_grpc.ModelServiceStub(self._channel)
        name = review if review.startswith("modelReviews/") else f"modelReviews/{review}"
        call = stub.ApproveModel if approve else stub.RejectModel
        out = self._call(call, model_pb2.ReviewModelRequest(name=name, reason=reason))
        return MessageToDict(out, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)

    def budget(self, dataset: str, *, purpose: str = ""):
        """The caller's ε budget on ``dataset`` (``veil.usage.Budget``; dp_enabled False without DP)."""
        from .usage import Budget

        return Budget.from_proto(self._call(self._queries.GetBudget,
                                            query_pb2.GetBudgetRequest(dataset=_ds(dataset), purpose=purpose),
                                            retry=True))

    def usage(self, *, since=None, until=None, dataset: str = "") -> list:
        """Metered use over [since, until) (datetimes), one ``veil.usage.UsageRow`` per
        principal x dataset x purpose the caller may see."""
        from .usage import UsageRow

        req = query_pb2.GetUsageReportRequest(dataset=_ds(dataset) if dataset else "")
        if since is not None:
            req.start_time.FromDatetime(since)
        if until is not None:
            req.end_time.FromDatetime(until)
        return [UsageRow.from_proto(r) for r in self._call(self._queries.GetUsageReport, req, retry=True).rows]


def connect(target: str | None = None, *, token: str | None = None, **kwargs) -> Node:
    """Open a connection: ``with veil.connect("host:port", token=...) as node: ...``.

    ``target`` defaults to ``VEIL_TARGET`` or 127.0.0.1:50051; ``token`` to ``VEIL_TOKEN``.
    ``ca``, ``cert``, ``key`` (PEM bytes or file paths; ``VEIL_CA``, ``VEIL_CERT``, ``VEIL_KEY``)
    choose TLS and a client certificate: see :mod:`veil.transport`.
    """
    return Node(target or os.environ.get("VEIL_TARGET") or DEFAULT_TARGET, token=token, **kwargs)


def _ds(name: str) -> str:
    return name if name.startswith("datasets/") else f"datasets/{name}"


def _q(name: str) -> str:
    return name if name.startswith("queries/") else f"queries/{name}"


__all__ = ["Node", "connect", "DatasetInfo", "ColumnInfo", "QueryInfo", "VeilError"]


def _noise_dict(noise) -> dict:
    from .results import noise_dict

    return noise_dict(noise)
