"""FixedPoint: explicit scale, exact decimal encoding, round-half-even, exact decoding."""

from __future__ import annotations

from decimal import Decimal, localcontext

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from veil.crypto import EncodingOverflow, FixedPoint
from veil.crypto.errors import EncodingError


@pytest.mark.parametrize(
    ("scale", "x", "expected"),
    [
        (2, 5, 500),
        (2, "-1.005", -100),  # exact tie -> even
        (2, "1.015", 102),
        (2, Decimal("0.125"), 12),
        (2, Decimal("0.135"), 14),
        (2, "-0.125", -12),
        (2, 2.675, 268),  # the float's shortest repr, not its binary 2.67499999...
        (0, "2.5", 2),
        (0, "3.5", 4),
        (6, "123456789.1234567", 123456789123457),
        (3, "1e3", 1_000_000),
        (2, np.int64(-7), -700),
        (2, np.float32(0.5), 50),
        (30, "1" * 40, int("1" * 40) * 10**30),  # big values stay exact
    ],
)
def test_encode(scale: int, x: object, expected: int) -> None:
    assert FixedPoint(scale).encode(x) == expected  # type: ignore[arg-type]


@given(st.integers(0, 12), st.decimals(allow_nan=False, allow_infinity=False, places=12, min_value=-(10**60), max_value=10**60))
def test_decode_inverts_encode_on_the_grid(scale: int, d: Decimal) -> None:
    fp = FixedPoint(scale)
    with localcontext() as ctx:
        ctx.prec = 400
        q = d.quantize(Decimal(1).scaleb(-scale))
    i = fp.encode(q)
    assert fp.decode(i) == q
    assert fp.encode(fp.decode(i)) == i


def test_scale_does_not_depend_on_the_value() -> None:
    fp = FixedPoint(4)
    # Same column, wildly different magnitudes: same scale, no per-value exponent to leak.
    assert [fp.encode(x) for x in ("0.0001", "10000", "-3")] == [1, 100_000_000, -30_000]
    assert fp.decode(1) == Decimal("0.0001") and fp.decode(-30_000) == Decimal("-3.0000")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "NaN", "-Infinity", "abc", "", True, None, [1]])
def test_refuses_non_numbers(bad: object) -> None:
    with pytest.raises(EncodingError):
        FixedPoint(2).encode(bad)  # type: ignore[arg-type]


def test_bounds() -> None:
    with pytest.raises(ValueError):
        FixedPoint(-1)
    with pytest.raises(ValueError):
        FixedPoint(39)
    fp = FixedPoint(2, max_abs=10_000)
    assert fp.encode("100") == 10_000
    with pytest.raises(EncodingOverflow):
        fp.encode("100.01")
    with pytest.raises(EncodingOverflow):
        FixedPoint(2).encode("1e5000")
    with pytest.raises(EncodingError):
        FixedPoint(2).encode("1" * 5000)
    assert FixedPoint(2).encode_many([1, "2.5"]) == [100, 250]
    assert FixedPoint(1).decode_many([15]) == [Decimal("1.5")]
