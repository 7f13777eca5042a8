import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QueryState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUERY_STATE_UNSPECIFIED: _ClassVar[QueryState]
    QUERY_STATE_PENDING_APPROVAL: _ClassVar[QueryState]
    QUERY_STATE_APPROVED: _ClassVar[QueryState]
    QUERY_STATE_RUNNING: _ClassVar[QueryState]
    QUERY_STATE_SUCCEEDED: _ClassVar[QueryState]
    QUERY_STATE_FAILED: _ClassVar[QueryState]
    QUERY_STATE_REJECTED: _ClassVar[QueryState]
    QUERY_STATE_CANCELLED: _ClassVar[QueryState]
    QUERY_STATE_EXPIRED: _ClassVar[QueryState]
QUERY_STATE_UNSPECIFIED: QueryState
QUERY_STATE_PENDING_APPROVAL: QueryState
QUERY_STATE_APPROVED: QueryState
QUERY_STATE_RUNNING: QueryState
QUERY_STATE_SUCCEEDED: QueryState
QUERY_STATE_FAILED: QueryState
QUERY_STATE_REJECTED: QueryState
QUERY_STATE_CANCELLED: QueryState
QUERY_STATE_EXPIRED: QueryState

class GetBudgetRequest(_message.Message):
    __slots__ = ("dataset", "purpose")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    purpose: str
    def __init__(self, dataset: _Optional[str] = ..., purpose: _Optional[str] = ...) -> None: ...

class PrivacyBudget(_message.Message):
    __slots__ = ("dataset", "principal", "purpose", "dp_enabled", "limit", "spent", "remaining", "epsilon_per_query", "dataset_limit", "dataset_spent", "dataset_remaining", "max_epsilon_per_query", "disclosure_mode")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    DP_ENABLED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    SPENT_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    EPSILON_PER_QUERY_FIELD_NUMBER: _ClassVar[int]
    DATASET_LIMIT_FIELD_NUMBER: _ClassVar[int]
    DATASET_SPENT_FIELD_NUMBER: _ClassVar[int]
    DATASET_REMAINING_FIELD_NUMBER: _ClassVar[int]
    MAX_EPSILON_PER_QUERY_FIELD_NUMBER: _ClassVar[int]
    DISCLOSURE_MODE_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    principal: str
    purpose: str
    dp_enabled: bool
    limit: float
    spent: float
    remaining: float
    epsilon_per_query: float
    dataset_limit: float
    dataset_spent: float
    dataset_remaining: float
    max_epsilon_per_query: float
    disclosure_mode: str
    def __init__(self, dataset: _Optional[str] = ..., principal: _Optional[str] = ..., purpose: _Optional[str] = ..., dp_enabled: _Optional[bool] = ..., limit: _Optional[float] = ..., spent: _Optional[float] = ..., remaining: _Optional[float] = ..., epsilon_per_query: _Optional[float] = ..., dataset_limit: _Optional[float] = ..., dataset_spent: _Optional[float] = ..., dataset_remaining: _Optional[float] = ..., max_epsilon_per_query: _Optional[float] = ..., disclosure_mode: _Optional[str] = ...) -> None: ...

class GetUsageReportRequest(_message.Message):
    __slots__ = ("start_time", "end_time", "dataset")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    dataset: str
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., dataset: _Optional[str] = ...) -> None: ...

