"""Canonical JSON: the one byte string for a value, so any language can recompute a leaf hash.

The encoding is RFC 8785 (JSON Canonicalization Scheme) restricted to what the audit log needs:

* objects with string keys, sorted by their UTF-16 code units (RFC 8785 §3.2.3), no duplicates;
* arrays; strings in Unicode NFC, UTF-8, escaped as ECMAScript ``JSON.stringify`` does
  (``\\"`` ``\\\\`` ``\\b`` ``\\f`` ``\\n`` ``\\r`` ``\\t``, other controls as
  ``\\u00xx``, nothing else);
* integers in the I-JSON safe range ``|n| <= 2**53 - 1`` (so JavaScript reads them exactly);
  ``true``/``false``. No floats, no ``null``, no NaN: a float's text form is where
  implementations disagree, and an absent value is an absent key.
* no whitespace between tokens.

With these restrictions every RFC 8785 library emits the same bytes as :func:`encode`.
:func:`decode` accepts only bytes that :func:`encode` would produce (it re-encodes and compares),
so a stored entry has exactly one valid spelling.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from .merkle import VerificationError

MAX_SAFE_INTEGER = 2**53 - 1
MAX_DEPTH = 32

_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z")


class NonCanonical(VerificationError):
    """Bytes are not the canonical encoding of a value (or hold a value the log does not allow)."""


def _check_str(s: str, where: str) -> str:
    if not unicodedata.is_normalized("NFC", s):
        raise ValueError(f"{where}: string is not in Unicode NFC")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{where}: string holds a lone surrogate") from None
    return s


def _emit(value: Any, out: list[str], where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"{where}: nested deeper than {MAX_DEPTH}")
    if isinstance(value, bool):
        out.append("true" if value else "false")
    elif isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise ValueError(f"{where}: integer outside the I-JSON safe range")
        out.append(str(int(value)))
    elif isinstance(value, str):
        out.append(json.dumps(_check_str(value, where), ensure_ascii=False))
    elif isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"{where}: object key {key!r} is not a string")
            _check_str(key, where)
        out.append("{")
        for i, key in enumerate(sorted(value, key=lambda k: k.encode("utf-16-be"))):
            if i:
                out.append(",")
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(":")
            _emit(value[key], out, f"{where}.{key}", depth + 1)
        out.append("}")
    elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _emit(item, out, f"{where}[{i}]", depth + 1)
        out.append("]")
    else:
        # float, None, bytes, datetime, numpy scalars...: convert before logging, explicitly.
        raise TypeError(f"{where}: {type(value).__name__} is not allowed in canonical JSON")


def _plain(value: Any, where: str, depth: int) -> bool:
    """Check ``value`` as :func:`_emit` would (same errors) and say whether the standard
    library's encoder yields the same bytes: only dicts, lists and tuples, and no object key
    outside the BMP (the one case where code-point order, Python's sort, differs from RFC 8785's
    UTF-16 order). Its string escaping is exactly ``JSON.stringify``'s with ``ensure_ascii=False``.
    The node checks every entry at start, so this fast path is what keeps a start quick."""
    if depth > MAX_DEPTH:
        raise ValueError(f"{where}: nested deeper than {MAX_DEPTH}")
    t = type(value)
    if t is str:
        _check_str(value, where)
        return True
    if t is bool:
        return True
    if t is int:
        if abs(value) > MAX_SAFE_INTEGER:
            raise ValueError(f"{where}: integer outside the I-JSON safe range")
        return True
    if t is dict:
        plain = True
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: object key {key!r} is not a string")
            _check_str(key, where)
            plain &= type(key) is str and (key.isascii() or max(key) <= "\uffff")
            plain &= _plain(item, f"{where}.{key}", depth + 1)
        return plain
    if t is list or t is tuple:
        plain = True
        for i, item in enumerate(value):
            plain &= _plain(item, f"{where}[{i}]", depth + 1)
        return plain
    return False  # subclasses, other mappings and sequences, or a type _emit will refuse


def encode(value: Any) -> bytes:
    """The canonical UTF-8 bytes of ``value``.

    Raises ``TypeError`` for a type outside the subset (float, None, bytes, ...) and
    ``ValueError`` for a non-NFC string or an integer outside the safe range.
    """
    if _plain(value, "$", 0):
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        return text.encode("utf-8")
    out: list[str] = []
    _emit(value, out, "$", 0)
    return "".join(out).encode("utf-8")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise NonCanonical("duplicate key in object")
    return obj


def _reject(text: str) -> Any:
    raise NonCanonical(f"non-integer number {text!r}")


def decode(data: bytes) -> Any:
    """Parse canonical bytes; raises :class:`NonCanonical` unless ``encode(result) == data``."""
    try:
        text = bytes(data).decode("utf-8")
        value = json.loads(
            text, object_pairs_hook=_no_duplicates, parse_float=_reject, parse_constant=_reject
        )
    except NonCanonical:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise NonCanonical(f"not valid JSON: {exc}") from None
    try:
        again = encode(value)
    except (TypeError, ValueError) as exc:
        raise NonCanonical(str(exc)) from None
    if again != bytes(data):
        raise NonCanonical("not in canonical form (key order, spacing, escaping or NFC)")
    return value


def format_time(when: datetime) -> str:
    """RFC 3339 in UTC with exactly six fractional digits: fixed width, so it sorts as text."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("audit times must be timezone-aware")
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """Inverse of :func:`format_time`; raises ``ValueError`` for any other spelling."""
    if not isinstance(text, str) or not _TIME_RE.match(text):
        raise ValueError(f"time {text!r} is not RFC 3339 UTC with microseconds (…:SS.ffffffZ)")
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
