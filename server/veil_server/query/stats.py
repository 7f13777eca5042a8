"""What every engine returns: per group, the row count and each aggregated column's exact
fixed-point count, sum and sum of squares (:mod:`.engine` says how they are computed).

A value type of its own so that the engines, the range proof and disclosure control can share
it without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ColumnStats:
    count: int = 0
    total: int = 0  # sum of fixed-point values
    squares: int = 0  # sum of squared fixed-point values


@dataclass
class GroupStats:
    keys: tuple[str, ...]
    rows: int
    columns: dict[str, ColumnStats] = field(default_factory=dict)


@dataclass
class AggregateResult:
    groups: list[GroupStats]
    rows_matched: int
