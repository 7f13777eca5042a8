"""Fixtures for the hardening tests: nodes over TLS, nodes with tight limits, raw gRPC helpers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import grpc
import pytest

from veil_server.config import load_config
from veil_server.cli.demo import init_node_folder
from veil_server.api.server import RunningNode, run_server

from . import ledger


def pytest_sessionfinish(session, exitstatus):
    ledger.write(session_failed=bool(session.testsfailed))


@dataclass
class TlsNode:
    folder: Path
    tokens: dict[str, str]
    running: RunningNode

    @property
    def target(self) -> str:
        return self.running.target

    @property
    def mtls_target(self) -> str:
        return f"127.0.0.1:{self.running.mtls_port}"

    @property
    def tls(self) -> Path:
        return self.folder / "tls"

    def pem(self, name: str) -> bytes:
        return (self.tls / name).read_bytes()

    def channel(self, *, mtls: str | None = None, ca: bytes | None = None, cert: bytes | None = None,
                key: bytes | None = None) -> grpc.Channel:
        """A TLS channel trusting ``ca`` (default the node's CA); ``mtls`` = client-NAME stem."""
        if mtls is not None:
            cert, key = self.pem(f"{mtls}.pem"), self.pem(f"{mtls}.key")
        creds = grpc.ssl_channel_credentials(ca or self.pem("ca.pem"), key, cert)
        return grpc.secure_channel(self.mtls_target if (cert or mtls) else self.target, creds)


def set_config(folder: Path, *, node: dict[str, str] | None = None, extra: str = "") -> None:
    """Change ``[node]`` keys of an init'd config and append TOML (a [limits] section, principals)."""
    path = folder / "veil.toml"
    text = path.read_text()
    for key, value in (node or {}).items():
        text, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text, count=1)
        if not n:
            text = text.replace("[node]\n", f"[node]\n{key} = {value}\n", 1)
    path.write_text(text + "\n" + extra)


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory) -> Iterator[TlsNode]:
    folder = tmp_path_factory.mktemp("tlsnode")
    tokens = init_node_folder(folder, rows=3_000, listen="127.0.0.1:0", tls=True, disclosure="exact")
    config = load_config(folder / "veil.toml", env={})
    with run_server(config, listen="127.0.0.1:0", mtls_listen="127.0.0.1:0", grace=0.5) as running:
        yield TlsNode(folder, tokens, running)


def bearer(token: str | None) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")] if token else []


def raw_unary(channel: grpc.Channel, method: str):
    """A generic call that sends and receives bytes: what a fuzzer or a non-Python client does."""
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


def raw_stream(channel: grpc.Channel, method: str):
    return channel.unary_stream(method, request_serializer=None, response_deserializer=None)
