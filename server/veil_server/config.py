"""Node configuration: one TOML file, overridable by ``VEIL_*`` environment variables.

Paths in the file are relative to the file itself. Tokens are never stored in the file: each
principal carries the SHA-256 of its bearer token, so a leaked config does not leak a credential.

Environment overrides (all optional): ``VEIL_LISTEN``, ``VEIL_STATE_DIR``,
``VEIL_MIN_GROUP_SIZE``, ``VEIL_WORKERS``, ``VEIL_NODE_NAME``; and for transport and limits
(:mod:`veil_server.access.security`) ``VEIL_DEV_MODE``, ``VEIL_TLS_CERT``, ``VEIL_TLS_KEY``, ``VEIL_TLS_CA``,
``VEIL_MTLS_LISTEN``, ``VEIL_RATE_LIMIT``, ``VEIL_MAX_CONCURRENT_CALLS``; for the node's own state
(``[state]``, :mod:`veil_server.state.statedb`) ``VEIL_STATE_BACKEND``, ``VEIL_STATE_CONNINFO``,
``VEIL_STATE_SCHEMA``, ``VEIL_REPLICA``; where Paillier work runs
(:mod:`veil_server.crypto_executor`) ``VEIL_CRYPTO_EXECUTOR``; and the metrics endpoint
(:mod:`veil_server.telemetry.metrics`) ``VEIL_METRICS_ENABLED``, ``VEIL_METRICS_LISTEN``.
"""

from __future__ import annotations

import enum
import os
import re
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Mapping

