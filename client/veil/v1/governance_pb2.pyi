import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from veil.v1 import catalog_pb2 as _catalog_pb2
from veil.v1 import query_pb2 as _query_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DatasetSpec(_message.Message):
    __slots__ = ("name", "source", "format", "description", "purposes", "min_group_size", "max_groups", "max_rows", "columns", "classification", "rights", "auto_approve", "approvals_required", "owners", "basis", "consent", "freshness_column")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PURPOSES_FIELD_NUMBER: _ClassVar[int]
    MIN_GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_GROUPS_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    RIGHTS_FIELD_NUMBER: _ClassVar[int]
    AUTO_APPROVE_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    OWNERS_FIELD_NUMBER: _ClassVar[int]
    BASIS_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    FRESHNESS_COLUMN_FIELD_NUMBER: _ClassVar[int]
    name: str
    source: str
    format: str
    description: str
    purposes: _containers.RepeatedScalarFieldContainer[str]
    min_group_size: int
    max_groups: int
    max_rows: int
    columns: _containers.RepeatedCompositeFieldContainer[_catalog_pb2.Column]
    classification: str
    rights: _containers.RepeatedScalarFieldContainer[str]
    auto_approve: bool
    approvals_required: int
    owners: _containers.RepeatedScalarFieldContainer[str]
    basis: str
    consent: ConsentSourceSpec
    freshness_column: str
    def __init__(self, name: _Optional[str] = ..., source: _Optional[str] = ..., format: _Optional[str] = ..., description: _Optional[str] = ..., purposes: _Optional[_Iterable[str]] = ..., min_group_size: _Optional[int] = ..., max_groups: _Optional[int] = ..., max_rows: _Optional[int] = ..., columns: _Optional[_Iterable[_Union[_catalog_pb2.Column, _Mapping]]] = ..., classification: _Optional[str] = ..., rights: _Optional[_Iterable[str]] = ..., auto_approve: _Optional[bool] = ..., approvals_required: _Optional[int] = ..., owners: _Optional[_Iterable[str]] = ..., basis: _Optional[str] = ..., consent: _Optional[_Union[ConsentSourceSpec, _Mapping]] = ..., freshness_column: _Optional[str] = ...) -> None: ...

