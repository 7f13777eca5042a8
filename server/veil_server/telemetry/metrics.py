"""Prometheus metrics of one node, on a port of their own, off by default.

```toml
[metrics]
enabled = true                # default false: no endpoint, nothing counted
listen = "127.0.0.1:9464"     # plain HTTP GET /metrics; VEIL_METRICS_LISTEN, `serve --metrics-listen`
```

Each node has its own :class:`prometheus_client.CollectorRegistry` (several nodes may run in one
process, as the federation tests do), so nothing is registered globally. What is exposed is
operational: method names, status codes, refusal reasons, dataset names, query states, counts of
releases and ciphertexts, ε spent per dataset, and timings. No data value, no principal name, no
token, no query text. Still, ε spent per dataset and refusal counts describe analysts' activity:
listen on loopback (the default) or a monitoring network, never the analysts' network.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
ENV = {"enabled": "VEIL_METRICS_ENABLED", "listen": "VEIL_METRICS_LISTEN"}
# Latency buckets from a health check (sub-millisecond) to a large encrypted release (minutes).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 180, 600)


@dataclass(frozen=True)
class MetricsSettings:
    enabled: bool = False
    listen: str = "127.0.0.1:9464"


def parse_metrics(raw: Any, *, env: Mapping[str, str], error: type[Exception]) -> MetricsSettings:
    if raw is not None and not isinstance(raw, Mapping):
        raise error("[metrics] must be a table")
    section = dict(raw or {})
    unknown = set(section) - set(MetricsSettings.__dataclass_fields__)
    if unknown:
        raise error(f"metrics: unknown keys {sorted(unknown)}; known: enabled, listen")
    enabled = section.get("enabled", False)
    if env.get(ENV["enabled"]):
        flag = env[ENV["enabled"]].strip().lower()
        if flag not in _TRUE + _FALSE:
            raise error(f"{ENV['enabled']} must be 1/true or 0/false")
        enabled = flag in _TRUE
    if not isinstance(enabled, bool):
        raise error("metrics.enabled must be true or false")
    listen = str(env.get(ENV["listen"]) or section.get("listen", MetricsSettings.listen))
    if env.get(ENV["listen"]) and not env.get(ENV["enabled"]):
        enabled = True  # naming where to listen asks for the endpoint
    check_listen(listen, "metrics.listen", error)
    return MetricsSettings(enabled, listen)


def check_listen(listen: str, where: str, error: Callable[[str], Exception]) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise error(f"{where} must be HOST:PORT (port 0 picks a free one), not {listen!r}")
    return host.strip("[]"), int(port)


class NodeMetrics:
    """The node's metrics in a registry of their own. Every method is cheap and thread-safe."""

    enabled = True

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = r = CollectorRegistry(auto_describe=True)
        self.rpc_requests = Counter("veil_rpc_requests", "RPCs answered, by method and status code",
                                    ["method", "code"], registry=r)
        self.rpc_seconds = Histogram("veil_rpc_duration_seconds", "RPC latency, by method and status code",
                                     ["method", "code"], buckets=BUCKETS, registry=r)
        self.refusals = Counter("veil_refusals", "refused RPCs, by ErrorInfo reason and status code",
                                ["reason", "code"], registry=r)
        self.queries = Counter("veil_query_transitions", "queries entering each lifecycle state", ["state"],
                               registry=r)
        self.releases = Counter("veil_releases", "results released, by dataset", ["dataset"], registry=r)
        self.released_ciphertexts = Counter("veil_released_ciphertexts", "ciphertexts released, by dataset",
                                            ["dataset"], registry=r)
        self.epsilon = Counter("veil_epsilon_spent", "differential-privacy ε spent by released queries, by dataset",
                               ["dataset"], registry=r)
        self.crypto_seconds = Histogram("veil_crypto_seconds", "time in Paillier work, by operation", ["operation"],
                                        buckets=BUCKETS, registry=r)
        self.crypto_ops = Counter("veil_crypto_operations", "Paillier operations (ciphertexts made), by operation",
                                  ["operation"], registry=r)
        self.engine_seconds = Histogram("veil_engine_seconds", "time in the data engine, by engine", ["engine"],
                                        buckets=BUCKETS, registry=r)
        self.audit_append_seconds = Histogram("veil_audit_append_seconds", "latency of audit log appends",
                                              buckets=BUCKETS, registry=r)
        self.state_db_seconds = Histogram("veil_state_db_seconds", "latency of state database transactions, by operation",
                                          ["operation"], buckets=BUCKETS, registry=r)
        self.heartbeats = Counter("veil_replica_heartbeats", "this replica's heartbeats in shared state, by outcome",
                                  ["outcome"], registry=r)
        self._server: Any = None

    # -- what the interceptor and the node report ------------------------------------------

    def rpc(self, method: str, code: str, seconds: float, reason: str | None) -> None:
        self.rpc_requests.labels(method, code).inc()
        self.rpc_seconds.labels(method, code).observe(seconds)
        if code != "OK":
            self.refusals.labels(reason or code, code).inc()

    def query_state(self, state: str) -> None:
        self.queries.labels(state).inc()

    def replica_heartbeat(self, *, ok: bool) -> None:
        self.heartbeats.labels("ok" if ok else "failed").inc()

    def open_queries(self, count: Callable[[], Mapping[str, int]]) -> None:
        """``veil_open_queries{state}``: unfinished queries by state, read at each scrape from
        ``count()`` (the state store; bounded by the open-query limits, so cheap)."""
        from prometheus_client.core import GaugeMetricFamily

        class OpenQueries:
            def collect(self):  # noqa: ANN202 - prometheus_client's collector protocol
                family = GaugeMetricFamily("veil_open_queries", "unfinished queries by lifecycle state",
                                           labels=["state"])
                for state, n in sorted(count().items()):
                    family.add_metric([state], n)
                yield family

            def describe(self):  # noqa: ANN202 - no store read at registration
                return []

        self.registry.register(OpenQueries())

    def released(self, dataset: str, ciphertexts: int, epsilon: float) -> None:
        self.releases.labels(dataset).inc()
        self.released_ciphertexts.labels(dataset).inc(ciphertexts)
        if epsilon > 0:
            self.epsilon.labels(dataset).inc(epsilon)

    @contextlib.contextmanager
    def engine(self, engine: str) -> Iterator[None]:
        """Time a scan in the data engine (duckdb, postgres, spark)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.engine_seconds.labels(engine).observe(time.perf_counter() - start)

    @contextlib.contextmanager
    def crypto(self, operation: str) -> Iterator[Callable[[int], None]]:
        """Time Paillier work; the block reports how many ciphertexts it made."""
        start = time.perf_counter()
        try:
            yield self.crypto_ops.labels(operation).inc
        finally:
            self.crypto_seconds.labels(operation).observe(time.perf_counter() - start)

    def instrument(self, obj: Any, method: str, what: str) -> None:
        """Time every call of ``obj.method`` (on this instance only) as ``what`` ("audit_append",
        or a state database operation): the node times its own audit log and state store, which
        know nothing of metrics."""
        inner = getattr(obj, method)
        histogram = self.audit_append_seconds if what == "audit_append" else self.state_db_seconds.labels(what)

        def timed(*args: Any, **kw: Any) -> Any:
            start = time.perf_counter()
            try:
                return inner(*args, **kw)
            finally:
                histogram.observe(time.perf_counter() - start)

        setattr(obj, method, timed)

    # -- the endpoint ----------------------------------------------------------------------

    def serve(self, listen: str) -> int:
        """Start ``GET /metrics`` on ``listen`` (a thread); returns the bound port."""
        from prometheus_client import start_http_server

        host, port = check_listen(listen, "metrics.listen", ValueError)
        self._server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(self._server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _NullMetrics:
    """Metrics off: every report is a no-op (the default)."""

    enabled = False

    def rpc(self, *_: Any) -> None:
        pass

    def query_state(self, *_: Any) -> None:
        pass

    def released(self, *_: Any) -> None:
        pass

    def replica_heartbeat(self, **_: Any) -> None:
        pass

    def open_queries(self, _count: Any) -> None:
        pass

    @contextlib.contextmanager
    def engine(self, _engine: str) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def crypto(self, _operation: str) -> Iterator[Callable[[int], None]]:
        yield lambda _n: None

    def instrument(self, *_: Any) -> None:
        pass

    def close(self) -> None:
        pass


NULL_METRICS: Any = _NullMetrics()
