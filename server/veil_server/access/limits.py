"""Per-principal rate limits and concurrency caps: the ``[limits]`` section.

```toml
[limits]
requests_per_second = 50     # per principal: a token bucket refilled at this rate ...
burst = 200                  # ... holding at most this many calls
max_concurrent_calls = 16    # per principal: calls in flight at once (a WaitQuery counts)
max_open_queries = 32        # per principal: unfinished queries (pending, approved, running)
max_message_bytes = 16777216 # largest request the node accepts (federation partials are large)
rpc_threads = 32             # worker threads serving calls
max_concurrent_rpcs = 256    # beyond this gRPC itself answers RESOURCE_EXHAUSTED
min_free_bytes = 67108864    # below this much free space in state_dir, new work is refused
```

Threat: one analyst (or a stolen token) exhausting the node for everyone. Every refusal is
RESOURCE_EXHAUSTED with a reason (``RATE_LIMITED``, ``CONCURRENCY_LIMIT``,
``TOO_MANY_OPEN_QUERIES``) and a ``retry_after_ms`` hint; it costs the node a dictionary lookup,
no disk write (the audit entry for a burst of refusals is coalesced, see ``guard``). State is
one small record per declared principal, so memory does not grow with traffic.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..errors import ResourceExhausted

ENV = {"requests_per_second": "VEIL_RATE_LIMIT", "max_concurrent_calls": "VEIL_MAX_CONCURRENT_CALLS"}


@dataclass(frozen=True)
class LimitSettings:
    requests_per_second: float = 50.0
    burst: int = 200
    max_concurrent_calls: int = 16
    max_open_queries: int = 32
    max_message_bytes: int = 16 * 1024 * 1024
    rpc_threads: int = 32
    max_concurrent_rpcs: int = 256
    min_free_bytes: int = 64 * 1024 * 1024
    # Calls whose metadata names no valid bearer token (anonymous, client certificates, peer
    # envelopes) whose bodies may be read at once (issue 15); more are refused unread.
    max_preauth_calls: int = 16


def parse_limits(raw: Any, *, env: Mapping[str, str], error: type[Exception]) -> LimitSettings:
    section = dict(raw or {})
    for key, var in ENV.items():
        if env.get(var):
            section[key] = env[var]
    unknown = set(section) - set(LimitSettings.__dataclass_fields__)
    if unknown:
        raise error(f"limits: unknown keys {sorted(unknown)}")
    bounds = {"requests_per_second": (0.1, 1e6), "burst": (1, 10**6), "max_concurrent_calls": (1, 10_000),
              "max_open_queries": (1, 10**6), "max_message_bytes": (1024, 256 * 1024 * 1024),
              "rpc_threads": (2, 1024), "max_concurrent_rpcs": (1, 100_000), "min_free_bytes": (0, 2**50),
              "max_preauth_calls": (1, 10_000)}
    values: dict[str, Any] = {}
    for key, (low, high) in bounds.items():
        if key not in section:
            continue
        try:
            v = float(section[key]) if key == "requests_per_second" else int(section[key])
        except (TypeError, ValueError):
            raise error(f"limits.{key} must be a number") from None
        if not low <= v <= high:
            raise error(f"limits.{key} must be between {low} and {high}")
        values[key] = v
    return LimitSettings(**values)


class _Bucket:
    __slots__ = ("tokens", "stamp", "in_flight")

    def __init__(self, burst: int) -> None:
        self.tokens, self.stamp, self.in_flight = float(burst), time.monotonic(), 0


class Limiter:
    """Admission control. ``admit`` returns a release callable or raises ResourceExhausted."""

    def __init__(self, settings: LimitSettings, *, open_queries: Callable[[str], int] | None = None) -> None:
        self.settings = settings
        self._open_queries = open_queries
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}

    def admit(self, principal: str, method: str) -> Callable[[], None]:
        s = self.settings
        with self._lock:
            b = self._buckets.get(principal)
            if b is None:
                b = self._buckets[principal] = _Bucket(s.burst)
            now = time.monotonic()
            b.tokens = min(float(s.burst), b.tokens + (now - b.stamp) * s.requests_per_second)
            b.stamp = now
            if b.tokens < 1.0:
                wait = int((1.0 - b.tokens) / s.requests_per_second * 1000) + 1
                raise ResourceExhausted(
                    f"more than {s.requests_per_second:g} calls per second; retry in {wait} ms",
                    reason="RATE_LIMITED", metadata={"retry_after_ms": str(wait)})
            if b.in_flight >= s.max_concurrent_calls:
                raise ResourceExhausted(
                    f"{s.max_concurrent_calls} calls already in flight for this principal; wait for one to finish",
                    reason="CONCURRENCY_LIMIT", metadata={"retry_after_ms": "100"})
            b.tokens -= 1.0
            b.in_flight += 1
        try:
            if method.endswith("/SubmitQuery") and self._open_queries is not None:
                if self._open_queries(principal) >= s.max_open_queries:
                    raise ResourceExhausted(
                        f"{s.max_open_queries} of your queries are unfinished; wait for or cancel one",
                        reason="TOO_MANY_OPEN_QUERIES", metadata={"retry_after_ms": "1000"})
        except BaseException:
            self._release(b)
            raise
        done = threading.Event()

        def release() -> None:
            if not done.is_set():  # idempotent: a stream may be closed twice
                done.set()
                self._release(b)

        return release

    def _release(self, b: _Bucket) -> None:
        with self._lock:
            b.in_flight -= 1

    def in_flight(self) -> int:
        with self._lock:
            return sum(b.in_flight for b in self._buckets.values())
