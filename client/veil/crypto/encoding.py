"""Fixed-point encoding of decimal numbers as integers with an explicit per-column scale.

Security basis: none needed (a public, deterministic map), but the scale is the point: it is
declared per column and never chosen from the value. phe's float encoding picks an exponent from
each value, so the exponent travelling next to a ciphertext leaks the value's magnitude; here
every cell of a column is encoded identically and reveals nothing beyond the declared scale.
Rounding is half-to-even (unbiased over sums, the IEEE/Decimal default). Range checks live with
whoever knows the range: ``PackingLayout`` for packed cells, ``PublicKey.encode`` for Z_n,
``sharing.check_worst_case`` for Z_2^64.
"""

from __future__ import annotations

import decimal
import math
import numbers
import operator
from collections.abc import Iterable
from decimal import ROUND_HALF_EVEN, Decimal

from veil.crypto.errors import EncodingError, EncodingOverflow

__all__ = ["FixedPoint", "MAX_SCALE"]

MAX_SCALE = 38
# Inputs longer than this are refused before Decimal arithmetic, so a hostile string cannot make
# us build arbitrarily large integers.
_MAX_DIGITS = 4096

Number = int | Decimal | float | str


class FixedPoint:
    """x <-> round_half_even(x * 10^scale); ``scale`` is a count of decimal digits."""

    __slots__ = ("scale", "factor", "max_abs")

    def __init__(self, scale: int, *, max_abs: int | None = None) -> None:
        scale = operator.index(scale)
        if not 0 <= scale <= MAX_SCALE:
            raise ValueError(f"scale must be in [0, {MAX_SCALE}] decimal digits")
        self.scale = scale
        self.factor = 10**scale
        # Optional bound on |encoded|: lets a column refuse values past its declared range early.
        self.max_abs = max_abs

    def encode(self, x: Number) -> int:
        """Exact for int, Decimal and str; floats go through their shortest repr.

        ``repr`` (not the binary expansion) is used so ``encode(2.675)`` at scale 2 sees the 2.675
        a user typed and rounds it half-even to 268, rather than the binary 2.67499999...
        """
        if isinstance(x, bool):
            raise EncodingError("booleans are not numbers here")
        if not isinstance(x, int | Decimal | float | str):
            x = _coerce(x)  # numpy scalars and other number-likes
        out: int
        if isinstance(x, int):
            out = x * self.factor
        else:
            d = self._to_decimal(x)
            with decimal.localcontext() as ctx:
                # Enough precision that scaling and rounding are exact for any accepted input.
                ctx.prec = _MAX_DIGITS + MAX_SCALE + 8
                ctx.Emax, ctx.Emin = decimal.MAX_EMAX, decimal.MIN_EMIN
                out = int(d.scaleb(self.scale).to_integral_value(rounding=ROUND_HALF_EVEN))
        if self.max_abs is not None and abs(out) > self.max_abs:
            raise EncodingOverflow("value outside the column's declared range")
        return out

    def encode_many(self, xs: Iterable[Number]) -> list[int]:
        return [self.encode(x) for x in xs]

    def decode(self, i: int) -> Decimal:
        """Exact: the Decimal with ``scale`` fractional digits whose encoding is ``i``."""
        i = operator.index(i)
        with decimal.localcontext() as ctx:
            ctx.prec = max(28, len(str(abs(i))) + 2)
            return Decimal(i).scaleb(-self.scale)

    def decode_many(self, xs: Iterable[int]) -> list[Decimal]:
        return [self.decode(i) for i in xs]

    @staticmethod
    def _to_decimal(x: Decimal | float | str) -> Decimal:
        if isinstance(x, float):
            if not math.isfinite(x):
                raise EncodingError("only finite numbers can be encoded")
            d = Decimal(repr(x))
        elif isinstance(x, Decimal):
            d = x
        elif isinstance(x, str):
            if len(x) > _MAX_DIGITS:
                raise EncodingError("numeric string too long")
            try:
                d = Decimal(x.strip())
            except decimal.InvalidOperation:
                raise EncodingError("not a decimal number") from None
        else:
            raise EncodingError("expected int, Decimal, float or str")
        if not d.is_finite():
            raise EncodingError("only finite numbers can be encoded")
        digits, exp = len(d.as_tuple().digits), int(d.as_tuple().exponent)
        if digits + max(exp, 0) > _MAX_DIGITS or exp < -_MAX_DIGITS:
            raise EncodingOverflow("number has too many digits to encode")
        return d

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FixedPoint) and (self.scale, self.max_abs) == (other.scale, other.max_abs)

    def __hash__(self) -> int:
        return hash((self.scale, self.max_abs))

    def __repr__(self) -> str:
        return f"FixedPoint(scale={self.scale})"


def _coerce(x: object) -> int | float:
    try:
        return operator.index(x)  # type: ignore[arg-type]
    except TypeError:
        pass
    if isinstance(x, numbers.Real):
        return float(x)
    raise EncodingError("expected int, Decimal, float or str")
