"""Discrete Laplace noise on exact fixed-point integers, at any magnitude.

The mechanism. A statistic with sensitivity Δ (fixed-point units: how far one row can move it)
is released as ``value + Z`` with Z ~ DL(b), b = Δ / ε: P(Z = z) ∝ exp(-|z| / b). This is
ε-differentially private (the ratio of probabilities of any output under neighbouring tables is
at most exp(Δ / b)). Z is drawn by OpenDP's exact integer sampler over 64-bit integers (no
floating-point arithmetic touches the sample, so the low-order-bits attack on floating-point
Laplace does not apply); its randomness comes from the operating system's CSPRNG.

Any magnitude. Fixed-point sums of decimal columns can exceed 64 bits (a sum over 10^9 rows of
values up to 10^6 at 6 decimals is ~10^21). The *true value* never goes through the sampler: the
sampler draws noise around zero and the exact value is added in Python's integers. When the
scale itself is too large for 64-bit noise (b > 2^48 units), the statistic is first rounded to a
coarser unit u (a power of two with b / u <= 2^48): v' = round(v / u) moves by at most
ceil(Δ / u) + 1 when one row changes, so v' + DL((ceil(Δ / u) + 1) / ε) is ε-DP and the release
is u times that. The coarser unit adds at most u / 2 of rounding, under 2^-48 of the noise.

What the noise costs in accuracy is public arithmetic: :mod:`veil.accuracy`.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

from veil.accuracy import Noise

MAX_DIRECT_SCALE = 2.0**48  # noise scales above this draw in a coarser unit (see above)


@lru_cache(maxsize=512)
def _sampler(scale: float):
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64"), scale=scale)


def mechanism(sensitivity: int, epsilon: float) -> Noise:
    """The discrete Laplace mechanism for a statistic of this sensitivity, at this ε."""
    if sensitivity < 1:
        raise ValueError("sensitivity must be a positive integer")
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError("epsilon must be positive and finite")
    scale = sensitivity / epsilon
    unit = 1
    if scale > MAX_DIRECT_SCALE:
        unit = 1 << math.ceil(math.log2(scale / MAX_DIRECT_SCALE))
        scale = (-(-sensitivity // unit) + 1) / epsilon
    # Never a hair below Δ/ε through floating-point rounding.
    return Noise(math.nextafter(scale, math.inf), unit)


def privatize(values: Sequence[int], noise: Noise) -> list[int]:
    """Each value plus its own independent draw of ``noise`` (one term)."""
    if not values:
        return []
    draws = _sampler(noise.scale)([0] * len(values))
    if noise.unit == 1:
        return [int(v) + int(z) for v, z in zip(values, draws)]
    u = noise.unit
    return [(_round_div(int(v), u) + int(z)) * u for v, z in zip(values, draws)]


def privacy_loss(noise: Noise, sensitivity: int) -> float:
    """ε of the OpenDP measurement behind ``noise`` for this sensitivity (its own privacy map),
    used to check our arithmetic against the library's."""
    units = sensitivity if noise.unit == 1 else -(-sensitivity // noise.unit) + 1
    return float(_sampler(noise.scale).map(units))


def _round_div(v: int, u: int) -> int:
    """v / u rounded half to even (u > 0)."""
    q, r = divmod(v, u)
    if 2 * r > u or (2 * r == u and q % 2):
        q += 1
    return q

