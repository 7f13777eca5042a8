"""Searching the log: filters to SQL over the indexed copies of entry fields, AIP-158 paging.

A page token is the last index returned plus a fingerprint of the filters, so a token cannot be
replayed against a different search. Results are decoded from the entry bytes themselves, never
from the search columns (which ``store.check`` compares with them at open).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from veil.audit.canonical import format_time
from veil.audit.records import Entry

from ..errors import InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class SearchPage:
    entries: list[Entry]
    next_page_token: str  # "" on the last page


@dataclass(frozen=True)
class Query:
    sql: str
    args: tuple[object, ...]
    page_size: int
    fingerprint: str

    def page(self, rows: list[tuple[int, bytes]]) -> SearchPage:
        """``rows`` as fetched (up to page_size + 1 of them) -> the page and its next token."""
        more = len(rows) > self.page_size
        rows = rows[: self.page_size]
        token = _encode_token(rows[-1][0], self.fingerprint) if more else ""
        return SearchPage([Entry.from_bytes(bytes(r[1])) for r in rows], token)


def build(
    kind: str | None, principal: str | None, dataset: str | None, outcome: str | None,
    since: datetime | str | None, until: datetime | str | None, page_size: int, page_token: str,
    query: str | None = None,
) -> Query:
    """``kind`` may end in ``.*`` (``"admin.*"``); ``since`` is inclusive, ``until`` exclusive."""
    if not isinstance(page_size, int) or isinstance(page_size, bool) or page_size < 0:
        raise InvalidArgument("page_size must be a non-negative integer")
    page_size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    times = [format_time(t) if isinstance(t, datetime) else t for t in (since, until)]
    fingerprint = hashlib.sha256(
        json.dumps([kind, principal, dataset, outcome, query, *times]).encode()
    ).hexdigest()[:16]
    where, args = ["idx > ?"], [_decode_token(page_token, fingerprint)]
    if kind is not None and kind.endswith(".*"):
        prefix = kind[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append("kind LIKE ? ESCAPE '\\'")
        args.append(prefix + "%")
    elif kind is not None:
        where.append("kind = ?")
        args.append(kind)
    for col, val in (("principal", principal), ("dataset", dataset), ("outcome", outcome),
                     ("query", query)):
        if val is not None:
            where.append(f"{col} = ?")
            args.append(val)
    for op, t in ((">=", times[0]), ("<", times[1])):
        if t is not None:
            where.append(f"time {op} ?")
            args.append(t)
    sql = f"SELECT idx, body FROM entry WHERE {' AND '.join(where)} ORDER BY idx LIMIT ?"
    return Query(sql, (*args, page_size + 1), page_size, fingerprint)


def _encode_token(after: int, fingerprint: str) -> str:
    raw = json.dumps({"after": after, "filters": fingerprint}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str, fingerprint: str) -> int:
    if not token:
        return -1
    try:
        obj = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after = obj["after"]
        if obj["filters"] != fingerprint or not isinstance(after, int):
            raise ValueError
        return after
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument("page_token does not belong to this search") from None
