"""The node's governance facade: who may register, list, suspend, grant and approve, and what
each analyst may see and query. Pure rules over the registry, grants and reviews; no gRPC.

Roles: owners register datasets and govern the ones they own (grants, suspension, query
approval); reviewers list datasets (never one they registered); admins may suspend, resume and
delist any dataset; analysts see LISTED and SUSPENDED datasets only.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable

from ..query.catalog import Catalog, Dataset
from ..config import NodeConfig, Principal, Role
from ..disclosure.lattice import incomplete_columns
from ..query.consent import listing_scope
from ..query.engine import is_numeric_type
from ..errors import DatasetNotFound, FailedPrecondition, InvalidArgument, PermissionDenied
from ..access.node_key import NodeKey
from ..state.store import StateStore
from .certify import check_unchanged, issue, keyed_fingerprint, source_fingerprint, source_stamp
from .classification import RIGHTS, check_against_level
from .grants import Grants
from .quality import Profiles, compute as compute_quality, noised as noisy_profile
from .registry import DRAFT, LISTED, OPERATOR, SUSPENDED, DatasetRecord, Governance, Registry
from .reviews import Reviews

MAX_REASON = 2000
LISTING_EPSILON = 0.1  # the ε a DP dataset's published size costs, once per listed version


def round_significant(n: int, digits: int = 2) -> int:
    """``n`` rounded to ``digits`` significant digits (as the catalog states sizes)."""
    if n < 100:
        return 0 if n <= 0 else 100
    return round(n, -(len(str(n)) - digits))


def source_identity(ds: Dataset) -> tuple[str, str, str]:
    """Where a dataset's rows are: its engine, its source (a resolved path for files) and
    connection."""
    import os

    source = os.path.realpath(ds.source) if ds.format in ("csv", "parquet") else ds.source
    return ds.format, source, ds.connection


class LiveCatalog(Catalog):
    """The catalog the planner sees: each dataset's serving (LISTED or SUSPENDED) version."""

    def __init__(self, registry: Registry) -> None:
        super().__init__(())
        self._registry = registry

    def get(self, name: str) -> Dataset | None:
        rec = self._registry.serving(name)
        return rec.dataset if rec is not None else None

    def __iter__(self):
        return iter([r.dataset for r in self._registry.all_serving()])

    def __len__(self) -> int:
        return len(self._registry.all_serving())


def listing_view(ds: Dataset) -> Dataset:
    """The dataset as the owner's listing checks read it: every row, a consent dataset included
    (bound explicitly; nothing read here is released but the certificate's noisy statistics)."""
    return replace(ds, consent_scope=listing_scope()) if ds.needs_consent else ds


