"""gRPC adapters for federation, and the wiring of its parts on one node.

``FederationService`` (analysts) runs behind the usual token interceptor. ``PeerService``
(nodes) carries no bearer token: ``auth.METHOD_ROLES`` marks its methods ``PEER_SIGNED`` and
the interceptor passes them here, where the signed envelope is the credential (see
``envelope.py``); refusals are mapped to statuses here, with the same ``ErrorInfo`` as
everywhere, and authentication failures are audited like the interceptor's.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

from veil.v1 import federation_pb2, federation_pb2_grpc

from ..access.auth import current_principal, to_status
from ..errors import FailedPrecondition, Internal, InvalidArgument, VeilError
from ..federation.audit import FederationAudit
from ..federation.coordinator import Coordinator
from ..federation.envelope import PeerSigner
from ..federation.participant import Participant
from ..federation.transport import PeerTransport

log = logging.getLogger("veil.federation")

_PROTOCOLS = {"paillier": federation_pb2.FEDERATION_PROTOCOL_PAILLIER,
              "sharing": federation_pb2.FEDERATION_PROTOCOL_SHARING}


def _not_configured() -> FailedPrecondition:
    return FailedPrecondition("this node takes part in no federation (no [federation] section in its config)",
                              reason="FEDERATION_NOT_CONFIGURED")


class Federation:
    """This node's federation parts: signer, participant, transport and coordinator."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.config = node.config.federation
        self.participant: Participant | None = None
        self.coordinator: Coordinator | None = None
        self.transport: PeerTransport | None = None
        if self.config is None:
            return
        signer = PeerSigner(self.config, node.audit.key)
        audit = FederationAudit(node.audit)
        self.participant = Participant(node, self.config, signer, audit)
        from ..access.security import settings_of  # issue 8: TLS to peers when the node has [tls]

        self.transport = PeerTransport(self.config, self.participant, tls=settings_of(node.config).tls)
        self.coordinator = Coordinator(node, self.config, signer, audit, self.transport)

    def observe(self, observer) -> None:
        """Call ``observer(node, what, sender, data)`` with every peer message this node receives
        (requests as a member, answers as coordinator, and each share it opens)."""
        if self.participant is not None and self.transport is not None:
            self.participant.observers.append(observer)
            self.transport.observers.append(observer)

    def close(self) -> None:
        if self.coordinator is not None:
            self.coordinator.close()
        if self.transport is not None:
            self.transport.close()


class FederationServicer(federation_pb2_grpc.FederationServiceServicer):
    def __init__(self, federation: Federation) -> None:
        self.federation = federation

    def ListFederatedDatasets(self, request, context):
        cfg = self.federation.config
        if cfg is None:
            return federation_pb2.ListFederatedDatasetsResponse()
        return federation_pb2.ListFederatedDatasetsResponse(node=cfg.name, datasets=[
            federation_pb2.FederatedDataset(name=d.name, members=d.members,
                                            protocols=[_PROTOCOLS[p] for p in d.protocols])
            for d in cfg.datasets])

    def RunFederatedQuery(self, request, context):
        if self.federation.coordinator is None:
            raise _not_configured()
        if not request.HasField("public_key"):
            raise InvalidArgument("public_key is required: the result is encrypted under it",
                                  reason="PUBLIC_KEY_REQUIRED")
        return self.federation.coordinator.run(
            current_principal(), sql=request.sql, purpose=request.purpose, public_key=request.public_key.n,
            request_id=request.request_id, protocol=request.protocol,
            compute_parties=list(request.compute_parties), epsilon=request.epsilon)


class PeerServicer(federation_pb2_grpc.PeerServiceServicer):
    def __init__(self, federation: Federation) -> None:
        self.federation = federation

    def _answer(self, step: str, method: str, request, context, response_type):
        try:
            if self.federation.participant is None:
                raise _not_configured()
            return response_type(envelope=self.federation.participant.handle(step, request.envelope))
        except VeilError as e:
            failure = e
        except Exception:
            log.exception("unhandled error in %s", method)
            failure = Internal("the node hit an internal error; the operator has the details")
        if failure.code == grpc.StatusCode.UNAUTHENTICATED:
            self.federation.node.audit.denied(f"/veil.v1.PeerService/{method}",
                                              f"peer:{request.envelope.signer[:100]}", failure)
        context.abort_with_status(to_status(failure))

    def PrepareFederatedQuery(self, request, context):
        return self._answer("prepare", "PrepareFederatedQuery", request, context,
                            federation_pb2.PrepareFederatedQueryResponse)

    def ContributePartial(self, request, context):
        return self._answer("contribute", "ContributePartial", request, context,
                            federation_pb2.ContributePartialResponse)

    def AggregateShares(self, request, context):
        return self._answer("aggregate", "AggregateShares", request, context, federation_pb2.AggregateSharesResponse)

    def ReleasePartial(self, request, context):
        return self._answer("release", "ReleasePartial", request, context, federation_pb2.ReleasePartialResponse)

    def AbortFederatedQuery(self, request, context):
        return self._answer("abort", "AbortFederatedQuery", request, context,
                            federation_pb2.AbortFederatedQueryResponse)


SERVICE_NAMES = (
    federation_pb2.DESCRIPTOR.services_by_name["FederationService"].full_name,
    federation_pb2.DESCRIPTOR.services_by_name["PeerService"].full_name,
)


def add_federation_services(server: grpc.Server, node: Any) -> Federation:
    """Register both services on ``server`` for ``node``; close the returned object on stop."""
    federation = Federation(node)
    federation_pb2_grpc.add_FederationServiceServicer_to_server(FederationServicer(federation), server)
    federation_pb2_grpc.add_PeerServiceServicer_to_server(PeerServicer(federation), server)
    return federation
