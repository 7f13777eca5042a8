"""gRPC adapter for models (issue 18): translate, call, translate back.

Authentication, roles and the request guard run in the interceptors like for every service;
the rules, the statistics and the release are in :mod:`veil_server.models`.
"""

from __future__ import annotations

from veil.v1 import model_pb2_grpc

from ..access.auth import current_principal
from ..models import ModelFitting


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
