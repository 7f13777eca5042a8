import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from veil.v1 import query_pb2 as _query_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FederationProtocol(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEDERATION_PROTOCOL_UNSPECIFIED: _ClassVar[FederationProtocol]
    FEDERATION_PROTOCOL_PAILLIER: _ClassVar[FederationProtocol]
    FEDERATION_PROTOCOL_SHARING: _ClassVar[FederationProtocol]
FEDERATION_PROTOCOL_UNSPECIFIED: FederationProtocol
FEDERATION_PROTOCOL_PAILLIER: FederationProtocol
FEDERATION_PROTOCOL_SHARING: FederationProtocol

class FederatedDataset(_message.Message):
    __slots__ = ("name", "members", "protocols")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    PROTOCOLS_FIELD_NUMBER: _ClassVar[int]
    name: str
    members: _containers.RepeatedScalarFieldContainer[str]
    protocols: _containers.RepeatedScalarFieldContainer[FederationProtocol]
    def __init__(self, name: _Optional[str] = ..., members: _Optional[_Iterable[str]] = ..., protocols: _Optional[_Iterable[_Union[FederationProtocol, str]]] = ...) -> None: ...

class ListFederatedDatasetsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListFederatedDatasetsResponse(_message.Message):
    __slots__ = ("node", "datasets")
    NODE_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    node: str
    datasets: _containers.RepeatedCompositeFieldContainer[FederatedDataset]
    def __init__(self, node: _Optional[str] = ..., datasets: _Optional[_Iterable[_Union[FederatedDataset, _Mapping]]] = ...) -> None: ...

class RunFederatedQueryRequest(_message.Message):
    __slots__ = ("sql", "purpose", "public_key", "request_id", "protocol", "compute_parties", "epsilon")
    SQL_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_PARTIES_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    sql: str
    purpose: str
    public_key: _query_pb2.PaillierPublicKey
    request_id: str
    protocol: FederationProtocol
    compute_parties: _containers.RepeatedScalarFieldContainer[str]
    epsilon: float
    def __init__(self, sql: _Optional[str] = ..., purpose: _Optional[str] = ..., public_key: _Optional[_Union[_query_pb2.PaillierPublicKey, _Mapping]] = ..., request_id: _Optional[str] = ..., protocol: _Optional[_Union[FederationProtocol, str]] = ..., compute_parties: _Optional[_Iterable[str]] = ..., epsilon: _Optional[float] = ...) -> None: ...

class StatisticSection(_message.Message):
    __slots__ = ("statistic", "column", "scale", "cells", "terms", "share_ring_bits", "noise_scale")
    class Statistic(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATISTIC_UNSPECIFIED: _ClassVar[StatisticSection.Statistic]
        STATISTIC_ROWS: _ClassVar[StatisticSection.Statistic]
        STATISTIC_COUNT: _ClassVar[StatisticSection.Statistic]
        STATISTIC_SUM: _ClassVar[StatisticSection.Statistic]
        STATISTIC_SUM_OF_SQUARES: _ClassVar[StatisticSection.Statistic]
    STATISTIC_UNSPECIFIED: StatisticSection.Statistic
    STATISTIC_ROWS: StatisticSection.Statistic
    STATISTIC_COUNT: StatisticSection.Statistic
    STATISTIC_SUM: StatisticSection.Statistic
    STATISTIC_SUM_OF_SQUARES: StatisticSection.Statistic
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    TERMS_FIELD_NUMBER: _ClassVar[int]
    SHARE_RING_BITS_FIELD_NUMBER: _ClassVar[int]
    NOISE_SCALE_FIELD_NUMBER: _ClassVar[int]
    statistic: StatisticSection.Statistic
    column: str
    scale: int
    cells: _query_pb2.EncryptedCells
    terms: int
    share_ring_bits: int
    noise_scale: float
    def __init__(self, statistic: _Optional[_Union[StatisticSection.Statistic, str]] = ..., column: _Optional[str] = ..., scale: _Optional[int] = ..., cells: _Optional[_Union[_query_pb2.EncryptedCells, _Mapping]] = ..., terms: _Optional[int] = ..., share_ring_bits: _Optional[int] = ..., noise_scale: _Optional[float] = ...) -> None: ...

class FederatedResult(_message.Message):
    __slots__ = ("name", "dataset", "protocol", "participants", "compute_parties", "columns", "rows", "sections", "public_key_fingerprint", "min_group_size", "canonical_sql", "result_digest", "create_time", "disclosure_mode", "epsilon")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_PARTIES_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    SECTIONS_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    MIN_GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    CANONICAL_SQL_FIELD_NUMBER: _ClassVar[int]
    RESULT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DISCLOSURE_MODE_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    name: str
    dataset: str
    protocol: FederationProtocol
    participants: _containers.RepeatedScalarFieldContainer[str]
    compute_parties: _containers.RepeatedScalarFieldContainer[str]
    columns: _containers.RepeatedCompositeFieldContainer[_query_pb2.ResultColumn]
    rows: _containers.RepeatedCompositeFieldContainer[_query_pb2.ResultRow]
    sections: _containers.RepeatedCompositeFieldContainer[StatisticSection]
    public_key_fingerprint: str
    min_group_size: int
    canonical_sql: str
    result_digest: str
    create_time: _timestamp_pb2.Timestamp
    disclosure_mode: str
    epsilon: float
    def __init__(self, name: _Optional[str] = ..., dataset: _Optional[str] = ..., protocol: _Optional[_Union[FederationProtocol, str]] = ..., participants: _Optional[_Iterable[str]] = ..., compute_parties: _Optional[_Iterable[str]] = ..., columns: _Optional[_Iterable[_Union[_query_pb2.ResultColumn, _Mapping]]] = ..., rows: _Optional[_Iterable[_Union[_query_pb2.ResultRow, _Mapping]]] = ..., sections: _Optional[_Iterable[_Union[StatisticSection, _Mapping]]] = ..., public_key_fingerprint: _Optional[str] = ..., min_group_size: _Optional[int] = ..., canonical_sql: _Optional[str] = ..., result_digest: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., disclosure_mode: _Optional[str] = ..., epsilon: _Optional[float] = ...) -> None: ...

class PeerEnvelope(_message.Message):
    __slots__ = ("payload", "signer", "signature")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SIGNER_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    signer: str
    signature: bytes
    def __init__(self, payload: _Optional[bytes] = ..., signer: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class PrepareFederatedQueryRequest(_message.Message):
    __slots__ = ("envelope",)
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    envelope: PeerEnvelope
    def __init__(self, envelope: _Optional[_Union[PeerEnvelope, _Mapping]] = ...) -> None: ...

class PrepareFederatedQueryResponse(_message.Message):
    __slots__ = ("envelope",)
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    envelope: PeerEnvelope
    def __init__(self, envelope: _Optional[_Union[PeerEnvelope, _Mapping]] = ...) -> None: ...

class ContributePartialRequest(_message.Message):
    __slots__ = ("envelope",)
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    envelope: PeerEnvelope
    def __init__(self, envelope: _Optional[_Union[PeerEnvelope, _Mapping]] = ...) -> None: ...

class ContributePartialResponse(_message.Message):
    __slots__ = ("envelope",)
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    envelope: PeerEnvelope
    def __init__(self, envelope: _Optional[_Union[PeerEnvelope, _Mapping]] = ...) -> None: ...

class AggregateSharesRequest(_message.Message):
    __slots__ = ("envelope",)
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    envelope: PeerEnvelope
    def __init__(self, envelope: _Optional[_Union[PeerEnvelope, _Mapping]] = ...) -> None: ...

class AggregateSharesResponse(_message.Message):
    __slots__ = ("envelope",)
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    envelope: PeerEnvelope
    def __init__(self, envelope: _Optional[_Union[PeerEnvelope, _Mapping]] = ...) -> None: ...

class ReleasePartialRequest(_message.Message):
    __slots__ = ("envelope",)
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    envelope: PeerEnvelope
    def __init__(self, envelope: _Optional[_Union[PeerEnvelope, _Mapping]] = ...) -> None: ...

class ReleasePartialResponse(_message.Message):
    __slots__ = ("envelope",)
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    envelope: PeerEnvelope
    def __init__(self, envelope: _Optional[_Union[PeerEnvelope, _Mapping]] = ...) -> None: ...

class AbortFederatedQueryRequest(_message.Message):
    __slots__ = ("envelope",)
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    envelope: PeerEnvelope
    def __init__(self, envelope: _Optional[_Union[PeerEnvelope, _Mapping]] = ...) -> None: ...

class AbortFederatedQueryResponse(_message.Message):
    __slots__ = ("envelope",)
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    envelope: PeerEnvelope
    def __init__(self, envelope: _Optional[_Union[PeerEnvelope, _Mapping]] = ...) -> None: ...

class PeerPayload(_message.Message):
    __slots__ = ("federated_query", "sender", "recipient", "issue_time", "prepare", "prepared", "contribute", "contribution", "aggregate", "aggregated", "release", "released", "abort", "aborted", "sealed_share")
    FEDERATED_QUERY_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    ISSUE_TIME_FIELD_NUMBER: _ClassVar[int]
    PREPARE_FIELD_NUMBER: _ClassVar[int]
    PREPARED_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTE_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_FIELD_NUMBER: _ClassVar[int]
    AGGREGATED_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    ABORT_FIELD_NUMBER: _ClassVar[int]
    ABORTED_FIELD_NUMBER: _ClassVar[int]
    SEALED_SHARE_FIELD_NUMBER: _ClassVar[int]
    federated_query: str
    sender: str
    recipient: str
    issue_time: _timestamp_pb2.Timestamp
    prepare: PrepareBody
    prepared: PreparedBody
    contribute: ContributeBody
    contribution: ContributionBody
    aggregate: AggregateBody
    aggregated: AggregatedBody
    release: ReleaseBody
    released: ReleasedBody
    abort: AbortBody
    aborted: AbortedBody
    sealed_share: SealedShare
    def __init__(self, federated_query: _Optional[str] = ..., sender: _Optional[str] = ..., recipient: _Optional[str] = ..., issue_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., prepare: _Optional[_Union[PrepareBody, _Mapping]] = ..., prepared: _Optional[_Union[PreparedBody, _Mapping]] = ..., contribute: _Optional[_Union[ContributeBody, _Mapping]] = ..., contribution: _Optional[_Union[ContributionBody, _Mapping]] = ..., aggregate: _Optional[_Union[AggregateBody, _Mapping]] = ..., aggregated: _Optional[_Union[AggregatedBody, _Mapping]] = ..., release: _Optional[_Union[ReleaseBody, _Mapping]] = ..., released: _Optional[_Union[ReleasedBody, _Mapping]] = ..., abort: _Optional[_Union[AbortBody, _Mapping]] = ..., aborted: _Optional[_Union[AbortedBody, _Mapping]] = ..., sealed_share: _Optional[_Union[SealedShare, _Mapping]] = ...) -> None: ...

class PrepareBody(_message.Message):
    __slots__ = ("dataset", "sql", "purpose", "analyst", "public_key", "protocol", "participants", "compute_parties", "epsilon", "formula", "family", "coefficients", "iteration", "fit_id")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    SQL_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    ANALYST_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_PARTIES_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    FORMULA_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    COEFFICIENTS_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    FIT_ID_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    sql: str
    purpose: str
    analyst: str
    public_key: bytes
    protocol: FederationProtocol
    participants: _containers.RepeatedScalarFieldContainer[str]
    compute_parties: _containers.RepeatedScalarFieldContainer[str]
    epsilon: float
    formula: str
    family: str
    coefficients: _containers.RepeatedScalarFieldContainer[float]
    iteration: int
    fit_id: str
    def __init__(self, dataset: _Optional[str] = ..., sql: _Optional[str] = ..., purpose: _Optional[str] = ..., analyst: _Optional[str] = ..., public_key: _Optional[bytes] = ..., protocol: _Optional[_Union[FederationProtocol, str]] = ..., participants: _Optional[_Iterable[str]] = ..., compute_parties: _Optional[_Iterable[str]] = ..., epsilon: _Optional[float] = ..., formula: _Optional[str] = ..., family: _Optional[str] = ..., coefficients: _Optional[_Iterable[float]] = ..., iteration: _Optional[int] = ..., fit_id: _Optional[str] = ...) -> None: ...

class PreparedBody(_message.Message):
    __slots__ = ("plan_digest", "part_digest", "group_count", "min_group_size", "max_rows", "ephemeral_key", "canonical_sql", "epsilon", "terms", "statistic_count", "step_check", "public_rows")
    PLAN_DIGEST_FIELD_NUMBER: _ClassVar[int]
    PART_DIGEST_FIELD_NUMBER: _ClassVar[int]
    GROUP_COUNT_FIELD_NUMBER: _ClassVar[int]
    MIN_GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_FIELD_NUMBER: _ClassVar[int]
    EPHEMERAL_KEY_FIELD_NUMBER: _ClassVar[int]
    CANONICAL_SQL_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    TERMS_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_COUNT_FIELD_NUMBER: _ClassVar[int]
    STEP_CHECK_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_ROWS_FIELD_NUMBER: _ClassVar[int]
    plan_digest: str
    part_digest: str
    group_count: int
    min_group_size: int
    max_rows: int
    ephemeral_key: bytes
    canonical_sql: str
    epsilon: float
    terms: _containers.RepeatedScalarFieldContainer[str]
    statistic_count: int
    step_check: _containers.RepeatedScalarFieldContainer[bytes]
    public_rows: int
    def __init__(self, plan_digest: _Optional[str] = ..., part_digest: _Optional[str] = ..., group_count: _Optional[int] = ..., min_group_size: _Optional[int] = ..., max_rows: _Optional[int] = ..., ephemeral_key: _Optional[bytes] = ..., canonical_sql: _Optional[str] = ..., epsilon: _Optional[float] = ..., terms: _Optional[_Iterable[str]] = ..., statistic_count: _Optional[int] = ..., step_check: _Optional[_Iterable[bytes]] = ..., public_rows: _Optional[int] = ...) -> None: ...

class ContributeBody(_message.Message):
    __slots__ = ("prepared",)
    PREPARED_FIELD_NUMBER: _ClassVar[int]
    prepared: _containers.RepeatedCompositeFieldContainer[PeerEnvelope]
    def __init__(self, prepared: _Optional[_Iterable[_Union[PeerEnvelope, _Mapping]]] = ...) -> None: ...

class ContributionBody(_message.Message):
    __slots__ = ("masked_counts", "sealed_share", "model_statistics")
    MASKED_COUNTS_FIELD_NUMBER: _ClassVar[int]
    SEALED_SHARE_FIELD_NUMBER: _ClassVar[int]
    MODEL_STATISTICS_FIELD_NUMBER: _ClassVar[int]
    masked_counts: bytes
    sealed_share: PeerEnvelope
    model_statistics: ReleasedSection
    def __init__(self, masked_counts: _Optional[bytes] = ..., sealed_share: _Optional[_Union[PeerEnvelope, _Mapping]] = ..., model_statistics: _Optional[_Union[ReleasedSection, _Mapping]] = ...) -> None: ...

class SealedShare(_message.Message):
    __slots__ = ("recipient", "nonce", "ciphertext")
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    recipient: str
    nonce: bytes
    ciphertext: bytes
    def __init__(self, recipient: _Optional[str] = ..., nonce: _Optional[bytes] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class AggregateBody(_message.Message):
    __slots__ = ("sealed_shares",)
    SEALED_SHARES_FIELD_NUMBER: _ClassVar[int]
    sealed_shares: _containers.RepeatedCompositeFieldContainer[PeerEnvelope]
    def __init__(self, sealed_shares: _Optional[_Iterable[_Union[PeerEnvelope, _Mapping]]] = ...) -> None: ...

class AggregatedBody(_message.Message):
    __slots__ = ("count_share",)
    COUNT_SHARE_FIELD_NUMBER: _ClassVar[int]
    count_share: bytes
    def __init__(self, count_share: _Optional[bytes] = ...) -> None: ...

class ReleaseBody(_message.Message):
    __slots__ = ("counts",)
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    counts: _containers.RepeatedCompositeFieldContainer[PeerEnvelope]
    def __init__(self, counts: _Optional[_Iterable[_Union[PeerEnvelope, _Mapping]]] = ...) -> None: ...

class ReleasedSection(_message.Message):
    __slots__ = ("ciphertexts",)
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    ciphertexts: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, ciphertexts: _Optional[_Iterable[bytes]] = ...) -> None: ...

class ReleasedBody(_message.Message):
    __slots__ = ("released_groups", "sections")
    RELEASED_GROUPS_FIELD_NUMBER: _ClassVar[int]
    SECTIONS_FIELD_NUMBER: _ClassVar[int]
    released_groups: bytes
    sections: _containers.RepeatedCompositeFieldContainer[ReleasedSection]
    def __init__(self, released_groups: _Optional[bytes] = ..., sections: _Optional[_Iterable[_Union[ReleasedSection, _Mapping]]] = ...) -> None: ...

class AbortBody(_message.Message):
    __slots__ = ("reason", "failed_node")
    REASON_FIELD_NUMBER: _ClassVar[int]
    FAILED_NODE_FIELD_NUMBER: _ClassVar[int]
    reason: str
    failed_node: str
    def __init__(self, reason: _Optional[str] = ..., failed_node: _Optional[str] = ...) -> None: ...

class AbortedBody(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
