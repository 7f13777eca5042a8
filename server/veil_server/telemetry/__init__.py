"""What an operator watches: one structured log line per RPC, and Prometheus metrics (issue 20).

- :mod:`.logs`: ``--log-format json`` / ``VEIL_LOG_FORMAT=json`` (one JSON object per event) and
  ``VEIL_LOG_LEVEL``.
- :mod:`.calls`: the outermost gRPC server interceptor; it logs and counts every call (method,
  principal, query id, request id, duration, status code, refusal reason).
- :mod:`.metrics`: the ``[metrics]`` section and :class:`NodeMetrics` (its own registry and HTTP
  port, off by default); the node times its engine, crypto, audit and state calls into it.

Nothing here ever sees a data value or a credential: the interceptor reads the method name, the
status, and three identifiers from the messages (``name``, ``request_id``), never a token or a cell.
This package imports nothing of the node's, so every layer may report into it.
"""

from .metrics import NULL_METRICS, MetricsSettings, NodeMetrics, parse_metrics

__all__ = ["NULL_METRICS", "MetricsSettings", "NodeMetrics", "parse_metrics"]
