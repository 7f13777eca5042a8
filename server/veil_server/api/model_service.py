"""gRPC adapter for models (issue 18): translate, call, translate back.

Authentication, roles and the request guard run in the interceptors like for every service;
the rules, the statistics and the release are in :mod:`veil_server.models`.
"""

from __future__ import annotations

from veil.v1 import model_pb2_grpc

from veil.v1 import model_pb2

from ..access.auth import current_principal
from ..config import Role
from ..errors import DatasetNotFound, InvalidArgument, NotFound
from .query_service import page_size
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

    def ListModelReleases(self, request, context):
        node = self.fitting.node
        principal = current_principal()
        name = request.dataset.removeprefix("datasets/")
        if principal.role is Role.OWNER:  # an owner sees the models fitted on what it owns
            rec = node.steward.registry.serving(name) if name else None
            if rec is None or not rec.owned_by(principal.name):
                error = DatasetNotFound(f"no dataset named datasets/{name} that you own; name one of yours",
                                        metadata={"dataset": name}) if name else InvalidArgument(
                    "dataset is required: owners list the models fitted on a dataset they own",
                    reason="DATASET_REQUIRED")
                node.audit.catalog_read(principal, "ListModelReleases", request.dataset or None, error=error)
                raise error
            name = rec.name
        node.audit.catalog_read(principal, "ListModelReleases", name or None)
        page = node.audit.log.search(kind="model.release", dataset=name or None, outcome="ok",
                                     page_size=page_size(request.page_size), page_token=request.page_token)
        out = model_pb2.ListModelReleasesResponse(next_page_token=page.next_page_token)
        for e in page.entries:
            d = e.details
            out.releases.add(release=e.query or "", principal=e.principal, dataset=f"datasets/{e.dataset}",
                             formula=str(d.get("formula", "")), terms=[str(t) for t in d.get("terms", [])],
                             family=str(d.get("family", "")), iteration=int(d.get("iteration", 0)),
                             fit_id=str(d.get("fit_id", "")), purpose=str(d.get("purpose", "")),
                             disclosure_mode=str(d.get("disclosure", "")),
                             epsilon=int(d.get("epsilon_micro", 0)) / 1_000_000,
                             release_digest=str(d.get("release_sha256", "")), time=str(e.time), log_index=e.index)
        return out
