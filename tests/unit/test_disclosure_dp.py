"""The noise: discrete Laplace (OpenDP) at the intended scale and any magnitude, its accuracy
figures, and the owner's disclosure settings.

Statistical checks are sized so that correct code fails them less than once in a million runs:
each says how."""

from __future__ import annotations

import math

import pytest

from veil.accuracy import Noise
from veil_server.config import ConfigError
from veil_server.disclosure import noise
from veil_server.disclosure.settings import (DisclosurePolicy, check_epsilon, parse_disclosure,
                                             parse_policy)

N = 20_000


def exact_variance(scale: float) -> float:
    """Variance of the discrete Laplace with P(k) ∝ exp(-|k|/scale): 2a/(1-a)^2, a = e^{-1/scale}."""
    a = math.exp(-1 / scale)
    return 2 * a / (1 - a) ** 2


@pytest.mark.parametrize("sensitivity,epsilon", [(1, 0.5), (1, 1.0), (7, 0.3), (250_000, 0.25)])
def test_noise_variance_matches_its_declared_scale(sensitivity, epsilon):
    mech = noise.mechanism(sensitivity, epsilon)
    xs = noise.privatize([0] * N, mech)
    var = sum(x * x for x in xs) / N
    want = mech.variance()
    assert want == pytest.approx(exact_variance(sensitivity / epsilon), rel=1e-9)
    # The relative standard error of the mean of X^2 over N discrete Laplace draws is about
    # sqrt(5 / N) = 1.6 %; 0.8..1.25 is more than 12 standard errors from 1 either way
    # (a wrong-by-2x scale moves the variance 4x), so this fails by chance far less than 1e-6.
    assert 0.8 < var / want < 1.25, (var, want)


def test_noise_is_added_to_exact_big_integers():
    # A fixed-point decimal sum far beyond 64 bits: the value is never squeezed through the sampler.
    big = 10**25 + 12345
    mech = noise.mechanism(10, 1.0)
    out = noise.privatize([big] * 200, mech)
    assert all(isinstance(x, int) for x in out)
    assert all(abs(x - big) < 10_000 for x in out)  # scale 10: |noise| > 10^4 has probability e^-1000
    assert len(set(out)) > 10  # and it is noise, not a constant


def test_huge_scales_round_to_a_coarser_unit_and_stay_private():
    sens = 10**22  # a sum over 1e9 rows of values up to 1e13 in fixed point
    mech = noise.mechanism(sens, 0.1)
    assert mech.unit > 1 and mech.scale <= noise.MAX_DIRECT_SCALE * 1.01
    # OpenDP's own privacy map confirms the ε of what is sampled.
    assert noise.privacy_loss(mech, sens) <= 0.1 * (1 + 1e-9)
    out = noise.privatize([3 * 10**25, -7 * 10**24], mech)
    assert all(x % mech.unit == 0 for x in out)
    assert abs(out[0] - 3 * 10**25) < mech.bound(1 - 1e-12) and abs(out[1] + 7 * 10**24) < mech.bound(1 - 1e-12)


@pytest.mark.parametrize("sensitivity,epsilon", [(1, 1.0), (3, 0.5), (10**6, 0.1)])
def test_privacy_map_of_the_library_agrees(sensitivity, epsilon):
    mech = noise.mechanism(sensitivity, epsilon)
    assert noise.privacy_loss(mech, sensitivity) <= epsilon * (1 + 1e-9)


@pytest.mark.parametrize("scale,terms", [(1.0, 1), (2.0, 1), (3.0, 3), (2500.0, 4)])
def test_error_bound_covers_95_percent(scale, terms):
    n = Noise(scale, 1, terms)
    bound = n.bound(0.95)
    draws = [sum(v) for v in zip(*[noise.privatize([0] * N, Noise(scale)) for _ in range(terms)])]
    inside = sum(1 for d in draws if abs(d) <= bound) / N
    # Coverage is >= 95 % by construction (discrete: often more); a 20,000-draw estimate has a
    # standard error of 0.15 %, so 0.94 is 6.6 standard errors below the least it can be.
    assert inside >= 0.94
    # And the bound is not absurdly loose: a bound 40 % tighter would not cover 95 %.
    assert sum(1 for d in draws if abs(d) <= 0.6 * bound) / N < 0.95


@pytest.mark.parametrize("bad", [-1, 0, 0.0, float("nan"), float("inf"), -float("inf"), 1e9, True, "1", None])
def test_bad_epsilons_are_refused(bad):
    with pytest.raises(ValueError):
        check_epsilon(bad, "eps", high=10)
    with pytest.raises(ConfigError):
        parse_policy({"dp": {"epsilon_per_query": bad}}, "d", error=ConfigError)


def test_dp_is_the_default_and_exact_needs_a_reason():
    p = parse_policy({}, "d")
    assert p == DisclosurePolicy() and p.dp and p.epsilon_per_query == 0.5 and p.dataset_budget >= p.analyst_budget
    with pytest.raises(ValueError, match="exact_reason"):
        parse_policy({"disclosure": "exact"}, "d")
    e = parse_policy({"disclosure": "exact", "exact_reason": "published census tables"}, "d")
    assert not e.dp and e.exact_reason == "published census tables"
    with pytest.raises(ValueError, match="differencing"):
        parse_policy({"differencing": {"linear": True}}, "d")
    with pytest.raises(ValueError):
        parse_policy({"disclosure": "none"}, "d")


def test_dp_terms_are_checked_against_each_other():
    p = parse_policy({"dp": {"epsilon_per_query": 0.5, "max_epsilon_per_query": 1.0, "analyst_budget": 4,
                             "dataset_budget": 10}}, "d")
    assert p.epsilon_for(0) == 0.5 and p.epsilon_for(0.8) == 0.8
    with pytest.raises(ValueError, match="maximum"):
        p.epsilon_for(1.5)
    assert parse_policy({"dp": {"budget": 3}}, "d").analyst_budget == 3  # the old name
    for bad in ({"epsilon_per_query": 2, "max_epsilon_per_query": 1},
                {"max_epsilon_per_query": 5, "analyst_budget": 2},
                {"analyst_budget": 50, "dataset_budget": 10},
                {"per": "planet"}, {"bogus": 1}):
        with pytest.raises(ValueError):
            parse_policy({"dp": bad}, "d")


def test_quotas_and_refusals_per_day_parse():
    s = parse_disclosure({"grants": [{"principal": "a", "dataset": "D", "purpose": "p",
                                      "quota": {"queries_per_day": 3, "epsilon": 1.0}}],
                          "disclosure": {"refusals_per_day": 7}})
    assert s.quota("a", "d", "p") == {"queries_per_day": 3, "epsilon": 1.0} and s.refusals_per_day == 7
    with pytest.raises(ValueError):
        parse_disclosure({"grants": [{"principal": "a", "dataset": "d", "purpose": "p", "quota": {"bogus": 1}}]})
    with pytest.raises(ValueError):
        parse_disclosure({"disclosure": {"refusals_per_day": 0}})
