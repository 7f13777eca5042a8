"""The node's log: plain text for people, or one JSON object per line for a log pipeline.

``veil node serve --log-format json`` (or ``VEIL_LOG_FORMAT=json``) writes each event as::

    {"time": "2026-12-02T06:10:00.123456Z", "level": "INFO", "logger": "veil.rpc", "node": "north",
     "event": "rpc", "message": "rpc QueryService/SubmitQuery OK 12.3 ms", "method": "/veil.v1.QueryService/SubmitQuery", "principal": "alice",
     "query_id": "queries/…", "request_id": "…", "duration_ms": 12.3, "outcome": "OK",
     "code": "OK", "reason": null}

``VEIL_LOG_LEVEL`` (DEBUG, INFO — the default —, WARNING, ERROR) sets the threshold; every RPC is
logged at INFO by :mod:`.calls`. The fields are the ones the interceptor puts on the record
(:data:`RPC_FIELDS`); other events carry ``time``, ``level``, ``logger``, ``node`` and ``event``
(the message), and ``exception`` (a type name) when one was logged. Messages never carry a data value or a credential: the node's exceptions keep
values out of both their public and private texts, and the RPC record holds identifiers only.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from typing import Mapping

FORMATS = ("text", "json")
RPC_FIELDS = ("method", "principal", "query_id", "request_id", "duration_ms", "outcome", "code", "reason", "peer")


class JsonFormatter(logging.Formatter):
    def __init__(self, node: str = "") -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat().replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "node": self.node,
            "event": getattr(record, "event", None) or record.getMessage(),
        }
        if getattr(record, "event", None):
            out["message"] = record.getMessage()
        for key in RPC_FIELDS:
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info and record.exc_info[0] is not None:
            # The exception's type only: a traceback's locals and messages stay in text mode.
            out["exception"] = record.exc_info[0].__name__
        return json.dumps(out, ensure_ascii=False, default=str)


def log_format(flag: str | None, env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    fmt = (flag or env.get("VEIL_LOG_FORMAT") or "text").strip().lower()
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)} (--log-format, VEIL_LOG_FORMAT), "
                         f"not {fmt!r}")
    return fmt


def log_level(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    level = (env.get("VEIL_LOG_LEVEL") or "INFO").strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"VEIL_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {level!r}")
    return level


def configure_logging(fmt: str, level: str, *, node: str = "") -> None:
    """Send the process's log to stderr in ``fmt`` at ``level`` (replaces earlier handlers)."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter(node))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