from .disclosure.settings import parse_dominance, parse_policy
from .query.catalog import Column, ColumnControl, ColumnType, Dataset
from .query.sources import check_conninfo, parse_basis, parse_source
from .state.statedb import POSTGRES, SCHEMA_RE, SQLITE, StateSettings

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
DEFAULT_MIN_GROUP_SIZE = 10


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and the fix."""


class Role(enum.Enum):
    ANALYST = "analyst"
    OWNER = "owner"
    AUDITOR = "auditor"
    ADMIN = "admin"
    REVIEWER = "reviewer"
    # A data subject's digital-space service: asks for subject statements (issue 21), nothing else
    # but the public catalog and the node key.
    SUBJECT_AGENT = "subject_agent"


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role
    token_sha256: str


@dataclass(frozen=True)
class NodeConfig:
    name: str
    listen: str
    state_dir: Path
    min_group_size: int
    workers: int
    principals: tuple[Principal, ...]
    datasets: tuple[Dataset, ...]
    source: Path | None = None
    # Federation (issue 6): peers with pinned keys and federated datasets, from [federation];
    # None when the file has no such section. See veil_server.federation.settings.
    federation: Any = None
    # Governance of the config's datasets (classification, rights, approval) by dataset name,
    # and the operator's grants ([[grants]]); see veil_server.governance.
    governance: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    grants: tuple[Mapping[str, Any], ...] = ()
    approval_ttl_seconds: int = 7 * 24 * 3600
    # Issue 8: dev mode, TLS, token key and limits (veil_server.access.security.SecuritySettings).
    security: Any = None
    # Issue 4: differential privacy, differencing defence, dominance and grant quotas
    # (veil_server.disclosure.settings.DisclosureSettings).
    disclosure: Any = None
    # Issue 9: where the node keeps its own state: SQLite files in state_dir, or PostgreSQL
    # shared by several replicas ([state], veil_server.state.statedb).
    state: StateSettings = field(default_factory=StateSettings)
    # Issue 9: [crypto] executor, the local process pool or a Dask cluster
    # (veil_server.crypto_executor.CryptoSettings); None: the local pool.
    crypto: Any = None
    # Issue 15: the witnesses that cosign this node's checkpoints, and whether it witnesses its
    # federation peers ([witness], veil_server.audit.witnessing.WitnessSettings); None: none.
    witness: Any = None
    # Issue 19: the web console ([console], veil_server.console.settings.ConsoleSettings); off by default.
    console: Any = None
    # Issue 20: the Prometheus endpoint ([metrics], veil_server.telemetry.MetricsSettings); off by default.
    metrics: Any = None


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> NodeConfig:
    path = Path(path).resolve()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; create one with `veil node init DIR`") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    return parse_config(raw, base_dir=path.parent, env=os.environ if env is None else env, source=path)


def parse_config(
    raw: Mapping[str, Any],
    *,
    base_dir: Path,
    env: Mapping[str, str] | None = None,
    source: Path | None = None,
) -> NodeConfig:
    env = env or {}
    node = dict(raw.get("node", {}))
    for key, var in (
        ("listen", "VEIL_LISTEN"),
        ("state_dir", "VEIL_STATE_DIR"),
        ("min_group_size", "VEIL_MIN_GROUP_SIZE"),
        ("workers", "VEIL_WORKERS"),
        ("name", "VEIL_NODE_NAME"),
    ):
        if env.get(var):
            node[key] = env[var]

    name = str(node.get("name", "veil-node"))
    listen = str(node.get("listen", "127.0.0.1:50051"))
    state_dir = _path(node.get("state_dir", "state"), base_dir)
    min_k = _int(node.get("min_group_size", DEFAULT_MIN_GROUP_SIZE), "node.min_group_size", low=2)
    workers = _int(node.get("workers", 4), "node.workers", low=1, high=64)

    principals = []
    seen: set[str] = set()
    for i, p in enumerate(raw.get("principals", [])):
        where = f"principals[{i}]"
        pname = _name(p.get("name"), f"{where}.name")
        if pname in seen:
            raise ConfigError(f"{where}.name: principal {pname!r} is declared twice")
        seen.add(pname)
        try:
            role = Role(p.get("role"))
        except ValueError:
            raise ConfigError(f"{where}.role must be one of {[r.value for r in Role]}") from None
        digest = str(p.get("token_sha256", "")).lower()
        # Optional (issue 8): static tokens count only in dev mode; signed tokens and certificates need none.
        if digest and not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ConfigError(f"{where}.token_sha256 must be the 64-hex-digit SHA-256 of the principal's token")
        principals.append(Principal(pname, role, digest))

    datasets = []
    governance: dict[str, dict[str, Any]] = {}
    names: set[str] = set()
    for i, d in enumerate(raw.get("datasets", [])):
        ds = _dataset(d, f"datasets[{i}]", base_dir, min_k)
        if ds.name.lower() in names:
            raise ConfigError(f"datasets[{i}].name: dataset {ds.name!r} is declared twice")
        names.add(ds.name.lower())
        datasets.append(ds)
        governance[ds.name] = _governance(d, f"datasets[{i}]", seen)
    grants = tuple(_grant(g, f"grants[{i}]", seen, names) for i, g in enumerate(raw.get("grants", [])))
    ttl = _int(node.get("approval_ttl_seconds", 7 * 24 * 3600), "node.approval_ttl_seconds", low=1)

    # Federation (issue 6): parsed by its own module; imported here to avoid an import cycle.
    from .federation.settings import parse_federation

    federation = parse_federation(raw.get("federation"), base_dir=base_dir, node_name=name,
                                  local_datasets={d.name.lower() for d in datasets}, error=ConfigError)
    # Transport, identity and limits (issue 8): [node] dev_mode, [tls], [tokens], [limits].
    from .access.security import parse_security

    security = parse_security(raw, node=node, base_dir=base_dir, env=env, state_dir=state_dir,
                              principals={p.name for p in principals}, error=ConfigError)
    # Disclosure control (issue 14): grant quotas and [disclosure] refusals_per_day (each dataset's
    # mode and budgets are parsed with the dataset).
    from .disclosure.settings import parse_disclosure

    disclosure = parse_disclosure(raw, error=ConfigError)
    # Where Paillier batches run (issue 9): [crypto] executor.
    from .crypto_executor import parse_crypto

    crypto = parse_crypto(raw.get("crypto"), env=env, base_dir=base_dir, dev_mode=security.dev_mode, error=ConfigError)
    # Witnesses of this node's checkpoints (issue 15): [witness].
    from .audit.witnessing import parse_witness

    witness = parse_witness(raw.get("witness"), error=ConfigError, base_dir=base_dir) if "witness" in raw else None
    # The web console (issue 19): [console], off unless enabled.
    from .console.settings import parse_console

    console = parse_console(raw.get("console"), env=env, error=ConfigError)
    # Prometheus metrics (issue 20): [metrics], off unless enabled.
    from .telemetry import parse_metrics

    metrics = parse_metrics(raw.get("metrics"), env=env, error=ConfigError)
    return NodeConfig(name, listen, state_dir, min_k, workers, tuple(principals), tuple(datasets), source,
                      federation, governance, grants, ttl, security=security, disclosure=disclosure,
                      crypto=crypto, state=_state(raw.get("state", {}), env), witness=witness, console=console,
                      metrics=metrics)


def _state(raw: Mapping[str, Any], env: Mapping[str, str]) -> StateSettings:
    """``[state]``: ``backend = "sqlite"`` (default: files in state_dir) or ``"postgres"``, with
    ``conninfo`` (no password: libpq reads it from PGPASSWORD or its password file), ``schema``
    and this replica's name ``replica``."""
    if not isinstance(raw, Mapping):
        raise ConfigError("[state] must be a table")
    state = dict(raw)
    for key, var in (("backend", "VEIL_STATE_BACKEND"), ("conninfo", "VEIL_STATE_CONNINFO"),
                     ("schema", "VEIL_STATE_SCHEMA"), ("replica", "VEIL_REPLICA")):
        if env.get(var):
            state[key] = env[var]
    unknown = set(state) - {"backend", "conninfo", "schema", "replica"}
    if unknown:
        raise ConfigError(f"[state] has unknown key(s) {sorted(unknown)}; known: backend, conninfo, schema, replica")
    backend = str(state.get("backend", SQLITE))
    if backend not in (SQLITE, POSTGRES):
        raise ConfigError(f"state.backend must be {SQLITE!r} (files in state_dir) or {POSTGRES!r} (shared by replicas)")
    conninfo = str(state.get("conninfo", ""))
    if conninfo:
        if backend != POSTGRES:
            raise ConfigError("state.conninfo is for backend = \"postgres\"; remove it or set the backend")
        check_conninfo(conninfo, "state.conninfo", ConfigError)
    schema = str(state.get("schema", "veil"))
    if not SCHEMA_RE.match(schema):
        raise ConfigError("state.schema must be a lower-case SQL name (letters, digits, _; at most 48)")
    replica = str(state.get("replica", ""))
    if replica and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", replica):
        raise ConfigError("state.replica must be 1-64 characters of letters, digits, '_', '.', ':' or '-'")
    return StateSettings(backend, conninfo, schema, replica)


