"""Which console links a role sees: read from the node's own role table (``METHOD_ROLES``), so
the navigation can never offer less or more than the RPCs allow. Display only: the RPC behind
each page is what refuses."""

from __future__ import annotations

from ..access.auth import METHOD_ROLES


def may_call(role: str, method: str) -> bool:
    roles = METHOD_ROLES.get(method)
    return roles is not None and any(r.value == role for r in roles)
