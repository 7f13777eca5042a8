"""Veil: query data you cannot see.

    import veil
    with veil.connect("127.0.0.1:50051", token="...") as node:
        df = node.query("SELECT region, AVG(cost) FROM patients GROUP BY region", purpose="research")
"""

from .errors import (
    AlreadyExists,
    AuthenticationError,
    IntegrityError,
    InvalidQuery,
    InvalidRequest,
    NodeError,
    NotFound,
    NotReady,
    PermissionDenied,
    QueryFailed,
    QuotaExceeded,
    Timeout,
    Unavailable,
    VeilError,
    WrongState,
)
from .sdk import ColumnInfo, DatasetInfo, Node, QueryInfo, connect
from .weights import WeightedSum

__version__ = "0.1.0"

__all__ = [
    "connect", "Node", "WeightedSum", "DatasetInfo", "ColumnInfo", "QueryInfo", "VeilError", "InvalidQuery",
    "InvalidRequest", "PermissionDenied", "AuthenticationError", "NotFound", "AlreadyExists",
    "NotReady", "QueryFailed", "QuotaExceeded", "Unavailable", "Timeout", "IntegrityError", "NodeError", "WrongState",
]
