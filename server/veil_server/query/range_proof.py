"""When clamping is a no-op: proving from a Parquet file's own footer that every value of a
column already lies inside its declared range.

Clamping each value to the declared range bounds every row's contribution (the released cells'
bounds, dominance and DP rest on it). For a Parquet file whose footer statistics show that a
column's values all lie inside the range, the clamp changes nothing and the engine may skip it
for that column. The proof is checked, not assumed:

- Statistics must be present for every row group of the column (a row group of NULLs only needs
  none) and the column's physical and logical types must be plain signed integers or floating
  point, whose statistics order values numerically. Anything else — a CSV file, a glob, a
  decimal, an unsigned or temporal type, a missing statistic, two columns matching the name —
  means no proof, and the engine clamps.
- The comparison is exact (rationals), against the fixed-point bounds the clamp would use. The
  engine converts a value ``x`` to fixed point with a monotonic function (a cast, or a rounded
  double product); with every ``x`` in ``[low, high] / 10^scale`` and both fixed-point bounds
  within ±2^50 (so that the double arithmetic of the conversion errs by far less than half a
  unit), every converted value lies in ``[low, high]``. NaN is outside every statistic but fails
  the engine's conversion, with or without the clamp.
- The proof holds for one version of the file, identified by its stamp (device, inode, size,
  mtime, ctime). The engine checks the stamp before the scan and again after it, and computes
  again with clamping if the file moved in between. A file changed within the last
  ``SETTLE_SECONDS`` gets no proof: its ctime could still equal that of a write made in the same
  clock tick. What remains trusted is the footer itself, exactly as far as DuckDB already trusts
  it (it prunes row groups with the same statistics), and that a file is changed through
  ordinary writes, which move its ctime (a user cannot set ctime) — the assumption the data asset
  certificate's change detection makes too. The engine adds a last check on the result: a group
  whose sum lies outside count × [low, high] is evidence of wrong statistics and sends the query
  back to the clamped path.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable

from .catalog import Column, ColumnType, Dataset
from .stats import AggregateResult

log = logging.getLogger("veil.engine")

SETTLE_SECONDS = 1.0
FIXED_LIMIT = 2**50  # both fixed-point bounds within ±FIXED_LIMIT, see the module docstring
_GLOB = frozenset("*?[{")
_INT_TYPES = ("INT32", "INT64")
_FLOAT_TYPES = ("FLOAT", "DOUBLE")
_MAX_FILES = 256


@dataclass(frozen=True)
class FileStamp:
    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, path: str) -> "FileStamp | None":
        try:
            st = os.stat(path)
        except OSError:
            return None
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True)
class RangeProof:
    """The columns proven inside their ranges, for the file version ``stamp``."""

    path: str = ""
    stamp: FileStamp | None = None
    columns: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.columns)


NO_PROOF = RangeProof()


def fixed_bounds(col: Column) -> tuple[int, int]:
    """The declared range in the column's fixed-point scale, as the clamp uses it."""
    assert col.value_range is not None
    return tuple(int((v * 10**col.scale).to_integral_value()) for v in col.value_range)  # type: ignore[return-value]


def raw_bounds(col: Column) -> tuple[Fraction, Fraction] | None:
    """The values (in the file's units) whose fixed-point image lies in the clamp's range, or
    None when the bounds are too wide for the double-rounding argument."""
    low, high = fixed_bounds(col)
    if max(abs(low), abs(high)) > FIXED_LIMIT:
        return None
    unit = 1 if col.type is ColumnType.INTEGER else 10**col.scale  # INTEGER columns are not scaled
    return Fraction(low, unit), Fraction(high, unit)


def within_ranges(result: AggregateResult, dataset: Dataset, columns: frozenset[str]) -> bool:
    """Whether every group's statistics of ``columns`` are possible for values inside their
    declared ranges (a cheap check against wrong file statistics; not a proof on its own)."""
    bounds = {}
    for name in columns:
        col = dataset.column(name)
        assert col is not None
        bounds[name] = fixed_bounds(col)
    for g in result.groups:
        for name, (low, high) in bounds.items():
            st = g.columns.get(name)
            if st is None:
                continue
            if not (st.count * low <= st.total <= st.count * high
                    and 0 <= st.squares <= st.count * max(low * low, high * high)):
                return False
    return True


