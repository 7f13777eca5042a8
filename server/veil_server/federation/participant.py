"""A member's side of a federated query: check, approve, compute and answer each step.

The coordinator drives four steps (``paillier_protocol.py`` and ``sharing_protocol.py`` say
what each computes and what each party learns); a member answers each one itself, under its
own rules, and never takes the coordinator's word for anything it can check:

- PREPARE: the federated dataset must be declared here, the participants must be exactly its
  declared members, the protocol one this node allows, the analyst's key valid (>= 2048 bits),
  and the SQL must pass this node's planner and policy against this node's own part. Then the
  member signs the plan's digests, its k and row bound, and a fresh X25519 key. Its dataset
  must release with DP (an exact-mode member refuses: ``FEDERATION_REQUIRES_DP``); it states the ε
  it will spend (the analyst's, up to its own maximum, else its default), every member must
  state the same, and both its budgets must cover it.
- CONTRIBUTE adds this member's own noise to its partial (``partial.noisy_matrix``) and charges
  the ε to its dataset's budgets before the noisy, masked contribution leaves.
- CONTRIBUTE / AGGREGATE / RELEASE: every signed message the coordinator forwards from other
  members is verified against their pinned keys; the session must hold every member's signed
  preparation (this node's own, unchanged), and all must agree on plan and schema. Each member
  recomputes the combined counts itself and applies k = max of all members' k before releasing.

Idempotency: each step's answer is kept, signed, per (federated query, step); a retried request
gets it back byte for byte, and a different request for a step already answered is refused
(``FEDERATED_STEP_CONFLICT``). So a retry never counts a partial twice, and masks are never
drawn twice for one query (which could let someone cancel them). Sessions live in memory only:
``DONE_TTL`` seconds after this member's last step (room for retries), ``SESSION_TTL`` at most;
a node that restarts mid-query makes that query fail.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from veil.crypto import EncodingOverflow, InvalidKey, PackingLayout, PublicKey
from veil.v1 import federation_pb2

from ..query.catalog import Catalog, Dataset
from ..query.consent import CONSENT_READS
from ..config import Principal, Role
from ..query.domain import expected_groups
from ..errors import (AlreadyExists, FailedPrecondition, Internal, InvalidArgument, NotFound, PermissionDenied,
                      PolicyViolation, ResourceExhausted, Unavailable, VeilError)
from ..query.plan import QueryPlan
from ..query.planner import plan_query
from ..query.policy import evaluate
from . import paillier_protocol, sharing_protocol
from .audit import FederationAudit
from .envelope import PeerSigner, Verified
from ..disclosure.budget import to_micro
from .pairwise import derive_seeds, new_ephemeral, open_sealed, seal, zero_sum_mod
from .partial import (VectorLayout, bitmap, layout_for, noisy_matrix, part_digest, partial_matrix,
                      released_groups)
from .settings import FederatedDataset, FederationConfig

SESSION_TTL = 900.0  # an unfinished query is forgotten after this long
DONE_TTL = 120.0  # a finished one (its last step answered) after this long: time enough for retries
MAX_SESSIONS = 64  # unfinished ones; finished ones are evicted first to make room
MIN_KEY_BITS = 2048
PROTOCOL_NAMES = {federation_pb2.FEDERATION_PROTOCOL_PAILLIER: "paillier",
                  federation_pb2.FEDERATION_PROTOCOL_SHARING: "sharing"}
RESPONSE_BODY = {"prepare": "prepared", "contribute": "contribution", "aggregate": "aggregated",
                 "release": "released"}

Observer = Callable[[str, str, str, bytes], None]  # (this node, what, from whom, bytes received)


@dataclass
class Session:
    query: str
    coordinator: str
    created: float = field(default_factory=time.monotonic)
    done: float | None = None  # when this member answered its last step
    lock: threading.Lock = field(default_factory=threading.Lock)
    answers: dict[str, tuple[str, federation_pb2.PeerEnvelope]] = field(default_factory=dict)
    # Set by PREPARE.
    fed: FederatedDataset | None = None
    dataset: Dataset | None = None  # this node's part, under the federated name
    local: Dataset | None = None  # this node's part, as registered (what the engine reads)
    plan: QueryPlan | None = None
    key: PublicKey | None = None
    protocol: str = ""
    principal: str = ""
    members: list[str] = field(default_factory=list)
    compute: list[str] = field(default_factory=list)
    ephemeral: X25519PrivateKey | None = None
    # Set by CONTRIBUTE.
    k: int = 0
    layout: VectorLayout | None = None
    seeds: dict[str, bytes] = field(default_factory=dict)
    context: bytes = b""
    matrix: list[list[int]] | None = None
    own_share: np.ndarray | None = None
    epsilon: float = 0.0
    purpose: str = ""
    consent_snapshot: str = ""  # a consent dataset: the snapshot this member's part was computed on
    consent_subjects: list[str] = field(default_factory=list)  # ... and the subjects it included
    account: str = ""  # whose budget: the analyst's own name, whichever member coordinates
    # Set by AGGREGATE (sharing, compute parties).
    summed: np.ndarray | None = None
    # Models (issue 18): the checked release this member will contribute (models.fitting.Prepared).
    model: Any = None


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Participant:
    def __init__(self, node: Any, config: FederationConfig, signer: PeerSigner, audit: FederationAudit) -> None:
        self.node = node
        self.config = config
        # Randomness of the node's ciphertexts: [crypto] obfuscation (veil_server.crypto_executor).
        self._obfuscation = getattr(node, "obfuscation", "djn")
        self.name = config.name
        self.signer = signer
        self.audit = audit
        self.observers: list[Observer] = []
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def _observe(self, what: str, sender: str, data: bytes) -> None:
        for observer in list(self.observers):
            observer(self.name, what, sender, data)

    # -- dispatch ---------------------------------------------------------------------------

    def handle(self, step: str, envelope: federation_pb2.PeerEnvelope) -> federation_pb2.PeerEnvelope:
        """Verify a signed request for ``step``, answer it (or return the kept answer), signed."""
        v = self.signer.verify(envelope, body=step, recipient=self.name)
        self._observe(f"request:{step}", v.payload.sender, envelope.SerializeToString())
        q = v.payload.federated_query
        if not 0 < len(q) <= 64:
            raise InvalidArgument("the federated query id must be 1 to 64 characters", reason="FEDERATION_SESSION_INVALID")
        if step == "abort":
            return self._abort(v)
        session = self._open(v) if step == "prepare" else self._get(q)
        if v.payload.sender != session.coordinator:
            raise PermissionDenied("only the query's coordinator drives its steps", reason="PEER_NOT_COORDINATOR",
                                   metadata={"node": v.payload.sender[:100]})
        request_digest = _digest(getattr(v.payload, step).SerializeToString(deterministic=True))
        with session.lock:
            kept = session.answers.get(step)
            if kept is not None:
                if kept[0] != request_digest:
                    raise AlreadyExists(f"step {step} of this federated query was already answered for another "
                                        "request; a step is answered once", reason="FEDERATED_STEP_CONFLICT")
                return kept[1]
            self._check_order(session, step)
            try:
                try:
                    body = getattr(self, f"_{step}")(session, v)
                except EncodingOverflow:
                    # Only reachable if the data exceed a declared bound (rows > max_rows); refusing
                    # is the safe answer, as for a single-node result.
                    raise Internal("a partial fell outside its declared bound", reason="RESULT_OUT_OF_RANGE") from None
            except VeilError as e:
                self.audit.refused(session.principal or v.payload.sender, q, session.fed.name if session.fed else "",
                                   e, step=step, peer=v.payload.sender)
                if step == "prepare":
                    self._drop(q)
                raise
            answer = self.signer.sign(q, session.coordinator, **{RESPONSE_BODY[step]: body})
            self.audit.exchange(session.principal, q, session.fed.name if session.fed else "", step=step,
                                peer=session.coordinator, direction="answered",
                                request=envelope.SerializeToString(), response=answer.SerializeToString(),
                                consent_snapshot=session.consent_snapshot if step == "contribute" else "")
            session.answers[step] = (request_digest, answer)
            if step == "release" or (step == "contribute" and (session.model is not None or (
                    session.protocol == "sharing" and self.name not in session.compute))):
                session.done = time.monotonic()
            return answer

    def _check_order(self, session: Session, step: str) -> None:
        before = {"prepare": None, "contribute": "prepare", "aggregate": "contribute",
                  "release": "aggregate" if session.protocol == "sharing" else "contribute"}[step]
        if before is not None and before not in session.answers:
            raise FailedPrecondition(f"step {step} needs step {before} first", reason="FEDERATED_STEP_OUT_OF_ORDER")
        if step in ("aggregate", "release") and session.protocol == "sharing" and self.name not in session.compute:
            raise FailedPrecondition("this node is not a compute party of the query", reason="FEDERATED_STEP_NOT_EXPECTED")
        if step in ("aggregate", "release") and session.model is not None:
            raise FailedPrecondition("a model release ends with CONTRIBUTE", reason="FEDERATED_STEP_NOT_EXPECTED")
        if step == "aggregate" and session.protocol != "sharing":
            raise FailedPrecondition("AGGREGATE is a step of the sharing protocol only",
                                     reason="FEDERATED_STEP_NOT_EXPECTED")

    def _open(self, v: Verified) -> Session:
        q, now = v.payload.federated_query, time.monotonic()
        with self._lock:
            for old in [k for k, s in self._sessions.items()
                        if now - s.created > SESSION_TTL or (s.done is not None and now - s.done > DONE_TTL)]:
                del self._sessions[old]
            if q not in self._sessions:
                finished = sorted((s.done, k) for k, s in self._sessions.items() if s.done is not None)
                while len(self._sessions) >= MAX_SESSIONS and finished:
                    del self._sessions[finished.pop(0)[1]]
                if len(self._sessions) >= MAX_SESSIONS:
                    raise ResourceExhausted("too many federated queries in progress; retry later",
                                            reason="FEDERATION_BUSY")
                self._sessions[q] = Session(q, v.payload.sender)
            return self._sessions[q]

    def _get(self, q: str) -> Session:
        with self._lock:
            session = self._sessions.get(q)
        if session is None:
            raise NotFound("no federated query with this id is in progress here (expired, aborted or never prepared)",
                           reason="FEDERATED_QUERY_UNKNOWN")
        return session

    def _drop(self, q: str) -> None:
        with self._lock:
            self._sessions.pop(q, None)

    # -- steps ------------------------------------------------------------------------------

    def _prepare(self, s: Session, v: Verified) -> federation_pb2.PreparedBody:
        body = v.payload.prepare
        fed = self.config.dataset(body.dataset)
        if fed is None:
            raise NotFound(f"this node takes part in no federated dataset named {body.dataset[:100]!r}",
                           reason="FEDERATED_DATASET_NOT_FOUND")
        s.fed = fed
        s.principal = body.analyst if s.coordinator == self.name else f"{body.analyst}@{s.coordinator}"
        protocol = PROTOCOL_NAMES.get(body.protocol)
        if protocol not in fed.protocols:
            raise PolicyViolation(f"this node does not allow protocol {protocol or 'UNSPECIFIED'} on {fed.name}",
                                  reason="FEDERATION_PROTOCOL_NOT_ALLOWED")
        if list(body.participants) != list(fed.members) or s.coordinator not in fed.members:
            raise PolicyViolation(f"the participants must be exactly the declared members of {fed.name}: "
                                  f"{', '.join(fed.members)}", reason="FEDERATION_MEMBERS_MISMATCH")
        compute = list(body.compute_parties)
        if protocol == "sharing" and (len(compute) < 2 or compute != sorted(set(compute))
                                      or not set(compute) <= set(fed.members)):
            raise InvalidArgument("compute parties must be at least two distinct members, sorted",
                                  reason="FEDERATION_COMPUTE_PARTIES_INVALID")
        if protocol == "paillier" and compute:
            raise InvalidArgument("compute parties are for the sharing protocol only",
                                  reason="FEDERATION_COMPUTE_PARTIES_INVALID")
        try:
            key = PublicKey.from_bytes(body.public_key, min_bits=MIN_KEY_BITS)
        except InvalidKey as e:
            raise InvalidArgument(f"the Paillier public key is not acceptable: {e}", reason="INVALID_PUBLIC_KEY") from None
        local = self.node.dataset(fed.local)
        ds = dataclasses.replace(local, name=fed.name)
        if body.formula:  # a model release (issue 18) instead of an SQL aggregate
            return self._prepare_model(s, body, fed, key, local, ds, protocol)
        self.audit.submitted(s.principal, s.query, fed.name, role="member", coordinator=s.coordinator,
                             protocol=protocol, participants=list(body.participants), compute=compute,
                             purpose=body.purpose, sql=body.sql, key_fingerprint=key.fingerprint())
        plan = plan_query(body.sql, Catalog([ds]))
        decision = evaluate(plan, ds, principal=Principal(s.principal, Role.ANALYST, ""), purpose=body.purpose)
        decision.raise_if_rejected()
        policy = local.disclosure
        if not policy.dp:
            raise PolicyViolation(f"this member releases {fed.name} with exact figures; federated queries need every "
                                  "member's part to release with differential privacy", reason="FEDERATION_REQUIRES_DP")
        s.epsilon = policy.epsilon_for(body.epsilon, error=lambda m: InvalidArgument(m, reason="INVALID_EPSILON"))
        s.purpose = body.purpose
        # One analyst, one budget on this part, whichever member coordinates (a per-coordinator
        # account would multiply it by the number of members).
        s.account = body.analyst
        if s.coordinator == self.name:  # the analyst is this node's own: its grant applies as locally
            self.node.steward.grants.find(principal=body.analyst, dataset=local.name, purpose=body.purpose,
                                          columns=plan.columns_touched())
        self.node.disclosure.budget.check(s.account, local.name.lower(), policy.budget_purpose(body.purpose),
                                          epsilon=s.epsilon, limit=policy.analyst_budget,
                                          dataset_limit=policy.dataset_budget)
        self.audit.decided(s.principal, s.query, fed.name, canonical_sql=plan.canonical_sql(),
                           plan_digest=plan.digest(), summary=decision.summary())
        s.ephemeral, public = new_ephemeral()
        s.dataset, s.local, s.plan, s.key, s.protocol = ds, local, plan, key, protocol
        s.members, s.compute = list(body.participants), compute
        return federation_pb2.PreparedBody(
            plan_digest=plan.digest(), part_digest=part_digest(plan, ds), group_count=expected_groups(plan, ds),
            min_group_size=ds.min_group_size, max_rows=ds.max_rows, ephemeral_key=public,
            canonical_sql=plan.canonical_sql(), epsilon=s.epsilon)

    def _contribute(self, s: Session, v: Verified) -> federation_pb2.ContributionBody:
        if s.model is not None:
            self._check_step(s, self._join_session(s, list(v.payload.contribute.prepared)))
            return self._contribute_model(s)
        assert s.plan is not None and s.dataset is not None and s.local is not None
        self._join_session(s, list(v.payload.contribute.prepared))
        assert s.layout is not None
        # A consent dataset: this member's rows of subjects consenting to the purpose, now; the
        # snapshot digest goes into this member's log entry of the exchange. The loop makes the
        # digest describe the rows counted (see Node._execute_query).
        for _ in range(CONSENT_READS):
            local, subjects = self.node.consent_bound(s.local, s.purpose)
            stats = self.node.engine.aggregate(s.plan, local)
            if self.node.consent_unchanged(local):
                break
        else:
            raise Unavailable("the consent table changed during every attempt to compute this member's part; "
                              "try again when consent updates pause", reason="CONSENT_SOURCE_CHANGING")
        s.consent_snapshot = local.consent_scope.snapshot if local.consent_scope is not None else ""
        s.consent_subjects = subjects
        # This member's own noise, then its ε charged, before anything derived from it leaves.
        s.matrix = noisy_matrix(s.layout, partial_matrix(s.plan, s.dataset, s.layout, stats), s.epsilon)
        self._charge(s)
        n = len(s.members)
        if s.protocol == "paillier":
            return federation_pb2.ContributionBody(masked_counts=paillier_protocol.masked_counts(
                s.layout, s.matrix, me=self.name, seeds=s.seeds, members=n, context=s.context))
        ring = sharing_protocol.share_ring(s.layout, n)
        own, target, travelling = sharing_protocol.split_partial(
            ring, s.matrix, me=self.name, members=s.members, compute=s.compute, seeds=s.seeds, federated_query=s.query)
        s.own_share = own
        nonce, sealed = seal(s.seeds[target], s.query, self.name, target, ring.to_bytes(travelling))
        share = self.signer.sign(s.query, target, sealed_share=federation_pb2.SealedShare(
            recipient=target, nonce=nonce, ciphertext=sealed))
        return federation_pb2.ContributionBody(sealed_share=share)

    # -- models (issue 18) -------------------------------------------------------------------
    #
    # What each party learns from a federated model release (Paillier, pairwise zero-sum masks,
    # as in paillier_protocol.py): a member contributes Enc(P_i + r_i mod n), P_i its packed
    # fixed-point statistics (under DP, with its own full noise: each member's contribution is
    # ε-DP for its rows on its own) and r_i its mask from the pairwise seeds, all masks summing
    # to 0 mod n. The coordinator multiplies the N ciphertexts: it and every other member see only
    # uniform ciphertexts; the analyst decrypts the sum of the members' statistics and nothing
    # else (with the coordinator, the sum minus the coordinator's own part). No counts round, no
    # k rule: a model's statistics are released whole, over every row of every part.

    def _models(self):
        from ..models import ModelFitting  # models do not depend on federation; imported when used

        fitting = getattr(self, "_fitting", None)
        if fitting is None:
            fitting = self._fitting = ModelFitting(self.node)
        return fitting

    def _prepare_model(self, s: Session, body, fed, key: PublicKey, local: Dataset, ds: Dataset,
                       protocol: str) -> federation_pb2.PreparedBody:
        if protocol != "paillier":
            raise PolicyViolation("federated models combine with the Paillier protocol only",
                                  reason="FEDERATION_PROTOCOL_NOT_ALLOWED")
        if list(body.compute_parties):
            raise InvalidArgument("compute parties are for the sharing protocol only",
                                  reason="FEDERATION_COMPUTE_PARTIES_INVALID")
        self.audit.submitted(s.principal, s.query, fed.name, role="member", coordinator=s.coordinator,
                             protocol=protocol, participants=list(body.participants), compute=[],
                             purpose=body.purpose, sql=body.formula, key_fingerprint=key.fingerprint())
        prep = self._models().prepare(
            body.analyst, dataset=local.name, formula=body.formula, family=body.family, purpose=body.purpose,
            public_key=body.public_key, fit_id=body.fit_id, iteration=body.iteration,
            coefficients=list(body.coefficients), epsilon=body.epsilon,
            check_grant=s.coordinator == self.name, name_as=fed.name)
        terms = [t.name for t in prep.spec.terms]
        model = hashlib.sha256(repr((body.formula, prep.family, list(body.coefficients), int(body.iteration),
                                     body.fit_id)).encode()).hexdigest()
        schema = hashlib.sha256(repr((terms, prep.sensitivities, prep.spec.response.value_range)).encode()).hexdigest()
        self.audit.decided(s.principal, s.query, fed.name, canonical_sql=body.formula, plan_digest=model,
                           summary=f"model release: {prep.family}, iteration {prep.iteration}")
        s.model, s.epsilon, s.purpose, s.account = prep, prep.epsilon, body.purpose, body.analyst
        s.ephemeral, public = new_ephemeral()
        s.dataset, s.local, s.key, s.protocol = ds, local, key, protocol
        s.members, s.compute = list(body.participants), []
        count = len(prep.sensitivities)
        return federation_pb2.PreparedBody(
            plan_digest=model, part_digest=schema, group_count=0, min_group_size=ds.min_group_size,
            max_rows=ds.max_rows, ephemeral_key=public, canonical_sql=body.formula[:2000], epsilon=prep.epsilon,
            terms=terms, statistic_count=count, step_check=self._step_check(s, prep), public_rows=prep.rows)

    @staticmethod
    def _exact_glm(prep) -> bool:
        from ..models.design import GAUSSIAN

        return prep.family != GAUSSIAN and not prep.ds.disclosure.dp

    def _step_check(self, s: Session, prep) -> list[bytes]:
        """Exact GLM, iteration t > 0: this member's masked residual of the analyst's step
        (models/fitting.py, "The federated step check"). The mask is drawn for this attempt (this
        federated query and these coefficients, which every member shares): two attempts' values
        never share a mask, so their difference is no member's statistics."""
        from ..models.fitting import STEP_BYTES, STEP_MODULUS, step_residual

        if not self._exact_glm(prep) or prep.iteration == 0:
            return []
        step = self._models().member_step(prep)
        assert step is not None and step.iteration == prep.iteration - 1  # prepare() checked the order
        residual = step_residual(step.fixed, step.coefficients, prep.coefficients)
        attempt = hashlib.sha256(repr((s.query, [float(c).hex() for c in prep.coefficients])).encode()).digest()
        masks = zero_sum_mod(self.name, step.seeds, STEP_MODULUS, len(residual),
                             b"model-step|" + step.context + b"|" + attempt)
        return [((r + m) % STEP_MODULUS).to_bytes(STEP_BYTES, "big") for r, m in zip(residual, masks)]

    def _check_step(self, s: Session, seen: dict[str, Verified]) -> None:
        """Every member's masked residual added up: the union's H·d - g, within the public
        tolerance, or no member contributes (MODEL_COEFFICIENTS_NOT_CANONICAL)."""
        from ..models.fitting import STEP_BYTES, STEP_MODULUS, step_tolerance

        prep = s.model
        if not self._exact_glm(prep) or prep.iteration == 0:
            return
        p = len(prep.coefficients)
        total = [0] * p
        for name, pv in seen.items():
            values = list(pv.payload.prepared.step_check)
            if len(values) != p or any(len(v) != STEP_BYTES for v in values):
                raise FailedPrecondition(f"member {name} sent no check of the analyst's step",
                                         reason="FEDERATION_SESSION_INVALID", metadata={"node": name})
            total = [(t + int.from_bytes(v, "big")) % STEP_MODULUS for t, v in zip(total, values)]
        residual = [t - STEP_MODULUS if t > STEP_MODULUS // 2 else t for t in total]
        step = self._models().member_step(prep)
        assert step is not None
        rows = sum(2 * max(0, pv.payload.prepared.public_rows) + 1000 for pv in seen.values())
        tolerance = step_tolerance(prep.sensitivities, rows, step.coefficients, prep.coefficients, len(seen))
        if any(abs(r) > t for r, t in zip(residual, tolerance)):
            self._models().end_fit(prep)  # a failed step ends the fit here: never tried again in it
            raise PolicyViolation("in exact mode a logistic or Poisson fit evaluates only Newton's path from zero: "
                                  f"the coefficients of iteration {prep.iteration} are not the step the previous "
                                  "release leads to over the union; use node.fit, which follows it",
                                  reason="MODEL_COEFFICIENTS_NOT_CANONICAL",
                                  metadata={"iteration": str(prep.iteration)})

    def _contribute_model(self, s: Session) -> federation_pb2.ContributionBody:
        from ..models.fitting import SLOT_HIGH, SLOT_LOW

        prep, key = s.model, s.key
        assert prep is not None and key is not None and s.local is not None
        certificate = self.node.certificate_id(s.local.name)
        # Exact parts: this member's cells through its own exact-mode history audit.
        prep, exact = self._models().consented(prep)  # a consent dataset: this member's consenting rows
        with self._models().releasing(prep, certificate) as populations:
            fixed, _scales = self._models().statistics(prep, exact)  # this member's own noise under DP
            n = len(s.members)
            packing = PackingLayout.for_range(key, SLOT_LOW, SLOT_HIGH, terms=n)  # room for the sum of n
            plaintexts = packing.pack(fixed)
            masks = zero_sum_mod(self.name, s.seeds, key.n, len(plaintexts), b"model|" + s.context)
            masked = [(pt + r) % key.n for pt, r in zip(plaintexts, masks)]
            cts = [c.to_bytes() for c in key.encrypt_raw_many(masked, obfuscation=self._obfuscation)]
            digest = hashlib.sha256(b"".join(cts)).hexdigest()
            # Charged and logged (digest) before the contribution leaves; the plaintext is not kept.
            self._models().record(prep, digest=digest, ciphertexts=len(cts), statistics=len(fixed),
                                  certificate=certificate, populations=populations,
                                  details={"federation": {"query": s.query, "coordinator": s.coordinator,
                                                          "members": s.members}})
        s.consent_snapshot = prep.snapshot  # into this member's log entry of the exchange
        if self._exact_glm(prep):  # this member's part, for checking the analyst's next step
            from ..models.fitting import MemberStep

            self._models().keep_step(prep, MemberStep(prep.iteration, list(prep.coefficients), list(fixed),
                                                      dict(s.seeds), s.context))
        return federation_pb2.ContributionBody(model_statistics=federation_pb2.ReleasedSection(ciphertexts=cts))

    def _charge(self, s: Session) -> None:
        """Both budgets of this member's dataset, and its usage ledger, in one transaction."""
        assert s.local is not None
        policy = s.local.disclosure
        ledger = self.node.disclosure.ledger
        with self.node.store.joined_tx():
            self.node.disclosure.budget.debit(f"fed:{s.query}", s.account, s.local.name.lower(),
                                              policy.budget_purpose(s.purpose), epsilon=s.epsilon,
                                              limit=policy.analyst_budget, dataset_limit=policy.dataset_budget)
            ledger.record("released", principal=s.account, dataset=s.local.name, purpose=s.purpose,
                          query_id=f"fed:{s.query}", released=1, micro_epsilon=to_micro(s.epsilon))
            if s.consent_snapshot:  # this member's noisy part leaves now: a subject statement lists it
                self.node.subjects.record_release(f"fed:{s.query}", s.local.name, s.purpose, s.consent_snapshot,
                                                  s.consent_subjects, "")

    def _join_session(self, s: Session, envelopes: list[federation_pb2.PeerEnvelope]) -> dict[str, Verified]:
        """Check every member's signed preparation and derive the pairwise seeds from them."""
        seen: dict[str, Verified] = {}
        for env in envelopes:
            pv = self.signer.verify(env, body="prepared", recipient=s.coordinator, federated_query=s.query)
            if pv.payload.sender in seen:
                raise InvalidArgument("a member's preparation appears twice", reason="FEDERATION_SESSION_INVALID")
            seen[pv.payload.sender] = pv
        if sorted(seen) != s.members:
            raise InvalidArgument("the session must carry every member's signed preparation",
                                  reason="FEDERATION_SESSION_INVALID")
        if seen[self.name].envelope.payload != s.answers["prepare"][1].payload:
            raise InvalidArgument("the session does not carry this node's own preparation unchanged",
                                  reason="FEDERATION_SESSION_INVALID")
        mine = seen[self.name].payload.prepared
        for name, pv in seen.items():
            b = pv.payload.prepared
            if (b.plan_digest, b.part_digest, b.group_count) != (mine.plan_digest, mine.part_digest, mine.group_count):
                raise FailedPrecondition(f"member {name} planned the query over a different schema or domain",
                                         reason="FEDERATION_SCHEMA_MISMATCH", metadata={"node": name})
            if b.epsilon != mine.epsilon:
                raise FailedPrecondition(f"member {name} would noise its part at another ε; ask for one every member "
                                         "allows", reason="FEDERATION_EPSILON_MISMATCH", metadata={"node": name})
        s.k = max(pv.payload.prepared.min_group_size for pv in seen.values())
        rows = max(pv.payload.prepared.max_rows for pv in seen.values())
        session = hashlib.sha256(b"".join(seen[n].envelope.payload for n in s.members)).digest()
        assert s.ephemeral is not None and s.dataset is not None
        s.seeds = derive_seeds(self.name, s.ephemeral, {n: seen[n].payload.prepared.ephemeral_key for n in s.members},
                               federated_query=s.query, session=session)
        s.context = s.query.encode() + b"|" + session
        if s.plan is not None:  # a model release has no grouped layout
            s.layout = layout_for(s.plan, s.dataset, rows)
        return seen

    def _aggregate(self, s: Session, v: Verified) -> federation_pb2.AggregatedBody:
        assert s.layout is not None
        ring = sharing_protocol.share_ring(s.layout, len(s.members))
        count = len(s.layout.statistics) * s.layout.groups
        expected = {i for i in s.members if i != self.name
                    and sharing_protocol.designated(i, s.members, s.compute) == self.name}
        received: dict[str, np.ndarray] = {}
        for env in v.payload.aggregate.sealed_shares:
            sv = self.signer.verify(env, body="sealed_share", recipient=self.name, federated_query=s.query)
            sender, sealed = sv.payload.sender, sv.payload.sealed_share
            if sender not in expected or sender in received:
                raise InvalidArgument("a share came from a member that does not send one here",
                                      reason="FEDERATION_SESSION_INVALID", metadata={"node": sender[:100]})
            data = open_sealed(s.seeds[sender], s.query, sender, self.name, sealed.nonce, sealed.ciphertext)
            self._observe("share", sender, data)
            try:
                received[sender] = ring.from_bytes(data, count)
            except ValueError:
                raise InvalidArgument("a share has the wrong size", reason="FEDERATION_SESSION_INVALID",
                                      metadata={"node": sender}) from None
        missing = sorted(expected - set(received))
        if missing:
            raise InvalidArgument(f"shares are missing from {', '.join(missing)}", reason="FEDERATION_SESSION_INVALID",
                                  metadata={"node": missing[0]})
        s.summed = sharing_protocol.sum_shares(ring, count, me=self.name, members=s.members, compute=s.compute,
                                               seeds=s.seeds, own=s.own_share, received=received,
                                               federated_query=s.query)
        s.own_share = None
        return federation_pb2.AggregatedBody(count_share=sharing_protocol.count_share(ring, s.layout, s.summed))

    def _counts_from(self, s: Session, envelopes: list[federation_pb2.PeerEnvelope], body: str,
                     senders: list[str], step: str) -> list[Any]:
        seen: dict[str, Any] = {}
        for env in envelopes:
            cv = self.signer.verify(env, body=body, recipient=s.coordinator, federated_query=s.query)
            if cv.payload.sender in seen:
                raise InvalidArgument("a count vector appears twice", reason="FEDERATION_SESSION_INVALID")
            seen[cv.payload.sender] = cv
        if sorted(seen) != senders or seen[self.name].envelope.payload != s.answers[step][1].payload:
            raise InvalidArgument("the release must carry every party's signed counts, this node's unchanged",
                                  reason="FEDERATION_SESSION_INVALID")
        return [getattr(seen[n].payload, body) for n in senders]

    def _release(self, s: Session, v: Verified) -> federation_pb2.ReleasedBody:
        assert s.layout is not None and s.key is not None
        envelopes = list(v.payload.release.counts)
        if s.protocol == "paillier":
            assert s.matrix is not None
            parts = self._counts_from(s, envelopes, "contribution", s.members, "contribute")
            try:
                combined = paillier_protocol.combined_counts(s.layout, [p.masked_counts for p in parts], len(s.members))
            except ValueError:
                raise InvalidArgument("a count vector has the wrong size", reason="FEDERATION_SESSION_INVALID") from None
            released = released_groups(s.layout, combined, s.k)
            sections = paillier_protocol.encrypt_released(s.key, s.layout, s.matrix, released, me=self.name,
                                                          seeds=s.seeds, members=len(s.members), context=s.context,
                                                          obfuscation=self._obfuscation)
        else:
            assert s.summed is not None
            ring = sharing_protocol.share_ring(s.layout, len(s.members))
            parts = self._counts_from(s, envelopes, "aggregated", s.compute, "aggregate")
            try:
                combined = sharing_protocol.combined_counts(ring, s.layout, [p.count_share for p in parts])
            except ValueError:
                raise InvalidArgument("a count share has the wrong size", reason="FEDERATION_SESSION_INVALID") from None
            released = released_groups(s.layout, combined, s.k)
            sections = sharing_protocol.encrypt_released(s.key, ring, s.layout, s.summed, released, len(s.compute),
                                                         obfuscation=self._obfuscation)
        s.matrix = s.summed = None  # the plaintext partial is not needed again: a retry gets the kept answer
        return federation_pb2.ReleasedBody(
            released_groups=bitmap(released),
            sections=[federation_pb2.ReleasedSection(ciphertexts=c) for c in sections])

    def _abort(self, v: Verified) -> federation_pb2.PeerEnvelope:
        q = v.payload.federated_query
        with self._lock:
            session = self._sessions.get(q)
            if session is not None and session.coordinator != v.payload.sender:
                session = None  # only the coordinator may abort its query
            if session is not None:
                del self._sessions[q]
        if session is not None:
            self.audit.failed(session.principal or v.payload.sender, q, session.fed.name if session.fed else "",
                              reason=v.payload.abort.reason or "ABORTED", node=v.payload.abort.failed_node)
        return self.signer.sign(q, v.payload.sender, aborted=federation_pb2.AbortedBody())
