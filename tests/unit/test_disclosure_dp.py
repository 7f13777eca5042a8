"""The noise: discrete Laplace (OpenDP) at the intended scale, and ε validation."""

from __future__ import annotations

import math

import pytest

from veil_server.config import ConfigError
from veil_server.disclosure import dp
from veil_server.disclosure.settings import check_epsilon, parse_disclosure

N = 6000


def exact_variance(scale: float) -> float:
    """Variance of the discrete Laplace with P(k) ∝ exp(-|k|/scale): 2a/(1-a)^2, a = e^{-1/scale}."""
    a = math.exp(-1 / scale)
    return 2 * a / (1 - a) ** 2


@pytest.mark.parametrize("epsilon", [0.5, 1.0])
def test_variance_matches_2_over_eps_squared(epsilon):
    scale = 1 / epsilon  # sensitivity 1
    xs = [dp.discrete_laplace(0, scale) for _ in range(N)]
    mean = sum(xs) / N
    var = sum((x - mean) ** 2 for x in xs) / (N - 1)
    want = exact_variance(scale)  # ≈ 2/ε² (the continuous Laplace's) for these scales
    assert abs(want - 2 / epsilon**2) / want < 0.1
    # Tolerance ±25 %: the sampling error at N = 6000 is ~6 %; a 2x scale (4x variance) or a
    # 0.5x scale (0.25x variance) fails by far.
    assert abs(var - want) / want < 0.25, (var, want)
    assert abs(mean) < 0.2
    assert not abs(var - exact_variance(2 * scale)) / exact_variance(2 * scale) < 0.25


def test_noise_is_integer_and_centred_on_the_value():
    xs = [dp.discrete_laplace(1000, 2.0) for _ in range(2000)]
    assert all(isinstance(x, int) for x in xs)
    assert abs(sum(xs) / len(xs) - 1000) < 0.5


@pytest.mark.parametrize("bad", [-1, 0, 0.0, float("nan"), float("inf"), -float("inf"), 1e9, True, "1", None])
def test_bad_epsilons_are_refused(bad):
    with pytest.raises(ValueError):
        check_epsilon(bad, "eps", high=10)
    with pytest.raises(ConfigError):
        parse_disclosure({"datasets": [{"name": "d", "dp": {"epsilon_per_query": bad, "budget": 5}}]},
                         error=ConfigError)


def test_settings_parse():
    s = parse_disclosure({"datasets": [{"name": "D", "dp": {"epsilon_per_query": 0.5, "budget": 5.0},
                                        "columns": [{"name": "x", "dominance": {"n": 2, "percent": 85}}]}],
                          "grants": [{"principal": "a", "dataset": "D", "purpose": "p",
                                      "quota": {"queries_per_day": 3, "epsilon": 1.0}}]})
    d = s.for_dataset("d")
    assert d.dp.epsilon_per_query == 0.5 and d.differencing and d.dominance["x"].n == 2
    assert s.quota("a", "d", "p") == {"queries_per_day": 3, "epsilon": 1.0}
    assert s.for_dataset("other").dp is None  # DP is off by default
    with pytest.raises(ValueError):
        parse_disclosure({"datasets": [{"name": "d", "dp": {"epsilon_per_query": 2, "budget": 1}}]})
    with pytest.raises(ValueError):
        parse_disclosure({"grants": [{"principal": "a", "dataset": "d", "purpose": "p", "quota": {"bogus": 1}}]})
