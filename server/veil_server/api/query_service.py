"""gRPC adapters: translate the request, call the node, translate the answer. Nothing else.

Authentication, authorisation and error mapping happen in :mod:`veil_server.access.auth`'s
interceptor; every method here runs with an authenticated, authorised principal.
"""

from __future__ import annotations

import base64

from google.protobuf.timestamp_pb2 import Timestamp

from veil.v1 import catalog_pb2, catalog_pb2_grpc, query_pb2, query_pb2_grpc

from ..access.auth import current_principal
from ..query.catalog import ColumnControl, ColumnType, Dataset
from ..errors import InvalidArgument, VeilError
from ..node import Node
from ..state.store import QueryRecord
from veil.certificates import DatasetCertificate
from ..governance.quality import quality_proto

DEFAULT_PAGE = 50
MAX_PAGE = 500
MAX_WAIT = 60.0

_CONTROL = {
    ColumnControl.HIDDEN: catalog_pb2.COLUMN_CONTROL_HIDDEN,
    ColumnControl.FILTER: catalog_pb2.COLUMN_CONTROL_FILTER,
    ColumnControl.GROUP: catalog_pb2.COLUMN_CONTROL_GROUP,
    ColumnControl.AGGREGATE: catalog_pb2.COLUMN_CONTROL_AGGREGATE,
    ColumnControl.PUBLIC: catalog_pb2.COLUMN_CONTROL_PUBLIC,
}
_TYPE = {
    ColumnType.INTEGER: catalog_pb2.COLUMN_TYPE_INTEGER,
    ColumnType.DECIMAL: catalog_pb2.COLUMN_TYPE_DECIMAL,
    ColumnType.TEXT: catalog_pb2.COLUMN_TYPE_TEXT,
}


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size must not be negative", reason="INVALID_PAGE_SIZE")
    return min(requested or DEFAULT_PAGE, MAX_PAGE)


def encode_token(kind: str, value: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode()


def decode_token(kind: str, token: str) -> int | None:
    if not token:
        return None
    try:
        k, _, v = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if k == kind and v.isdigit():
            return int(v)
    except (ValueError, UnicodeDecodeError):
        pass
    raise InvalidArgument("page_token is not one this node issued; pass next_page_token unchanged",
                          reason="INVALID_PAGE_TOKEN")


def _ts(us: int) -> Timestamp:
    t = Timestamp()
    t.FromMicroseconds(us)
    return t


def dataset_proto(node: Node, ds: Dataset) -> catalog_pb2.Dataset:
    out = catalog_pb2.Dataset(
        name=ds.resource_name,
        description=ds.description,
        purposes=sorted(ds.purposes),
        min_group_size=ds.min_group_size,
        max_groups=ds.max_groups,
        approximate_row_count=node.approximate_rows(ds),
        disclosure_mode=ds.disclosure.mode,
    )
    if ds.disclosure.dp:
        out.epsilon_per_query = ds.disclosure.epsilon_per_query
        out.max_epsilon_per_query = ds.disclosure.max_epsilon_per_query
    else:
        out.exact_reason = ds.disclosure.exact_reason
    for c in ds.visible_columns():
        col = out.columns.add(
            name=c.name,
            type=_TYPE[c.type],
            controls=sorted(_CONTROL[x] for x in c.controls),
            description=c.description,
            categories=[str(x) for x in c.categories],
            scale=c.scale,
            bin_width=str(c.bin_width) if c.bin_width is not None else "",
        )
        if c.value_range is not None:
            col.range_low, col.range_high = (str(v) for v in c.value_range)
    rec = node.steward.registry.serving(ds.name)
    if rec is not None:
        out.state, out.version = rec.state, rec.version
        out.classification = rec.governance.classification
        out.certificate_id = node.certificate_id(ds.name)
        if rec.certificate is not None:  # what the signed certificate states
            cert = DatasetCertificate.from_json(rec.certificate)
            out.basis = cert.basis
            if cert.quality:
                out.quality.CopyFrom(quality_proto(cert.quality))
    return out


def query_proto(node: Node, rec: QueryRecord) -> query_pb2.Query:
    q = query_pb2.Query(
        name=rec.resource_name,
        principal=rec.principal,
        dataset=f"datasets/{rec.dataset}",
        purpose=rec.purpose,
        sql=rec.sql,
        canonical_sql=rec.canonical_sql,
        plan_digest=rec.plan_digest,
        state=query_pb2.QueryState.Value(f"QUERY_STATE_{rec.state.value}"),
        state_reason=rec.state_reason,
        state_message=rec.state_message,
        create_time=_ts(rec.created_us),
        update_time=_ts(rec.updated_us),
        public_key_fingerprint=rec.key_fingerprint,
        request_id=rec.request_id,
        certificate_id=node.certificate_id(rec.dataset),
        epsilon=query_pb2.SubmitQueryRequest.FromString(rec.inputs).epsilon if rec.inputs else 0.0,
    )
    for t in node.store.history(rec.id):
        q.history.add(
            from_state=query_pb2.QueryState.Value(f"QUERY_STATE_{t.from_state.value}") if t.from_state else 0,
            to_state=query_pb2.QueryState.Value(f"QUERY_STATE_{t.to_state.value}"),
            reason=t.reason,
            message=t.message,
            time=_ts(t.at_us),
        )
    return q


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, node: Node) -> None:
        self.node = node

    def ListDatasets(self, request, context):
        size = page_size(request.page_size)
        start = decode_token("ds", request.page_token) or 0
        self.node.audit.catalog_read(current_principal(), "ListDatasets")  # no entry, no answer
        items = list(self.node.catalog)
        page = items[start : start + size]
        nxt = encode_token("ds", start + size) if start + size < len(items) else ""
        return catalog_pb2.ListDatasetsResponse(
            datasets=[dataset_proto(self.node, d) for d in page], next_page_token=nxt
        )

    def GetDataset(self, request, context):
        try:
            ds = self.node.dataset(request.name)
        except VeilError as e:  # probes for datasets that do not exist are worth an entry too
            self.node.audit.catalog_read(current_principal(), "GetDataset", request.name, error=e)
            raise
        self.node.audit.catalog_read(current_principal(), "GetDataset", ds.name)
        return dataset_proto(self.node, ds)


