"""gRPC adapter for models (issue 18): translate, call, translate back.

Authentication, roles and the request guard run in the interceptors like for every service;
the rules, the statistics and the release are in :mod:`veil_server.models`.
"""

from __future__ import annotations

from veil.v1 import model_pb2_grpc

from ..access.auth import current_principal
from ..models import ModelFitting


class ModelServicer(model_pb2_grpc.ModelServiceServicer):
    def __init__(self, node) -> None:
        self.fitting = ModelFitting(node)

    def ComputeModelStatistics(self, request, context):
        return self.fitting.compute(current_principal(), request)
