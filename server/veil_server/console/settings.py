"""The ``[console]`` section: the web console for owners, reviewers and auditors (off by default).

```toml
[console]
enabled = true                 # default false: no console, no port
listen = "127.0.0.1:8443"      # its own port; TLS with the node's [tls] certificate
session_idle_minutes = 15      # a session unused this long is over
session_max_hours = 8          # a session is over this long after sign-in, used or not
max_sessions = 1000            # sign-ins beyond this many live sessions are refused
```

``VEIL_CONSOLE_ENABLED`` (1/0) and ``VEIL_CONSOLE_LISTEN`` override them. The transport follows
the gRPC port's rule (:func:`veil_server.access.security.check_startable`): TLS with the node's
certificate, or plaintext on a loopback address in explicit development mode only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
ENV = {"enabled": "VEIL_CONSOLE_ENABLED", "listen": "VEIL_CONSOLE_LISTEN"}


@dataclass(frozen=True)
class ConsoleSettings:
    enabled: bool = False
    listen: str = "127.0.0.1:8443"
    session_idle_minutes: int = 15
    session_max_hours: int = 8
    max_sessions: int = 1000


def parse_console(raw: Any, *, env: Mapping[str, str], error: type[Exception]) -> ConsoleSettings:
    section = dict(raw or {})
    if not isinstance(raw, (dict, type(None))):
        raise error("[console] must be a table")
    unknown = set(section) - set(ConsoleSettings.__dataclass_fields__)
    if unknown:
        raise error(f"console: unknown keys {sorted(unknown)}")
    enabled = section.get("enabled", False)
    if env.get(ENV["enabled"]):
        flag = env[ENV["enabled"]].strip().lower()
        if flag not in _TRUE + _FALSE:
            raise error(f"{ENV['enabled']} must be 1/true or 0/false")
        enabled = flag in _TRUE
    if not isinstance(enabled, bool):
        raise error("console.enabled must be true or false")
    listen = str(env.get(ENV["listen"]) or section.get("listen", ConsoleSettings.listen))
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise error(f"console.listen must be HOST:PORT (port 0 picks a free one), not {listen!r}")
    bounds = {"session_idle_minutes": (1, 24 * 60), "session_max_hours": (1, 7 * 24), "max_sessions": (1, 100_000)}
    values: dict[str, int] = {}
    for key, (low, high) in bounds.items():
        value = section.get(key, getattr(ConsoleSettings, key))
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise error(f"console.{key} must be an integer between {low} and {high}")
        values[key] = value
    return ConsoleSettings(enabled, listen, **values)
