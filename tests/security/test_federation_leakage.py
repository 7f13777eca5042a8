"""What the parties of a federated query see: nothing of any single member's partial.

Every peer message each node receives (as member and as coordinator) and every share a compute
party opens is recorded. Masked count vectors, the analyst-decryptable plaintexts of each
member's encrypted contribution (the analyst colluding with the coordinator), and shares must
pass a chi-square uniformity test on their bytes -- and, as a positive control, the same test
must reject the corresponding unmasked data, so it has the power to see a partial. Removing any
one member's (or compute party's) contribution from what the coordinator saw must leave a
uniform residue; with all of them, the total comes out.

Peer authentication: forged, misaddressed, stale, replayed-for-another-step and conflicting
envelopes are refused with UNAUTHENTICATED / ALREADY_EXISTS, and the refusals are audited.
"""

from __future__ import annotations

import dataclasses
import math
from functools import reduce

import grpc
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from veil.crypto import Ciphertext, PackingLayout
from veil.v1 import federation_pb2, federation_pb2_grpc
from veil_server.query.catalog import Catalog
from veil_server.federation.envelope import DOMAIN
from veil_server.federation.partial import flatten, layout_for, partial_matrix
from veil_server.federation.ring import Ring
from veil_server.query.planner import plan_query

from tests.integration.federation_cluster import federation

SQL = ("SELECT region, diagnosis, FLOOR(age / 10) * 10 AS decade, COUNT(*) AS n, AVG(cost) AS c,"
       " VARIANCE(cost) AS v FROM admissions GROUP BY region, diagnosis, decade")
MEMBERS = ("east", "north", "south")
P_FLOOR = 1e-6  # uniform data fails with probability 1e-6 per check


def chi_square_p(data: bytes) -> float:
    """Upper-tail p-value of the byte-frequency chi-square statistic (255 degrees of freedom,
    Wilson-Hilferty approximation)."""
    assert len(data) >= 256 * 20, "too few bytes for the test to have power"
    counts = np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256).astype(float)
    expected = len(data) / 256
    x = float(((counts - expected) ** 2 / expected).sum())
    k = 255
    z = ((x / k) ** (1 / 3) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))
    return 0.5 * math.erfc(z / math.sqrt(2))


def uniform(data: bytes) -> bool:
    return chi_square_p(data) > P_FLOOR


def low_bytes(values: list[int], keep: int = 240) -> bytes:
    """The low ``keep`` bytes of each 2048-bit value: uniform mod n -> uniform there (the top
    bytes of a value below n are not, since n's top byte is not 0xff)."""
    return b"".join((v % (1 << (8 * keep))).to_bytes(keep, "big") for v in values)


def payload(data: bytes) -> federation_pb2.PeerPayload:
    env = federation_pb2.PeerEnvelope.FromString(data)
    return federation_pb2.PeerPayload.FromString(env.payload)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with federation(tmp_path_factory.mktemp("leakage"), rows=(20_000, 15_000, 10_000)) as c:
        yield c


@pytest.fixture(scope="module")
def runs(cluster, analyst_home):
    """Both protocols over 960 groups, every message recorded; plus each member's true partial."""
    out = {}
    with cluster.connect("north", analyst_home) as node:
        sk = node.keys[1]
        for protocol in ("paillier", "sharing"):
            start = len(cluster.recorder.messages)
            df = node.federated_query(SQL, purpose="research", protocol=protocol)
            q = df.attrs["federated_query"].removeprefix("federatedQueries/")
            # What each member actually contributed: its partial with its own DP noise.
            noisy = {m: cluster.recorder.partials[(m, q)] for m in MEMBERS}
            out[protocol] = (cluster.recorder.messages[start:], df, noisy)
    truth = {}
    for m in MEMBERS:
        n = cluster.running[m].node
        local = n.dataset("patients")
        ds = dataclasses.replace(local, name="admissions")
        plan = plan_query(SQL, Catalog([ds]))
        layout = layout_for(plan, ds, ds.max_rows)
        truth[m] = (layout, partial_matrix(plan, ds, layout, n.engine.aggregate(plan, local)))
    return out, truth, sk


def test_the_uniformity_check_sees_unmasked_partials(runs):
    """Positive control: every member's true counts, packed values and ring-encoded vector fail."""
    _, truth, sk = runs
    ring = Ring(128)
    for layout, matrix in truth.values():
        counts = flatten(matrix)[: 2 * layout.groups]
        assert not uniform(np.array(counts, dtype="<u8").tobytes())
        packing = PackingLayout.for_range(sk.public_key, 0, layout.statistics[0].high, terms=3)
        packed = packing.pack(matrix[0]) + packing.pack(matrix[1])  # ROWS and COUNT(cost), as members pack them
        assert not uniform(low_bytes(packed * 4))  # repeated only to reach the test's minimum size
        assert not uniform(ring.to_bytes(ring.encode(flatten(matrix))))


