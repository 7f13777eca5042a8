"""Federated models (issue 18): Fair's survey split across three member nodes (real gRPC, signed
envelopes, pairwise masks); the exact OLS fit equals statsmodels' on the union within 1e-6
relative, exact logistic and Poisson fits are refused (no party can hold the analyst's
coefficients to Newton's path over the union), and no party sees one member's statistics (a DP
logistic fit's rounds).

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
        out["refused"] = {}
        for family, formula in (("binomial", LOGIT_FORMULA), ("poisson", POISSON_FORMULA)):
            with pytest.raises(veil.VeilError) as e:
                node.fit(formula, dataset="survey", purpose="research", family=family)
            out["refused"][family] = e.value
    return out


def test_federated_fits_equal_statsmodels_on_the_union(cluster, fits):
    raw = cluster[3]
    for key, ref in (("ols", smf.ols(OLS_FORMULA, raw).fit()),):
        ours = fits[key]
        assert list(ours.params.index) == list(ref.params.index)
        for name in ref.params.index:
            assert ours.params[name] == pytest.approx(ref.params[name], rel=1e-6), (key, name)
            assert ours.bse[name] == pytest.approx(ref.bse[name], rel=1e-6), (key, name)
        assert ours.nobs == len(raw)
        assert ours.disclosure == "exact"


def test_exact_federated_logistic_and_poisson_are_refused(fits):
    for family, err in fits["refused"].items():
        # Refused by the members (the coordinator relays a member's reason as peer_reason).
        assert "MODEL_EXACT_FEDERATED_GLM" in (err.reason, err.metadata.get("peer_reason")), (family, err)


def test_every_member_logs_its_release(cluster, fits):
    members, running = cluster[0], cluster[1]
    releases = 1 + fits["logit"].iterations
    for name in MEMBERS:
        entries = running[name].node.audit.log.search(kind="model.release", page_size=1000).entries
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