class ConsentSourceSpec(_message.Message):
    __slots__ = ("source", "format", "subject_column", "columns")
    class ColumnsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_COLUMN_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    source: str
    format: str
    subject_column: str
    columns: _containers.ScalarMap[str, str]
    def __init__(self, source: _Optional[str] = ..., format: _Optional[str] = ..., subject_column: _Optional[str] = ..., columns: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RegisterDatasetRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: DatasetSpec
    def __init__(self, spec: _Optional[_Union[DatasetSpec, _Mapping]] = ...) -> None: ...

class DatasetActionRequest(_message.Message):
    __slots__ = ("name", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class DatasetVersion(_message.Message):
    __slots__ = ("name", "version", "state", "owners", "registered_by", "listed_by", "spec", "certificate_id", "update_time", "disclosure", "quality")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    OWNERS_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_BY_FIELD_NUMBER: _ClassVar[int]
    LISTED_BY_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_ID_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DISCLOSURE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    state: str
    owners: _containers.RepeatedScalarFieldContainer[str]
    registered_by: str
    listed_by: str
    spec: DatasetSpec
    certificate_id: str
    update_time: _timestamp_pb2.Timestamp
    disclosure: DisclosurePolicy
    quality: _catalog_pb2.QualityProfile
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., state: _Optional[str] = ..., owners: _Optional[_Iterable[str]] = ..., registered_by: _Optional[str] = ..., listed_by: _Optional[str] = ..., spec: _Optional[_Union[DatasetSpec, _Mapping]] = ..., certificate_id: _Optional[str] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., disclosure: _Optional[_Union[DisclosurePolicy, _Mapping]] = ..., quality: _Optional[_Union[_catalog_pb2.QualityProfile, _Mapping]] = ...) -> None: ...

class DisclosurePolicy(_message.Message):
    __slots__ = ("mode", "exact_reason", "epsilon_per_query", "max_epsilon_per_query", "analyst_budget", "dataset_budget", "budget_per")
    MODE_FIELD_NUMBER: _ClassVar[int]
    EXACT_REASON_FIELD_NUMBER: _ClassVar[int]
    EPSILON_PER_QUERY_FIELD_NUMBER: _ClassVar[int]
    MAX_EPSILON_PER_QUERY_FIELD_NUMBER: _ClassVar[int]
    ANALYST_BUDGET_FIELD_NUMBER: _ClassVar[int]
    DATASET_BUDGET_FIELD_NUMBER: _ClassVar[int]
    BUDGET_PER_FIELD_NUMBER: _ClassVar[int]
    mode: str
    exact_reason: str
    epsilon_per_query: float
    max_epsilon_per_query: float
    analyst_budget: float
    dataset_budget: float
    budget_per: str
    def __init__(self, mode: _Optional[str] = ..., exact_reason: _Optional[str] = ..., epsilon_per_query: _Optional[float] = ..., max_epsilon_per_query: _Optional[float] = ..., analyst_budget: _Optional[float] = ..., dataset_budget: _Optional[float] = ..., budget_per: _Optional[str] = ...) -> None: ...

class ListDatasetVersionsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListDatasetVersionsResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[DatasetVersion]
    def __init__(self, versions: _Optional[_Iterable[_Union[DatasetVersion, _Mapping]]] = ...) -> None: ...

class GetCertificateRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class Certificate(_message.Message):
    __slots__ = ("document", "certificate_id")
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_ID_FIELD_NUMBER: _ClassVar[int]
    document: bytes
    certificate_id: str
    def __init__(self, document: _Optional[bytes] = ..., certificate_id: _Optional[str] = ...) -> None: ...

class CreateGrantRequest(_message.Message):
    __slots__ = ("principal", "dataset", "purpose", "columns", "valid_from", "valid_until", "max_queries")
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    VALID_FROM_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    MAX_QUERIES_FIELD_NUMBER: _ClassVar[int]
    principal: str
    dataset: str
    purpose: str
    columns: _containers.RepeatedScalarFieldContainer[str]
    valid_from: _timestamp_pb2.Timestamp
    valid_until: _timestamp_pb2.Timestamp
    max_queries: int
    def __init__(self, principal: _Optional[str] = ..., dataset: _Optional[str] = ..., purpose: _Optional[str] = ..., columns: _Optional[_Iterable[str]] = ..., valid_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., valid_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., max_queries: _Optional[int] = ...) -> None: ...

class Grant(_message.Message):
    __slots__ = ("name", "principal", "dataset", "purpose", "columns", "valid_from", "valid_until", "max_queries", "used", "created_by", "create_time", "revoke_time", "revoked_by", "revoke_reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    VALID_FROM_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    MAX_QUERIES_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REVOKE_TIME_FIELD_NUMBER: _ClassVar[int]
    REVOKED_BY_FIELD_NUMBER: _ClassVar[int]
    REVOKE_REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    principal: str
    dataset: str
    purpose: str
    columns: _containers.RepeatedScalarFieldContainer[str]
    valid_from: _timestamp_pb2.Timestamp
    valid_until: _timestamp_pb2.Timestamp
    max_queries: int
    used: int
    created_by: str
    create_time: _timestamp_pb2.Timestamp
    revoke_time: _timestamp_pb2.Timestamp
    revoked_by: str
    revoke_reason: str
    def __init__(self, name: _Optional[str] = ..., principal: _Optional[str] = ..., dataset: _Optional[str] = ..., purpose: _Optional[str] = ..., columns: _Optional[_Iterable[str]] = ..., valid_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., valid_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., max_queries: _Optional[int] = ..., used: _Optional[int] = ..., created_by: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoke_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked_by: _Optional[str] = ..., revoke_reason: _Optional[str] = ...) -> None: ...

class ListGrantsRequest(_message.Message):
    __slots__ = ("dataset",)
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    def __init__(self, dataset: _Optional[str] = ...) -> None: ...

class ListGrantsResponse(_message.Message):
    __slots__ = ("grants",)
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    grants: _containers.RepeatedCompositeFieldContainer[Grant]
    def __init__(self, grants: _Optional[_Iterable[_Union[Grant, _Mapping]]] = ...) -> None: ...

class RevokeGrantRequest(_message.Message):
    __slots__ = ("name", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class PendingQuery(_message.Message):
    __slots__ = ("query", "rules", "columns_touched", "expected_groups", "approvals_required", "approved_by", "expire_time")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_TOUCHED_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_GROUPS_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    APPROVED_BY_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    query: _query_pb2.Query
    rules: _containers.RepeatedCompositeFieldContainer[_query_pb2.RuleHit]
    columns_touched: _containers.RepeatedScalarFieldContainer[str]
    expected_groups: int
    approvals_required: int
    approved_by: _containers.RepeatedScalarFieldContainer[str]
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, query: _Optional[_Union[_query_pb2.Query, _Mapping]] = ..., rules: _Optional[_Iterable[_Union[_query_pb2.RuleHit, _Mapping]]] = ..., columns_touched: _Optional[_Iterable[str]] = ..., expected_groups: _Optional[int] = ..., approvals_required: _Optional[int] = ..., approved_by: _Optional[_Iterable[str]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListPendingQueriesRequest(_message.Message):
    __slots__ = ("dataset",)
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    def __init__(self, dataset: _Optional[str] = ...) -> None: ...

class ListPendingQueriesResponse(_message.Message):
    __slots__ = ("queries",)
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    queries: _containers.RepeatedCompositeFieldContainer[PendingQuery]
    def __init__(self, queries: _Optional[_Iterable[_Union[PendingQuery, _Mapping]]] = ...) -> None: ...

class ReviewQueryRequest(_message.Message):
    __slots__ = ("name", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