def test_paillier_masked_counts_are_uniform_to_every_receiver(runs):
    messages, _, _ = runs[0]["paillier"]
    seen = {}
    for node, what, sender, data in messages:
        p = payload(data)
        if what == "response:contribute":
            seen[(node, p.sender)] = p.contribution.masked_counts
        if what == "request:release":  # every member receives every member's masked counts
            for env in p.release.counts:
                inner = federation_pb2.PeerPayload.FromString(env.payload)
                seen[(node, inner.sender)] = inner.contribution.masked_counts
    assert {s for _, s in seen} == set(MEMBERS) and {n for n, _ in seen} == set(MEMBERS)
    for (receiver, member), masked in seen.items():
        assert uniform(masked), (receiver, member)


def test_paillier_contributions_reveal_nothing_even_to_analyst_and_coordinator(runs):
    (messages, df, noisy), truth, sk = runs[0]["paillier"], runs[1], runs[2]
    pk = sk.public_key
    sections = {payload(d).sender: [list(s.ciphertexts) for s in payload(d).released.sections]
                for node, what, _, d in messages if what == "response:release"}
    assert set(sections) == set(MEMBERS)

    def decrypt(members) -> list[int]:
        """Decrypt the product of these members' ciphertexts, position by position."""
        out = []
        for j in range(len(sections[MEMBERS[0]])):
            for pos in range(len(sections[MEMBERS[0]][j])):
                cts = [Ciphertext.from_bytes(pk, sections[m][j][pos]) for m in members]
                out.append(sk.decrypt_raw(reduce(lambda a, b: a + b, cts)))
        return out

    for m in MEMBERS:  # each contribution alone: uniform in Z_n
        assert uniform(low_bytes(decrypt([m]))), m
    for m in MEMBERS:  # everything the coordinator saw but one member's: still uniform
        rest = [x for x in MEMBERS if x != m]
        assert uniform(low_bytes(decrypt(rest))), m
    # All of them: exactly the packed totals of the released groups, nothing masked.
    layout = truth["north"][0]
    released = [not s for s in df["suppressed"]]
    total_rows = [sum(noisy[m][0][g] for m in MEMBERS) for g in range(layout.groups) if released[g]]
    packing = PackingLayout.for_range(pk, 0, layout.statistics[0].high, terms=3)
    first = decrypt(list(MEMBERS))[: packing.ciphertexts_for(len(total_rows))]
    assert packing.unpack(first, len(total_rows), terms=3) == total_rows


