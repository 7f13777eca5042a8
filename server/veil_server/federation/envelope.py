"""Peer authentication: every node-to-node message is an Ed25519-signed envelope.

TLS comes later and will wrap this unchanged; until then (and after, against a compromised
relay) a node believes a peer message only when it verifies under the key pinned for its
signer in ``[[federation.peers]]``. The payload names sender, recipient, the federated query
and the time it was issued, and its body type says which step it is, so a message cannot be
replayed to another node, another query or another step, and a stale one is refused. A replay
of the *same* request within the skew window gets the cached answer of that step (steps are
idempotent), never a second computation.

Signatures cover ``"veil.federation.v1" || 0x00 || payload`` so that no other message the node
signs (audit checkpoints, certificates) can be passed off as a peer message.

What a verifier learns: who signed what, when. The signer's key is the node's own Ed25519 node
key (the one that signs its audit checkpoints), so a peer's pin is the same key an auditor pins.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from google.protobuf.message import DecodeError

from veil.v1 import federation_pb2

from ..errors import Unauthenticated
from ..access.node_key import NodeKey
from .settings import FederationConfig

DOMAIN = b"veil.federation.v1\x00"


@dataclass(frozen=True)
class Verified:
    """A payload whose signature checked, with the envelope it came in (to forward verbatim)."""

    payload: federation_pb2.PeerPayload
    envelope: federation_pb2.PeerEnvelope

    @property
    def body(self) -> str:
        return self.payload.WhichOneof("body") or ""


class PeerSigner:
    """Signs this node's messages and verifies its peers' against the pinned keys."""

    def __init__(self, config: FederationConfig, key: NodeKey) -> None:
        self.name = config.name
        self._key = key
        self._skew = config.max_clock_skew_seconds
        self._verifiers = {p.name: p.verifier() for p in config.peers}
        self._verifiers[config.name] = key.public_key

    def sign(self, federated_query: str, recipient: str, **body) -> federation_pb2.PeerEnvelope:
        """``body`` is one keyword: the PeerPayload oneof field and its message."""
        payload = federation_pb2.PeerPayload(federated_query=federated_query, sender=self.name,
                                             recipient=recipient, **body)
        payload.issue_time.GetCurrentTime()
        data = payload.SerializeToString(deterministic=True)
        return federation_pb2.PeerEnvelope(payload=data, signer=self.name, signature=self._key.sign(DOMAIN + data))

    def verify(self, envelope: federation_pb2.PeerEnvelope, *, body: str, recipient: str | None,
               federated_query: str | None = None, fresh: bool = True) -> Verified:
        """Check signer, signature, sender, recipient, query, step and (if ``fresh``) age.

        ``recipient=None`` accepts any recipient (a forwarded envelope is checked against its
        original recipient by the caller). Raises ``Unauthenticated`` with a reason that names
        the rule; never says more about the content than that.
        """
        verifier = self._verifiers.get(envelope.signer)
        if verifier is None:
            raise Unauthenticated("the signer is not a pinned peer of this node", reason="PEER_NOT_TRUSTED",
                                  metadata={"signer": envelope.signer[:100]})
        try:
            verifier.verify(bytes(envelope.signature), DOMAIN + bytes(envelope.payload))
        except InvalidSignature:
            raise Unauthenticated("the envelope's signature does not verify under the pinned key",
                                  reason="PEER_SIGNATURE_INVALID", metadata={"signer": envelope.signer[:100]}) from None
        payload = federation_pb2.PeerPayload()
        try:
            payload.ParseFromString(bytes(envelope.payload))
        except DecodeError:
            raise Unauthenticated("the signed payload is malformed", reason="PEER_PAYLOAD_INVALID") from None
        if payload.sender != envelope.signer:
            raise Unauthenticated("the payload's sender is not its signer", reason="PEER_PAYLOAD_INVALID")
        if recipient is not None and payload.recipient != recipient:
            raise Unauthenticated("the envelope is addressed to another node", reason="PEER_WRONG_RECIPIENT")
        if federated_query is not None and payload.federated_query != federated_query:
            raise Unauthenticated("the envelope belongs to another federated query", reason="PEER_WRONG_QUERY")
        if payload.WhichOneof("body") != body:
            raise Unauthenticated(f"expected a signed '{body}' message", reason="PEER_WRONG_STEP")
        if fresh:
            age = time.time() - payload.issue_time.ToMicroseconds() / 1e6
            if abs(age) > self._skew:
                raise Unauthenticated("the envelope is too old or from the future (check the clocks)",
                                      reason="PEER_ENVELOPE_STALE")
        return Verified(payload, envelope)

    def is_peer(self, name: str) -> bool:
        return name in self._verifiers