class Steward:
    def __init__(self, store: StateStore, *, key: NodeKey, config: NodeConfig, row_count, engine=None,
                 budget=None) -> None:
        self.registry = Registry(store)
        self.grants = Grants(store)
        self.reviews = Reviews(store)
        self.catalog = LiveCatalog(self.registry)
        self.profiles = Profiles(store)
        self._key = key
        self._config = config
        self._row_count = row_count  # callable(Dataset) -> int
        self._engine = engine  # for the checks at listing
        self._budget = budget  # for the size a DP dataset's certificate states

    # -- start-up -------------------------------------------------------------------------

    def bootstrap(self, datasets: Iterable[Dataset], governance: dict[str, Governance]) -> list[DatasetRecord]:
        """Register and list the operator's config datasets that the registry does not know yet."""
        listed = []
        for ds in datasets:
            if self.registry.versions(ds.name):
                continue
            gov = governance.get(ds.name, Governance())
            self._check(ds, gov)
            self.registry.register(ds, gov, principal=OPERATOR)
            self.registry.move(ds.name, "submit", principal=OPERATOR, reason="declared in the node configuration")
            listed.append(self._list(ds.name, OPERATOR, "declared in the node configuration"))
        return listed

    # -- datasets -------------------------------------------------------------------------

    def _check(self, ds: Dataset, gov: Governance) -> None:
        unknown = set(gov.rights) - set(RIGHTS)
        if unknown or not gov.rights:
            raise InvalidArgument(f"rights must be a non-empty subset of {', '.join(RIGHTS)}", reason="INVALID_RIGHTS")
        check_against_level(ds, gov.classification, auto_approve=gov.auto_approve,
                            approvals_required=gov.approvals_required,
                            node_min_group_size=self._config.min_group_size)

    def register(self, principal: Principal, ds: Dataset, gov: Governance, owners: Iterable[str]) -> DatasetRecord:
        if principal.role is not Role.OWNER:
            raise PermissionDenied("only owners register datasets", reason="ROLE_NOT_ALLOWED")
        known = {p.name for p in self._config.principals}
        missing = [o for o in owners if o not in known]
        if missing:
            raise InvalidArgument(f"unknown owner(s): {', '.join(missing)}", reason="UNKNOWN_PRINCIPAL")
        self._check(ds, gov)
        return self.registry.register(ds, gov, principal=principal.name, owners=owners)

    def act(self, principal: Principal, name: str, action: str, reason: str) -> DatasetRecord:
        name = name.removeprefix("datasets/")
        if len(reason) > MAX_REASON:
            raise InvalidArgument(f"a reason is at most {MAX_REASON} characters", reason="REASON_TOO_LONG")
        rec = self.registry.latest(name)
        if action in ("reject", "suspend", "delist") and not reason.strip():
            raise InvalidArgument(f"say why: a reason is required to {action}", reason="REASON_REQUIRED")
        if action == "submit":
            self._require_owner(principal, rec)
            if rec.state == DRAFT:  # the reviewers see the version's quality profile in the queue
                self.quality(rec)
        elif action in ("approve", "reject"):
            if principal.role is not Role.REVIEWER:
                raise PermissionDenied("only reviewers list datasets", reason="ROLE_NOT_ALLOWED")
            if principal.name == rec.registered_by:
                raise PermissionDenied("the principal who registered a dataset cannot also list it; another "
                                       "reviewer must", reason="SELF_LISTING")
            if action == "approve":
                return self._list(name, principal.name, reason or "listing approved")
        else:  # suspend, resume, delist
            if principal.role is not Role.ADMIN:
                self._require_owner(principal, self.registry.serving(name) or rec)
        return self.registry.move(name, action, principal=principal.name, reason=reason or action)

    def _list(self, name: str, by: str, reason: str) -> DatasetRecord:
        rec = self.registry.latest(name)
        self._check_types(rec.dataset)
        if not rec.dataset.disclosure.dp and self._engine is not None:
            # Exact mode's lattice must partition the table (see disclosure.lattice).
            missing = incomplete_columns(self._engine, listing_view(rec.dataset))
            if missing:
                raise FailedPrecondition(
                    f"exact mode needs every filter and group column complete; {', '.join(missing)} of "
                    f"datasets/{name} hold a NULL or a value outside the declared domain: declare the missing "
                    "categories or a wider range, clean the data, or release this dataset with DP",
                    reason="EXACT_COLUMNS_INCOMPLETE", metadata={"dataset": name, "columns": ",".join(missing)})
        self._check_source_unshared(rec)
        content = source_fingerprint(rec.dataset)
        stamp = source_stamp(rec.dataset)
        cert = issue(rec, key=self._key, node_id=self._config.name, row_count=self._published_rows(rec),
                     content=keyed_fingerprint(self._key, content), quality=self.quality(rec))
        return self.registry.move(name, "approve", principal=by, reason=reason, certificate=cert.to_bytes(),
                                  fingerprint=content, file_stamp=stamp)

    def quality(self, rec: DatasetRecord) -> dict:
        """The version's quality profile (governance.quality): computed once per version, when
        it is first submitted for review (or listed from the config), then stored: a version
        resubmitted after a rejection shows the same profile, and its noise is drawn once."""
        stored = self.profiles.get(rec.name, rec.version)
        if stored is not None or self._engine is None:
            return stored or {}
        budget = self._budget
        tag = f"quality:{rec.name}:{rec.version}"
        charge = (lambda eps: budget.charge_failure(tag, OPERATOR, rec.name.lower(), "", epsilon=eps)) \
            if budget is not None else None
        profile = compute_quality(self._engine, listing_view(rec.dataset),
                                  freshness_column=rec.dataset.freshness_column, charge=charge)
        self.profiles.put(rec.name, rec.version, profile)
        return profile

    def _published_rows(self, rec: DatasetRecord) -> int:
        """The row count the certificate (and the catalog) states. Exact mode: the count. DP: the
        count with discrete Laplace noise at ε = 0.1, rounded to two significant digits, charged
        to the dataset's budget (beyond it if need be): the size of a version is a statistic like
        any other, and the exact count of each version would show how many rows changed."""
        n = self._row_count(rec.dataset)
        if not noisy_profile(rec.dataset):  # exact mode, unless consent (governance.quality.noised)
            return n
        from ..disclosure.noise import mechanism, privatize

        noisy = max(1, privatize([n], mechanism(1, LISTING_EPSILON))[0])  # a listed table is never shown empty
        if self._budget is not None:
            self._budget.charge_failure(f"listing:{rec.name}:{rec.version}", OPERATOR, rec.name.lower(), "",
                                        epsilon=LISTING_EPSILON)
        return round_significant(noisy)

    def _check_source_unshared(self, rec: DatasetRecord) -> None:
        """One source, one dataset: two datasets over the same rows would each keep a history and
        budgets of their own, and a differencing pair split across them would pass both."""
        mine = source_identity(rec.dataset)
        for other in self.registry.all_serving():
            if other.name.lower() != rec.name.lower() and source_identity(other.dataset) == mine:
                raise FailedPrecondition(
                    f"the source of datasets/{rec.name} is already served as datasets/{other.name}; one source is "
                    f"listed once (register a new version of datasets/{other.name} to change its rules)",
                    reason="SOURCE_ALREADY_LISTED", metadata={"dataset": rec.name, "other": other.name})

    def _check_types(self, ds: Dataset) -> None:
        """Every column declared as a number must be one in the source: a text cell in a number
        column would make the conversion fail only for the rows a filter selects, and a failure
        that depends on the rows is an answer about them."""
        if self._engine is None or not hasattr(self._engine, "column_types"):
            return
        types = self._engine.column_types(ds)
        for col in ds.columns:
            if not col.numeric:
                continue
            found = types.get(col.name.lower())
            if found is None:
                raise FailedPrecondition(f"column {col.name} of datasets/{ds.name} is not in its source; fix the "
                                         "declaration or the source", reason="COLUMN_MISSING",
                                         metadata={"dataset": ds.name, "column": col.name})
            if not is_numeric_type(found):
                raise FailedPrecondition(
                    f"column {col.name} of datasets/{ds.name} is declared {col.type.value} but its source holds "
                    f"{found.lower()} values: make every cell a number or empty (missing), or declare it text",
                    reason="COLUMN_TYPE_MISMATCH", metadata={"dataset": ds.name, "column": col.name})

    @staticmethod
    def _require_owner(principal: Principal, rec: DatasetRecord) -> None:
        if not rec.owned_by(principal.name):
            raise PermissionDenied(f"only an owner of datasets/{rec.name} may do this", reason="NOT_DATASET_OWNER",
                                   metadata={"dataset": rec.name})

    def visible(self, principal: Principal) -> list[DatasetRecord]:
        """Analysts: serving versions. Owners additionally see their own drafts; reviewers, admins all."""
        serving = self.registry.all_serving()
        if principal.role is Role.ANALYST or principal.role is Role.AUDITOR:
            return serving
        latest = self.registry.all_latest()
        if principal.role in (Role.REVIEWER, Role.ADMIN):
            return latest
        mine = {r.name for r in latest if r.owned_by(principal.name)}
        return [r for r in latest if r.name in mine] + [r for r in serving if r.name not in mine]

    def queryable(self, name: str) -> DatasetRecord:
        """The version a new query runs on; refuses suspended datasets and changed data."""
        rec = self.registry.serving(name.removeprefix("datasets/"))
        if rec is None:
            raise DatasetNotFound(f"no dataset named datasets/{name}; list them with ListDatasets",
                                  metadata={"dataset": name})
        if rec.state == SUSPENDED:
            raise FailedPrecondition(f"datasets/{rec.name} is suspended by its owner; no new queries run on it",
                                     reason="DATASET_SUSPENDED", metadata={"dataset": rec.name})
        new_stamp = check_unchanged(rec)
        if new_stamp is not None:
            self.registry.restamp(rec.name, rec.version, new_stamp)
        return rec

    def certificate(self, name: str) -> DatasetRecord:
        rec = self.registry.serving(name.removeprefix("datasets/"))
        if rec is None or rec.certificate is None:
            raise DatasetNotFound(f"datasets/{name} has no listed version, so no certificate",
                                  metadata={"dataset": name})
        return rec


def governance_from_spec(classification: str, rights: Iterable[str], auto_approve: bool,
                         approvals_required: int) -> Governance:
    return Governance(classification or "internal", tuple(rights) or ("holding", "processing"), auto_approve,
                      max(1, approvals_required))


def with_source(ds: Dataset, source: str) -> Dataset:
    return replace(ds, source=source)
