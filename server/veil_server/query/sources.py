"""Where a dataset's rows live, and how the node notices that they changed.

A dataset's ``format`` names its source and so the engine that runs its aggregates:

- ``csv`` / ``parquet``: a file, read by embedded DuckDB (the default).
- ``postgres``: a table or view in a PostgreSQL database (``table = "schema.name"`` or
  ``view = ...``). The aggregate is pushed down; only per-group statistics leave the database.
- ``spark``: a Parquet (or ``.csv``) file or directory read by Spark SQL, in local mode or on the
  cluster named by ``master`` (a local path or a URI the cluster reads: ``hdfs://``, ``s3a://``).

Credentials never sit in the configuration: a ``conninfo`` carrying a password is refused. The
password comes from libpq's own sources (``PGPASSWORD``, ``PGPASSFILE`` / ``~/.pgpass``, a service
file), and a dataset without ``conninfo`` uses ``$VEIL_POSTGRES_CONNINFO``, else libpq's ``PG*``
variables. Spark's master defaults to ``$VEIL_SPARK_MASTER``, else ``local[*]``.

How the node notices that a source's rows changed is :mod:`.fingerprints`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping

from ..extras import MissingExtra, require
from .catalog import Dataset
from .consent import BASES, CONSENT, DEFAULT_COLUMNS, ConsentSource

FILE_FORMATS = ("csv", "parquet")
POSTGRES = "postgres"
SPARK = "spark"
FORMATS = (*FILE_FORMATS, POSTGRES, SPARK)

ENV_POSTGRES_CONNINFO = "VEIL_POSTGRES_CONNINFO"
ENV_SPARK_MASTER = "VEIL_SPARK_MASTER"
DEFAULT_SPARK_MASTER = "local[*]"

# One or two SQL identifiers (schema.relation), as PostgreSQL stores them: quoted verbatim, so
# they are case-sensitive (an unquoted CREATE TABLE stores lower case).
_IDENT = r"[A-Za-z_][A-Za-z0-9_$]{0,62}"
RELATION_RE = re.compile(rf"^{_IDENT}(\.{_IDENT})?$")
MASTER_RE = re.compile(r"^(local(\[(\*|[0-9]{1,4})\])?|(spark|yarn|k8s|mesos)://[^\s]+|yarn)$")


def parse_source(d: Mapping[str, Any], where: str, base_dir: Path,
                 error: Callable[[str], Exception]) -> tuple[str, str, str]:
    """``(format, source, connection)`` of one ``[[datasets]]`` table, validated."""
    fmt = str(d.get("format") or "").lower()
    if fmt in (POSTGRES, SPARK):
        try:
            require("psycopg" if fmt == POSTGRES else "pyspark", f"{where}: format = \"{fmt}\"")
        except MissingExtra as e:
            raise error(str(e)) from None
    if fmt == POSTGRES:
        return fmt, _relation(d, where, error), _conninfo(d, where, error)
    if fmt == SPARK:
        source = d.get("source")
        if not source:
            raise error(f"{where}.source is required for a spark dataset (a Parquet path, or a URI the cluster reads)")
        master = str(d.get("master") or d.get("connection") or "")
        if master and not MASTER_RE.match(master):
            raise error(f"{where}.master must be a Spark master URL such as local[4] or spark://host:7077")
        return fmt, _location(source, base_dir), master
    source = d.get("source")
    if not source:
        raise error(f"{where}.source is required (a CSV or Parquet file path)")
    src = _location(source, base_dir)
    fmt = fmt or Path(src).suffix.lstrip(".").lower()
    if fmt not in FILE_FORMATS:
        raise error(f"{where}.format must be one of {', '.join(repr(f) for f in FORMATS)}")
    return fmt, src, ""


def parse_basis(d: Mapping[str, Any], where: str, base_dir: Path, fmt: str, columns: set[str],
                error: Callable[[str], Exception]) -> tuple[str, ConsentSource | None]:
    """``(basis, consent source)`` of one ``[[datasets]]`` table (see :mod:`.consent`).

    ``basis = "consent"`` needs a ``[datasets.consent]`` table: ``source`` (a CSV/Parquet file
    for a file dataset, ``schema.table`` in the same database for a PostgreSQL one),
    ``subject_column`` (a declared column of the dataset), and optionally ``columns`` renaming
    the consent table's subject_id / purpose / status / granted_at / expires_at."""
    basis = str(d.get("basis") or "")
    if basis and basis not in BASES:
        raise error(f"{where}.basis must be one of {', '.join(repr(b) for b in BASES)}")
    raw = d.get("consent")
    if basis != CONSENT:
        if raw:
            raise error(f"{where}.consent is only read for basis = \"consent\"; remove it or declare that basis")
        return basis, None
    if not isinstance(raw, Mapping) or not raw.get("source"):
        raise error(f"{where}: basis = \"consent\" needs [datasets.consent] with source = the consent table "
                    "and subject_column = the dataset's subject id column")
    subject_column = str(raw.get("subject_column") or "")
    if subject_column.lower() not in columns:
        raise error(f"{where}.consent.subject_column must name a declared column of the dataset")
    names = raw.get("columns") or {}
    if not isinstance(names, Mapping) or set(names) - set(DEFAULT_COLUMNS):
        raise error(f"{where}.consent.columns may rename only {', '.join(DEFAULT_COLUMNS)}")
    for k, v in names.items():
        if not isinstance(v, str) or not re.match(rf"^{_IDENT}$", v):
            raise error(f"{where}.consent.columns.{k} must be a column name (letters, digits, _)")
    if fmt in FILE_FORMATS:
        source = _location(raw["source"], base_dir)
        cfmt = str(raw.get("format") or Path(source).suffix.lstrip(".")).lower()
        if cfmt not in FILE_FORMATS:
            raise error(f"{where}.consent.source must be a .csv or .parquet file (or set consent.format)")
    elif fmt == POSTGRES:
        source, cfmt = str(raw["source"]), POSTGRES
        if not RELATION_RE.match(source):
            raise error(f"{where}.consent.source must be name or schema.name in the dataset's database")
    elif fmt == SPARK:
        # Spark reads the consent table in place, as it reads the data: a Parquet file or location.
        text = str(raw["source"])
        source = text if "://" in text else _location(text, base_dir)
        cfmt = str(raw.get("format") or "parquet").lower()
        if cfmt != "parquet":
            raise error(f"{where}.consent.source of a Spark dataset must be Parquet (consent.format = \"parquet\")")
    else:
        raise error(f"{where}: consent sources are supported for csv, parquet, postgres and spark datasets, not {fmt}")
    return basis, ConsentSource(source=source, format=cfmt, subject_column=subject_column, **dict(names))


