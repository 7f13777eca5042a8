"""Federated models (issue 18): Fair's survey split across three member nodes (real gRPC, signed
envelopes, pairwise masks); the exact OLS, logistic and Poisson fits equal statsmodels' on the
union within 1e-6 relative; an exact GLM is held to Newton's path over the union by the members'
joint step check (a step off the path is refused, the true step accepted); and no party sees one
member's statistics (a DP logistic fit's rounds) or one member's step residual.

Leakage: the coordinator receives each member's contribution, Enc(P_i + r_i mod n). Even with the
analyst's key (analyst and coordinator colluding), each contribution, and the product of any
proper subset of them, decrypts to bytes that pass a chi-square uniformity test; the product of
all of them decrypts to the packed totals, which the same test rejects (positive control). Each
check fails uniform data with probability 1e-6 (``P_FLOOR``).
"""

from __future__ import annotations

import contextlib
from functools import reduce

import numpy as np
import pytest
import statsmodels.formula.api as smf

from tests.integration.federation_cluster import Recorder
from tests.integration.model_support import EXACT, _dataset, dp, survey
from tests.integration.test_models import LOGIT_FORMULA, OLS_FORMULA, POISSON_FORMULA
from tests.security.test_federation_leakage import low_bytes, payload, uniform
from veil.crypto import Ciphertext
from veil_server.api.server import run_server
from veil_server.cli.federation_demo import init_federation
from veil_server.config import load_config

MEMBERS = ("east", "north", "south")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("models-fed")
    raw = survey()
    members = init_federation(root, members=MEMBERS, rows=(200, 200, 200), protocols=("paillier",))
    for i, (name, m) in enumerate(sorted(members.items())):
        part = raw[raw["pid"] % 3 == i]
        for local in ("fair", "fair_dp"):
            part.to_csv(m.folder / f"{local}.csv", index=False)
        text = m.config.read_text()
        text = text.replace('name = "admissions"\nlocal = "patients"', 'name = "survey"\nlocal = "fair"')
        extra = ("[[federation.datasets]]\nname = \"survey_dp\"\nlocal = \"fair_dp\"\nmembers = ["
                 + ", ".join(f'"{x}"' for x in MEMBERS) + ']\nprotocols = ["paillier"]\n')
        head, sep, tail = text.partition("[[datasets]]")
        m.config.write_text(head + extra + sep + tail + _dataset("fair", EXACT) + _dataset("fair_dp", dp(5.0, 1000.0, 10.0)))
    recorder = Recorder()
    with contextlib.ExitStack() as stack:
        running = {n: stack.enter_context(run_server(load_config(m.config, env={}), grace=0.2))
                   for n, m in members.items()}
        for r in running.values():
            r.federation.observe(recorder)
        yield members, running, recorder, raw


@pytest.fixture(scope="module")
def fits(cluster, analyst_home):
    import veil

    members, running, recorder, raw = cluster
    out = {}
    with veil.connect(members["north"].target, token=members["north"].tokens["alice"], home=analyst_home) as node:
        start = len(recorder.messages)
        out["ols"] = node.fit(OLS_FORMULA, dataset="survey", purpose="research")
        out["logit"] = node.fit(LOGIT_FORMULA, dataset="survey_dp", purpose="research", family="binomial",
                                epsilon=1.0, max_iter=8)  # rounds enough for the uniformity test
        out["messages"] = recorder.messages[start:]
        out["sk"] = node.keys[1]
        start = len(recorder.messages)
        out["exact_logit"] = node.fit(LOGIT_FORMULA, dataset="survey", purpose="research", family="binomial")
        out["exact_poisson"] = node.fit(POISSON_FORMULA, dataset="survey", purpose="research", family="poisson")
        out["exact_messages"] = recorder.messages[start:]
    return out


def test_federated_fits_equal_statsmodels_on_the_union(cluster, fits):
    import statsmodels.api as sm

    raw = cluster[3]
    for key, ref in (("ols", smf.ols(OLS_FORMULA, raw).fit()),
                     ("exact_logit", smf.logit(LOGIT_FORMULA, raw).fit(disp=0, tol=1e-12, maxiter=100)),
                     ("exact_poisson", smf.glm(POISSON_FORMULA, raw, family=sm.families.Poisson()).fit(tol=1e-12))):
        ours = fits[key]
        assert list(ours.params.index) == list(ref.params.index)
        for name in ref.params.index:
            assert ours.params[name] == pytest.approx(ref.params[name], rel=1e-6), (key, name)
            assert ours.bse[name] == pytest.approx(ref.bse[name], rel=1e-6), (key, name)
        assert ours.nobs == len(raw)
        assert ours.disclosure == "exact"


