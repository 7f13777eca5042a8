"""``veil token issue | revoke | list``: the operator's side of signed bearer tokens.

Runs next to the node's state directory (it reads ``--config``, like ``veil node serve``), with
the token key in ``state_dir/token_key.pem``. Issuing prints the token once and records only its
claims; revoking appends to the revocation list, which a running node picks up at the next call.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from ..access import tokens
from .node_config import add_config_option, load_node_config


def _claims_row(c: dict[str, Any], revoked: set[str]) -> str:
    exp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(c["exp"]))
    state = "revoked" if c["jti"] in revoked else ("expired" if c["exp"] <= time.time() else "valid")
    return f"{c['jti']}  {c['sub']:<12} {c['role']:<9} expires {exp}  {state}"


def cmd_issue(args: argparse.Namespace) -> None:
    config = load_node_config(args)
    principal = next((p for p in config.principals if p.name == args.principal), None)
    if principal is None:
        raise ValueError(f"no principal named {args.principal!r} in the config; declare it in [[principals]]")
    ttl = tokens.parse_duration(args.ttl)
    ceiling = config.security.tokens.max_ttl_hours * 3600
    if ttl > ceiling:
        raise ValueError(f"--ttl {args.ttl} is longer than the node accepts (tokens.max_ttl_hours)")
    key = tokens.load_or_create_signing_key(config.state_dir)
    value, claims = tokens.issue(key, issuer=config.name, principal=principal.name, role=principal.role.value,
                                 ttl_seconds=ttl, state_dir=config.state_dir)
    if args.out:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
    if args.json:
        print(json.dumps({"token": None if args.out else value, **claims.to_json()}))
        return
    # stdout carries the token alone (`veil token issue ... > alice.token` makes a usable file);
    # what it is goes to stderr.
    if not args.out:
        print(value)
    print(f"# id {claims.token_id}, {principal.name} ({principal.role.value}), expires "
          f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(claims.expires_at))}"
          + (f", written to {args.out}" if args.out else ""), file=sys.stderr)


def cmd_revoke(args: argparse.Namespace) -> None:
    config = load_node_config(args)
    if bool(args.id) == bool(args.principal):
        raise ValueError("name one token id, or --principal NAME to revoke all of that principal's tokens")
    rec = tokens.revoke(config.state_dir, token_id=args.id, principal=args.principal)
    known = {c["jti"] for c in tokens.issued(config.state_dir)}
    if args.id and args.id not in known:
        print(f"# note: {args.id} is not in this node's issue log; revoked anyway", file=sys.stderr)
    print(json.dumps(rec) if args.json else f"revoked {args.id or 'every token of ' + args.principal}")


def cmd_list(args: argparse.Namespace) -> None:
    config = load_node_config(args)
    issued = tokens.issued(config.state_dir)
    rl = tokens.RevocationList(config.state_dir / tokens.REVOKED_FILE)
    revoked = {c["jti"] for c in issued
               if rl.is_revoked(tokens.Claims(c["iss"], c["sub"], c["role"], c["iat"], c["exp"], c["jti"]))}
    if args.json:
        print(json.dumps([{**c, "revoked": c["jti"] in revoked} for c in issued]))
    else:
        for c in issued:
            print(_claims_row(c, revoked))


def register(cli: Any) -> None:
    """Add ``veil token issue | revoke | list`` to the ``veil`` command (``cli``: ``veil.cli.command.Commands``)."""
    token = cli.noun("token", "issue, revoke and list signed bearer tokens (operator)")
    p = token.verb("issue", cmd_issue, "issue a signed token for a declared principal (printed alone on stdout)")
    p.add_argument("--principal", required=True)
    p.add_argument("--ttl", default="8h", help="lifetime: 90s, 30m, 8h, 7d (default 8h)")
    p.add_argument("--out", help="write the token to this file (mode 0600) instead of printing it")
    add_config_option(p)
    p = token.verb("revoke", cmd_revoke, "revoke a token by id (see `veil token list`), or all of a principal's")
    p.add_argument("id", nargs="?")
    p.add_argument("--principal")
    add_config_option(p)
    add_config_option(token.verb("list", cmd_list, "list issued tokens (claims only) and whether each is still valid"))