def _governance(d: Mapping[str, Any], where: str, principals: set[str]) -> dict[str, Any]:
    """Classification, rights, approval and owners of a config dataset (checked again, against
    the classification's floors, when the node lists it)."""
    owners = list(d.get("owners", []))
    for o in owners:
        if o not in principals:
            raise ConfigError(f"{where}.owners: {o!r} is not a declared principal")
    rights = list(d.get("rights", ["holding", "processing"]))
    approvals = _int(d.get("approvals_required", 1), f"{where}.approvals_required", low=1, high=16)
    return {"classification": str(d.get("classification", "internal")), "rights": rights,
            "auto_approve": bool(d.get("auto_approve", True)), "approvals_required": approvals, "owners": owners}


def _grant(g: Mapping[str, Any], where: str, principals: set[str], datasets: set[str]) -> dict[str, Any]:
    """An operator grant: principal x dataset x purpose, optionally columns, an end and a cap."""
    if g.get("principal") not in principals:
        raise ConfigError(f"{where}.principal must name a declared principal")
    if str(g.get("dataset", "")).lower() not in datasets:
        raise ConfigError(f"{where}.dataset must name a dataset declared in this file")
    purpose = g.get("purpose")
    if not isinstance(purpose, str) or not NAME_RE.match(purpose):
        raise ConfigError(f"{where}.purpose must be a purpose name")
    return {"principal": g["principal"], "dataset": g["dataset"], "purpose": purpose,
            "columns": [str(c) for c in g.get("columns", [])],
            "max_queries": _int(g.get("max_queries", 0), f"{where}.max_queries", low=0)}


