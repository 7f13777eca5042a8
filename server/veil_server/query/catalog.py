"""Datasets and column controls: what an owner allows an analyst to do with each column.

Deny by default: a column may be used only in the ways its controls list. ``hidden`` columns may
not be referenced at all; ``public`` columns may be used in every way (still never output raw,
except as a group key). Raw values never leave the node except as group keys, and a group key's
values come from a *declared* public domain (categories, or bins over a declared range), so the
set of groups an analyst sees does not depend on which values the data happens to hold.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Iterable, Mapping

from ..disclosure.settings import DisclosurePolicy, Dominance
from .consent import CONSENT, ConsentScope, ConsentSource


class ColumnControl(enum.Enum):
    HIDDEN = "hidden"
    FILTER = "filter"
    GROUP = "group"
    AGGREGATE = "aggregate"
    PUBLIC = "public"


class ColumnType(enum.Enum):
    INTEGER = "integer"
    DECIMAL = "decimal"
    TEXT = "text"


@dataclass(frozen=True)
class Column:
    """One column of a dataset and the owner's rules for it.

    ``scale`` is the number of decimal digits kept when a value is aggregated (fixed point:
    ``round(x * 10**scale)``); ``value_range`` is the declared [low, high] every aggregated
    value is clamped to, which bounds each row's contribution and sizes ciphertext slots.
    ``categories`` is the public domain of a categorical group key; ``bin_width`` is the
    smallest bin a numeric group key may use (any positive multiple is allowed).
    """

    name: str
    type: ColumnType
    controls: frozenset[ColumnControl]
    description: str = ""
    categories: tuple[str | int, ...] = ()
    value_range: tuple[Decimal, Decimal] | None = None
    scale: int = 0
    bin_width: Decimal | None = None
    dominance: Dominance | None = None  # exact mode: the (n, p %) rule on this column's cells

    def allows(self, control: ColumnControl) -> bool:
        if ColumnControl.HIDDEN in self.controls:
            return False
        return ColumnControl.PUBLIC in self.controls or control in self.controls

    @property
    def hidden(self) -> bool:
        return ColumnControl.HIDDEN in self.controls or not self.controls

    @property
    def numeric(self) -> bool:
        return self.type in (ColumnType.INTEGER, ColumnType.DECIMAL)

    @property
    def has_domain(self) -> bool:
        """Whether the column's values come from a declared public domain (categories, or bins
        of ``bin_width`` over the declared range): what exact mode can filter and group on."""
        return not self.hidden and (bool(self.categories) or self.bin_width is not None)

    def bin_domain(self, width: Decimal) -> tuple[Decimal, ...]:
        """Every bin start of width ``width`` over the declared range (the public domain)."""
        if self.value_range is None:
            raise ValueError(f"column {self.name} declares no range")
        low, high = self.value_range
        start = Decimal(math.floor(Fraction(low) / Fraction(width))) * width
        out = []
        b = start
        while b <= high:
            out.append(b)
            b += width
        return tuple(out)


@dataclass(frozen=True)
class Dataset:
    """A registered table and the owner's policy for it."""

    name: str
    source: str
    format: str  # "csv" | "parquet" (DuckDB) | "postgres" | "spark"; see veil_server.query.sources
    columns: tuple[Column, ...]
    purposes: frozenset[str]
    description: str = ""
    min_group_size: int = 10
    max_groups: int = 10_000
    max_rows: int = 1_000_000_000
    # Where the engine connects, for sources that are not files: a libpq conninfo without a
    # password (postgres) or a Spark master URL (spark); "" means the engine's default.
    connection: str = ""
    # How numbers are released: differential privacy (the default) or exact (see disclosure.settings).
    disclosure: DisclosurePolicy = field(default_factory=DisclosurePolicy)
    # The lawful basis ("consent", "contract", "public-task", "anonymous"; "" if not declared),
    # recorded in the certificate; "consent" needs a consent source (see query.consent).
    # A date or timestamp column of the source whose recency the quality profile reports
    # (governance.quality); read only there, never by a query.
    freshness_column: str = ""
    basis: str = ""
    consent: ConsentSource | None = None
    # Bound at execution for a consent dataset (query.consent.bind): the purpose and instant the
    # engine's consent filter applies. Never part of the dataset's identity.
    consent_scope: ConsentScope | None = field(default=None, compare=False)
    _by_name: Mapping[str, Column] = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {c.name.lower(): c for c in self.columns})

    @property
    def resource_name(self) -> str:
        return f"datasets/{self.name}"

    @property
    def needs_consent(self) -> bool:
        return self.basis == CONSENT

    def column(self, name: str) -> Column | None:
        return self._by_name.get(name.lower())

    def visible_columns(self) -> Iterable[Column]:
        return (c for c in self.columns if not c.hidden)


class Catalog:
    """The datasets a node serves, by name (case-insensitive)."""

    def __init__(self, datasets: Iterable[Dataset]) -> None:
        self._datasets = {d.name.lower(): d for d in datasets}

    def get(self, name: str) -> Dataset | None:
        return self._datasets.get(name.lower())

    def __iter__(self):
        return iter(sorted(self._datasets.values(), key=lambda d: d.name))

    def __len__(self) -> int:
        return len(self._datasets)
