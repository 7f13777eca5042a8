"""What verbs print: aligned text for people, JSON for scripts (``--json``).

Numbers stay exact: a decimal value (an average, a sum at a column's scale) is printed as the
decimal the node computed, as a JSON string in ``--json``, never through a binary float; counts
are JSON integers; the few floats (ε) print with 15 significant digits, so 0.1 + 0.2 reads 0.3.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Mapping


def plain(value: Any) -> Any:
    """``value`` as JSON-ready Python: dataclasses, numpy scalars, decimals, times, paths."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, float):  # ε and the like: 15 significant digits, no binary noise
        return None if math.isnan(value) else float(f"{value:.15g}")
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return plain(item())
    if value.__class__.__name__ in ("NAType", "NaTType"):  # pandas' missing values
        return None
    return str(value)


def dumps(value: Any) -> str:
    return json.dumps(plain(value), ensure_ascii=False)


def emit(args: argparse.Namespace, value: Any, text: str | None = None) -> None:
    """Print ``value`` as JSON with ``--json``, else ``text`` (or ``value`` as ``key: value`` lines)."""
    if getattr(args, "json", False):
        print(dumps(value))
    elif text is not None:
        print(text)
    else:
        print(describe(value))


def describe(value: Any) -> str:
    value = plain(value)
    if isinstance(value, list):
        return table(value)
    if isinstance(value, dict):
        return "\n".join(f"{k}: {_cell(v)}" for k, v in value.items())
    return str(value)


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def table(rows: Iterable[Mapping[str, Any]], columns: list[str] | None = None) -> str:
    """Rows as aligned columns under a header line."""
    rows = [plain(r) for r in rows]
    if not rows:
        return "(none)"
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
    return "\n".join([line(columns), *(line(row) for row in cells)])


def frame_records(frame) -> list[dict[str, Any]]:
    """A result DataFrame's rows, values exact (decimals as decimals, counts as ints)."""
    return [plain(r) for r in frame.to_dict(orient="records")]


def frame_text(frame) -> str:
    import pandas as pd

    with pd.option_context("display.max_rows", 500, "display.width", 200, "display.max_columns", 50):
        return frame.to_string(index=False)