def _dataset(d: Mapping[str, Any], where: str, base_dir: Path, node_min_k: int) -> Dataset:
    name = _name(d.get("name"), f"{where}.name")
    # A file (csv, parquet), a PostgreSQL table or view, or a Spark location: see veil_server.query.sources.
    fmt, src, connection = parse_source(d, where, base_dir, ConfigError)
    purposes = d.get("purposes") or []
    if not purposes or not all(isinstance(p, str) and NAME_RE.match(p) for p in purposes):
        raise ConfigError(f"{where}.purposes must list at least one purpose name (letters, digits, _)")
    # The node's minimum group size is a floor: a dataset may raise it, never lower it.
    k = _int(d.get("min_group_size", node_min_k), f"{where}.min_group_size", low=node_min_k)
    max_groups = _int(d.get("max_groups", 10_000), f"{where}.max_groups", low=1, high=1_000_000)
    max_rows = _int(d.get("max_rows", 1_000_000_000), f"{where}.max_rows", low=1, high=10**15)
    cols = []
    seen: set[str] = set()
    for j, c in enumerate(d.get("columns", [])):
        col = _column(c, f"{where}.columns[{j}]")
        if col.name.lower() in seen:
            raise ConfigError(f"{where}.columns[{j}]: column {col.name!r} is declared twice")
        seen.add(col.name.lower())
        cols.append(col)
    if not cols:
        raise ConfigError(f"{where}.columns must declare every column the owner exposes")
    basis, consent = parse_basis(d, where, base_dir, fmt, seen, ConfigError)
    freshness = str(d.get("freshness_column") or "")
    if freshness and not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$", freshness):
        raise ConfigError(f"{where}.freshness_column must be a column name (letters, digits, _)")
    return Dataset(
        name=name,
        source=src,
        format=fmt,
        columns=tuple(cols),
        purposes=frozenset(purposes),
        description=str(d.get("description", "")),
        min_group_size=k,
        max_groups=max_groups,
        max_rows=max_rows,
        connection=connection,
        disclosure=parse_policy(d, where, error=ConfigError),
        basis=basis,
        consent=consent,
        freshness_column=freshness,
    )


def _column(c: Mapping[str, Any], where: str) -> Column:
    name = _name(c.get("name"), f"{where}.name")
    try:
        ctype = ColumnType(c.get("type"))
    except ValueError:
        raise ConfigError(f"{where}.type must be one of {[t.value for t in ColumnType]}") from None
    raw_controls = c.get("controls", c.get("control", ["hidden"]))
    if isinstance(raw_controls, str):
        raw_controls = [raw_controls]
    try:
        controls = frozenset(ColumnControl(x) for x in raw_controls)
    except ValueError:
        raise ConfigError(f"{where}.controls: each must be one of {[x.value for x in ColumnControl]}") from None
    if ColumnControl.HIDDEN in controls and len(controls) > 1:
        raise ConfigError(f"{where}.controls: 'hidden' cannot be combined with other controls")
    numeric = ctype in (ColumnType.INTEGER, ColumnType.DECIMAL)
    scale = _int(c.get("scale", 0), f"{where}.scale", low=0, high=12)
    if ctype is ColumnType.INTEGER and scale:
        raise ConfigError(f"{where}.scale must be 0 for an integer column")
    value_range = None
    if "range" in c:
        r = c["range"]
        if not (isinstance(r, list) and len(r) == 2):
            raise ConfigError(f"{where}.range must be [low, high]")
        low, high = _dec(r[0], f"{where}.range"), _dec(r[1], f"{where}.range")
        if not low < high:
            raise ConfigError(f"{where}.range: low must be below high")
        value_range = (low, high)
    bin_width = _dec(c["bin_width"], f"{where}.bin_width") if "bin_width" in c else None
    if bin_width is not None and bin_width <= 0:
        raise ConfigError(f"{where}.bin_width must be positive")
    categories = tuple(c.get("categories", ()))
    if any(not isinstance(x, (str, int)) or isinstance(x, bool) for x in categories):
        raise ConfigError(f"{where}.categories must be strings or integers")
    if len(set(map(str, categories))) != len(categories):
        raise ConfigError(f"{where}.categories must not repeat a value")
    dominance = parse_dominance(c["dominance"], where, error=ConfigError) if "dominance" in c else None
    col = Column(name, ctype, controls, str(c.get("description", "")), categories, value_range, scale, bin_width,
                 dominance)
    if dominance is not None and not (numeric and col.allows(ColumnControl.AGGREGATE)):
        raise ConfigError(f"{where}.dominance is for columns that may be aggregated")
    if col.allows(ColumnControl.AGGREGATE) and numeric and value_range is None:
        raise ConfigError(f"{where}: an aggregate column needs a declared range = [low, high] (rows are clamped to it)")
    if col.allows(ColumnControl.AGGREGATE) and not numeric and ColumnControl.AGGREGATE in controls:
        raise ConfigError(f"{where}: only integer and decimal columns can be aggregated")
    if ColumnControl.GROUP in controls and not categories and bin_width is None:
        raise ConfigError(f"{where}: a group column needs its public domain: categories = [...] or bin_width with range")
    if bin_width is not None and (value_range is None or not numeric):
        raise ConfigError(f"{where}: bin_width needs a numeric column with a declared range")
    return col


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ConfigError(f"{where} must be a name of letters, digits and _ (not starting with a digit)")
    return value


