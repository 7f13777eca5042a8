"""``veil node init`` in its default, secure form: a development CA, certificates and signed tokens.

Writes into the node folder:

* ``tls/ca.pem`` / ``tls/ca.key`` -- the development CA (see :mod:`veil_server.access.dev_ca`; replace
  it, and never ship its key, in a real deployment);
* ``tls/node.pem`` / ``tls/node.key`` -- the node's certificate for loopback and its name;
* ``tls/client-NAME.pem`` / ``.key`` -- a client certificate for each non-analyst principal, the
  way an enterprise system (owner tooling, an auditor's collector, an admin job) authenticates
  on the mutual-TLS port; analysts use tokens;
* ``state/token_key.pem`` -- the token key, and ``tokens/NAME.token`` -- a signed token per
  principal (``veil token issue`` makes more, ``veil token revoke`` withdraws them).

and returns the TOML for ``[tls]``, ``[[tls.clients]]``, ``[tokens]`` and ``[limits]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..access.dev_ca import DevCA, server_names
from ..access.limits import LimitSettings
from ..access.tokens import issue, load_or_create_signing_key

TOKEN_TTL_SECONDS = 30 * 86400  # the demo's tokens; the node's default ceiling is 720 h


@dataclass(frozen=True)
class Provisioned:
    toml: str
    tokens: dict[str, str]
    ca: Path


def client_name(principal: str, node_name: str) -> str:
    return f"{principal}.{node_name.lower().replace('_', '-')}.clients.veil"


def mtls_address(listen: str) -> str:
    """The mutual-TLS port next to ``listen``: the next port, or port 0 when ``listen`` picks one."""
    host, _, port = listen.rpartition(":")
    return f"{host}:{int(port) + 1 if port.isdigit() and int(port) else 0}"


def provision(folder: Path, *, node_name: str, listen: str, principals: list[tuple[str, str]],
              state_dir: str = "state", shared_ca: DevCA | None = None) -> Provisioned:
    """``shared_ca``: issue from this CA (a federation's members trust one another through it)
    instead of making one for this node; only its certificate is copied into the folder."""
    tls = folder / "tls"
    if shared_ca is None:
        ca = DevCA.create(tls, f"Veil development CA ({node_name})")
    else:
        tls.mkdir(parents=True, exist_ok=True)
        (tls / "ca.pem").write_bytes(shared_ca.cert_path.read_bytes())
        ca = DevCA(shared_ca.key, shared_ca.cert, tls)  # issues into this folder; the CA key stays out
    ca.issue("node", server_names(node_name, listen), server=True, client=True)
    lines = ["", "# Transport security (development CA written by `veil node init`; replace for production).",
             "[tls]", 'cert = "tls/node.pem"', 'key = "tls/node.key"', 'ca = "tls/ca.pem"',
             f'mtls_listen = "{mtls_address(listen)}"', ""]
    for name, role in principals:
        if role != "analyst":
            ca.issue(f"client-{name}", [client_name(name, node_name)], server=False, client=True)
            lines += ["[[tls.clients]]", f'name = "{client_name(name, node_name)}"', f'principal = "{name}"', ""]
    state = folder / state_dir
    key = load_or_create_signing_key(state)
    tokens = {name: issue(key, issuer=node_name, principal=name, role=role, ttl_seconds=TOKEN_TTL_SECONDS,
                          state_dir=state)[0] for name, role in principals}
    d = LimitSettings()
    lines += ["# Signed bearer tokens: `veil token issue --principal NAME --ttl 8h`, `veil token revoke ID`.",
              "[tokens]", "max_ttl_hours = 720", "",
              "# Per-principal limits; excess calls are answered RESOURCE_EXHAUSTED.",
              "[limits]", f"requests_per_second = {d.requests_per_second:g}", f"burst = {d.burst}",
              f"max_concurrent_calls = {d.max_concurrent_calls}", f"max_open_queries = {d.max_open_queries}", ""]
    return Provisioned("\n".join(lines), tokens, ca.cert_path)
