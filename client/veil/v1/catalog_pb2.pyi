from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ColumnControl(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COLUMN_CONTROL_UNSPECIFIED: _ClassVar[ColumnControl]
    COLUMN_CONTROL_HIDDEN: _ClassVar[ColumnControl]
    COLUMN_CONTROL_FILTER: _ClassVar[ColumnControl]
    COLUMN_CONTROL_GROUP: _ClassVar[ColumnControl]
    COLUMN_CONTROL_AGGREGATE: _ClassVar[ColumnControl]
    COLUMN_CONTROL_PUBLIC: _ClassVar[ColumnControl]

class ColumnType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COLUMN_TYPE_UNSPECIFIED: _ClassVar[ColumnType]
    COLUMN_TYPE_INTEGER: _ClassVar[ColumnType]
    COLUMN_TYPE_DECIMAL: _ClassVar[ColumnType]
    COLUMN_TYPE_TEXT: _ClassVar[ColumnType]
COLUMN_CONTROL_UNSPECIFIED: ColumnControl
COLUMN_CONTROL_HIDDEN: ColumnControl
COLUMN_CONTROL_FILTER: ColumnControl
COLUMN_CONTROL_GROUP: ColumnControl
COLUMN_CONTROL_AGGREGATE: ColumnControl
COLUMN_CONTROL_PUBLIC: ColumnControl
COLUMN_TYPE_UNSPECIFIED: ColumnType
COLUMN_TYPE_INTEGER: ColumnType
COLUMN_TYPE_DECIMAL: ColumnType
COLUMN_TYPE_TEXT: ColumnType

class Column(_message.Message):
    __slots__ = ("name", "type", "controls", "description", "categories", "range_low", "range_high", "scale", "bin_width")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTROLS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    RANGE_LOW_FIELD_NUMBER: _ClassVar[int]
    RANGE_HIGH_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    BIN_WIDTH_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: ColumnType
    controls: _containers.RepeatedScalarFieldContainer[ColumnControl]
    description: str
    categories: _containers.RepeatedScalarFieldContainer[str]
    range_low: str
    range_high: str
    scale: int
    bin_width: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[ColumnType, str]] = ..., controls: _Optional[_Iterable[_Union[ColumnControl, str]]] = ..., description: _Optional[str] = ..., categories: _Optional[_Iterable[str]] = ..., range_low: _Optional[str] = ..., range_high: _Optional[str] = ..., scale: _Optional[int] = ..., bin_width: _Optional[str] = ...) -> None: ...

class Dataset(_message.Message):
    __slots__ = ("name", "description", "columns", "purposes", "min_group_size", "max_groups", "approximate_row_count", "state", "version", "classification", "certificate_id", "disclosure_mode", "epsilon_per_query", "max_epsilon_per_query", "exact_reason", "quality", "basis")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    PURPOSES_FIELD_NUMBER: _ClassVar[int]
    MIN_GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_GROUPS_FIELD_NUMBER: _ClassVar[int]
    APPROXIMATE_ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_ID_FIELD_NUMBER: _ClassVar[int]
    DISCLOSURE_MODE_FIELD_NUMBER: _ClassVar[int]
    EPSILON_PER_QUERY_FIELD_NUMBER: _ClassVar[int]
    MAX_EPSILON_PER_QUERY_FIELD_NUMBER: _ClassVar[int]
    EXACT_REASON_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    BASIS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    columns: _containers.RepeatedCompositeFieldContainer[Column]
    purposes: _containers.RepeatedScalarFieldContainer[str]
    min_group_size: int
    max_groups: int
    approximate_row_count: int
    state: str
    version: int
    classification: str
    certificate_id: str
    disclosure_mode: str
    epsilon_per_query: float
    max_epsilon_per_query: float
    exact_reason: str
    quality: QualityProfile
    basis: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., columns: _Optional[_Iterable[_Union[Column, _Mapping]]] = ..., purposes: _Optional[_Iterable[str]] = ..., min_group_size: _Optional[int] = ..., max_groups: _Optional[int] = ..., approximate_row_count: _Optional[int] = ..., state: _Optional[str] = ..., version: _Optional[int] = ..., classification: _Optional[str] = ..., certificate_id: _Optional[str] = ..., disclosure_mode: _Optional[str] = ..., epsilon_per_query: _Optional[float] = ..., max_epsilon_per_query: _Optional[float] = ..., exact_reason: _Optional[str] = ..., quality: _Optional[_Union[QualityProfile, _Mapping]] = ..., basis: _Optional[str] = ...) -> None: ...

class QualityProfile(_message.Message):
    __slots__ = ("rows", "mode", "epsilon", "noise_scale", "columns", "freshness_column", "within_30d", "within_365d")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    NOISE_SCALE_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    FRESHNESS_COLUMN_FIELD_NUMBER: _ClassVar[int]
    WITHIN_30D_FIELD_NUMBER: _ClassVar[int]
    WITHIN_365D_FIELD_NUMBER: _ClassVar[int]
    rows: int
    mode: str
    epsilon: str
    noise_scale: str
    columns: _containers.RepeatedCompositeFieldContainer[ColumnQuality]
    freshness_column: str
    within_30d: str
    within_365d: str
    def __init__(self, rows: _Optional[int] = ..., mode: _Optional[str] = ..., epsilon: _Optional[str] = ..., noise_scale: _Optional[str] = ..., columns: _Optional[_Iterable[_Union[ColumnQuality, _Mapping]]] = ..., freshness_column: _Optional[str] = ..., within_30d: _Optional[str] = ..., within_365d: _Optional[str] = ...) -> None: ...

class ColumnQuality(_message.Message):
    __slots__ = ("column", "missing", "out_of_range", "out_of_domain", "distinct")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    OUT_OF_RANGE_FIELD_NUMBER: _ClassVar[int]
    OUT_OF_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    DISTINCT_FIELD_NUMBER: _ClassVar[int]
    column: str
    missing: str
    out_of_range: str
    out_of_domain: str
    distinct: str
    def __init__(self, column: _Optional[str] = ..., missing: _Optional[str] = ..., out_of_range: _Optional[str] = ..., out_of_domain: _Optional[str] = ..., distinct: _Optional[str] = ...) -> None: ...

class ListDatasetsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDatasetsResponse(_message.Message):
    __slots__ = ("datasets", "next_page_token")
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[Dataset]
    next_page_token: str
    def __init__(self, datasets: _Optional[_Iterable[_Union[Dataset, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetDatasetRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...
