from veil.v1 import audit_pb2 as _audit_pb2
from veil.v1 import query_pb2 as _query_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelReview(_message.Message):
    __slots__ = ("name", "principal", "dataset", "purpose", "family", "formula", "terms", "response", "state", "approvals_required", "approved_by", "reason", "create_time", "expire_time", "certificate_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    FORMULA_FIELD_NUMBER: _ClassVar[int]
    TERMS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    APPROVED_BY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    principal: str
    dataset: str
    purpose: str
    family: str
    formula: str
    terms: _containers.RepeatedScalarFieldContainer[str]
    response: str
    state: str
    approvals_required: int
    approved_by: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    create_time: str
    expire_time: str
    certificate_id: str
    def __init__(self, name: _Optional[str] = ..., principal: _Optional[str] = ..., dataset: _Optional[str] = ..., purpose: _Optional[str] = ..., family: _Optional[str] = ..., formula: _Optional[str] = ..., terms: _Optional[_Iterable[str]] = ..., response: _Optional[str] = ..., state: _Optional[str] = ..., approvals_required: _Optional[int] = ..., approved_by: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ..., create_time: _Optional[str] = ..., expire_time: _Optional[str] = ..., certificate_id: _Optional[str] = ...) -> None: ...

class ListModelReviewsRequest(_message.Message):
    __slots__ = ("dataset", "state")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    state: str
    def __init__(self, dataset: _Optional[str] = ..., state: _Optional[str] = ...) -> None: ...

class ListModelReviewsResponse(_message.Message):
    __slots__ = ("reviews",)
    REVIEWS_FIELD_NUMBER: _ClassVar[int]
    reviews: _containers.RepeatedCompositeFieldContainer[ModelReview]
    def __init__(self, reviews: _Optional[_Iterable[_Union[ModelReview, _Mapping]]] = ...) -> None: ...

class ReviewModelRequest(_message.Message):
    __slots__ = ("name", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ListModelReleasesRequest(_message.Message):
    __slots__ = ("dataset", "page_size", "page_token")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    page_size: int
    page_token: str
    def __init__(self, dataset: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ModelReleaseRecord(_message.Message):
    __slots__ = ("release", "principal", "dataset", "formula", "terms", "family", "iteration", "fit_id", "purpose", "disclosure_mode", "epsilon", "release_digest", "time", "log_index")
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    FORMULA_FIELD_NUMBER: _ClassVar[int]
    TERMS_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    FIT_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    DISCLOSURE_MODE_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    RELEASE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    release: str
    principal: str
    dataset: str
    formula: str
    terms: _containers.RepeatedScalarFieldContainer[str]
    family: str
    iteration: int
    fit_id: str
    purpose: str
    disclosure_mode: str
    epsilon: float
    release_digest: str
    time: str
    log_index: int
    def __init__(self, release: _Optional[str] = ..., principal: _Optional[str] = ..., dataset: _Optional[str] = ..., formula: _Optional[str] = ..., terms: _Optional[_Iterable[str]] = ..., family: _Optional[str] = ..., iteration: _Optional[int] = ..., fit_id: _Optional[str] = ..., purpose: _Optional[str] = ..., disclosure_mode: _Optional[str] = ..., epsilon: _Optional[float] = ..., release_digest: _Optional[str] = ..., time: _Optional[str] = ..., log_index: _Optional[int] = ...) -> None: ...

class ListModelReleasesResponse(_message.Message):
    __slots__ = ("releases", "next_page_token")
    RELEASES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    releases: _containers.RepeatedCompositeFieldContainer[ModelReleaseRecord]
    next_page_token: str
    def __init__(self, releases: _Optional[_Iterable[_Union[ModelReleaseRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetModelReceiptRequest(_message.Message):
    __slots__ = ("release",)
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    release: str
    def __init__(self, release: _Optional[str] = ...) -> None: ...

class ComputeModelStatisticsRequest(_message.Message):
    __slots__ = ("dataset", "formula", "family", "purpose", "public_key", "fit_id", "iteration", "coefficients", "epsilon")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    FORMULA_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    FIT_ID_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    COEFFICIENTS_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    formula: str
    family: str
    purpose: str
    public_key: _query_pb2.PaillierPublicKey
    fit_id: str
    iteration: int
    coefficients: _containers.RepeatedScalarFieldContainer[float]
    epsilon: float
    def __init__(self, dataset: _Optional[str] = ..., formula: _Optional[str] = ..., family: _Optional[str] = ..., purpose: _Optional[str] = ..., public_key: _Optional[_Union[_query_pb2.PaillierPublicKey, _Mapping]] = ..., fit_id: _Optional[str] = ..., iteration: _Optional[int] = ..., coefficients: _Optional[_Iterable[float]] = ..., epsilon: _Optional[float] = ...) -> None: ...

class ModelStatistics(_message.Message):
    __slots__ = ("dataset", "fit_id", "iteration", "terms", "response", "fraction_bits", "cells", "disclosure_mode", "epsilon", "noise_scales", "max_iterations", "release_digest", "certificate_id", "release", "model_digest", "consent_snapshot")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    FIT_ID_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    TERMS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    FRACTION_BITS_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    DISCLOSURE_MODE_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    NOISE_SCALES_FIELD_NUMBER: _ClassVar[int]
    MAX_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    RELEASE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_ID_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    CONSENT_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    fit_id: str
    iteration: int
    terms: _containers.RepeatedScalarFieldContainer[str]
    response: str
    fraction_bits: int
    cells: _query_pb2.EncryptedCells
    disclosure_mode: str
    epsilon: float
    noise_scales: _containers.RepeatedScalarFieldContainer[float]
    max_iterations: int
    release_digest: str
    certificate_id: str
    release: str
    model_digest: str
    consent_snapshot: str
    def __init__(self, dataset: _Optional[str] = ..., fit_id: _Optional[str] = ..., iteration: _Optional[int] = ..., terms: _Optional[_Iterable[str]] = ..., response: _Optional[str] = ..., fraction_bits: _Optional[int] = ..., cells: _Optional[_Union[_query_pb2.EncryptedCells, _Mapping]] = ..., disclosure_mode: _Optional[str] = ..., epsilon: _Optional[float] = ..., noise_scales: _Optional[_Iterable[float]] = ..., max_iterations: _Optional[int] = ..., release_digest: _Optional[str] = ..., certificate_id: _Optional[str] = ..., release: _Optional[str] = ..., model_digest: _Optional[str] = ..., consent_snapshot: _Optional[str] = ...) -> None: ...