class UsageRow(_message.Message):
    __slots__ = ("principal", "dataset", "purpose", "queries_submitted", "queries_approved", "queries_released", "rows_scanned", "cells_released", "cells_suppressed", "epsilon_spent", "ciphertexts", "queries_refused")
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    QUERIES_SUBMITTED_FIELD_NUMBER: _ClassVar[int]
    QUERIES_APPROVED_FIELD_NUMBER: _ClassVar[int]
    QUERIES_RELEASED_FIELD_NUMBER: _ClassVar[int]
    ROWS_SCANNED_FIELD_NUMBER: _ClassVar[int]
    CELLS_RELEASED_FIELD_NUMBER: _ClassVar[int]
    CELLS_SUPPRESSED_FIELD_NUMBER: _ClassVar[int]
    EPSILON_SPENT_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    QUERIES_REFUSED_FIELD_NUMBER: _ClassVar[int]
    principal: str
    dataset: str
    purpose: str
    queries_submitted: int
    queries_approved: int
    queries_released: int
    rows_scanned: int
    cells_released: int
    cells_suppressed: int
    epsilon_spent: float
    ciphertexts: int
    queries_refused: int
    def __init__(self, principal: _Optional[str] = ..., dataset: _Optional[str] = ..., purpose: _Optional[str] = ..., queries_submitted: _Optional[int] = ..., queries_approved: _Optional[int] = ..., queries_released: _Optional[int] = ..., rows_scanned: _Optional[int] = ..., cells_released: _Optional[int] = ..., cells_suppressed: _Optional[int] = ..., epsilon_spent: _Optional[float] = ..., ciphertexts: _Optional[int] = ..., queries_refused: _Optional[int] = ...) -> None: ...