def _int(value: Any, where: str, *, low: int | None = None, high: int | None = None) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be an integer") from None
    if (low is not None and v < low) or (high is not None and v > high):
        raise ConfigError(f"{where} must be between {low} and {high}" if high else f"{where} must be at least {low}")
    return v


def _dec(value: Any, where: str) -> Decimal:
    if isinstance(value, bool):
        raise ConfigError(f"{where} must be a number")
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise ConfigError(f"{where} must be a number") from None
    if not d.is_finite():
        raise ConfigError(f"{where} must be finite")
    return d


def _path(value: Any, base_dir: Path) -> Path:
    p = Path(str(value)).expanduser()
    return p if p.is_absolute() else (base_dir / p).resolve()


def dataset_to_dict(ds: Dataset) -> dict[str, Any]:
    """A dataset in the shape of a ``[[datasets]]`` table (absolute source path)."""
    cols = []
    for c in ds.columns:
        col: dict[str, Any] = {"name": c.name, "type": c.type.value, "controls": sorted(x.value for x in c.controls),
                               "description": c.description, "scale": c.scale}
        if c.categories:
            col["categories"] = list(c.categories)
        if c.value_range is not None:
            col["range"] = [str(v) for v in c.value_range]
        if c.bin_width is not None:
            col["bin_width"] = str(c.bin_width)
        if c.dominance is not None:
            col["dominance"] = {"n": c.dominance.n, "percent": c.dominance.percent}
        cols.append(col)
    return {"name": ds.name, "source": ds.source, "format": ds.format, "description": ds.description,
            "purposes": sorted(ds.purposes), "min_group_size": ds.min_group_size, "max_groups": ds.max_groups,
            "max_rows": ds.max_rows, "columns": cols, **({"connection": ds.connection} if ds.connection else {}),
            **({"basis": ds.basis} if ds.basis else {}),
            **({"freshness_column": ds.freshness_column} if ds.freshness_column else {}), **({"consent": _consent_dict(ds)} if ds.consent else {}),
            **ds.disclosure.to_dict()}


def _consent_dict(ds: Dataset) -> dict[str, Any]:
    assert ds.consent is not None
    c = ds.consent.to_dict()
    if c["format"] == "postgres":  # implied by the dataset's format
        del c["format"]
    return c


def dataset_from_dict(d: Mapping[str, Any], *, where: str = "dataset", base_dir: Path = Path("/"),
                      min_group_size: int = 2) -> Dataset:
    """Parse and validate one dataset table (as in the config file, or as stored by the registry)."""
    return _dataset(d, where, base_dir, min_group_size)
