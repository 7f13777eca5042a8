"""The web console for data owners, reviewers and auditors (``[console]``, off by default).

A front end like :mod:`veil_server.api`: it adds no rule of its own. Every page and action is one
of the node's RPCs, called in-process through the node's own interceptors (:mod:`.calls`), so
authentication, roles, limits, ownership and the audit trail are exactly the gRPC port's.

- :mod:`.settings`: the ``[console]`` section.
- :mod:`.calls`: the node's handlers and interceptors, called in-process; refusals as statuses.
- :mod:`.sessions`: sessions, cookies and CSRF tokens.
- :mod:`.httpd`: the HTTP(S) server, security headers, forms.
- :mod:`.app`: routes, dispatch, rendering, sign-in.
- pages: :mod:`.signin`, :mod:`.datasets`, :mod:`.reviews`, :mod:`.grants`, :mod:`.usage`,
  :mod:`.audit_pages` (with :mod:`.charts` and :mod:`.witnesses`).

Imported only by :mod:`veil_server.api.server` (which starts it next to the gRPC port) and the
node's command line; it imports nothing of either.
"""

from .calls import HandlerTable, NodeCalls, Refusal
from .settings import ConsoleSettings, parse_console


def start_console(settings: ConsoleSettings, *, listen: str | None = None, **kw):
    """Build and start the console (see :class:`.app.Console`) on ``listen`` (default
    ``settings.listen``); returns it, serving."""
    from .app import Console

    console = Console(settings, **kw)
    console.start(listen)
    return console


__all__ = ["ConsoleSettings", "parse_console", "HandlerTable", "NodeCalls", "Refusal", "start_console"]