class UsageReport(_message.Message):
    __slots__ = ("rows", "start_time", "end_time")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[UsageRow]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, rows: _Optional[_Iterable[_Union[UsageRow, _Mapping]]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ExplainQueryRequest(_message.Message):
    __slots__ = ("sql", "purpose", "epsilon")
    SQL_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    sql: str
    purpose: str
    epsilon: float
    def __init__(self, sql: _Optional[str] = ..., purpose: _Optional[str] = ..., epsilon: _Optional[float] = ...) -> None: ...

class QueryExplanation(_message.Message):
    __slots__ = ("outcome", "reason", "message", "rules", "canonical_sql", "columns_touched", "expected_groups", "grant", "approvals_required", "certificate_id", "epsilon_cost", "budget_remaining", "disclosure_mode", "accuracy", "dataset_budget_remaining", "max_epsilon_per_query")
    class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OUTCOME_UNSPECIFIED: _ClassVar[QueryExplanation.Outcome]
        OUTCOME_AUTO_APPROVE: _ClassVar[QueryExplanation.Outcome]
        OUTCOME_REVIEW: _ClassVar[QueryExplanation.Outcome]
        OUTCOME_REJECT: _ClassVar[QueryExplanation.Outcome]
    OUTCOME_UNSPECIFIED: QueryExplanation.Outcome
    OUTCOME_AUTO_APPROVE: QueryExplanation.Outcome
    OUTCOME_REVIEW: QueryExplanation.Outcome
    OUTCOME_REJECT: QueryExplanation.Outcome
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    CANONICAL_SQL_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_TOUCHED_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_GROUPS_FIELD_NUMBER: _ClassVar[int]
    GRANT_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_ID_FIELD_NUMBER: _ClassVar[int]
    EPSILON_COST_FIELD_NUMBER: _ClassVar[int]
    BUDGET_REMAINING_FIELD_NUMBER: _ClassVar[int]
    DISCLOSURE_MODE_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    DATASET_BUDGET_REMAINING_FIELD_NUMBER: _ClassVar[int]
    MAX_EPSILON_PER_QUERY_FIELD_NUMBER: _ClassVar[int]
    outcome: QueryExplanation.Outcome
    reason: str
    message: str
    rules: _containers.RepeatedCompositeFieldContainer[RuleHit]
    canonical_sql: str
    columns_touched: _containers.RepeatedScalarFieldContainer[str]
    expected_groups: int
    grant: str
    approvals_required: int
    certificate_id: str
    epsilon_cost: float
    budget_remaining: float
    disclosure_mode: str
    accuracy: _containers.RepeatedCompositeFieldContainer[ColumnNoise]
    dataset_budget_remaining: float
    max_epsilon_per_query: float
    def __init__(self, outcome: _Optional[_Union[QueryExplanation.Outcome, str]] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., rules: _Optional[_Iterable[_Union[RuleHit, _Mapping]]] = ..., canonical_sql: _Optional[str] = ..., columns_touched: _Optional[_Iterable[str]] = ..., expected_groups: _Optional[int] = ..., grant: _Optional[str] = ..., approvals_required: _Optional[int] = ..., certificate_id: _Optional[str] = ..., epsilon_cost: _Optional[float] = ..., budget_remaining: _Optional[float] = ..., disclosure_mode: _Optional[str] = ..., accuracy: _Optional[_Iterable[_Union[ColumnNoise, _Mapping]]] = ..., dataset_budget_remaining: _Optional[float] = ..., max_epsilon_per_query: _Optional[float] = ...) -> None: ...

class ColumnNoise(_message.Message):
    __slots__ = ("column", "function", "mechanism", "epsilon", "terms", "count_scale", "sum_scale", "squares_scale", "centre", "spread", "std", "error_bound_95", "centred")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    MECHANISM_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    TERMS_FIELD_NUMBER: _ClassVar[int]
    COUNT_SCALE_FIELD_NUMBER: _ClassVar[int]
    SUM_SCALE_FIELD_NUMBER: _ClassVar[int]
    SQUARES_SCALE_FIELD_NUMBER: _ClassVar[int]
    CENTRE_FIELD_NUMBER: _ClassVar[int]
    SPREAD_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    ERROR_BOUND_95_FIELD_NUMBER: _ClassVar[int]
    CENTRED_FIELD_NUMBER: _ClassVar[int]
    column: str
    function: str
    mechanism: str
    epsilon: float
    terms: int
    count_scale: float
    sum_scale: float
    squares_scale: float
    centre: float
    spread: float
    std: float
    error_bound_95: float
    centred: bool
    def __init__(self, column: _Optional[str] = ..., function: _Optional[str] = ..., mechanism: _Optional[str] = ..., epsilon: _Optional[float] = ..., terms: _Optional[int] = ..., count_scale: _Optional[float] = ..., sum_scale: _Optional[float] = ..., squares_scale: _Optional[float] = ..., centre: _Optional[float] = ..., spread: _Optional[float] = ..., std: _Optional[float] = ..., error_bound_95: _Optional[float] = ..., centred: _Optional[bool] = ...) -> None: ...

class RuleHit(_message.Message):
    __slots__ = ("rule", "message")
    RULE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    rule: str
    message: str
    def __init__(self, rule: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class PaillierPublicKey(_message.Message):
    __slots__ = ("n",)
    N_FIELD_NUMBER: _ClassVar[int]
    n: bytes
    def __init__(self, n: _Optional[bytes] = ...) -> None: ...

class SubmitQueryRequest(_message.Message):
    __slots__ = ("sql", "purpose", "public_key", "request_id", "weighted_sums", "epsilon")
    SQL_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHTED_SUMS_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    sql: str
    purpose: str
    public_key: PaillierPublicKey
    request_id: str
    weighted_sums: _containers.RepeatedCompositeFieldContainer[WeightedSum]
    epsilon: float
    def __init__(self, sql: _Optional[str] = ..., purpose: _Optional[str] = ..., public_key: _Optional[_Union[PaillierPublicKey, _Mapping]] = ..., request_id: _Optional[str] = ..., weighted_sums: _Optional[_Iterable[_Union[WeightedSum, _Mapping]]] = ..., epsilon: _Optional[float] = ...) -> None: ...

class WeightedSum(_message.Message):
    __slots__ = ("name", "key_column", "value_columns", "weight_scale", "weights")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KEY_COLUMN_FIELD_NUMBER: _ClassVar[int]
    VALUE_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_SCALE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    key_column: str
    value_columns: _containers.RepeatedScalarFieldContainer[str]
    weight_scale: int
    weights: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, name: _Optional[str] = ..., key_column: _Optional[str] = ..., value_columns: _Optional[_Iterable[str]] = ..., weight_scale: _Optional[int] = ..., weights: _Optional[_Iterable[bytes]] = ...) -> None: ...

class StateTransition(_message.Message):
    __slots__ = ("from_state", "to_state", "reason", "message", "time")
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    from_state: QueryState
    to_state: QueryState
    reason: str
    message: str
    time: _timestamp_pb2.Timestamp
    def __init__(self, from_state: _Optional[_Union[QueryState, str]] = ..., to_state: _Optional[_Union[QueryState, str]] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Query(_message.Message):
    __slots__ = ("name", "principal", "dataset", "purpose", "sql", "canonical_sql", "plan_digest", "state", "state_reason", "state_message", "create_time", "update_time", "history", "public_key_fingerprint", "request_id", "certificate_id", "epsilon")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    SQL_FIELD_NUMBER: _ClassVar[int]
    CANONICAL_SQL_FIELD_NUMBER: _ClassVar[int]
    PLAN_DIGEST_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_REASON_FIELD_NUMBER: _ClassVar[int]
    STATE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_ID_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    name: str
    principal: str
    dataset: str
    purpose: str
    sql: str
    canonical_sql: str
    plan_digest: str
    state: QueryState
    state_reason: str
    state_message: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    history: _containers.RepeatedCompositeFieldContainer[StateTransition]
    public_key_fingerprint: str
    request_id: str
    certificate_id: str
    epsilon: float
    def __init__(self, name: _Optional[str] = ..., principal: _Optional[str] = ..., dataset: _Optional[str] = ..., purpose: _Optional[str] = ..., sql: _Optional[str] = ..., canonical_sql: _Optional[str] = ..., plan_digest: _Optional[str] = ..., state: _Optional[_Union[QueryState, str]] = ..., state_reason: _Optional[str] = ..., state_message: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., history: _Optional[_Iterable[_Union[StateTransition, _Mapping]]] = ..., public_key_fingerprint: _Optional[str] = ..., request_id: _Optional[str] = ..., certificate_id: _Optional[str] = ..., epsilon: _Optional[float] = ...) -> None: ...

class GetQueryRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListQueriesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListQueriesResponse(_message.Message):
    __slots__ = ("queries", "next_page_token")
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    queries: _containers.RepeatedCompositeFieldContainer[Query]
    next_page_token: str
    def __init__(self, queries: _Optional[_Iterable[_Union[Query, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelQueryRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class WaitQueryRequest(_message.Message):
    __slots__ = ("name", "timeout")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    name: str
    timeout: _duration_pb2.Duration
    def __init__(self, name: _Optional[str] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class GetQueryResultRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class StreamQueryResultRequest(_message.Message):
    __slots__ = ("name", "chunk_ciphertexts")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CHUNK_CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    chunk_ciphertexts: int
    def __init__(self, name: _Optional[str] = ..., chunk_ciphertexts: _Optional[int] = ...) -> None: ...

class QueryResultChunk(_message.Message):
    __slots__ = ("index", "header", "total_ciphertexts", "total_weighted", "offset", "ciphertexts", "last")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_WEIGHTED_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    index: int
    header: QueryResult
    total_ciphertexts: int
    total_weighted: int
    offset: int
    ciphertexts: _containers.RepeatedScalarFieldContainer[bytes]
    last: bool
    def __init__(self, index: _Optional[int] = ..., header: _Optional[_Union[QueryResult, _Mapping]] = ..., total_ciphertexts: _Optional[int] = ..., total_weighted: _Optional[int] = ..., offset: _Optional[int] = ..., ciphertexts: _Optional[_Iterable[bytes]] = ..., last: _Optional[bool] = ...) -> None: ...

class ResultColumn(_message.Message):
    __slots__ = ("name", "kind", "function", "source_column", "scale", "numeric_key", "noise")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[ResultColumn.Kind]
        KIND_GROUP_KEY: _ClassVar[ResultColumn.Kind]
        KIND_AGGREGATE: _ClassVar[ResultColumn.Kind]
        KIND_WEIGHTED_SUM: _ClassVar[ResultColumn.Kind]
    KIND_UNSPECIFIED: ResultColumn.Kind
    KIND_GROUP_KEY: ResultColumn.Kind
    KIND_AGGREGATE: ResultColumn.Kind
    KIND_WEIGHTED_SUM: ResultColumn.Kind
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_COLUMN_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    NUMERIC_KEY_FIELD_NUMBER: _ClassVar[int]
    NOISE_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: ResultColumn.Kind
    function: str
    source_column: str
    scale: int
    numeric_key: bool
    noise: ColumnNoise
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[ResultColumn.Kind, str]] = ..., function: _Optional[str] = ..., source_column: _Optional[str] = ..., scale: _Optional[int] = ..., numeric_key: _Optional[bool] = ..., noise: _Optional[_Union[ColumnNoise, _Mapping]] = ...) -> None: ...

class ResultRow(_message.Message):
    __slots__ = ("keys", "suppressed")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSED_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    suppressed: bool
    def __init__(self, keys: _Optional[_Iterable[str]] = ..., suppressed: _Optional[bool] = ...) -> None: ...

class EncryptedCells(_message.Message):
    __slots__ = ("slot_bits", "slots_per_ciphertext", "slot_offset", "cell_count", "ciphertexts", "column_slot_bits", "column_slot_offsets", "plaintext_bits")
    SLOT_BITS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_PER_CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    SLOT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    CELL_COUNT_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    COLUMN_SLOT_BITS_FIELD_NUMBER: _ClassVar[int]
    COLUMN_SLOT_OFFSETS_FIELD_NUMBER: _ClassVar[int]
    PLAINTEXT_BITS_FIELD_NUMBER: _ClassVar[int]
    slot_bits: int
    slots_per_ciphertext: int
    slot_offset: str
    cell_count: int
    ciphertexts: _containers.RepeatedScalarFieldContainer[bytes]
    column_slot_bits: _containers.RepeatedScalarFieldContainer[int]
    column_slot_offsets: _containers.RepeatedScalarFieldContainer[str]
    plaintext_bits: int
    def __init__(self, slot_bits: _Optional[int] = ..., slots_per_ciphertext: _Optional[int] = ..., slot_offset: _Optional[str] = ..., cell_count: _Optional[int] = ..., ciphertexts: _Optional[_Iterable[bytes]] = ..., column_slot_bits: _Optional[_Iterable[int]] = ..., column_slot_offsets: _Optional[_Iterable[str]] = ..., plaintext_bits: _Optional[int] = ...) -> None: ...

class QueryResult(_message.Message):
    __slots__ = ("query", "columns", "rows", "cells", "public_key_fingerprint", "min_group_size", "result_digest", "create_time", "weighted_cells", "certificate_id", "disclosure_mode", "epsilon", "consent_snapshot")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    MIN_GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    RESULT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    WEIGHTED_CELLS_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_ID_FIELD_NUMBER: _ClassVar[int]
    DISCLOSURE_MODE_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    CONSENT_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    query: str
    columns: _containers.RepeatedCompositeFieldContainer[ResultColumn]
    rows: _containers.RepeatedCompositeFieldContainer[ResultRow]
    cells: EncryptedCells
    public_key_fingerprint: str
    min_group_size: int
    result_digest: str
    create_time: _timestamp_pb2.Timestamp
    weighted_cells: _containers.RepeatedScalarFieldContainer[bytes]
    certificate_id: str
    disclosure_mode: str
    epsilon: float
    consent_snapshot: str
    def __init__(self, query: _Optional[str] = ..., columns: _Optional[_Iterable[_Union[ResultColumn, _Mapping]]] = ..., rows: _Optional[_Iterable[_Union[ResultRow, _Mapping]]] = ..., cells: _Optional[_Union[EncryptedCells, _Mapping]] = ..., public_key_fingerprint: _Optional[str] = ..., min_group_size: _Optional[int] = ..., result_digest: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., weighted_cells: _Optional[_Iterable[bytes]] = ..., certificate_id: _Optional[str] = ..., disclosure_mode: _Optional[str] = ..., epsilon: _Optional[float] = ..., consent_snapshot: _Optional[str] = ...) -> None: ...