class QueryServicer(query_pb2_grpc.QueryServiceServicer):
    def __init__(self, node: Node) -> None:
        self.node = node

    def SubmitQuery(self, request, context):
        if not request.HasField("public_key"):
            raise InvalidArgument("public_key is required: the result is encrypted under it",
                                  reason="PUBLIC_KEY_REQUIRED")
        if not request.request_id:
            raise InvalidArgument("request_id is required (e.g. a UUID); it makes the submit safe to retry",
                                  reason="REQUEST_ID_REQUIRED")
        sub = self.node.submit(
            current_principal(),
            sql=request.sql,
            purpose=request.purpose,
            public_key=request.public_key.n,
            request_id=request.request_id,
            weighted_sums=list(request.weighted_sums),
            epsilon=request.epsilon,
        )
        return query_proto(self.node, sub.query)

    def GetQuery(self, request, context):
        return query_proto(self.node, self.node.get(current_principal(), request.name))

    def ListQueries(self, request, context):
        size = page_size(request.page_size)
        before = decode_token("q", request.page_token)
        principal = current_principal()
        recs = self.node.store.list_for(principal.name, page_size=size + 1, before_seq=before)
        nxt = encode_token("q", recs[size - 1].seq) if len(recs) > size else ""
        return query_pb2.ListQueriesResponse(
            queries=[query_proto(self.node, r) for r in recs[:size]], next_page_token=nxt
        )

    def WaitQuery(self, request, context):
        timeout = request.timeout.ToTimedelta().total_seconds() if request.HasField("timeout") else 10.0
        if timeout < 0:
            raise InvalidArgument("timeout must not be negative", reason="INVALID_TIMEOUT")
        remaining = context.time_remaining()
        timeout = min(timeout, MAX_WAIT, remaining if remaining is not None else MAX_WAIT)
        return query_proto(self.node, self.node.wait(current_principal(), request.name, timeout))

    def ExplainQuery(self, request, context):
        e = self.node.explain(current_principal(), sql=request.sql, purpose=request.purpose, epsilon=request.epsilon)
        return query_pb2.QueryExplanation(
            outcome=query_pb2.QueryExplanation.Outcome.Value(f"OUTCOME_{e['outcome']}"), reason=e["reason"],
            message=e["message"], rules=[query_pb2.RuleHit(rule=r, message=m) for r, m in e["rules"]],
            canonical_sql=e["canonical_sql"], columns_touched=e["columns"], expected_groups=e["groups"],
            grant=e["grant"], approvals_required=e["approvals"], certificate_id=e["certificate_id"],
            epsilon_cost=e["epsilon"], budget_remaining=e["budget_remaining"], disclosure_mode=e["disclosure_mode"],
            accuracy=[query_pb2.ColumnNoise(**a) for a in e["accuracy"]],
            dataset_budget_remaining=e["dataset_budget_remaining"], max_epsilon_per_query=e["max_epsilon"])

    def GetBudget(self, request, context):
        principal = current_principal()
        ds = self.node.dataset(request.dataset)
        b = self.node.disclosure.budget_state(principal.name, ds, request.purpose)
        out = query_pb2.PrivacyBudget(dataset=ds.resource_name, principal=principal.name,
                                      disclosure_mode=ds.disclosure.mode)
        if b is not None:
            out.purpose, out.dp_enabled, out.limit, out.spent, out.remaining = (
                b.purpose, True, b.limit, b.spent, b.remaining)
            out.dataset_limit, out.dataset_spent, out.dataset_remaining = (
                b.dataset_limit, b.dataset_spent, b.dataset_remaining)
            out.epsilon_per_query = ds.disclosure.epsilon_per_query
            out.max_epsilon_per_query = ds.disclosure.max_epsilon_per_query
        return out

    def GetUsageReport(self, request, context):
        from ..config import Role

        principal = current_principal()
        since = request.start_time.ToMicroseconds() if request.HasField("start_time") else 0
        until = request.end_time.ToMicroseconds() if request.HasField("end_time") else 0
        if until and until <= since:
            raise InvalidArgument("end_time must be after start_time", reason="INVALID_TIME_RANGE")
        who = principal.name if principal.role is Role.ANALYST else None
        datasets = None
        if principal.role is Role.OWNER:  # owners see the use of the datasets they own
            datasets = {d.name.lower() for d in self.node.catalog
                        if (rec := self.node.steward.registry.serving(d.name)) is not None
                        and rec.owned_by(principal.name)}
        if request.dataset:
            only = {self.node.dataset(request.dataset).name.lower()}
            datasets = only if datasets is None else datasets & only
        rows = self.node.disclosure.ledger.report(since_us=since, until_us=until, principal=who, datasets=datasets)
        out = query_pb2.UsageReport(
            rows=[query_pb2.UsageRow(principal=r.principal, dataset=f"datasets/{r.dataset}", purpose=r.purpose,
                                     queries_submitted=r.queries_submitted, queries_approved=r.queries_approved,
                                     queries_released=r.queries_released, rows_scanned=r.rows_scanned,
                                     cells_released=r.cells_released, cells_suppressed=r.cells_suppressed,
                                     epsilon_spent=r.epsilon_spent, ciphertexts=r.ciphertexts,
                                     queries_refused=r.queries_refused) for r in rows])
        if since:
            out.start_time.CopyFrom(_ts(since))
        if until:
            out.end_time.CopyFrom(_ts(until))
        return out

    def CancelQuery(self, request, context):
        return query_proto(self.node, self.node.cancel(current_principal(), request.name))

    def GetQueryResult(self, request, context):
        result = query_pb2.QueryResult()
        result.ParseFromString(self.node.result(current_principal(), request.name))
        return result

    def StreamQueryResult(self, request, context):
        # Node.result checks ownership and state before the first chunk; the stored result is
        # cut as it is, so the assembled result is byte for byte GetQueryResult's.
        size = request.chunk_ciphertexts or STREAM_CHUNK
        if not 0 < size <= MAX_STREAM_CHUNK:
            raise InvalidArgument(f"chunk_ciphertexts must be between 1 and {MAX_STREAM_CHUNK} (0: the node's "
                                  f"choice, {STREAM_CHUNK})", reason="INVALID_CHUNK_SIZE")
        result = query_pb2.QueryResult()
        result.ParseFromString(self.node.result(current_principal(), request.name))
        return _chunks(result, size)


# StreamQueryResult: 64 ciphertexts (32 KiB at 2048 bits) per chunk unless the client asks.
STREAM_CHUNK = 64
MAX_STREAM_CHUNK = 4096


def _chunks(result: query_pb2.QueryResult, size: int):
    sequence = list(result.cells.ciphertexts) + list(result.weighted_cells)
    header = query_pb2.QueryResult()
    header.CopyFrom(result)
    del header.cells.ciphertexts[:]
    del header.weighted_cells[:]
    first = query_pb2.QueryResultChunk(index=0, header=header, total_ciphertexts=len(result.cells.ciphertexts),
                                       total_weighted=len(result.weighted_cells), offset=0,
                                       ciphertexts=sequence[:size], last=len(sequence) <= size)
    yield first
    index = 1
    for offset in range(size, len(sequence), size):
        yield query_pb2.QueryResultChunk(index=index, offset=offset, ciphertexts=sequence[offset:offset + size],
                                         last=offset + size >= len(sequence))
        index += 1
