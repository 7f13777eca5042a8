"""The parts of the node only some operators install, and how to ask for them.

``veil-server`` alone serves CSV and Parquet files with DuckDB and keeps its state in SQLite.
PostgreSQL (data sources and shared state), Spark SQL and a Dask cluster for the Paillier work
come with extras, so a node that needs none of them does not carry them:
``pip install 'veil-server[postgres]'``, ``[spark]``, ``[dask]``.
"""

from __future__ import annotations

import importlib.util
import sys

EXTRA_OF = {"psycopg": "postgres", "pyspark": "spark", "distributed": "dask"}


class MissingExtra(ImportError):
    """A configured feature needs a package this installation lacks; the message names the extra."""


def require(module: str, feature: str) -> None:
    """Raise :class:`MissingExtra` unless ``module`` can be imported; ``feature`` names what needs it."""
    if module in sys.modules and sys.modules[module] is None or importlib.util.find_spec(module) is None:
        raise MissingExtra(f"{feature} needs {module}, which is not installed: "
                           f"pip install 'veil-server[{EXTRA_OF[module]}]'")
