"""gRPC adapter for models (issue 18): translate, call, translate back.

Authentication, roles and the request guard run in the interceptors like for every service;
the rules, the statistics and the release are in :mod:`veil_server.models`.
"""

from __future__ import annotations

from veil.v1 import model_pb2_grpc

from ..access.auth import current_principal
from ..errors import NotFound
from ..models import ModelFitting
from .audit_service import receipt_proto


class ModelServicer(model_pb2_grpc.ModelServiceServicer):
    def __init__(self, node, federation=None) -> None:
        self.fitting = ModelFitting(node)
        self.federation = federation  # api.federation_service.Federation, for federated datasets

    def ComputeModelStatistics(self, request, context):
        fed = self.federation
        name = request.dataset.removeprefix("datasets/")
        if fed is not None and fed.coordinator is not None and fed.config.dataset(name) is not None:
            return fed.coordinator.run_model(current_principal(), request)  # this node coordinates
        return self.fitting.compute(current_principal(), request)

    def GetModelReceipt(self, request, context):
        principal = current_principal()
        receipt = self.fitting.node.audit.model_receipt(principal.name, request.release[:200])
        if receipt is None:  # another analyst's release does not exist, as far as this caller can tell
            raise NotFound("no model release of yours has this id; pass ModelStatistics.release unchanged",
                           reason="MODEL_RELEASE_NOT_FOUND")
        return receipt_proto(receipt)
