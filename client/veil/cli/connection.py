"""The connection flags, on every verb that contacts a node and on no other.

Each flag falls back to an environment variable, so a shell can set them once:

    --target      VEIL_TARGET       node address host:port (default 127.0.0.1:50051)
    --token-file  VEIL_TOKEN_FILE   file holding the bearer token
    --token       VEIL_TOKEN        the token itself (a flag shows in the process list: prefer a file)
    --ca          VEIL_CA           CA certificate to trust (PEM)
    --cert        VEIL_CERT         client certificate, for the mutual-TLS port (PEM)
    --key-file    VEIL_KEY          the client certificate's private key (PEM)

``--key`` elsewhere is always a node's public key, for offline verification.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from ..connection import DEFAULT_TARGET

if TYPE_CHECKING:
    from ..sdk import Node

FLAGS = ("--target", "--token-file", "--token", "--ca", "--cert", "--key-file")


def add_connection_flags(p: argparse.ArgumentParser, *, key_bits: bool = False) -> None:
    g = p.add_argument_group("connection (each flag falls back to its environment variable)")
    g.add_argument("--target", help=f"node address host:port (env VEIL_TARGET, default {DEFAULT_TARGET})")
    g.add_argument("--token-file", help="file holding the bearer token (env VEIL_TOKEN_FILE)")
    g.add_argument("--token", help="the bearer token itself (env VEIL_TOKEN); a file is safer")
    g.add_argument("--ca", help="CA certificate to trust, PEM (env VEIL_CA)")
    g.add_argument("--cert", help="client certificate for the mutual-TLS port, PEM (env VEIL_CERT)")
    g.add_argument("--key-file", help="the client certificate's private key, PEM (env VEIL_KEY)")
    if key_bits:
        p.add_argument("--key-bits", type=int, default=2048, choices=(2048, 3072, 4096),
                       help="size of your Paillier key pair in VEIL_HOME (default 2048)")


def _token(args: argparse.Namespace) -> str | None:
    if args.token:
        return args.token
    path = args.token_file or os.environ.get("VEIL_TOKEN_FILE")
    if path:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    return os.environ.get("VEIL_TOKEN")


def connect(args: argparse.Namespace) -> Node:
    """A :class:`veil.Node` for the verb's connection flags (environment variables otherwise)."""
    from ..sdk import Node

    return Node(args.target or os.environ.get("VEIL_TARGET") or DEFAULT_TARGET, token=_token(args),
                key_bits=getattr(args, "key_bits", 2048), ca=args.ca, cert=args.cert, key=args.key_file)
