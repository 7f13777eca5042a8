"""Which engine runs a dataset's aggregate: DuckDB for files, PostgreSQL or Spark by ``format``.

Kept apart from :mod:`.engine` so that the PostgreSQL and Spark engines, which build on the
engine's SQL renderer, and the router, which creates them, do not import one another.
"""

from __future__ import annotations

import logging
import threading

from ..errors import Internal
from .catalog import Dataset
from .engine import DuckDBEngine, Engine
from .plan import QueryPlan
from .sources import FILE_FORMATS
from .stats import AggregateResult

log = logging.getLogger("veil.engine")


class RoutingEngine:
    """Sends each dataset to the engine of its ``format``: DuckDB for CSV and Parquet files,
    PostgreSQL (pushed-down SQL) and Spark SQL (local or a cluster) for the others.

    The PostgreSQL and Spark engines are created on first use, so a node that serves only files
    never imports psycopg or pyspark. A dataset the node did not know at start (registered later
    through governance) is set up on its first query.
    """

    def __init__(self, datasets: list[Dataset] | tuple[Dataset, ...] = (), *, threads: int | None = None) -> None:
        self._files = FILE_FORMATS
        known = [d for d in datasets if d.format in FILE_FORMATS]
        self.duckdb = DuckDBEngine(known, threads=threads)
        self._duck_views = {(d.name.lower(), d.source, d.format) for d in known}
        self._backends: dict[str, Engine] = {}
        self._lock = threading.Lock()
        for d in datasets:
            if d.format == "spark":
                # Start Spark's JVM now, before the gRPC server's threads exist: pyspark launches
                # it with fork() and a Python preexec hook, which is unreliable in a process whose
                # gRPC threads are running.
                backend = self.engine_for(d)
                try:
                    backend._spark(d)  # type: ignore[attr-defined]
                except Exception:  # an unreachable cluster surfaces, with its status, at query time
                    log.warning("Spark could not be started for %s; queries on it will fail", d.name)
                break

    def engine_for(self, dataset: Dataset) -> Engine:
        if dataset.format in self._files:
            key = (dataset.name.lower(), dataset.source, dataset.format)
            with self._lock:
                if key not in self._duck_views:
                    self.duckdb._register(dataset)
                    self.duckdb._counts.pop(dataset.name, None)
                    self._duck_views.add(key)
            return self.duckdb
        with self._lock:
            backend = self._backends.get(dataset.format)
            if backend is None:
                backend = self._backends[dataset.format] = _external_engine(dataset.format)
            return backend

    def aggregate(self, plan: QueryPlan, dataset: Dataset) -> AggregateResult:
        return self.engine_for(dataset).aggregate(plan, dataset)

    def column_types(self, dataset: Dataset) -> dict[str, str]:
        return self.engine_for(dataset).column_types(dataset)  # type: ignore[attr-defined]

    def dominance(self, plan: QueryPlan, dataset: Dataset, column: str, n: int) -> dict[tuple[str, ...], tuple[int, int]]:
        return self.engine_for(dataset).dominance(plan, dataset, column, n)  # type: ignore[attr-defined]

    def profile_counts(self, dataset: Dataset, build) -> tuple:
        return self.engine_for(dataset).profile_counts(dataset, build)  # type: ignore[attr-defined]

    def consent_subjects(self, dataset: Dataset, *, validate: bool = True) -> list[str]:
        return self.engine_for(dataset).consent_subjects(dataset, validate=validate)  # type: ignore[attr-defined]

    def row_count(self, dataset: Dataset) -> int:
        return self.engine_for(dataset).row_count(dataset)

    def close(self) -> None:
        with self._lock:
            backends, self._backends = list(self._backends.values()), {}
        for b in backends:
            close = getattr(b, "close", None)
            if close is not None:
                close()


def _external_engine(fmt: str) -> Engine:
    if fmt == "postgres":
        from .engines.postgres import PostgresEngine

        return PostgresEngine()
    if fmt == "spark":
        from .engines.spark import SparkEngine

        return SparkEngine()
    raise Internal("no engine for this dataset's format", reason="EXECUTION_FAILED", private=fmt)
