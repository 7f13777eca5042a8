"""One model release: rules, statistics, disclosure control, encryption, charge and audit.

What each party learns
- The analyst: the released statistics of its model (OLS: n, X'X, X'y, y'y; logistic: n, the
  Hessian X'WX and the gradient X'(y - p) at coefficients it chose), decrypted with its own key;
  under DP each with discrete-Laplace noise of the declared scale. Nothing per row.
- Transport, relays, the node's log and operators: ciphertexts under the analyst's key, the
  layout (public), the formula and terms, and a digest of the ciphertexts.
- The node: the analyst's formula and, for logistic fits, its coefficients at every step (they
  are the analyst's own working values, not data; the node does not learn the final model).

Rules, each with its reason, checked before anything is computed: a purpose the dataset allows
and a grant covering every column of the formula (``NO_GRANT``, ``GRANT_COLUMNS``); column
controls (``HIDDEN_COLUMN``, ``COLUMN_NOT_ALLOWED``, ``MODEL_RANGE_REQUIRED``,
``MODEL_CATEGORIES_REQUIRED``, ``CATEGORY_NOT_DECLARED``); on datasets whose policy does not
approve automatically, the owners' approval of the model (``MODEL_REVIEW_PENDING``,
``MODEL_REVIEW_REJECTED``: reviews.py; a federated part needs automatic approval,
``MODEL_REVIEW_REQUIRED``); a minimum number of rows and
at most one parameter per ``ROWS_PER_PARAMETER`` rows (``MODEL_TOO_FEW_ROWS``,
``MODEL_TOO_MANY_PARAMETERS``), both judged on the catalog's public, rounded row count so the
refusal never depends on the data; an iteration cap per fit (``MODEL_ITERATION_CAP``); the
privacy budgets (``PRIVACY_BUDGET_EXHAUSTED``, naming the iteration that stopped).

Disclosure control. DP datasets: each statistic s_k gets discrete-Laplace noise of scale
Δ_k · m / ε (``disclosure.noise``: OpenDP's exact sampler, CSPRNG), Δ_k its sensitivity from the
declared ranges (:func:`~veil_server.models.design.sensitivities`) and m the number of
statistics: each is ε/m-DP, so the release is ε-DP (sequential composition), and ε is debited
from the analyst's and the dataset's budgets in the transaction that logs the release. Every
Newton step of a logistic fit is its own release and pays its own ε. Exact datasets (the owner's
recorded ``exact_reason``) release the statistics as computed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import secrets
import threading
from dataclasses import dataclass
from typing import Any, Iterator

from veil.audit.records import release_details
from veil.models import model_digest
from veil.crypto import InvalidKey, PackingLayout, PublicKey, encrypt_packed
from veil.v1 import model_pb2, query_pb2

from ..config import Principal, Role
from ..disclosure.budget import BudgetExhausted, to_micro
from ..disclosure.noise import mechanism, privatize
from ..errors import Internal, InvalidArgument, PermissionDenied, PolicyViolation, Unavailable, VeilError
from ..query.consent import CONSENT_READS
from ..query.catalog import Catalog
from ..query.engine import quote_ident
from ..query.planner import plan_query
from . import design
from .formula import ModelSpec, resolve
from .reviews import ModelReviews

FRACTION_BITS = 32  # fixed point: each statistic is round(value * 2^32) before noise and encryption
SLOT_LOW, SLOT_HIGH = -(1 << 126), (1 << 126) - 1  # a public, fixed slot: its width reveals nothing
MAX_PUBLIC_BOUND = 1 << 120  # refuse up front when declared ranges x rows could reach the slot
ROWS_PER_PARAMETER = 10
MIN_MODEL_ROWS = 50
MAX_ITERATIONS = 25
MAX_FIT_ID = 128
MAX_COEFFICIENT = 1e6


class ModelFitting:
    """Computes model releases for a :class:`veil_server.node.Node`."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.reviews = ModelReviews(node.store, node.audit)
        self._lock = threading.Lock()
        self._releases: dict[tuple[str, str, str], int] = {}  # (principal, dataset, fit) -> releases
        # Exact mode, logistic and Poisson: each fit's Newton path as the node computes it from its
        # own exact statistics (beta_0 = 0, beta_t+1 = beta_t + H^-1 g, from the released values).
        self._paths: dict[tuple[str, str, str], list[list[float]]] = {}
        # Exact mode, federated logistic and Poisson: this member's part of each fit's last
        # release, kept for the joint check of the analyst's next step (participant.py).
        self._steps: dict[tuple[str, str, str], MemberStep] = {}

    def compute(self, principal: Principal, request: model_pb2.ComputeModelStatisticsRequest) -> \
            model_pb2.ModelStatistics:
        """The release for ``request``, or a refusal (audited, and counted like refused queries)."""
        try:
            return self._compute(principal, request)
        except VeilError as e:
            details = {"formula": request.formula[:2000], "family": request.family[:20],
                       "purpose": request.purpose[:200], "fit_id": request.fit_id[:MAX_FIT_ID],
                       "iteration": int(request.iteration)}
            self.node.audit.model_refused(principal.name, e, details)
            if principal.role is Role.ANALYST:
                self.node.disclosure.refused(principal.name, e, dataset=request.dataset.removeprefix("datasets/"),
                                             purpose=request.purpose)
            raise

    # -- the rules --------------------------------------------------------------------------

    def _compute(self, principal: Principal, req: model_pb2.ComputeModelStatisticsRequest) -> \
            model_pb2.ModelStatistics:
        node = self.node
        if principal.role is not Role.ANALYST:
            raise PermissionDenied("only analysts fit models", reason="ROLE_NOT_ALLOWED")
        node.disclosure.check_refusals(principal)
        if not req.HasField("public_key"):
            raise InvalidArgument("public_key is required: the statistics are encrypted under it",
                                  reason="PUBLIC_KEY_REQUIRED")
        prep = self.prepare(principal.name, dataset=req.dataset, formula=req.formula, family=req.family,
                            purpose=req.purpose, public_key=req.public_key.n, fit_id=req.fit_id,
                            iteration=req.iteration, coefficients=list(req.coefficients), epsilon=req.epsilon)
        certificate = node.certificate_id(prep.ds.name)
        prep, exact = self.consented(prep)
        with self.releasing(prep, certificate) as populations:
            if prep.family != design.GAUSSIAN and not prep.ds.disclosure.dp:
                self._advance(prep, exact)
            fixed, scales = self.statistics(prep, exact)
            layout = PackingLayout.for_range(prep.key, SLOT_LOW, SLOT_HIGH)
            cts = [c.to_bytes() for c in encrypt_packed(prep.key, fixed, layout, obfuscation=node.obfuscation)]
            digest = hashlib.sha256(b"".join(cts)).hexdigest()
            release = self.record(prep, digest=digest, ciphertexts=len(cts), statistics=len(fixed),
                                  certificate=certificate, populations=populations)
        return model_pb2.ModelStatistics(
            dataset=prep.ds.resource_name, fit_id=prep.fit_id, iteration=prep.iteration,
            terms=[t.name for t in prep.spec.terms], response=prep.spec.response.name, fraction_bits=FRACTION_BITS,
            cells=query_pb2.EncryptedCells(slot_bits=layout.slot_bits, slots_per_ciphertext=layout.slots,
                                           slot_offset=str(SLOT_LOW), cell_count=len(fixed), ciphertexts=cts,
                                           plaintext_bits=layout.slot_bits * layout.slots),
            disclosure_mode=prep.ds.disclosure.mode, epsilon=prep.epsilon, noise_scales=scales,
            max_iterations=MAX_ITERATIONS, release_digest=digest, certificate_id=certificate, release=release,
            model_digest=prep.digest, consent_snapshot=prep.snapshot)

    def prepare(self, principal: str, *, dataset: str, formula: str, family: str, purpose: str,
                public_key: bytes, fit_id: str, iteration: int, coefficients: list[float], epsilon: float,
                check_grant: bool = True, name_as: str = "") -> Prepared:
        """Every rule, in order, before anything is computed (also a federated member's PREPARE:
        ``name_as`` is the federated dataset's name, ``check_grant`` False when the analyst is
        another member's, as for federated queries)."""
        node = self.node
        family = family or design.GAUSSIAN
        if family not in design.FAMILIES:
            raise InvalidArgument(f"family must be one of {', '.join(design.FAMILIES)}",
                                  reason="MODEL_FAMILY_UNSUPPORTED")
        if not fit_id or len(fit_id) > MAX_FIT_ID:
            raise InvalidArgument(f"fit_id is required (at most {MAX_FIT_ID} characters, e.g. a UUID)",
                                  reason="INVALID_FIT_ID")
        try:
            key = PublicKey.from_bytes(public_key, min_bits=2048)
        except InvalidKey as e:
            raise InvalidArgument(f"the Paillier public key is not acceptable: {e}",
                                  reason="INVALID_PUBLIC_KEY") from None
        if not purpose:
            raise InvalidArgument("every model declares a purpose; set purpose to one the dataset allows",
                                  reason="PURPOSE_REQUIRED")
        served = node.steward.queryable(dataset)
        ds = served.dataset
        if purpose not in ds.purposes:
            raise PolicyViolation(f"purpose '{purpose}' is not allowed on datasets/{name_as or ds.name}; allowed: "
                                  f"{', '.join(sorted(ds.purposes))}", reason="PURPOSE_NOT_ALLOWED",
                                  metadata={"dataset": name_as or ds.name, "purpose": purpose})
        spec = resolve(formula, ds)
        if not served.governance.auto_approve and name_as:
            raise PolicyViolation(f"this member's part of {name_as} needs an owner's approval for every query; "
                                  "federated models run only on parts whose policy approves automatically (ask the "
                                  "owners)", reason="MODEL_REVIEW_REQUIRED", metadata={"dataset": name_as})
        if check_grant:
            node.steward.grants.find(principal=principal, dataset=ds.name, purpose=purpose,
                                     columns=list(spec.columns))
        rows = node.approximate_rows(ds)  # public (the catalog shows it): refusals never depend on data
        p = spec.parameters
        need = max(ds.min_group_size, MIN_MODEL_ROWS)
        if rows < need:
            raise PolicyViolation(f"datasets/{ds.name} has too few rows for a model (at least {need}); "
                                  "models need a larger dataset", reason="MODEL_TOO_FEW_ROWS",
                                  metadata={"dataset": ds.name, "limit": str(need)})
        if p * ROWS_PER_PARAMETER > rows:
            raise PolicyViolation(f"the model has {p} parameters; datasets/{ds.name} allows at most one per "
                                  f"{ROWS_PER_PARAMETER} rows ({rows // ROWS_PER_PARAMETER}); use fewer terms or "
                                  "categories", reason="MODEL_TOO_MANY_PARAMETERS",
                                  metadata={"dataset": ds.name, "limit": str(rows // ROWS_PER_PARAMETER)})
        if not ds.disclosure.dp and any((c := ds.column(n)) is not None and c.dominance is not None
                                        for n in spec.columns):
            raise PolicyViolation(f"datasets/{ds.name} applies a dominance rule to a column of this model; exact "
                                  "models cannot honour it, so leave that column out", reason="MODEL_DOMINANCE_COLUMN",
                                  metadata={"dataset": ds.name})
        coefficients = _coefficients(coefficients, iteration, spec, family)
        if iteration >= MAX_ITERATIONS:
            raise _cap(iteration)
        if not served.governance.auto_approve:  # the owners approve each model (models/reviews.py)
            self.reviews.admit(principal=principal, dataset=ds.name, purpose=purpose, family=family, formula=formula,
                               terms=[t.name for t in spec.terms], response=spec.response.name,
                               certificate=node.certificate_id(ds.name),
                               approvals_required=served.governance.approvals_required)
        if family != design.GAUSSIAN and not ds.disclosure.dp:
            coefficients = self._canonical(principal, ds, fit_id, int(iteration), coefficients,
                                           federated=bool(name_as))
            if name_as:
                _linear_predictor_bounded(spec, ds, coefficients)
        eps = node.disclosure.epsilon(ds, epsilon)
        sens = design.sensitivities(spec, ds, family)
        if max(sens) * (2 * rows + 1000) * 2**FRACTION_BITS >= MAX_PUBLIC_BOUND:
            raise PolicyViolation("the declared ranges are too wide for the model's fixed-point cells; ask the "
                                  "owner for narrower ranges", reason="MODEL_RANGE_TOO_WIDE")
        pol = ds.disclosure
        budget_purpose = pol.budget_purpose(purpose)
        if pol.dp:
            try:
                node.disclosure.budget.check(principal, ds.name.lower(), budget_purpose, epsilon=eps,
                                             limit=pol.analyst_budget, dataset_limit=pol.dataset_budget)
            except BudgetExhausted as e:
                raise _stopped(e, iteration) from None
        # The grant's quotas (releases per day, rows scanned, ε) count model releases like queries.
        node.disclosure.ledger.check_quota(node.disclosure.settings.quota(principal, ds.name, purpose),
                                           principal=principal, dataset=ds.name, purpose=purpose, rows=rows,
                                           epsilon=eps if pol.dp else 0.0)
        account = (principal, ds.name.lower(), fit_id)
        with self._lock:
            if self._releases.get(account, 0) >= MAX_ITERATIONS:
                raise _cap(iteration)
        return Prepared(principal, ds, spec, family, coefficients, eps if pol.dp else 0.0, rows, sens, key, purpose,
                        budget_purpose, fit_id, int(iteration), formula, check_grant)

    @contextlib.contextmanager
    def releasing(self, prep: Prepared, certificate: str) -> Iterator[list]:
        """Exact mode: the model's cells through exact mode's history audit (``disclosure``),
        the dataset's lock held until the release is recorded; yields the populations to record.
        DP: nothing to audit (the ε debit is the accounting)."""
        if prep.ds.disclosure.dp:
            yield []
            return
        categorical = list(dict.fromkeys(t.column for t in prep.spec.terms if t.level is not None))
        name = quote_ident(prep.ds.name)
        if not categorical:
            sqls = [f"SELECT COUNT(*) AS n FROM {name}"]
        elif len(categorical) == 1:
            g = quote_ident(categorical[0])
            sqls = [f"SELECT {g}, COUNT(*) AS n FROM {name} GROUP BY {g}"]
        else:  # X'X crosses every pair of categorical terms
            sqls = [f"SELECT {quote_ident(a)}, {quote_ident(b)}, COUNT(*) AS n FROM {name} GROUP BY "
                    f"{quote_ident(a)}, {quote_ident(b)}" for i, a in enumerate(categorical) for b in categorical[i + 1:]]
        cells = []
        for sql in sqls:
            plan = plan_query(sql, Catalog([prep.ds]))
            cells.append((plan, self.node.engine.aggregate(plan, prep.ds)))
        # Sums of the numeric columns (indicators of categories are counts, checked as rows).
        columns = list(dict.fromkeys([t.column for t in prep.spec.terms if not t.intercept and t.level is None]
                                     + [prep.spec.response.name]))
        with self.node.disclosure.model_releasing(prep.ds, cells, certificate, columns) as populations:
            yield populations

    def _canonical(self, principal: str, ds: Any, fit_id: str, iteration: int, coefficients: list[float], *,
                   federated: bool) -> list[float]:
        """Exact mode, logistic and Poisson: the gradient is released only along Newton's path
        from zero, which the node computes itself. At coefficients of the analyst's choosing, the
        weights of each row (a logistic of x'beta) are the analyst's to shape: enough fits at
        chosen coefficients would give sums over thresholds the lattice does not allow, and in
        the end the rows themselves. Along the canonical path every release is a fixed function
        of the data. Iteration t comes after the fit's t releases to this analyst, so the
        coefficients checked are ones it already computed from what it was given: a refusal
        tells it nothing new.

        A federated member sees only its own part, so it cannot compute the path; it checks the
        order here (iteration 0 at zero) and the step itself jointly with the other members
        (:func:`step_residual`, ``federation/participant.py``)."""
        account = (principal, ds.name.lower(), fit_id)
        with self._lock:
            done = self._releases.get(account, 0)
            path = self._paths.get(account)
            step = self._steps.get(account)
        if federated:
            if iteration != done or (iteration > 0 and (step is None or step.iteration != iteration - 1)):
                raise PolicyViolation(f"in exact mode a logistic or Poisson fit takes its steps in order: this fit "
                                      f"has {done} release(s) here, so the next is iteration {done}; start a new fit "
                                      "to begin again", reason="MODEL_ITERATION_OUT_OF_ORDER",
                                      metadata={"iteration": str(iteration), "expected": str(done)})
            if iteration == 0 and any(c != 0.0 for c in coefficients):
                raise PolicyViolation("in exact mode a logistic or Poisson fit starts from zero coefficients; use "
                                      "node.fit, which follows Newton's path", reason="MODEL_COEFFICIENTS_NOT_CANONICAL",
                                      metadata={"iteration": "0"})
            return coefficients
        if iteration != done or (iteration > 0 and (path is None or len(path) <= iteration)):
            raise PolicyViolation(f"in exact mode a logistic or Poisson fit takes its steps in order: this fit has "
                                  f"{done} release(s), so the next is iteration {done}; start a new fit to begin "
                                  "again", reason="MODEL_ITERATION_OUT_OF_ORDER",
                                  metadata={"iteration": str(iteration), "expected": str(done)})
        expected = path[iteration] if path is not None else [0.0] * len(coefficients)  # iteration 0: zero
        if expected is None or len(coefficients) != len(expected) or any(
                abs(a - b) > 1e-9 * (1.0 + abs(b)) for a, b in zip(coefficients, expected)):
            raise PolicyViolation("in exact mode a logistic or Poisson fit evaluates only Newton's path from zero, "
                                  "the coefficients each release leads to; use node.fit, which follows it",
                                  reason="MODEL_COEFFICIENTS_NOT_CANONICAL", metadata={"iteration": str(iteration)})
        return list(expected)

    def _advance(self, prep: Prepared, fixed: list[int]) -> None:
        """Exact GLM: the next point of the fit's Newton path, from the values just released
        (as the SDK computes it: the fixed-point cells, the same solve)."""
        import numpy as np

        p = len(prep.spec.terms)
        h, g = _symmetric([v / float(2**FRACTION_BITS) for v in fixed], p)
        m, vec = np.array(h), np.array(g)
        beta = np.array(prep.coefficients) if prep.coefficients else np.zeros(p)
        account = (prep.principal, prep.ds.name.lower(), prep.fit_id)
        try:
            nxt = (beta + np.linalg.solve(m, vec)).tolist()
        except np.linalg.LinAlgError:
            nxt = None  # singular: the fit cannot go on (the SDK says so)
        with self._lock:
            path = self._paths.setdefault(account, [beta.tolist()])
            if len(path) == prep.iteration + 1:
                path.append(nxt)

    def member_step(self, prep: Prepared) -> MemberStep | None:
        """A federated member's part of this fit's previous release (exact GLMs), or None."""
        with self._lock:
            return self._steps.get((prep.principal, prep.ds.name.lower(), prep.fit_id))

    def end_fit(self, prep: Prepared) -> None:
        """A federated member forgets a fit whose step failed the check: its next iteration is
        refused (out of order), so a failed step is never tried again in that fit."""
        with self._lock:
            self._steps.pop((prep.principal, prep.ds.name.lower(), prep.fit_id), None)

    def keep_step(self, prep: Prepared, step: MemberStep) -> None:
        with self._lock:
            self._steps[(prep.principal, prep.ds.name.lower(), prep.fit_id)] = step

    def consented(self, prep: Prepared) -> tuple[Prepared, list[int]]:
        """The release's exact fixed-point statistics, and ``prep`` with the dataset bound to
        this instant's consent (a dataset whose basis is consent: only rows whose subject has a
        valid consent for the purpose count, as for queries; the snapshot's digest goes into the
        release, its log entry and the subjects' statements). The consent set is read again
        after the scan: if it changed, the scan is repeated, so the digest describes the rows."""
        node = self.node
        for _ in range(CONSENT_READS):
            ds, subjects = node.consent_bound(prep.ds, prep.purpose)
            bound = dataclasses.replace(prep, ds=ds, subjects=tuple(subjects))
            exact = design.compute(node.engine, bound.spec, ds, bound.family, bound.coefficients)
            if node.consent_unchanged(ds):
                return bound, [round(v * 2**FRACTION_BITS) for v in exact]
        raise Unavailable("the consent table changed during every attempt to compute this model's statistics; try "
                          "again when consent updates pause", reason="CONSENT_SOURCE_CHANGING")

    def statistics(self, prep: Prepared, exact: list[int]) -> tuple[list[int], list[float]]:
        """The release's fixed-point statistics (``exact``, noised under DP) and each one's
        noise scale."""
        fixed = list(exact)
        scales: list[float] = []
        if prep.ds.disclosure.dp:
            m = len(fixed)
            released = []
            for v, s in zip(fixed, prep.sensitivities):
                noise = mechanism(max(1, math.ceil(s * 2**FRACTION_BITS)), prep.epsilon / m)
                released += privatize([v], noise)
                scales.append(noise.scale * noise.unit / 2**FRACTION_BITS)
            fixed = released
        if any(not SLOT_LOW <= v <= SLOT_HIGH for v in fixed):  # the public bound above rules this out
            raise Internal("a model statistic does not fit its cell", reason="EXECUTION_FAILED")
        return fixed, scales

    def record(self, prep: Prepared, *, digest: str, ciphertexts: int, statistics: int, certificate: str,
               details: dict[str, Any] | None = None, populations: list | None = None) -> str:
        """Charge (grant use, ε) and log one release, in one transaction, before it leaves;
        returns the release's id (its audit entry's ``query``)."""
        node, ds, pol = self.node, prep.ds, prep.ds.disclosure
        release_id = f"model:{prep.fit_id}:{prep.iteration}:{secrets.token_hex(8)}"
        with node.store.joined_tx():
            if prep.check_grant:
                node.steward.grants.charge(query_id=release_id, principal=prep.principal, dataset=ds.name,
                                           purpose=prep.purpose, columns=list(prep.spec.columns))
            if populations:  # exact mode: the model's cells join the dataset's release history
                node.disclosure.history.record(ds.name, release_id, populations)
                if prep.snapshot:  # ... counted under this consent snapshot
                    node.disclosure.history.record_snapshot(ds.name, release_id, prep.snapshot)
            if prep.snapshot:  # what a subject statement answers from
                node.subjects.record_release(release_id, ds.name, prep.purpose, prep.snapshot, list(prep.subjects),
                                             digest)
            if pol.dp:
                try:
                    node.disclosure.budget.debit(release_id, prep.principal, ds.name.lower(), prep.budget_purpose,
                                                 epsilon=prep.epsilon, limit=pol.analyst_budget,
                                                 dataset_limit=pol.dataset_budget)
                except BudgetExhausted as e:
                    raise _stopped(e, prep.iteration) from None
            node.audit.model_released(prep.principal, ds.name, release_id, {
                **release_details(prep.digest, certificate, digest),
                "release": release_id, "fit_id": prep.fit_id, "iteration": prep.iteration, "family": prep.family,
                "formula": prep.formula[:2000], "terms": [t.name for t in prep.spec.terms], "purpose": prep.purpose,
                "disclosure": pol.mode, "epsilon_micro": to_micro(prep.epsilon) if pol.dp else 0,
                "statistics": statistics, "ciphertexts": ciphertexts, "release_sha256": digest,
                "key_fingerprint": prep.key.fingerprint(), "dataset_certificate": certificate,
                **({"consent_snapshot": prep.snapshot} if prep.snapshot else {}), **(details or {})})
            node.disclosure.ledger.record("submitted", principal=prep.principal, dataset=ds.name,
                                          purpose=prep.purpose, query_id=release_id, submitted=1)
            node.disclosure.ledger.record("released", principal=prep.principal, dataset=ds.name,
                                          purpose=prep.purpose, query_id=release_id, released=1,
                                          rows_scanned=prep.rows, cells_released=statistics,
                                          micro_epsilon=to_micro(prep.epsilon) if pol.dp else 0,
                                          ciphertexts=ciphertexts)
        account = (prep.principal, ds.name.lower(), prep.fit_id)
        with self._lock:
            self._releases[account] = self._releases.get(account, 0) + 1
        return release_id


@dataclass(frozen=True)
class Prepared:
    """A model release that passed every rule: what to compute, for whom, at which ε."""

    principal: str
    ds: Any  # the dataset (its local registration)
    spec: ModelSpec
    family: str
    coefficients: list[float]
    epsilon: float  # 0 in exact mode
    rows: int
    sensitivities: list[float]
    key: PublicKey
    purpose: str
    budget_purpose: str
    fit_id: str
    iteration: int
    formula: str
    check_grant: bool = True
    subjects: tuple[str, ...] = ()  # a consent dataset: the subjects whose rows count (bound at execution)

    @property
    def snapshot(self) -> str:
        """A consent dataset's snapshot digest, once bound; "" otherwise."""
        scope = self.ds.consent_scope
        return scope.snapshot if scope is not None else ""

    @property
    def digest(self) -> str:
        """SHA-256 of what this release computes, for whom: a receipt's query_digest."""
        return model_digest(self.ds.name, self.formula, self.family, self.coefficients, self.iteration, self.fit_id,
                            self.key.fingerprint())




@dataclass(frozen=True)
class MemberStep:
    """What a federated member keeps of an exact GLM release it contributed to: its own
    fixed-point statistics and the session's pairwise seeds (for the mask of the next step's
    check), never anything of another member."""

    iteration: int
    coefficients: list[float]
    fixed: list[int]
    seeds: dict[str, bytes]
    context: bytes


# The federated step check (exact mode, logistic and Poisson).
#
# The analyst decrypts the union's H (X'WX) and g (X'(y - mu)) of release t and sends
# beta_t+1 = beta_t + d. Newton's step is d = H^-1 g, that is H·d - g = 0, which is linear in the
# members' parts: sum_i (H_i·d - g_i) = H·d - g. So at PREPARE of release t+1 each member sends
# its own residual plus its zero-sum mask of release t's session; at CONTRIBUTE every member adds
# the signed values of all members (the masks cancel) and contributes only if the union's
# residual is within a tolerance set from public bounds (the declared ranges times the members'
# public row counts), so it never depends on the data.
#
# What it reveals: each member's masked value is uniform to everyone else (three members or
# more; with two, each member's part is the union minus its own anyway, so the other's residual
# -- for the true step minus one's own, as the union's is ~0; for a chosen step, with the
# coordinator and analyst colluding, H_other·d - g_other -- adds nothing to what two members
# already learn from each other's union), and masks are drawn per attempt (federated query id
# and coefficients), so two attempts' values never difference to a member's statistics: an
# attempt aborted after PREPARE (which does not end the fit) gives a value under a mask no other
# attempt shares. Every member learns the union's residual H·d - g: for the step node.fit takes
# it is the analyst's floating-point solve error, about 1e-16 of the statistics' size; an analyst
# whose step reaches CONTRIBUTE and fails is refused and the fit ends at every member, and the
# members have seen one linear combination of the union's statistics of release t, which the
# analyst holds and could hand them anyway. Slack: a step within the tolerance
# (1e-10 of the public bound) passes, as on one node the coefficients may differ from the node's
# own path by 1e-9 of their size. Defence in depth: the linear predictor stays within ±50 over
# the declared ranges (_linear_predictor_bounded).
#
# Not covered (the threat model's honest-but-curious members): a member that deviates from the
# protocol, colluding with the analyst, can send a forged residual (or a forged contribution, or
# claim more public rows) so that a step of the analyst's choosing passes, and the honest members
# then release statistics at those coefficients; a red team recovered a row that way. Within the
# ±50 bound the weights stay smooth, but exact federated GLMs are only as safe as the members'
# honesty: where a member may be hostile, the owners should serve DP parts (each member's noise
# then protects its rows whatever the coefficients).

STEP_SCALE_BITS = 16  # the residual is sent in units of 2^-16 of a fixed-point unit
STEP_MODULUS = 1 << 1024  # masks and residuals live here
STEP_BYTES = 128  # each on the wire
STEP_TOLERANCE = 1e-10


def _symmetric(values: list, p: int) -> tuple[list[list], list]:
    """H (p x p, from its upper triangle after n) and g of a release's statistics in release
    order (values, fixed-point cells or their sensitivities)."""
    h: list[list] = [[0] * p for _ in range(p)]
    k = 1
    for i in range(p):
        for j in range(i, p):
            h[i][j] = h[j][i] = values[k]
            k += 1
    return h, list(values[k:k + p])


def step_residual(fixed: list[int], before: list[float], after: list[float]) -> list[int]:
    """This member's H_i·d - g_i for d = after - before, exactly (d is a difference of
    doubles), in units of 2^-(32+16) value units, rounded."""
    from fractions import Fraction

    p = len(after)
    h, g = _symmetric(fixed, p)
    d = [Fraction(a) - Fraction(b) for a, b in zip(after, before)]
    scale = 1 << STEP_SCALE_BITS
    return [round((sum(h[j][k] * d[k] for k in range(p)) - g[j]) * scale) for j in range(p)]


def step_tolerance(sensitivities: list[float], rows_bound: int, before: list[float], after: list[float],
                   members: int) -> list[int]:
    """The largest residual (same units) a Newton step computed in floating point can have,
    from public bounds: |H_jk| <= rows * Δ(H_jk), |g_j| <= rows * Δ(g_j); the solve's backward
    error and the rounding of beta are far below 1e-10 of |H|(|d| + |beta|) + |g|."""
    p = len(after)
    hs, gs = _symmetric(sensitivities, p)
    unit = float(1 << (FRACTION_BITS + STEP_SCALE_BITS))
    out = []
    for j in range(p):
        size = sum(hs[j][k] * (abs(after[k] - before[k]) + abs(after[k])) for k in range(p)) + gs[j]
        out.append(math.ceil(STEP_TOLERANCE * rows_bound * size * unit) + members * (1 << STEP_SCALE_BITS))
    return out


MAX_LINEAR_PREDICTOR = 50.0


def _linear_predictor_bounded(spec: ModelSpec, ds: Any, coefficients: list[float]) -> None:
    """Exact federated GLMs (defence in depth behind the step check): the linear predictor x'β
    must stay within ±MAX_LINEAR_PREDICTOR over the declared ranges, so no coefficients, however
    obtained, make a row's weight a step function of one value (a logistic beyond ±50 is 0 or 1
    in doubles anyway; a real fit's path stays far inside unless the data separate)."""
    reach = sum(abs(c) * design.bound(t, ds) for c, t in zip(coefficients, spec.terms))
    if reach > MAX_LINEAR_PREDICTOR:
        raise PolicyViolation(f"the coefficients let the linear predictor reach {MAX_LINEAR_PREDICTOR:g} over the "
                              "declared ranges; an exact federated fit stays within it (the data may be separable: "
                              "drop the separating term, or ask the owners for DP datasets)",
                              reason="MODEL_COEFFICIENTS_TOO_LARGE")


def _coefficients(coefficients: list[float], iteration: int, spec: ModelSpec, family: str) -> list[float]:
    if family == design.GAUSSIAN:
        if coefficients or iteration:
            raise InvalidArgument("ordinary least squares takes no coefficients and one release (iteration 0)",
                                  reason="INVALID_COEFFICIENTS")
        return []
    lo, hi = (float(v) for v in spec.response.value_range or (0, 0))
    if family == design.BINOMIAL and (lo < 0 or hi > 1):
        raise PolicyViolation(f"logistic regression needs a response declared within [0, 1]; column "
                              f"{spec.response.name} is declared wider", reason="MODEL_RESPONSE_NOT_BINARY",
                              metadata={"column": spec.response.name})
    if family == design.POISSON and (lo < 0 or hi <= 0):
        raise PolicyViolation(f"Poisson regression needs a response declared within [0, hi]; column "
                              f"{spec.response.name} may be negative", reason="MODEL_RESPONSE_NOT_COUNT",
                              metadata={"column": spec.response.name})
    if not coefficients:
        return [0.0] * spec.parameters
    if len(coefficients) != spec.parameters:
        raise InvalidArgument(f"the model has {spec.parameters} parameters; send one coefficient for each",
                              reason="INVALID_COEFFICIENTS")
    if not all(math.isfinite(c) and abs(c) <= MAX_COEFFICIENT for c in coefficients):
        raise InvalidArgument(f"coefficients must be finite and at most {MAX_COEFFICIENT:g} in size",
                              reason="INVALID_COEFFICIENTS")
    return coefficients


def noise_scales(ds: Any, formula: str, family: str, epsilon: float) -> list[float]:
    """The scale (value units) of one release's noise on each statistic, from the declared
    ranges alone (what a federated coordinator tells the analyst; 0 ε: no noise)."""
    if not epsilon:
        return []
    spec = resolve(formula, ds)
    sens = design.sensitivities(spec, ds, family or design.GAUSSIAN)
    out = []
    for s in sens:
        noise = mechanism(max(1, math.ceil(s * 2**FRACTION_BITS)), epsilon / len(sens))
        out.append(noise.scale * noise.unit / 2**FRACTION_BITS)
    return out


def _cap(iteration: int) -> PolicyViolation:
    return PolicyViolation(f"a fit may use at most {MAX_ITERATIONS} releases; iteration {iteration} is past the cap. "
                           "Start from better coefficients or accept the current ones",
                           reason="MODEL_ITERATION_CAP", metadata={"iteration": str(iteration),
                                                                   "limit": str(MAX_ITERATIONS)})


def _stopped(e: BudgetExhausted, iteration: int) -> BudgetExhausted:
    """The budget refusal, naming the iteration that stopped (nothing was released for it)."""
    return BudgetExhausted(f"the fit stopped at iteration {iteration}, nothing was released for it: {e.message}",
                           metadata={**e.metadata, "iteration": str(iteration)})