def test_shares_are_uniform_and_no_proper_subset_of_parties_sees_a_partial(runs):
    (messages, df, noisy), truth, sk = runs[0]["sharing"], runs[1], runs[2]
    pk = sk.public_key
    shares = [(node, sender, data) for node, what, sender, data in messages if what == "share"]
    assert len(shares) == len(MEMBERS)  # one travelling share per member, each opened by one party
    for receiver, sender, data in shares:
        assert receiver != sender and uniform(data), (receiver, sender)
    ring = Ring(128)
    counts = {payload(d).sender: payload(d).aggregated.count_share for _, w, _, d in messages
              if w == "response:aggregate"}
    assert set(counts) == set(MEMBERS)
    for m in MEMBERS:
        assert uniform(counts[m])
    released = {payload(d).sender: [list(s.ciphertexts) for s in payload(d).released.sections]
                for _, w, _, d in messages if w == "response:release"}
    cells = sum(1 for s in df["suppressed"] if not s)
    packing = PackingLayout.for_range(pk, 0, ring.modulus - 1, terms=3)

    def party_shares(m) -> list[np.ndarray]:
        """What analyst + coordinator read from party m's encrypted summed shares."""
        out = []
        for section in released[m]:
            slots = packing.unpack(sk.decrypt_raw_many([Ciphertext.from_bytes(pk, c) for c in section]), cells)
            out.append(ring.encode([s - ring.modulus if s >= ring.modulus // 2 else s for s in slots]))
        return out

    per_party = {m: party_shares(m) for m in MEMBERS}
    for m in MEMBERS:
        assert uniform(b"".join(ring.to_bytes(x) for x in per_party[m])), m
        rest = [x for x in MEMBERS if x != m]  # every party but one: still uniform
        partial_sum = [ring.add(per_party[rest[0]][j], per_party[rest[1]][j]) for j in range(len(per_party[m]))]
        assert uniform(b"".join(ring.to_bytes(x) for x in partial_sum)), m
    rows = ring.decode(ring.total([per_party[m][0] for m in MEMBERS]))
    layout = truth["north"][0]
    assert rows == [sum(noisy[m][0][g] for m in MEMBERS) for g in range(layout.groups) if not df["suppressed"][g]]


def test_the_coordinator_sees_only_sealed_shares_of_others(runs):
    messages, _, _ = runs[0]["sharing"]
    sealed = [payload(d).contribution.sealed_share for n, w, _, d in messages if w == "response:contribute"]
    for env in sealed:
        inner = federation_pb2.PeerPayload.FromString(env.payload)
        assert inner.recipient != inner.sender and len(inner.sealed_share.ciphertext) > 60_000
    assert uniform(b"".join(federation_pb2.PeerPayload.FromString(e.payload).sealed_share.ciphertext for e in sealed))


# -- peer authentication over real gRPC ------------------------------------------------------

def _call(cluster, member: str, method: str, envelope: federation_pb2.PeerEnvelope) -> grpc.RpcError:
    with grpc.insecure_channel(cluster.members[member].target) as ch:
        stub = federation_pb2_grpc.PeerServiceStub(ch)
        request = getattr(federation_pb2, f"{method}Request")(envelope=envelope)
        with pytest.raises(grpc.RpcError) as e:
            getattr(stub, method)(request, timeout=10)
    return e.value


def _reason(err: grpc.RpcError) -> str:
    from veil.errors import from_rpc_error

    return from_rpc_error(err).reason


def test_forged_misaddressed_stale_and_conflicting_envelopes_are_refused(cluster, runs):
    north = cluster.running["north"].federation.coordinator.signer
    prepare = federation_pb2.PrepareBody(dataset="elsewhere", sql="SELECT COUNT(*) FROM elsewhere")

    def forged(signer: str, key, recipient="south", **body) -> federation_pb2.PeerEnvelope:
        p = federation_pb2.PeerPayload(federated_query="f" * 32, sender=signer, recipient=recipient, **body)
        p.issue_time.GetCurrentTime()
        data = p.SerializeToString()
        return federation_pb2.PeerEnvelope(payload=data, signer=signer, signature=key.sign(DOMAIN + data))

    mallory = Ed25519PrivateKey.generate()
    cases = [
        (forged("mallory", mallory, prepare=prepare), "PEER_NOT_TRUSTED"),
        (forged("north", mallory, prepare=prepare), "PEER_SIGNATURE_INVALID"),
        (north.sign("f" * 32, "east", prepare=prepare), "PEER_WRONG_RECIPIENT"),
        (north.sign("f" * 32, "south", contribute=federation_pb2.ContributeBody()), "PEER_WRONG_STEP"),
        (federation_pb2.PeerEnvelope(), "PEER_NOT_TRUSTED"),  # a caller with no envelope at all
    ]
    for envelope, reason in cases:
        err = _call(cluster, "south", "PrepareFederatedQuery", envelope)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED and _reason(err) == reason
    stale = federation_pb2.PeerPayload(federated_query="f" * 32, sender="north", recipient="south", prepare=prepare)
    stale.issue_time.FromSeconds(1_000_000_000)
    data = stale.SerializeToString()
    key = cluster.running["north"].node.audit.key
    err = _call(cluster, "south", "PrepareFederatedQuery",
                federation_pb2.PeerEnvelope(payload=data, signer="north", signature=key.sign(DOMAIN + data)))
    assert _reason(err) == "PEER_ENVELOPE_STALE"
    denials = [e for e in cluster.entries("south", "auth.failure") if e.principal.startswith("peer:")]
    assert len(denials) >= len(cases) + 1

    # Signed by a pinned peer but naming a dataset south does not federate: refused by south.
    err = _call(cluster, "south", "PrepareFederatedQuery", north.sign("g" * 32, "south", prepare=prepare))
    assert err.code() == grpc.StatusCode.NOT_FOUND and _reason(err) == "FEDERATED_DATASET_NOT_FOUND"
    # Text that is not NFC (an analyst may send anything) is logged, not choked on.
    odd = federation_pb2.PrepareBody(
        dataset="admissions", sql="SELECT COUNT(*) FROM admissions WHERE region = 'Cafe\u0301'",
        purpose="research", analyst="a\u0301", public_key=runs[2].public_key.to_bytes(),
        protocol=federation_pb2.FEDERATION_PROTOCOL_PAILLIER, participants=list(MEMBERS))
    with grpc.insecure_channel(cluster.members["south"].target) as ch:
        answer = federation_pb2_grpc.PeerServiceStub(ch).PrepareFederatedQuery(
            federation_pb2.PrepareFederatedQueryRequest(envelope=north.sign("h" * 32, "south", prepare=odd)), timeout=10)
    assert north.verify(answer.envelope, body="prepared", recipient="north").payload.prepared.plan_digest

    # A finished query: its steps cannot be re-run with other inputs (masks are never redrawn),
    # and only its coordinator may drive it.
    messages, _, _ = runs[0]["paillier"]
    q = next(payload(d).federated_query for _, w, _, d in messages if w == "request:contribute")
    err = _call(cluster, "south", "ContributePartial", north.sign(q, "south", contribute=federation_pb2.ContributeBody()))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS and _reason(err) == "FEDERATED_STEP_CONFLICT"
    east = cluster.running["east"].federation.coordinator.signer
    err = _call(cluster, "south", "ReleasePartial", east.sign(q, "south", release=federation_pb2.ReleaseBody()))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and _reason(err) == "PEER_NOT_COORDINATOR"
