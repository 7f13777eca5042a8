"""``veil node check``: every problem of a ``veil.toml``, without binding a port or writing a file.

Two passes. The first walks the file against :data:`SCHEMA`, the keys every section accepts with
their types and ranges, and reports *all* it finds: an unknown key (with the closest known name,
by :mod:`difflib`, so ``min_group_sise`` says "did you mean min_group_size"), a wrong type, a
value out of range. A typo is an error, never a silently ignored key that leaves a default in
force. The second pass is the node's own parser (:func:`veil_server.config.parse_config`, with the
``VEIL_*`` environment applied), which checks what needs several keys at once (a grant naming a
declared principal, TLS files that exist, budgets that fit each other); it stops at its first
problem, so it adds at most one. ``veil node serve`` runs the same check before it starts.

Every problem names its key path (``node.min_group_size``, ``datasets[0].columns[2].range``) and
never quotes a value from the file beyond the offending key's own name: a config may carry
connection strings.

:data:`SCHEMA` must list every key a section's parser reads; ``tests/unit/test_config_check.py``
checks that a full config written by ``veil node init`` and the demo folders pass.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .config import ConfigError, Role, parse_config
from .query.catalog import ColumnType


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the file: where (a key path, or "" for the whole file) and why."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message


@dataclass(frozen=True)
class Key:
    """A scalar or list key: ``kind`` is str, int, number, bool, strs (a list of strings), list, any."""

    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Table:
    """A section (``[tls]``) or an inline table; ``many``: an array of tables (``[[datasets]]``)."""

    keys: Mapping[str, "Key | Table"]
    many: bool = False


_S, _B, _STRS = Key("str"), Key("bool"), Key("strs")

_COLUMN = Table({
    "name": _S, "type": Key("str", choices=tuple(t.value for t in ColumnType)),
    "controls": Key("any"), "control": Key("any"), "description": _S,
    "scale": Key("int", 0, 12), "range": Key("list"), "bin_width": Key("number"),
    "categories": Key("list"), "dominance": Table({"n": Key("int", 1, 10), "percent": Key("number", 0, 100)}),
}, many=True)

_DATASET = Table({
    "name": _S, "description": _S, "purposes": _STRS,
    # Where the rows are (veil_server.query.sources).
    "source": _S, "format": Key("str", choices=("csv", "parquet", "postgres", "spark")), "table": _S, "view": _S,
    "conninfo": _S, "connection": _S, "master": _S,
    "min_group_size": Key("int", 2), "max_groups": Key("int", 1, 1_000_000), "max_rows": Key("int", 1, 10**15),
    "columns": _COLUMN,
    # Disclosure (veil_server.disclosure.settings); `differencing` is a retired key its parser explains.
    "disclosure": Key("str", choices=("dp", "exact")), "exact_reason": _S, "differencing": Key("any"),
    "dp": Table({"epsilon_per_query": Key("number"), "max_epsilon_per_query": Key("number"),
                 "analyst_budget": Key("number"), "budget": Key("number"), "dataset_budget": Key("number"),
                 "per": Key("str", choices=("analyst", "analyst_purpose"))}),
    # Governance (veil_server.governance).
    "classification": _S, "rights": _STRS, "auto_approve": _B, "approvals_required": Key("int", 1, 16),
    "owners": _STRS,
}, many=True)

#: Every key of a node's ``veil.toml``. A section's parser reading a key not listed here would make
#: `check` call a valid file wrong, so each parser's keys are mirrored (with the module that reads them).
SCHEMA = Table({
    "node": Table({"name": _S, "listen": _S, "state_dir": _S, "min_group_size": Key("int", 2),
                   "workers": Key("int", 1, 64), "approval_ttl_seconds": Key("int", 1), "dev_mode": _B}),
    "principals": Table({"name": _S, "role": Key("str", choices=tuple(r.value for r in Role)),
                         "token_sha256": _S}, many=True),
    "datasets": _DATASET,
    "grants": Table({"principal": _S, "dataset": _S, "purpose": _S, "columns": _STRS, "max_queries": Key("int", 0),
                     "quota": Table({"queries_per_day": Key("int", 0), "rows_scanned": Key("int", 0),
                                     "epsilon": Key("number", 0)})}, many=True),
    # veil_server.federation.settings
    "federation": Table({
        "name": _S, "timeout_seconds": Key("number", 0.1, 3600), "retries": Key("int", 0, 10),
        "max_clock_skew_seconds": Key("number", 1, 86400),
        "peers": Table({"name": _S, "address": _S, "public_key": _S, "public_key_file": _S}, many=True),
        "datasets": Table({"name": _S, "local": _S, "members": _STRS, "protocols": _STRS}, many=True),
    }),
    # veil_server.access.security, .tls, .limits
    "tls": Table({"cert": _S, "key": _S, "ca": _S, "mtls_listen": _S,
                  "clients": Table({"name": _S, "principal": _S}, many=True)}),
    "tokens": Table({"public_key": _S, "max_ttl_hours": Key("int", 1, 24 * 366)}),
    "limits": Table({"requests_per_second": Key("number", 0), "burst": Key("int", 1),
                     "max_concurrent_calls": Key("int", 1), "max_open_queries": Key("int", 1),
                     "max_message_bytes": Key("int", 1024), "rpc_threads": Key("int", 1),
                     "max_concurrent_rpcs": Key("int", 1), "min_free_bytes": Key("int", 0),
                     "max_preauth_calls": Key("int", 1)}),
    # veil_server.disclosure.settings
    "disclosure": Table({"refusals_per_day": Key("int", 1, 1_000_000)}),
    # veil_server.state.statedb (via config._state)
    "state": Table({"backend": Key("str", choices=("sqlite", "postgres")), "conninfo": _S, "schema": _S,
                    "replica": _S}),
    # veil_server.crypto_executor
    "crypto": Table({"executor": _S, "obfuscation": Key("str", choices=("djn", "full")),
                     "connect_timeout_seconds": Key("number", 0), "task_timeout_seconds": Key("number", 0),
                     "tls_ca": _S, "tls_cert": _S, "tls_key": _S,
                     "table_memory": Key("any")}),  # "auto", "512MiB" or bytes: parse_bytes checks it
    # veil_server.audit.witnessing
    "witness": Table({"witnesses": Table({"url": _S, "key": _S}, many=True), "quorum": Key("int", 0),
                      "serve": _S, "follow": _STRS}),
    # veil_server.console.settings
    "console": Table({"enabled": _B, "listen": _S, "session_idle_minutes": Key("int", 1, 24 * 60),
                      "session_max_hours": Key("int", 1, 7 * 24), "max_sessions": Key("int", 1, 100_000)}),
    # veil_server.telemetry.metrics
    "metrics": Table({"enabled": _B, "listen": _S}),
})

_KIND_NAMES = {"str": "a string", "int": "an integer", "number": "a number", "bool": "true or false",
               "strs": "a list of strings", "list": "a list"}


def check_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> list[Problem]:
    """Every problem of the config file at ``path`` (empty: the node would accept it). Reads the
    file (and the files it names, such as TLS certificates) and writes nothing."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [Problem("", f"config file {path} does not exist; create one with `veil node init DIR`")]
    except OSError as e:
        return [Problem("", f"config file {path} cannot be read ({e.strerror or type(e).__name__})")]
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        return [Problem("", f"not valid TOML: {e}")]
    problems = check_schema(raw)
    try:
        parse_config(raw, base_dir=path.resolve().parent, env=os.environ if env is None else env,
                     source=path.resolve())
    except ConfigError as e:
        message = str(e)
        # The parser names a key path first; drop what the schema pass already said about that key.
        if not any(message.startswith(p.key) or message.startswith(f"[{p.key}") for p in problems if p.key):
            problems.append(Problem("", message))
    except Exception as e:  # a shape the schema pass reported already makes the parser trip over it
        if not problems:
            problems.append(Problem("", f"the node cannot read this file ({type(e).__name__})"))
    return problems