def test_federated_fits_carry_the_coordinators_receipt(fits):
    """The coordinator logs its release to the analyst naming the model (its digest) and the
    combined ciphertexts; the SDK fetched that receipt and checked it against the node key."""
    for key in ("ols", "exact_logit", "exact_poisson", "logit"):
        res = fits[key]
        assert res.receipt is not None, key
        assert res.receipt.result_digest.hex() == res.release_digests[-1], key


def test_exact_federated_glms_converge_along_newtons_path(fits):
    for key in ("exact_logit", "exact_poisson"):
        ours = fits[key]
        assert ours.converged and 3 <= ours.iterations <= 25, key
        assert len(ours.release_digests) == ours.iterations


def test_a_step_off_newtons_path_is_refused_by_the_members(cluster, analyst_home):
    """The analyst drives the protocol by hand: iteration 0 at zero, then (a) a step of its
    choosing, (b) the true step nudged by 1e-6 of its size, each refused with the rule's reason
    and ending its fit (a second attempt at the step is refused as out of order; masks are drawn
    per attempt anyway, so no two attempts' masked residuals difference to a member's part); (c) coefficients whose linear
    predictor leaves ±50 over the declared ranges, refused before any residual is computed; and
    (d) the true Newton step from the decrypted release, accepted."""
    import grpc
    import veil
    from veil.models import decode_release
    from veil.v1 import model_pb2, model_pb2_grpc, query_pb2

    members, running = cluster[0], cluster[1]
    with veil.connect(members["east"].target, token=members["east"].tokens["alice"], home=analyst_home) as node:
        stub = model_pb2_grpc.ModelServiceStub(node._channel)
        sk = node.keys[1]

        def ask(fit_id: str, iteration: int, coefficients: list[float]):
            return stub.ComputeModelStatistics(model_pb2.ComputeModelStatisticsRequest(
                dataset="datasets/survey", formula=LOGIT_FORMULA, family="binomial", purpose="research",
                public_key=query_pb2.PaillierPublicKey(n=sk.public_key.to_bytes()), fit_id=fit_id,
                iteration=iteration, coefficients=coefficients), metadata=node._metadata())

        def first_step(fit_id: str) -> np.ndarray:
            rel = decode_release(ask(fit_id, 0, []), sk, "binomial")
            return np.linalg.solve(rel.matrix, rel.vector)

        with pytest.raises(grpc.RpcError) as start:
            ask("fed-chosen", 0, [0.0] * 6 + [25.0])  # a start of the analyst's choosing
        assert "Newton" in start.value.details()
        for label, off_path in (("chosen", lambda st: [0.5] * len(st)), ("nudged", lambda st: (st * (1 + 1e-6)).tolist())):
            fit_id = f"fed-off-{label}"
            step = first_step(fit_id)
            with pytest.raises(grpc.RpcError) as off:
                ask(fit_id, 1, off_path(step))
            assert "Newton" in off.value.details(), label
            assert off.value.code() == grpc.StatusCode.PERMISSION_DENIED, label
            with pytest.raises(grpc.RpcError) as again:  # the fit ended: not even the true step
                ask(fit_id, 1, step.tolist())
            assert "in order" in again.value.details(), label
        step = first_step("fed-steep")
        steep = step.tolist()
        steep[-1] = 1e4  # a step function of one column
        with pytest.raises(grpc.RpcError) as too_large:
            ask("fed-steep", 1, steep)
        assert "linear predictor" in too_large.value.details()
        step = first_step("fed-path")
        second = ask("fed-path", 1, step.tolist())  # the true step
        assert second.iteration == 1 and second.cells.ciphertexts
        for name in MEMBERS:
            entries = running[name].node.audit.log.search(kind="model.release", page_size=1000).entries
            fits = [e.details.get("fit_id") for e in entries]
            assert "fed-chosen" not in fits and fits.count("fed-path") == 2, name
            assert fits.count("fed-off-chosen") == fits.count("fed-off-nudged") == fits.count("fed-steep") == 1, name


