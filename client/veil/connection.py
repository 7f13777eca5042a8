"""One connection to a node, as one principal: channel, credentials, retries, the node's key.

The crypto layer, the key files and signature checks load when first used, so that ``import
veil`` stays about as cheap as importing gRPC.

The service APIs (:mod:`veil.sdk`'s ``Node``, ``node.audit``, ``node.governance``,
``node.review``, :mod:`veil.federation`) are built on it and receive it as an argument, so none
of them imports another.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Callable, TypeVar

import grpc

from .errors import Unavailable, from_rpc_error
from .keys import Keyring
from .transport import open_channel
from .v1 import audit_pb2, audit_pb2_grpc

if TYPE_CHECKING:
    from .crypto import PrivateKey, PublicKey

T = TypeVar("T")
C = TypeVar("C", bound="Connection")

DEFAULT_TARGET = "127.0.0.1:50051"
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class Connection:
    """The channel to one node and how calls go over it (see :class:`veil.sdk.Node`)."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        home: str | os.PathLike[str] | None = None,
        key_bits: int = 2048,
        timeout: float = 30.0,
        channel: grpc.Channel | None = None,
        retries: int = 3,
        node_key: bytes | str | None = None,
        ca: str | os.PathLike | bytes | None = None,
        cert: str | os.PathLike | bytes | None = None,
        key: str | os.PathLike | bytes | None = None,
        server_name: str | None = None,
        insecure: bool | None = None,
    ) -> None:
        self.target = target
        self._token = token if token is not None else os.environ.get("VEIL_TOKEN")
        self._timeout = timeout
        self._retries = retries
        # TLS unless the node is on this machine and no CA is given (veil.transport; issue 8).
        self._channel = channel or open_channel(
            target, ca=ca, cert=cert, key=key, server_name=server_name, insecure=insecure,
            options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
        )
        self._keyring = Keyring(home)
        self._key_bits = key_bits
        self._keys: tuple[PublicKey, PrivateKey] | None = None
        self._audit = audit_pb2_grpc.AuditServiceStub(self._channel)
        self._home = home
        self._node_key = None
        if node_key is not None:
            from .audit.records import load_public_key

            self._node_key = load_public_key(node_key)

    def __enter__(self: C) -> C:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    @property
    def keys(self) -> tuple[PublicKey, PrivateKey]:
        """The caller's Paillier key pair, made on first use under ``VEIL_HOME``."""
        if self._keys is None:
            self._keys = self._keyring.load_or_create(self._key_bits)
        return self._keys

    def node_key(self):
        """The node's Ed25519 public key: the one given, else the pinned one, else fetched and
        pinned now (trust on first use)."""
        if self._node_key is None:
            from .audit.records import load_public_key
            from .known_nodes import KnownNodes

            known = KnownNodes(self._home)
            pinned = known.get(self.target)
            if pinned is None:
                k = self._call(self._audit.GetNodeKey, audit_pb2.GetNodeKeyRequest(), retry=True)
                pinned = known.pin(self.target, k.node_id, bytes(k.public_key))
            self._node_key = load_public_key(pinned.public_key)
        return self._node_key

    # -- calls ------------------------------------------------------------------------------

    def _metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self._token}")] if self._token else []

    def _call(self, method: Callable[..., T], request, *, retry: bool = False, timeout: float | None = None) -> T:
        attempts = self._retries + 1 if retry else 1
        for attempt in range(attempts):
            try:
                return method(request, metadata=self._metadata(), timeout=timeout or self._timeout)
            except grpc.RpcError as e:
                if retry and e.code() in _RETRYABLE and attempt + 1 < attempts:
                    time.sleep(min(2.0, 0.1 * 2**attempt))
                    continue
                raise from_rpc_error(e) from None
        raise Unavailable("unreachable")  # pragma: no cover

    def _start(self, method, request):
        """A unary call started without waiting (read it with ``_finish``); None if it could not start."""
        try:
            return method.future(request, metadata=self._metadata(), timeout=self._timeout)
        except grpc.RpcError:
            return None

    def _finish(self, future, method, request):
        """The answer of a call from ``_start``; a transient failure is retried as ``_call`` does."""
        if future is not None:
            try:
                return future.result()
            except grpc.RpcError as e:
                if e.code() not in _RETRYABLE:
                    raise from_rpc_error(e) from None
        return self._call(method, request, retry=True)
