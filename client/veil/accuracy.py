"""How accurate a differentially private figure is: the discrete Laplace noise Veil adds, and
error bounds for the cells computed from noisy statistics.

Everything here is public arithmetic on declared parameters (never on data), so the node states
it before a query runs (``ExplainQuery``) and the SDK can evaluate it after decryption.

One draw: Z ~ DL(b), P(Z = z) ∝ exp(-|z| / b). Var(Z) = 2a / (1 - a)^2 with a = exp(-1 / b)
(about 2b^2), and P(|Z| >= t) = 2a^t / (1 + a) for t >= 1, so its 95 % bound is exact. A
federated statistic carries one draw per member; the distribution of a sum of n draws is
computed by convolving the exact probability mass function (truncated where the tail holds less
than 1e-13). Beyond a scale of 2,000 units the shape no longer changes with the scale (DL(b) / b
tends to the continuous Laplace), so the bound at scale 2,000 is stretched, with 0.5 % to spare.

Derived cells (AVG, VAR_SAMP, STDDEV_SAMP) are ratios of noisy statistics; their bounds are first
order in the noise, split the error probability evenly between the statistics involved (a union
bound), and use the declared range for the unknown mean, so they are conservative for groups of
at least the given size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Noise:
    """``unit`` times the sum of ``terms`` independent DL(``scale``) draws, in fixed-point units."""

    scale: float
    unit: int = 1
    terms: int = 1

    @property
    def a(self) -> float:
        return math.exp(-1.0 / self.scale)

    def variance(self) -> float:
        """Of the noise, in squared fixed-point units (rounding to a coarse unit not included)."""
        one_minus_a = -math.expm1(-1.0 / self.scale)
        return self.terms * 2 * self.a / one_minus_a**2 * self.unit**2

    def std(self) -> float:
        return math.sqrt(self.variance())

    def bound(self, confidence: float = CONFIDENCE) -> float:
        """A t with P(|noise| <= t) >= confidence, in fixed-point units (exact for one term)."""
        alpha = 1.0 - confidence
        if self.terms == 1:
            t = _one_draw_quantile(self.scale, alpha)
        else:
            t = _sum_quantile(self.scale, self.terms, alpha)
        return t * self.unit + (self.unit / 2 if self.unit > 1 else 0.0)

    def with_terms(self, terms: int) -> "Noise":
        return Noise(self.scale, self.unit, terms)


def avg_bound(n: float, *, count: Noise | None, total: Noise, magnitude: float,
              confidence: float = CONFIDENCE) -> float:
    """Bound on |noisy AVG - AVG| for a group of n rows, in the units of ``total``'s noise.

    ``total`` is the noise of the sum the average is computed from (about a centre c), ``count``
    the noise of its count (None if the count is exact), ``magnitude`` the largest |x - c| the
    declared range allows. AVG = c + S / N; to first order its error is dS / N - (S / N) dN / N.
    """
    if n <= 0:
        return math.inf
    parts = 2 if count is not None else 1
    c = 1 - (1 - confidence) / parts
    err = total.bound(c)
    if count is not None:
        err += magnitude * count.bound(c)
    return err / n


def var_bound(n: float, *, count: Noise | None, total: Noise, squares: Noise, spread: float,
              confidence: float = CONFIDENCE) -> float:
    """Bound on |noisy VAR_SAMP - VAR_SAMP| for a group of n rows (value units squared).

    VAR = (Q - S^2 / N) / (N - 1) over values centred in a range of width ``spread``: to first
    order |dVAR| <= (|dQ| + spread |dS| + spread^2 / 2 |dN|) / (N - 1).
    """
    if n <= 1:
        return math.inf
    parts = 3 if count is not None else 2
    c = 1 - (1 - confidence) / parts
    err = squares.bound(c) + spread * total.bound(c)
    if count is not None:
        err += spread * spread / 2 * count.bound(c)
    return err / (n - 1)


def stddev_bound(n: float, **kw) -> float:
    """|sqrt(a) - sqrt(b)| <= sqrt(|a - b|): the square root of the variance's bound."""
    return math.sqrt(var_bound(n, **kw))


def bound_at(noise: dict, n: float, confidence: float = CONFIDENCE) -> float:
    """The error bound of one released cell of a DP column for a group of ``n`` rows (value
    units), from the column's noise as a result or ExplainQuery states it (``ColumnNoise`` as a
    dict: ``df.attrs["noise"][column]``). COUNT and SUM do not depend on ``n``."""
    terms = int(noise.get("terms") or 1)
    count = Noise(noise["count_scale"], 1, terms) if noise.get("count_scale") else None
    function = noise["function"]
    if function == "COUNT":
        return Noise(noise["count_scale"], 1, terms).bound(confidence)
    total = Noise(noise["sum_scale"], 1, terms)
    if function == "SUM":
        return total.bound(confidence)
    half = noise["spread"] / 2
    magnitude = half if noise.get("centred") else abs(noise["centre"]) + half
    if function == "AVG":
        return avg_bound(n, count=count, total=total, magnitude=magnitude, confidence=confidence)
    b = var_bound(n, count=count, total=total, squares=Noise(noise["squares_scale"], 1, terms), spread=2 * magnitude,
                  confidence=confidence)
    return math.sqrt(b) if function == "STDDEV_SAMP" else b


SHAPE_SCALE = 2000.0  # beyond this scale the sum's quantile is the scaled one of this scale


def _one_draw_quantile(scale: float, alpha: float) -> float:
    # Smallest integer t >= 0 with P(|Z| > t) = 2 a^(t+1) / (1 + a) <= alpha.
    log_a = -1.0 / scale
    a = math.exp(log_a)
    need = math.log(alpha * (1 + a) / 2) / log_a - 1
    return float(max(0, math.ceil(need - 1e-9)))


@lru_cache(maxsize=256)
def _sum_quantile(scale: float, terms: int, alpha: float) -> float:
    """Smallest integer t with P(|Z_1 + ... + Z_n| > t) <= alpha, Z_i ~ DL(scale) independent."""
    import numpy as np

    s = min(scale, SHAPE_SCALE)
    half = math.ceil(s * math.log(1e13)) + 1
    z = np.arange(-half, half + 1, dtype=float)
    a = math.exp(-1.0 / s)
    pmf = (1 - a) / (1 + a) * np.exp(-np.abs(z) / s)
    size = terms * (2 * half) + 1
    n = 1 << (size - 1).bit_length()
    total = np.fft.irfft(np.fft.rfft(pmf, n) ** terms, n)[:size]
    total = np.clip(total, 0, None)
    centre = terms * half
    cum = np.cumsum(total)  # P(S <= v - centre)
    # P(|S| > t) = P(S > t) + P(S < -t) = (1 - cum[centre + t]) + cum[centre - t - 1]
    for t in range(0, centre):
        if (1 - cum[centre + t]) + cum[centre - t - 1] <= alpha:
            break
    if scale <= SHAPE_SCALE:
        return float(t)
    return float(math.ceil(t * (scale / s) * 1.005))