def check_schema(raw: Mapping[str, Any]) -> list[Problem]:
    """The first pass: unknown keys, types and ranges, all of them."""
    problems: list[Problem] = []
    _table(raw, SCHEMA, "", problems)
    return problems


def _table(value: Any, spec: Table, where: str, problems: list[Problem]) -> None:
    for key, item in value.items():
        path = f"{where}.{key}" if where else key
        known = spec.keys.get(key)
        if known is None:
            problems.append(Problem(path, _unknown(key, spec, where)))
        elif isinstance(known, Table):
            _section(item, known, path, problems)
        else:
            message = _scalar(item, known)
            if message:
                problems.append(Problem(path, message))


def _section(value: Any, spec: Table, path: str, problems: list[Problem]) -> None:
    if spec.many:
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            problems.append(Problem(path, f"must be an array of tables ([[{path}]] ...)"))
            return
        for i, v in enumerate(value):
            _table(v, spec, f"{path}[{i}]", problems)
    elif not isinstance(value, dict):
        problems.append(Problem(path, f"must be a table ([{path}] or {{ key = value }})"))
    else:
        _table(value, spec, path, problems)


def _scalar(value: Any, spec: Key) -> str | None:
    kind = spec.kind
    if kind == "any":
        return None
    ok = {
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "strs": isinstance(value, list) and all(isinstance(v, str) for v in value),
        "list": isinstance(value, list),
    }[kind]
    if not ok:
        return f"must be {_KIND_NAMES[kind]}, not {_toml_type(value)}"
    if spec.choices and value not in spec.choices:
        return f"must be one of {', '.join(repr(c) for c in spec.choices)}"
    if kind in ("int", "number"):
        if spec.low is not None and value < spec.low or spec.high is not None and value > spec.high:
            if spec.high is None:
                return f"must be at least {spec.low:g}"
            return f"must be between {spec.low:g} and {spec.high:g}"
    return None


def _unknown(key: str, spec: Table, where: str) -> str:
    section = f"[{where}]" if where else "the top level"
    close = difflib.get_close_matches(key, list(spec.keys), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else f"; known keys: {', '.join(sorted(spec.keys))}"
    return f"unknown key in {section}{hint}"


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return "a date or time"
