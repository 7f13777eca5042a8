"""Console sessions: who signed in, until when, and the CSRF token of their forms.

Threats and answers:

* **A stolen cookie.** The cookie holds only a random 256-bit session id (``__Host-`` prefixed,
  ``Secure``, ``HttpOnly``, ``SameSite=Strict``, ``Path=/``): no token, no name, nothing a page
  script could read. The session lives in this process's memory and ends after
  ``session_idle_minutes`` without use, ``session_max_hours`` after sign-in, at sign-out, when the
  node stops, or as soon as the node refuses its credential (a revoked or expired token).
* **Session fixation.** A session id is created at sign-in, never accepted from a request that did
  not get it from this process, and a sign-in always makes a new one.
* **Cross-site request forgery.** ``SameSite=Strict`` keeps the cookie off cross-site requests;
  on top, every state-changing request must carry the session's CSRF token (a random value in each
  form, compared in constant time) and, when the browser sends ``Origin``, come from the
  console's own origin. Sign-in forms carry a pre-session nonce bound to a cookie the same way
  (login CSRF).
* **Memory.** At most ``max_sessions`` live sessions; expired ones are swept on each sign-in.

The credential a session keeps (a token, or the certificate's names) stays in memory, is never
written to a page, a log or disk, and is re-checked by the node on every action.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

from .calls import Credential

COOKIE = "__Host-veil-session"
LOGIN_COOKIE = "__Host-veil-signin"
LOGIN_NONCE_SECONDS = 600


@dataclass
class Session:
    id: str
    principal: str
    role: str
    credential: Credential
    csrf: str
    created: float
    last_seen: float
    via: str  # "token" or "certificate"
    flash: list[str] = field(default_factory=list)

    def csrf_matches(self, offered: str | None) -> bool:
        return bool(offered) and hmac.compare_digest(self.csrf.encode(), str(offered).encode())


class SessionLimit(Exception):
    pass


class Sessions:
    def __init__(self, *, idle_seconds: float, max_seconds: float, max_sessions: int,
                 clock=time.monotonic) -> None:
        self.idle_seconds, self.max_seconds, self.max_sessions = idle_seconds, max_seconds, max_sessions
        self._clock = clock
        self._lock = threading.Lock()
        self._by_id: dict[str, Session] = {}
        self._nonces: dict[str, float] = {}

    def _expired(self, s: Session, now: float) -> bool:
        return now - s.last_seen > self.idle_seconds or now - s.created > self.max_seconds

    def create(self, principal: str, role: str, credential: Credential, via: str) -> Session:
        now = self._clock()
        with self._lock:
            for sid in [k for k, s in self._by_id.items() if self._expired(s, now)]:
                del self._by_id[sid]
            if len(self._by_id) >= self.max_sessions:
                raise SessionLimit()
            s = Session(secrets.token_urlsafe(32), principal, role, credential, secrets.token_urlsafe(32), now, now, via)
            self._by_id[s.id] = s
            return s

    def get(self, sid: str | None) -> tuple[Session | None, bool]:
        """(the live session, False) or (None, True when the id named a session that expired)."""
        if not sid:
            return None, False
        now = self._clock()
        with self._lock:
            s = self._by_id.get(sid)
            if s is None:
                return None, False
            if self._expired(s, now):
                del self._by_id[sid]
                return None, True
            s.last_seen = now
            return s, False

    def end(self, sid: str | None) -> None:
        with self._lock:
            self._by_id.pop(sid or "", None)

    def end_all(self) -> None:
        with self._lock:
            self._by_id.clear()
            self._nonces.clear()

    # -- sign-in nonces (login CSRF) ---------------------------------------------------------

    def new_nonce(self) -> str:
        now = self._clock()
        nonce = secrets.token_urlsafe(24)
        with self._lock:
            for k in [k for k, t in self._nonces.items() if now - t > LOGIN_NONCE_SECONDS]:
                del self._nonces[k]
            if len(self._nonces) > 10 * self.max_sessions:  # a flood of sign-in pages: keep the newest
                self._nonces.clear()
            self._nonces[nonce] = now
        return nonce

    def take_nonce(self, cookie: str | None, form: str | None) -> bool:
        """The sign-in form's nonce equals the cookie's, and this process issued it (once)."""
        if not cookie or not form or not hmac.compare_digest(cookie.encode(), form.encode()):
            return False
        with self._lock:
            issued = self._nonces.pop(cookie, None)
        return issued is not None and self._clock() - issued <= LOGIN_NONCE_SECONDS


class SignInThrottle:
    """Failed sign-ins per client address: after ``per_minute`` in a minute, further attempts from
    that address are refused without being checked (each check of a bad token writes an audit
    entry; a flood of them must not become a flood of fsyncs). Successful sign-ins do not count."""

    def __init__(self, per_minute: int = 10, clock=time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, list[float]] = {}

    def blocked(self, peer: str) -> bool:
        now = self._clock()
        with self._lock:
            recent = [t for t in self._failures.get(peer, []) if now - t < 60]
            if recent:
                self._failures[peer] = recent
            else:
                self._failures.pop(peer, None)
            return len(recent) >= self.per_minute

    def failed(self, peer: str) -> None:
        with self._lock:
            if len(self._failures) > 10_000:  # addresses are bounded by memory, not by the attacker
                self._failures.clear()
            self._failures.setdefault(peer, []).append(self._clock())
