"""The coordinator: runs one federated query across every member and releases only the total.

Any member acts as coordinator for the analysts it serves. It plans the query (to name the
federated dataset), then drives the steps of the chosen protocol, every member in parallel,
itself included (in-process, through the same signed messages):

    PREPARE -> CONTRIBUTE -> [AGGREGATE, sharing only] -> RELEASE -> combine -> analyst

It relays signed messages, multiplies ciphertexts and checks that every member agreed on the
plan, the schema and the released groups; it never holds a key that opens another member's
partial (see the protocol modules for what it learns). If any member refuses or cannot be
reached the query fails with a :class:`FederationFailed` naming it, every member is told to
abort, and nothing is released: without every member's masked contribution (or every compute
party's share) what the coordinator holds is uniformly masked.

Idempotency towards the analyst: (principal, request_id) maps to one federated query while this
process lives; a retried call waits for, and returns, the first call's result or error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import grpc

from veil.crypto import InvalidKey, PublicKey
from veil.v1 import federation_pb2

from ..query.catalog import Catalog
from ..config import Principal
from ..errors import AlreadyExists, InvalidArgument, NotFound, VeilError
from ..query.planner import plan_query
from . import paillier_protocol, sharing_protocol
from .audit import FederationAudit
from .envelope import PeerSigner, Verified
from .partial import from_bitmap, layout_for
from .participant import MIN_KEY_BITS, PROTOCOL_NAMES
from .result import build_federated_result
from .settings import FederationConfig
from .transport import FederationFailed, PeerTransport

MAX_REQUEST_ID = 128
MAX_REMEMBERED = 256


def misbehaved(node: str, what: str) -> FederationFailed:
    return FederationFailed(f"member {node} answered outside the protocol ({what}); nothing was released",
                            node=node, code=grpc.StatusCode.ABORTED, reason="FEDERATION_PEER_MISBEHAVED")


class Coordinator:
    def __init__(self, node: Any, config: FederationConfig, signer: PeerSigner, audit: FederationAudit,
                 transport: PeerTransport) -> None:
        self.node = node
        self.config = config
        self.name = config.name
        self.signer = signer
        self.audit = audit
        self.transport = transport
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="veil-federation")
        self._runs: dict[tuple[str, str], tuple[str, Future]] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- the analyst's request --------------------------------------------------------------

    def run(self, principal: Principal, *, sql: str, purpose: str, public_key: bytes, request_id: str,
            protocol: int, compute_parties: list[str], epsilon: float = 0.0) -> federation_pb2.FederatedResult:
        if not request_id or len(request_id) > MAX_REQUEST_ID:
            raise InvalidArgument(f"request_id is required (e.g. a UUID) and at most {MAX_REQUEST_ID} characters",
                                  reason="INVALID_REQUEST_ID")
        request = hashlib.sha256(repr((sql, purpose, bytes(public_key), protocol, compute_parties,
                                       epsilon)).encode()).hexdigest()
        key = (principal.name, request_id)
        with self._lock:
            kept = self._runs.get(key)
            if kept is None:
                future: Future = Future()
                self._runs[key] = (request, future)
                if len(self._runs) > MAX_REMEMBERED:
                    self._runs.pop(next(iter(self._runs)))
            elif kept[0] != request:
                raise AlreadyExists("request_id was already used for a different federated query",
                                    reason="REQUEST_ID_REUSED")
        if kept is not None:
            return kept[1].result()  # a retry: the first call's result (or its error)
        try:
            result = self._run(principal, sql, purpose, public_key, protocol, compute_parties, epsilon)
        except BaseException as e:
            # The outcome is kept either way: a retry of a failed query fails the same way at
            # once (no second run); to try again after a member is back, send a new request_id.
            future.set_exception(e)
            raise
        future.set_result(result)
        return result

    def _run(self, principal: Principal, sql: str, purpose: str, public_key: bytes, protocol_id: int,
             compute_parties: list[str], epsilon: float = 0.0) -> federation_pb2.FederatedResult:
        try:
            checked = self._check(sql, purpose, public_key, protocol_id, compute_parties)
        except VeilError as e:  # refused here, before any member is asked
            self.audit.refused_request(principal.name, e, sql=sql, purpose=purpose)
            raise
        pk, protocol_id, protocol, plan, fed, dataset, compute = checked
        members = list(fed.members)
        q = secrets.token_hex(16)
        self.audit.submitted(principal.name, q, fed.name, role="coordinator", coordinator=self.name,
                             protocol=protocol, participants=members, compute=compute, purpose=purpose, sql=sql,
                             key_fingerprint=pk.fingerprint())
        try:
            return self._steps(q, principal, sql, purpose, pk, protocol_id, protocol, members, compute, plan, dataset,
                               epsilon)
        except VeilError as e:
            self.audit.failed(principal.name, q, fed.name, reason=e.reason, node=e.metadata.get("node", ""))
            self._abort(q, members, e)
            raise

    def _check(self, sql: str, purpose: str, public_key: bytes, protocol_id: int, compute_parties: list[str]):
        protocol_id = protocol_id or federation_pb2.FEDERATION_PROTOCOL_PAILLIER
        protocol = PROTOCOL_NAMES.get(protocol_id)
        if protocol is None:
            raise InvalidArgument("protocol must be PAILLIER or SHARING", reason="FEDERATION_PROTOCOL_INVALID")
        if not purpose:
            raise InvalidArgument("every query declares a purpose", reason="PURPOSE_REQUIRED")
        try:
            pk = PublicKey.from_bytes(public_key, min_bits=MIN_KEY_BITS)
        except InvalidKey as e:
            raise InvalidArgument(f"the Paillier public key is not acceptable: {e}", reason="INVALID_PUBLIC_KEY") from None
        parts = {f.name: dataclasses.replace(self.node.dataset(f.local), name=f.name) for f in self.config.datasets}
        plan = plan_query(sql, Catalog(parts.values()))  # names the dataset; each member re-plans under its rules
        fed = self.config.dataset(plan.dataset)
        if fed is None:  # pragma: no cover - the catalog holds federated datasets only
            raise NotFound("not a federated dataset", reason="FEDERATED_DATASET_NOT_FOUND")
        compute = sorted(set(compute_parties)) if protocol == "sharing" else []
        if protocol == "sharing" and not compute:
            compute = list(fed.members)
        if protocol == "sharing" and (len(compute) < 2 or not set(compute) <= set(fed.members)):
            raise InvalidArgument("compute parties must be at least two members of the federated dataset",
                                  reason="FEDERATION_COMPUTE_PARTIES_INVALID")
        if compute_parties and protocol == "paillier":
            raise InvalidArgument("compute parties are for the sharing protocol only",
                                  reason="FEDERATION_COMPUTE_PARTIES_INVALID")
        return pk, protocol_id, protocol, plan, fed, parts[fed.name], compute

    # -- the steps --------------------------------------------------------------------------

    def _round(self, q: str, step: str, bodies: dict[str, dict], answer: str, who: tuple[str, str]
               ) -> dict[str, Verified]:
        """Send each member its signed request, in parallel; verify and log every signed answer.
        ``who`` is (principal, dataset) for the log."""
        requests = {n: self.signer.sign(q, n, **body) for n, body in bodies.items()}
        futures = {n: self._pool.submit(self.transport.call, n, step, env) for n, env in requests.items()}
        answers: dict[str, Verified] = {}
        failure: VeilError | None = None
        for n, f in futures.items():
            try:
                env = f.result()
                answers[n] = self.signer.verify(env, body=answer, recipient=self.name, federated_query=q)
                if answers[n].payload.sender != n:
                    raise misbehaved(n, "answered for another member")
            except FederationFailed as e:
                failure = failure or e
            except VeilError as e:  # the answer's envelope did not verify
                failure = failure or misbehaved(n, e.reason)
        for n, v in answers.items():
            if n != self.name:  # its own answers are logged by its participant
                self.audit.exchange(who[0], q, who[1], step=step, peer=n, direction="received",
                                    request=requests[n].SerializeToString(), response=v.envelope.SerializeToString())
        if failure is not None:
            raise failure
        return answers

    def _steps(self, q: str, principal: Principal, sql: str, purpose: str, pk: PublicKey, protocol_id: int,
               protocol: str, members: list[str], compute: list[str], plan, dataset,
               epsilon: float = 0.0) -> federation_pb2.FederatedResult:
        prepare = federation_pb2.PrepareBody(dataset=dataset.name, sql=sql, purpose=purpose, analyst=principal.name,
                                             public_key=pk.to_bytes(), protocol=protocol_id, participants=members,
                                             compute_parties=compute, epsilon=epsilon)
        who = (principal.name, dataset.name)
        # This node's own policy first: a refusal here costs the peers nothing.
        own = self._round(q, "prepare", {self.name: {"prepare": prepare}}, "prepared", who)
        others = self._round(q, "prepare", {n: {"prepare": prepare} for n in members if n != self.name},
                             "prepared", who)
        prepared = own | others
        mine = prepared[self.name].payload.prepared
        for n, v in prepared.items():
            b = v.payload.prepared
            if (b.plan_digest, b.part_digest, b.group_count) != (mine.plan_digest, mine.part_digest, mine.group_count):
                raise FederationFailed(f"member {n} holds a part whose schema or group domain differs from "
                                       f"this node's; nothing was released", node=n,
                                       code=grpc.StatusCode.FAILED_PRECONDITION, reason="FEDERATION_SCHEMA_MISMATCH")
            if b.epsilon != mine.epsilon:
                raise FederationFailed(f"member {n} would spend ε = {b.epsilon:g}, this node {mine.epsilon:g}: ask for "
                                       "an ε every member allows (epsilon=...); nothing was released", node=n,
                                       code=grpc.StatusCode.FAILED_PRECONDITION, reason="FEDERATION_EPSILON_MISMATCH")
        k = max(v.payload.prepared.min_group_size for v in prepared.values())
        rows = max(v.payload.prepared.max_rows for v in prepared.values())
        layout = layout_for(plan, dataset, rows)
        session = federation_pb2.ContributeBody(prepared=[prepared[n].envelope for n in members])
        contributions = self._round(q, "contribute", {n: {"contribute": session} for n in members},
                                    "contribution", who)
        if protocol == "paillier":
            counts = [contributions[n].envelope for n in members]
            releasers, terms, ring_bits = members, len(members), 0
            packings = paillier_protocol.section_layouts(pk, layout, len(members))
        else:
            by_party: dict[str, list] = {j: [] for j in compute}
            for n in members:
                sealed = contributions[n].payload.contribution.sealed_share
                target = sharing_protocol.designated(n, members, compute)
                sv = self.signer.verify(sealed, body="sealed_share", recipient=target, federated_query=q)
                if sv.payload.sender != n:
                    raise misbehaved(n, "sealed another member's share")
                by_party[target].append(sealed)
            aggregated = self._round(q, "aggregate", {j: {"aggregate": federation_pb2.AggregateBody(
                sealed_shares=by_party[j])} for j in compute}, "aggregated", who)
            counts = [aggregated[j].envelope for j in compute]
            releasers, terms = compute, len(compute)
            ring = sharing_protocol.share_ring(layout, len(members))
            ring_bits = ring.bits
            packings = [sharing_protocol.section_layout(pk, ring, terms)] * len(layout.statistics)
        released_answers = self._round(q, "release", {n: {"release": federation_pb2.ReleaseBody(counts=counts)}
                                                      for n in releasers}, "released", who)
        bitmaps = {v.payload.released.released_groups for v in released_answers.values()}
        if len(bitmaps) != 1:
            raise misbehaved(sorted(releasers)[-1], "members disagree on the released groups")
        try:
            released = from_bitmap(bitmaps.pop(), layout.groups)
        except ValueError:
            raise misbehaved(releasers[0], "the released-groups bitmap has the wrong size") from None
        expected = [p.ciphertexts_for(sum(released)) for p in packings]
        parts = []
        for n in releasers:
            sections = [list(s.ciphertexts) for s in released_answers[n].payload.released.sections]
            if [len(s) for s in sections] != expected:
                raise misbehaved(n, "its encrypted sections have the wrong shape")
            parts.append(sections)
        try:
            combined = paillier_protocol.combine(pk, parts, obfuscation=getattr(self.node, "obfuscation", "djn"))
        except Exception:  # noqa: BLE001 - any malformed ciphertext: refuse, never release
            raise misbehaved(releasers[0], "a ciphertext is malformed") from None
        result = build_federated_result(
            query=q, plan=plan, dataset=dataset, layout=layout, released=released, sections=combined,
            packings=packings, terms=terms, ring_bits=ring_bits, public_key=pk, protocol=protocol_id,
            participants=members, compute=compute, k=k, epsilon=mine.epsilon)
        self.audit.released(principal.name, q, dataset.name, plan_digest=plan.digest(),
                            result_digest=result.result_digest, key_fingerprint=pk.fingerprint(),
                            ciphertexts=sum(len(c) for c in combined), released=sum(released),
                            suppressed=layout.groups - sum(released))
        return result

    # -- models (issue 18) -------------------------------------------------------------------

    def run_model(self, principal: Principal, request: Any) -> Any:
        """One model release over a federated dataset (``veil.v1.ComputeModelStatisticsRequest``):
        PREPARE (each member checks the formula under its own rules and signs an ephemeral key),
        CONTRIBUTE (each returns its masked, encrypted statistics), then the product of the
        members' ciphertexts -- Enc of the sum of their statistics -- goes to the analyst. What
        each party learns: ``participant.py`` (models) and ``paillier_protocol.py``."""
        from veil.crypto import PackingLayout
        from veil.models import model_digest
        from veil.v1 import model_pb2, query_pb2

        from ..models.fitting import FRACTION_BITS, MAX_ITERATIONS, SLOT_HIGH, SLOT_LOW, noise_scales

        fed = self.config.dataset(request.dataset.removeprefix("datasets/"))
        if fed is None:  # pragma: no cover - the servicer routes federated datasets only
            raise NotFound("not a federated dataset", reason="FEDERATED_DATASET_NOT_FOUND")
        try:
            pk = PublicKey.from_bytes(request.public_key.n, min_bits=MIN_KEY_BITS)
        except InvalidKey as e:
            raise InvalidArgument(f"the Paillier public key is not acceptable: {e}", reason="INVALID_PUBLIC_KEY") from None
        members = list(fed.members)
        q = secrets.token_hex(16)
        who = (principal.name, fed.name)
        self.audit.submitted(principal.name, q, fed.name, role="coordinator", coordinator=self.name,
                             protocol="paillier", participants=members, compute=[], purpose=request.purpose,
                             sql=request.formula, key_fingerprint=pk.fingerprint())
        try:
            prepare = federation_pb2.PrepareBody(
                dataset=fed.name, purpose=request.purpose, analyst=principal.name, public_key=pk.to_bytes(),
                protocol=federation_pb2.FEDERATION_PROTOCOL_PAILLIER, participants=members,
                epsilon=request.epsilon, formula=request.formula, family=request.family,
                coefficients=list(request.coefficients), iteration=request.iteration, fit_id=request.fit_id)
            own = self._round(q, "prepare", {self.name: {"prepare": prepare}}, "prepared", who)
            others = self._round(q, "prepare", {n: {"prepare": prepare} for n in members if n != self.name},
                                 "prepared", who)
            prepared = own | others
            mine = prepared[self.name].payload.prepared
            for n, v in prepared.items():
                b = v.payload.prepared
                if (b.plan_digest, b.part_digest, list(b.terms), b.statistic_count) != (
                        mine.plan_digest, mine.part_digest, list(mine.terms), mine.statistic_count):
                    raise FederationFailed(f"member {n} declares its part differently (columns, ranges or "
                                           "categories), so the model's statistics would not add up; nothing was "
                                           "released", node=n, code=grpc.StatusCode.FAILED_PRECONDITION,
                                           reason="FEDERATION_SCHEMA_MISMATCH")
                if b.epsilon != mine.epsilon:
                    raise FederationFailed(f"member {n} would spend another ε than this node: ask for an ε every "
                                           "member allows; nothing was released", node=n,
                                           code=grpc.StatusCode.FAILED_PRECONDITION,
                                           reason="FEDERATION_EPSILON_MISMATCH")
            session = federation_pb2.ContributeBody(prepared=[prepared[n].envelope for n in members])
            contributions = self._round(q, "contribute", {n: {"contribute": session} for n in members},
                                        "contribution", who)
            packing = PackingLayout.for_range(pk, SLOT_LOW, SLOT_HIGH, terms=len(members))
            expected = packing.ciphertexts_for(mine.statistic_count)
            parts = []
            for n in members:
                cts = list(contributions[n].payload.contribution.model_statistics.ciphertexts)
                if len(cts) != expected:
                    raise misbehaved(n, "its encrypted statistics have the wrong shape")
                parts.append([cts])
            try:
                combined = paillier_protocol.combine(pk, parts, obfuscation=getattr(self.node, "obfuscation", "djn"))[0]
            except Exception:  # noqa: BLE001 - any malformed ciphertext: refuse, never release
                raise misbehaved(members[0], "a ciphertext is malformed") from None
            digest = hashlib.sha256(b"".join(combined)).hexdigest()
            # The release's entry names the model as the SDK computes it (veil.models.model_digest):
            # its receipt (GetModelReceipt with this release's id) proves this model's release.
            family = request.family or "gaussian"
            coefficients = list(request.coefficients) or ([0.0] * len(mine.terms) if family != "gaussian" else [])
            asked = model_digest(fed.name, request.formula, family, coefficients, request.iteration, request.fit_id,
                                 pk.fingerprint())
            self.audit.released(principal.name, q, fed.name, plan_digest=asked, result_digest=digest,
                                key_fingerprint=pk.fingerprint(), ciphertexts=len(combined), released=1, suppressed=0,
                                model=True)
        except VeilError as e:
            self.audit.failed(principal.name, q, fed.name, reason=e.reason, node=e.metadata.get("node", ""))
            self._abort(q, members, e)
            raise
        local = dataclasses.replace(self.node.dataset(fed.local), name=fed.name)
        # Every member adds its own draw: the total's noise has n times one member's variance.
        scales = [s * len(members) ** 0.5 for s in noise_scales(local, request.formula, request.family,
                                                                mine.epsilon)]
        return model_pb2.ModelStatistics(
            dataset=f"datasets/{fed.name}", fit_id=request.fit_id, iteration=request.iteration, terms=list(mine.terms),
            response=request.formula.split("~")[0].strip(), fraction_bits=FRACTION_BITS,
            cells=query_pb2.EncryptedCells(slot_bits=packing.slot_bits, slots_per_ciphertext=packing.slots,
                                           slot_offset=str(len(members) * SLOT_LOW),
                                           cell_count=mine.statistic_count, ciphertexts=combined,
                                           plaintext_bits=packing.slot_bits * packing.slots),
            disclosure_mode="dp" if mine.epsilon else "exact", epsilon=mine.epsilon, noise_scales=scales,
            max_iterations=MAX_ITERATIONS, release_digest=digest, release=q, model_digest=asked)

    def _abort(self, q: str, members: list[str], err: VeilError) -> None:
        """Best effort: tell every member to log the failure and forget the query."""
        body = federation_pb2.AbortBody(reason=err.reason, failed_node=err.metadata.get("node", ""))
        futures = [self._pool.submit(self.transport.call, n, "abort", self.signer.sign(q, n, abort=body),
                                     timeout=min(5.0, self.config.timeout_seconds), retries=0)
                   for n in members if n != err.metadata.get("node")]
        for f in futures:
            try:
                f.result()
            except VeilError:
                pass  # unreachable or already gone: its session expires on its own


__all__ = ["Coordinator", "FederationFailed"]
