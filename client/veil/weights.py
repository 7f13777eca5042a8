"""Encrypted inputs: weights the node uses without ever reading them.

    ds = node.dataset("patients")
    risk = veil.WeightedSum.by_category(ds, "diagnosis", {"cardio": 2.5, "renal": 1.0}, value_column="cost")
    score = veil.WeightedSum.score({"age": 0.02, "length_of_stay": 0.7})
    df = node.query("SELECT region, COUNT(*) FROM patients GROUP BY region", purpose="research",
                    weighted_sums=[risk, score])

Weights are fixed-point encoded at ``weight_scale`` decimal digits and encrypted under the
analyst's own key before they leave the process; the node returns Enc(sum of w * x) per group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Mapping, Sequence, Union

from .v1 import query_pb2

if TYPE_CHECKING:
    from .crypto import PublicKey

Number = Union[int, float, Decimal, str]


@dataclass(frozen=True)
class WeightedSum:
    """One weighted-sum output column; build it with :meth:`by_category` or :meth:`score`."""

    weights: tuple[Number, ...]
    key_column: str = ""
    value_columns: tuple[str, ...] = ()
    weight_scale: int = 6
    name: str = ""
    _categories: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def by_category(cls, dataset, key_column: str, weights: Mapping[str, Number], *,
                    value_column: str | None = None, weight_scale: int = 6, name: str = "") -> "WeightedSum":
        """Weight rows by their ``key_column`` category (missing categories weigh 0); multiply
        ``value_column``, or count rows when it is None. ``dataset`` is a ``DatasetInfo``."""
        col = next((c for c in dataset.columns if c.name.lower() == key_column.lower()), None)
        if col is None or not col.categories:
            raise ValueError(f"{key_column} is not a column with declared categories in {dataset.name}")
        unknown = set(map(str, weights)) - set(col.categories)
        if unknown:
            raise ValueError(f"not categories of {key_column}: {sorted(unknown)}")
        ordered = tuple(weights.get(c, 0) for c in col.categories)
        return cls(ordered, col.name, (value_column,) if value_column else (), weight_scale, name, col.categories)

    @classmethod
    def score(cls, weights: Mapping[str, Number], *, weight_scale: int = 6, name: str = "") -> "WeightedSum":
        """A private linear score: sum over columns of weight * SUM(column), per group."""
        if not weights:
            raise ValueError("a score needs at least one column weight")
        return cls(tuple(weights.values()), "", tuple(weights), weight_scale, name)

    def encrypt(self, public_key: PublicKey) -> query_pb2.WeightedSum:
        from .crypto import FixedPoint  # the crypto layer loads when first used

        fp = FixedPoint(self.weight_scale)
        encoded = [fp.encode(w) for w in self.weights]
        cts = public_key.encrypt_many(encoded)
        return query_pb2.WeightedSum(name=self.name, key_column=self.key_column,
                                     value_columns=list(self.value_columns), weight_scale=self.weight_scale,
                                     weights=[c.to_bytes() for c in cts])


def encrypt_all(items: Sequence[WeightedSum], public_key: PublicKey) -> list[query_pb2.WeightedSum]:
    return [w.encrypt(public_key) for w in items]
