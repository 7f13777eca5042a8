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

    # -- owner review of models (models/reviews.py) ---------------------------------------------

    def _owned(self, principal) -> set[str] | None:
        """The datasets (lower case) ``principal`` owns; None for an admin (every dataset)."""
        if principal.role is Role.ADMIN:
            return None
        registry = self.fitting.node.steward.registry
        return {r.name.lower() for r in registry.all_serving() if r.owned_by(principal.name)}

    def ListModelReviews(self, request, context):
        principal = current_principal()
        owned = self._owned(principal)
        name = request.dataset.removeprefix("datasets/").lower()
        if name and owned is not None and name not in owned:
            raise DatasetNotFound(f"no dataset named datasets/{name} that you own; name one of yours",
                                  metadata={"dataset": name})
        datasets = [name] if name else (sorted(owned) if owned is not None else None)
        reviews = self.fitting.reviews.list(datasets, request.state or "pending")
        self.fitting.node.audit.catalog_read(principal, "ListModelReviews", name or None)
        return model_pb2.ListModelReviewsResponse(reviews=[_review_proto(r) for r in reviews])

    def ApproveModel(self, request, context):
        return self._decide(request, approve=True)

    def RejectModel(self, request, context):
        return self._decide(request, approve=False)

    def _decide(self, request, *, approve: bool):
        principal = current_principal()
        owned = self._owned(principal) or set()
        review = request.name.removeprefix("modelReviews/")
        if not review or len(review) > 64:
            raise InvalidArgument("name must be modelReviews/{id}, as ListModelReviews returns it",
                                  reason="INVALID_NAME")
        out = self.fitting.reviews.decide(review, principal.name, approve=approve, reason=request.reason,
                                          owns=lambda dataset: dataset.lower() in owned)
        return _review_proto(out)


def _review_proto(r) -> "model_pb2.ModelReview":
    from datetime import datetime, timezone

    from veil.audit.canonical import format_time

    def format_time_us(us: int) -> str:
        return format_time(datetime.fromtimestamp(us / 1e6, timezone.utc))

    return model_pb2.ModelReview(
        name=r.name, principal=r.principal, dataset=f"datasets/{r.dataset}", purpose=r.purpose, family=r.family,
        formula=r.formula, terms=list(r.terms), response=r.response, state=r.state,
        approvals_required=r.approvals_required, approved_by=list(r.approved_by), reason=r.reason,
        create_time=format_time_us(r.created_us), expire_time=format_time_us(r.expires_us),
        certificate_id=r.certificate)