def _relation(d: Mapping[str, Any], where: str, error: Callable[[str], Exception]) -> str:
    given = [k for k in ("table", "view", "source") if d.get(k)]
    if len(given) != 1:
        raise error(f"{where}: a postgres dataset names exactly one of table = \"schema.name\" or view = ...")
    rel = str(d[given[0]])
    if not RELATION_RE.match(rel):
        raise error(f"{where}.{given[0]} must be name or schema.name (letters, digits, _ and $)")
    return rel


def _conninfo(d: Mapping[str, Any], where: str, error: Callable[[str], Exception]) -> str:
    conninfo = str(d.get("conninfo") or d.get("connection") or "")
    if conninfo:
        check_conninfo(conninfo, f"{where}.conninfo", error)
    return conninfo


def check_conninfo(conninfo: str, where: str, error: Callable[[str], Exception]) -> None:
    """Refuse an unparseable conninfo or one that carries a password (which the error never echoes)."""
    try:
        require("psycopg", where)
    except MissingExtra as e:
        raise error(str(e)) from None
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(conninfo)
    except Exception:
        raise error(f"{where} is not a libpq connection string (key=value pairs or a postgresql:// URI)") from None
    if params.get("password"):
        raise error(f"{where} must not contain a password: use PGPASSWORD, PGPASSFILE (~/.pgpass) or a service file")


def _location(source: Any, base_dir: Path) -> str:
    text = str(source)
    if "://" in text:  # a URI for the cluster (hdfs://, s3a://, file://): kept as written
        return text
    p = Path(text).expanduser()
    return str(p if p.is_absolute() else (base_dir / p).resolve())


def postgres_conninfo(ds: Dataset, env: Mapping[str, str] | None = None) -> str:
    """The conninfo the engine uses for ``ds`` ("" lets libpq read its ``PG*`` variables)."""
    env = os.environ if env is None else env
    return ds.connection or env.get(ENV_POSTGRES_CONNINFO, "")


def spark_master(ds: Dataset, env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return ds.connection or env.get(ENV_SPARK_MASTER, "") or DEFAULT_SPARK_MASTER