def test_step_checks_are_uniform_to_everyone_but_their_sum_is_the_residual(fits):
    """Each member's masked residual (PREPARE, iterations 1..) is uniform mod 2^1024 to the
    coordinator; the three together sum to the union's residual, near zero (positive control)."""
    from veil_server.models.fitting import STEP_MODULUS

    per_member: dict[str, list[int]] = {m: [] for m in MEMBERS}
    sums: list[int] = []
    rounds: dict[str, list[int]] = {}
    for node, what, sender, data in fits["exact_messages"]:
        if node == "north" and what == "response:prepare":
            body = payload(data).prepared
            if body.step_check:
                values = [int.from_bytes(v, "big") for v in body.step_check]
                per_member[payload(data).sender] += values
                rounds[payload(data).sender] = values
                if len(rounds) == len(MEMBERS):
                    total = [sum(col) % STEP_MODULUS for col in zip(*rounds.values())]
                    sums += [t - STEP_MODULUS if t > STEP_MODULUS // 2 else t for t in total]
                    rounds = {}
    width = STEP_MODULUS.bit_length() // 8
    for m, values in per_member.items():
        assert uniform(b"".join(v.to_bytes(width, "big") for v in values)), m
    assert sums and all(abs(s) < 1 << 200 for s in sums)  # positive control: the masks cancel


def test_every_member_logs_its_release(cluster, fits):
    members, running = cluster[0], cluster[1]
    releases = 1 + sum(fits[k].iterations for k in ("logit", "exact_logit", "exact_poisson"))
    for name in MEMBERS:
        entries = [e for e in running[name].node.audit.log.search(kind="model.release", page_size=1000).entries
                   if not e.details["fit_id"].startswith("fed-")]  # the hand-driven fit's releases
        assert len(entries) == releases, name
        assert all(e.details["federation"]["members"] == sorted(MEMBERS) for e in entries)


def test_contributions_are_uniform_even_to_analyst_and_coordinator(fits):
    sk = fits["sk"]
    pk = sk.public_key
    rounds: list[dict[str, list[bytes]]] = []
    current: dict[str, list[bytes]] = {}
    for node, what, sender, data in fits["messages"]:
        if node == "north" and what == "response:contribute":
            current[payload(data).sender] = list(payload(data).contribution.model_statistics.ciphertexts)
            if len(current) == len(MEMBERS):
                rounds.append(current)
                current = {}
    assert len(rounds) == 1 + fits["logit"].iterations

    def decrypted(subset) -> bytes:
        values = []
        for r in rounds:
            for pos in range(len(r[MEMBERS[0]])):
                product = reduce(lambda a, b: a + b, (Ciphertext.from_bytes(pk, r[m][pos]) for m in subset))
                values.append(sk.decrypt_raw(product))
        return low_bytes(values)

    for m in MEMBERS:  # one member's contribution, and every pair (all but one member)
        assert uniform(decrypted([m])), m
        others = [x for x in MEMBERS if x != m]
        assert uniform(decrypted(others)), others
    assert not uniform(decrypted(MEMBERS))  # positive control: the packed totals are not uniform


def test_federated_dp_fit_charges_every_member(cluster, analyst_home):
    import veil

    members, running, _, raw = cluster
    def spent(n: str) -> int:
        node = running[n].node
        return node.disclosure.budget.spent_micro(
            "alice", "fair_dp", node.dataset("fair_dp").disclosure.budget_purpose("research"))

    before = {n: spent(n) for n in MEMBERS}
    with veil.connect(members["south"].target, token=members["south"].tokens["alice"], home=analyst_home) as node:
        res = node.fit("had_affair ~ age + yrs_married + children", dataset="survey_dp", purpose="research",
                       epsilon=10.0)
    assert res.disclosure == "dp" and res.epsilon_spent == 10.0
    for n in MEMBERS:
        assert spent(n) - before[n] == 10_000_000, n
    ref = smf.ols("had_affair ~ age + yrs_married + children", raw).fit()
    # Three members' noise, each the declared scale: within 10 reported standard errors.
    assert np.all(np.abs(res.params - ref.params) < 10 * res.bse)