def footer_ranges(path: str, columns: Iterable[Column]) -> dict[str, tuple[Fraction, Fraction] | None]:
    """Per column: (min, max) over every row group from the footer's statistics, ``None`` when
    they do not prove anything (missing, unsupported type, ambiguous name). A column holding only
    NULLs gets an empty range (min > max)."""
    import pyarrow.parquet as papq

    meta = papq.read_metadata(path)
    schema = meta.schema
    by_name: dict[str, list[int]] = {}
    for i in range(len(schema)):
        c = schema.column(i)
        if "." not in c.path:  # top-level columns only; DuckDB names nested fields differently
            by_name.setdefault(c.path.lower(), []).append(i)
    out: dict[str, tuple[Fraction, Fraction] | None] = {}
    for col in columns:
        idx = by_name.get(col.name.lower(), [])
        out[col.name] = _column_range(meta, idx[0]) if len(idx) == 1 else None
    return out


def _column_range(meta, i: int) -> tuple[Fraction, Fraction] | None:
    c = meta.schema.column(i)
    logical = c.logical_type.type
    if c.physical_type in _INT_TYPES:
        if logical not in ("NONE", "INT") or (logical == "INT" and '"isSigned":true' not in c.logical_type.to_json()):
            return None
        if c.converted_type not in ("NONE", "INT_8", "INT_16", "INT_32", "INT_64"):
            return None
    elif c.physical_type in _FLOAT_TYPES:
        if logical != "NONE":
            return None
    else:
        return None
    lo: Fraction | None = None
    hi: Fraction | None = None
    for g in range(meta.num_row_groups):
        chunk = meta.row_group(g).column(i)
        st = chunk.statistics
        if st is None:
            return None
        if not st.has_min_max:
            # No statistic is a proof only of a chunk that holds nothing but NULLs.
            if st.has_null_count and st.null_count == chunk.num_values:
                continue
            return None
        mn, mx = Fraction(st.min), Fraction(st.max)  # exact: ints and doubles are rationals
        lo = mn if lo is None or mn < lo else lo
        hi = mx if hi is None or mx > hi else hi
    if lo is None or hi is None:
        return (Fraction(1), Fraction(0))  # NULLs only
    return lo, hi


class RangeProofs:
    """Proofs per file version, cached by stamp; thread-safe."""

    def __init__(self, *, settle_seconds: float = SETTLE_SECONDS) -> None:
        self.settle_seconds = settle_seconds
        self._cache: dict[str, tuple[FileStamp, dict[str, tuple[Fraction, Fraction] | None]]] = {}
        self._lock = threading.Lock()

    def prove(self, ds: Dataset, columns: Iterable[Column]) -> RangeProof:
        """The columns of ``columns`` that ``ds``'s file proves inside their declared ranges."""
        cols = [c for c in columns if c.value_range is not None]
        path = ds.source
        if ds.format != "parquet" or not cols or any(ch in _GLOB for ch in path) or not os.path.isfile(path):
            return NO_PROOF
        stamp = FileStamp.of(path)
        if stamp is None or stamp.ctime_ns > (time.time() - self.settle_seconds) * 1e9:
            return NO_PROOF
        ranges = self._ranges(path, stamp, cols)
        if ranges is None:
            return NO_PROOF
        proven = []
        for c in cols:
            seen, allowed = ranges.get(c.name), raw_bounds(c)
            if seen is None or allowed is None:
                continue
            if seen[0] > seen[1] or (allowed[0] <= seen[0] and seen[1] <= allowed[1]):
                proven.append(c.name)
        return RangeProof(path, stamp, frozenset(proven)) if proven else NO_PROOF

    def unchanged(self, proof: RangeProof) -> bool:
        """True if the file is still the version the proof was made for (call after the scan)."""
        return proof.stamp is not None and FileStamp.of(proof.path) == proof.stamp

    def _ranges(self, path: str, stamp: FileStamp, cols: list[Column]):
        with self._lock:
            hit = self._cache.get(path)
        if hit is not None and hit[0] == stamp and all(c.name in hit[1] for c in cols):
            return hit[1]
        try:
            ranges = footer_ranges(path, cols)
        except Exception as e:  # an unreadable footer proves nothing; the scan reports the file
            log.info("no range proof for %s: %s", path, type(e).__name__)
            return None
        if FileStamp.of(path) != stamp:
            return None  # changed while the footer was read
        with self._lock:
            if hit is not None and hit[0] == stamp:
                ranges = {**hit[1], **ranges}
            if len(self._cache) >= _MAX_FILES and path not in self._cache:
                self._cache.pop(next(iter(self._cache)))
            self._cache[path] = (stamp, ranges)
        return ranges
