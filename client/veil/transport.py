"""How the SDK reaches a node: TLS (optionally mutual) by default, plaintext only where it is safe.

``open_channel(target, ca=..., cert=..., key=...)`` (or ``VEIL_CA``, ``VEIL_CERT``, ``VEIL_KEY``):

* a CA given: TLS, trusting that CA only (a node set up by ``veil node init`` uses
  ``NODE/tls/ca.pem``); with ``cert`` and ``key`` too, the SDK also presents a client
  certificate (the node's mutual-TLS port, for enterprise systems);
* no CA, a loopback target (``127.0.0.1``, ``localhost``, ``::1``): plaintext, for a node in
  development mode on the same machine -- nothing leaves the host;
* no CA, any other target: TLS against the system's trusted roots. Plaintext to a remote host
  needs ``insecure=True`` (or ``VEIL_INSECURE=1``), said out loud, because the bearer token
  and the query would cross the network in clear.

``server_name`` (``VEIL_SERVER_NAME``) checks the node's certificate against that name instead
of the target's host, for a node reached by an address its certificate does not list.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Sequence

import grpc

PemSource = str | os.PathLike | bytes | None


def _pem(value: PemSource, what: str) -> bytes | None:
    if value is None or value == "":
        return None
    if isinstance(value, bytes):
        return value
    text = str(value)
    if text.lstrip().startswith("-----BEGIN"):
        return text.encode()
    try:
        return Path(text).expanduser().read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read the {what} at {text}: {e.strerror}") from None


def _host(target: str) -> str:
    t = target.removeprefix("dns:///").removeprefix("ipv4:").removeprefix("ipv6:")
    if t.startswith("[") and "]" in t:
        return t[1 : t.index("]")]
    return t.split(":")[0] if t.count(":") == 1 else t  # host:port, or a bare name / IPv6 address


def is_loopback(target: str) -> bool:
    return is_loopback_host(_host(target))


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address (the one place Veil decides what is loopback)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_channel(target: str, *, ca: PemSource = None, cert: PemSource = None, key: PemSource = None,
                 server_name: str | None = None, insecure: bool | None = None,
                 options: Sequence[tuple[str, object]] = ()) -> grpc.Channel:
    env = os.environ
    ca_pem = _pem(ca if ca is not None else env.get("VEIL_CA"), "CA certificate")
    cert_pem = _pem(cert if cert is not None else env.get("VEIL_CERT"), "client certificate")
    key_pem = _pem(key if key is not None else env.get("VEIL_KEY"), "client key")
    if (cert_pem is None) != (key_pem is None):
        raise ValueError("a client certificate needs its key, and a key its certificate (cert= and key=)")
    if insecure is None:
        insecure = env.get("VEIL_INSECURE", "").lower() in ("1", "true", "yes")
    opts = list(options)
    name = server_name or env.get("VEIL_SERVER_NAME")
    if name:
        opts.append(("grpc.ssl_target_name_override", name))
    if ca_pem is None and cert_pem is None and (insecure or is_loopback(target)):
        return grpc.insecure_channel(target, options=list(options))
    creds = grpc.ssl_channel_credentials(root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem)
    return grpc.secure_channel(target, creds, options=opts)
