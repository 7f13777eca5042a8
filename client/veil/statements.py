"""Subject statements: a node's signed list of the releases that relied on a consent snapshot
including one data subject (what a subject's digital-space service asks for; see the README's
"Consent"). The document is RFC 8785 canonical JSON with a ``type`` field, signed with the node's
Ed25519 audit key, so it cannot be mistaken for a certificate, checkpoint or receipt."""

from __future__ import annotations

import json
from typing import Any

from cryptography.exceptions import InvalidSignature

from .audit import canonical
from .audit.records import load_public_key

STATEMENT_TYPE = "veil.subject.statement"


class StatementError(ValueError):
    """A statement is malformed, not canonical, or its signature does not verify."""


def verify_statement(document: bytes, signature: str, public_key: bytes | str) -> dict[str, Any]:
    """The statement's content, once its bytes are canonical and its signature verifies under
    ``public_key``; raises :class:`StatementError` otherwise."""
    try:
        body = json.loads(document)
        if not isinstance(body, dict) or body.get("type") != STATEMENT_TYPE:
            raise StatementError("not a Veil subject statement")
        if canonical.encode(body) != bytes(document):
            raise StatementError("the statement is not in its canonical form (was it edited?)")
        sig = bytes.fromhex(signature)
        if sig.hex() != signature:
            raise StatementError("the signature is not lowercase hex")
        load_public_key(public_key).verify(sig, bytes(document))
    except InvalidSignature:
        raise StatementError("the statement's signature does not verify under this key") from None
    except (ValueError, TypeError) as e:
        if isinstance(e, StatementError):
            raise
        raise StatementError(f"malformed statement: {type(e).__name__}") from None
    return body
