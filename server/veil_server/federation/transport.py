"""Calling members: gRPC to peers, in-process to this node's own participant.

Every call carries one signed envelope and returns one; a call that times out or finds the peer
unavailable is retried with the *same* envelope (``retries`` times, with a short backoff), which
the member answers from its kept answer, so a retry never counts a partial twice. Whatever
still fails becomes a :class:`FederationFailed` naming the member: UNAVAILABLE with reason
``FEDERATION_PEER_UNAVAILABLE`` when it could not be reached, or the member's own status code
with reason ``FEDERATION_PEER_REJECTED`` (its reason in metadata ``peer_reason``) when it refused.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from veil.v1 import federation_pb2, federation_pb2_grpc

from ..errors import VeilError
from .participant import Participant
from .settings import FederationConfig

_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_METHODS = {
    "prepare": ("PrepareFederatedQuery", federation_pb2.PrepareFederatedQueryRequest),
    "contribute": ("ContributePartial", federation_pb2.ContributePartialRequest),
    "aggregate": ("AggregateShares", federation_pb2.AggregateSharesRequest),
    "release": ("ReleasePartial", federation_pb2.ReleasePartialRequest),
    "abort": ("AbortFederatedQuery", federation_pb2.AbortFederatedQueryRequest),
}
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
log = logging.getLogger("veil.federation")


class FederationFailed(VeilError):
    """A federated query failed because of one member; ``metadata["node"]`` names it."""

    default_reason = "FEDERATION_FAILED"

    def __init__(self, message: str, *, node: str, code: grpc.StatusCode, reason: str,
                 metadata: dict[str, str] | None = None, private: str | None = None) -> None:
        super().__init__(message, reason=reason, metadata={"node": node, **(metadata or {})}, private=private)
        self.code = code
        self.node = node


# Why a peer could not be reached, read from gRPC's transport error text (issue 20), so the
# analyst and the operator see the cause instead of a bare UNAVAILABLE. The texts are gRPC's and
# OpenSSL's (addresses and library error names, no data): the first pattern that matches wins.
CAUSES = (
    ("CERTIFICATE_NOT_TRUSTED", ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed", "unable to get local issuer",
                                 "self signed certificate", "self-signed certificate"),
     "its TLS certificate is not issued by a CA this node trusts (tls.ca)"),
    ("CERTIFICATE_NAME_MISMATCH", ("Peer name", "not in peer certificate", "hostname mismatch",
                                   "Hostname verification", "Hostname Verification"),
     "its TLS certificate does not name the address this node dials (federation.peers address)"),
    ("CERTIFICATE_EXPIRED", ("CERTIFICATE_EXPIRED", "certificate has expired"), "its TLS certificate has expired"),
    ("TLS_HANDSHAKE_FAILED", ("Handshake failed", "handshake failed", "SSL_ERROR", "TSI_"),
     "the TLS handshake failed (is it serving TLS, with a certificate from the federation's CA?)"),
    ("CONNECTION_REFUSED", ("Connection refused", "connection refused", "ECONNREFUSED"),
     "nothing listens at its address (is it running?)"),
    ("TIMED_OUT", ("Deadline Exceeded", "DEADLINE_EXCEEDED", "timed out"), "it did not answer in time"),
)


UNKNOWN_CAUSE = ("UNREACHABLE", "it could not be reached")


def unreachable_cause(detail: str) -> tuple[str, str]:
    """(cause, words): ErrorInfo metadata ``cause`` and the phrase for the message."""
    for cause, needles, words in CAUSES:
        if any(n in detail for n in needles):
            return cause, words
    return UNKNOWN_CAUSE


def unreachable(node: str, detail: str) -> FederationFailed:
    cause, words = unreachable_cause(detail)
    return FederationFailed(f"member {node} could not be reached: {words}; nothing was released",
                            node=node, code=grpc.StatusCode.UNAVAILABLE, reason="FEDERATION_PEER_UNAVAILABLE",
                            metadata={"cause": cause}, private=detail)


def rejected(node: str, code: grpc.StatusCode, peer_reason: str, message: str) -> FederationFailed:
    return FederationFailed(f"member {node} refused its part ({peer_reason}): {message}; nothing was released",
                            node=node, code=code, reason="FEDERATION_PEER_REJECTED",
                            metadata={"peer_reason": peer_reason})


def _peer_error(node: str, err: grpc.RpcError) -> FederationFailed:
    code = err.code()
    if code in _UNREACHABLE:
        return unreachable(node, f"{code.name}: {err.details()}")
    reason = "UNKNOWN"
    try:
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
    except (ValueError, AttributeError):
        status = None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
    return rejected(node, code, reason, (err.details() or "")[:500])


class PeerTransport:
    def __init__(self, config: FederationConfig, participant: Participant, *, tls=None) -> None:
        self.config = config
        self.participant = participant
        self.tls = tls  # issue 8: veil_server.access.tls.TlsSettings; None in development mode (plaintext)
        self.observers: list[Callable[[str, str, str, bytes], None]] = []
        self._stubs: dict[str, federation_pb2_grpc.PeerServiceStub] = {}
        self._channels: list[grpc.Channel] = []
        self._lock = threading.Lock()

    def _stub(self, node: str) -> federation_pb2_grpc.PeerServiceStub:
        with self._lock:
            stub = self._stubs.get(node)
            if stub is None:
                peer = self.config.peer(node)
                if peer is None:
                    raise unreachable(node, "not a declared peer")
                options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                           ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
                # With [tls]: verify the peer against tls.ca and present this node's certificate,
                # so a peer's mutual-TLS port accepts it (issue 8).
                channel = (grpc.secure_channel(peer.address, self.tls.channel_credentials(), options=options)
                           if self.tls is not None else grpc.insecure_channel(peer.address, options=options))
                self._channels.append(channel)
                stub = self._stubs[node] = federation_pb2_grpc.PeerServiceStub(channel)
            return stub

    def call(self, node: str, step: str, envelope: federation_pb2.PeerEnvelope, *,
             timeout: float | None = None, retries: int | None = None) -> federation_pb2.PeerEnvelope:
        if node == self.config.name:
            try:
                answer = self.participant.handle(step, envelope)
            except VeilError as e:
                raise rejected(node, e.code, e.reason, e.message) from None
            except Exception:  # as the gRPC servicer would: logged, and INTERNAL to the caller
                log.exception("federation step %s failed on this node", step)
                raise rejected(node, grpc.StatusCode.INTERNAL, "INTERNAL",
                               "the node hit an internal error; the operator has the details") from None
        else:
            answer = self._remote(node, step, envelope, timeout or self.config.timeout_seconds,
                                  self.config.retries if retries is None else retries)
        for observer in list(self.observers):
            observer(self.config.name, f"response:{step}", node, answer.SerializeToString())
        return answer

    def _remote(self, node: str, step: str, envelope: federation_pb2.PeerEnvelope, timeout: float,
                retries: int) -> federation_pb2.PeerEnvelope:
        method, request_type = _METHODS[step]
        call = getattr(self._stub(node), method)
        request = request_type(envelope=envelope)
        for attempt in range(retries + 1):
            try:
                return call(request, timeout=timeout).envelope
            except grpc.RpcError as e:
                if e.code() in _RETRYABLE and attempt < retries:
                    time.sleep(min(1.0, 0.2 * 2**attempt))
                    continue
                raise _peer_error(node, e) from None
        raise unreachable(node, "no attempt made")  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            for channel in self._channels:
                channel.close()
            self._channels.clear()
            self._stubs.clear()
