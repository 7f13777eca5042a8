"""From per-group statistics to the released, encrypted result.

1. The result covers the *whole* declared group domain (every combination of categories and
   bins), so which groups exist in the data is not revealed: a group with no rows looks the
   same as any other group below the minimum size.
2. A group is suppressed when it has fewer than ``k`` rows, or when any aggregated column has
   fewer than ``k`` non-null values in it. A suppressed group carries no cell at all; the result
   marks it suppressed and says nothing of its count.
3. Every released cell is an exact fixed-point integer with an explicit per-column scale. Cell
   bounds, and so the packing layout, come from the declared ranges and row bound only, never
   from the data, so the shape of the ciphertexts leaks nothing about the values.
4. Cells are packed several to a Paillier plaintext, each aggregate column with slots as wide
   as its own declared bounds need, encrypted and obfuscated under the analyst's key. The plaintext cells exist only in this process's memory, never on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Iterator, Sequence
from decimal import Decimal
from math import isqrt

from google.protobuf.timestamp_pb2 import Timestamp

from veil.crypto import ColumnPacking, EncodingOverflow, PublicKey, encrypt_packed
from veil.crypto.obfuscation import Obfuscation
from veil.v1 import query_pb2

from .catalog import Column, Dataset
from .domain import expected_groups, group_domain
from .encrypted_input import WeightedSpec, cells_for_groups
from .engine import AggregateResult, ColumnStats
from ..errors import Internal
from .plan import AggFunc, Aggregate, QueryPlan

log = logging.getLogger("veil.release")

# Derived aggregates (AVG, VAR_SAMP, STDDEV_SAMP) are not integers in the column's scale. Their
# resolution is set relative to the declared range: one unit is at most 10^-RESOLUTION_DIGITS times the
# range's width (squared width for variances). That keeps every value of ordinary magnitude
# within 1e-9 relative of the exact figure while a cell stays ~40 bits wide whatever the units,
# and, like every layout choice here, depends on declarations only, never on the data.
RESOLUTION_DIGITS = 12


def derived_scale(width: Decimal, column_scale: int, power: int = 1) -> int:
    """Decimal digits such that 10^-digits <= width^power * 10^-RESOLUTION_DIGITS."""
    magnitude = (width**power).adjusted()  # floor(log10(width^power))
    return max(power * column_scale, RESOLUTION_DIGITS - magnitude)


@dataclass(frozen=True)
class CellSpec:
    """How one aggregate column is encoded: its scale and declared bounds (fixed point)."""

    scale: int
    low: int
    high: int


def cell_spec(agg: Aggregate, dataset: Dataset) -> CellSpec:
    rows = dataset.max_rows
    if agg.column is None or agg.function is AggFunc.COUNT:
        return CellSpec(0, 0, rows)
    col = dataset.column(agg.column)
    assert col is not None and col.value_range is not None
    lo, hi = col.value_range
    s = col.scale
    if agg.function is AggFunc.SUM:
        return CellSpec(s, _fx(min(Decimal(0), lo * rows), s), _fx(max(Decimal(0), hi * rows), s))
    if agg.function is AggFunc.AVG:
        sc = derived_scale(hi - lo, s)
        return CellSpec(sc, _fx(lo, sc), _fx(hi, sc))
    spread = hi - lo
    if agg.function is AggFunc.VAR_SAMP:
        # The sample variance of values in [lo, hi] is at most (hi - lo)^2 / 4 * n / (n - 1),
        # which is at most (hi - lo)^2 / 2 for n >= 2.
        sc = derived_scale(spread, s, 2)
        return CellSpec(sc, 0, _fx(spread * spread / 2, sc) + 1)
    sc = derived_scale(spread, s)  # STDDEV_SAMP <= sqrt((hi - lo)^2 / 2) < hi - lo
    return CellSpec(sc, 0, _fx(spread, sc))


def _fx(value: Decimal, scale: int) -> int:
    return int((value * (Decimal(10) ** scale)).to_integral_value())


def _round(num: int, den: int) -> int:
    """num / den rounded half to even, exactly (den > 0); integer arithmetic, no Fraction."""
    q, r = divmod(num, den)  # floor division: 0 <= r < den
    if 2 * r > den or (2 * r == den and q % 2):
        q += 1
    return q


def cell_value(agg: Aggregate, rows: int, st: ColumnStats | None, col: Column | None, spec: CellSpec) -> int:
    if agg.function is AggFunc.COUNT:
        return rows if agg.column is None else st.count  # type: ignore[union-attr]
    assert st is not None and col is not None
    if agg.function is AggFunc.SUM:
        return st.total
    if agg.function is AggFunc.AVG:
        return _round(st.total * 10 ** (spec.scale - col.scale), st.count)
    # Sample variance in the column's squared fixed-point units, exactly: num / den.
    num = st.count * st.squares - st.total * st.total
    den = st.count * (st.count - 1)
    if agg.function is AggFunc.VAR_SAMP:
        return _round(num * 10 ** (spec.scale - 2 * col.scale), den)
    num *= 10 ** (2 * spec.scale - 2 * col.scale)  # STDDEV: round(sqrt(num / den)), exactly
    r = isqrt(num // den)
    if (4 * r * r + 4 * r + 1) * den <= 4 * num:  # sqrt(x) >= r + 1/2
        r += 1
    return r


# Obfuscators made during the scan at most (~0.5 ms each once the key's table exists).
PREPARED_CIPHERTEXTS_MAX = 64


class Randomness:
    """The randomness of a result's ciphertexts, made in a background thread while the engine
    scans: the scan releases the GIL, so on a free core encryption's cost is hidden. It makes at
    most what the whole declared group domain would need; what a result does not use stays in
    the key's stock for its next query (each obfuscator is still used exactly once)."""

    def __init__(self, plan: QueryPlan, dataset: Dataset, public_key: PublicKey, *,
                 obfuscation: Obfuscation = "djn") -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if not plan.aggregates:
            return
        specs = [cell_spec(a, dataset) for a in plan.aggregates]
        cells = expected_groups(plan, dataset) * len(specs)
        count = min(PREPARED_CIPHERTEXTS_MAX,
                    ColumnPacking.for_ranges(public_key, [(s.low, s.high) for s in specs]).ciphertexts_for(cells))
        self._thread = threading.Thread(target=public_key.prepare_randomness, args=(count, self._stop, obfuscation),
                                        name="veil-randomness", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop making more (the one in progress finishes); encryption takes what is ready."""
        self._stop.set()


class RandomnessRefill:
    """Tops up an analyst key's stock of obfuscators after a result under it is released, while
    no query executes, so the next result under that key finds its randomness ready: encryption
    costs multiplications only, and the next scan shares its cores with nothing.

    Only when the node is idle: the top-up starts once no query has executed for ``quiet``
    seconds (so it does not compete with the analyst's own decryption on a shared host, or with
    the next query of a burst), and a query that starts executing stops it after the obfuscator
    in progress (about a millisecond at 2048 bits); it resumes at the next quiet moment.

    A key's stock is bounded (``veil.crypto.obfuscation.STOCK_MAX``); each obfuscator still
    masks exactly one ciphertext, and the stock lives only in this process's memory.
    """

    def __init__(self, *, quiet: float = 0.1) -> None:
        self._cond = threading.Condition()
        self._quiet = quiet
        self._quiet_from = 0.0  # monotonic time from which the node counts as quiet
        self._active = 0  # queries executing now
        self._pending: dict[tuple[str, str], tuple[PublicKey, int]] = {}  # by key fingerprint and mode
        self._busy = False
        self._closed = False
        self._stop = threading.Event()  # set while a query executes or the node closes
        self._thread = threading.Thread(target=self._run, name="veil-randomness-refill", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def executing(self) -> Iterator[None]:
        """``with refill.executing():`` around a query's execution."""
        self._begin()
        try:
            yield
        finally:
            self._end()

    def request(self, public_key: PublicKey, count: int, obfuscation: Obfuscation = "djn") -> None:
        """Top ``public_key``'s stock of ``obfuscation`` obfuscators up to ``count`` once the
        node is idle."""
        if count <= 0:
            return
        with self._cond:
            slot = (public_key.fingerprint(), obfuscation)
            self._pending[slot] = (public_key, max(count, self._pending.get(slot, (public_key, 0))[1]))
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Until no top-up runs or waits to run while the node is idle (True), or ``timeout``."""
        with self._cond:
            return self._cond.wait_for(lambda: self._closed or (not self._busy and not self._pending), timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._stop.set()
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _begin(self) -> None:
        with self._cond:
            self._active += 1
            self._stop.set()

    def _end(self) -> None:
        with self._cond:
            self._active -= 1
            if self._active == 0 and not self._closed:
                self._quiet_from = time.monotonic() + self._quiet
                self._stop.clear()
                self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    if self._active or not self._pending:
                        self._cond.wait()
                    elif (left := self._quiet_from - time.monotonic()) > 0:
                        self._cond.wait(left)
                    else:
                        break
                slot, (key, count) = self._pending.popitem()
                self._busy = True
            try:
                key.prepare_randomness(count, self._stop, slot[1])
            except Exception:  # noqa: BLE001 -- randomness made later, inline, is the fallback
                log.exception("refilling a key's randomness failed; encryption will make its own")
            finally:
                with self._cond:
                    self._busy = False
                    if self._stop.is_set() and not self._closed:  # interrupted: finish it when idle again
                        self._pending.setdefault(slot, (key, count))
                    self._cond.notify_all()


def build_result(
    query_name: str,
    plan: QueryPlan,
    dataset: Dataset,
    stats: AggregateResult,
    public_key: PublicKey,
    *,
    now: Timestamp | None = None,
    weighted: Sequence[tuple[WeightedSpec, AggregateResult]] = (),
    suppress: frozenset | set = frozenset(),
    zero: frozenset | set = frozenset(),
    obfuscation: Obfuscation = "djn",
    dp=None,
) -> tuple[query_pb2.QueryResult, dict[str, int]]:
    """Returns the encrypted result and counters for metering (groups released/suppressed).

    ``weighted`` holds encrypted-input sums with the statistics that feed them
    (see :mod:`veil_server.query.encrypted_input`); they get one ciphertext per released group.
    ``suppress`` holds group keys suppressed beyond the k rule (exact mode: dominance and the
    history's secondary suppression), ``zero`` the encrypted-input sub-cells left out likewise.
    ``dp`` (a :class:`veil_server.disclosure.dp.DpRelease`): the cells come from its noisy
    statistics, the k rule runs on its noisy counts, and each column states its noise.
    ``obfuscation``: the ciphertexts' randomness, the node's ``[crypto] obfuscation``.
    """
    k = dataset.min_group_size
    specs = [cell_spec(a, dataset) for a in plan.aggregates]
    cols = [dataset.column(a.column) if a.column else None for a in plan.aggregates]
    by_key = {g.keys: g for g in stats.groups}

    result = query_pb2.QueryResult(query=query_name, min_group_size=k,
                                   public_key_fingerprint=public_key.fingerprint())
    for out in plan.output:
        if out.kind == "group":
            g = plan.group_keys[out.index]
            col = dataset.column(g.column)
            result.columns.add(name=out.name, kind=query_pb2.ResultColumn.KIND_GROUP_KEY,
                               source_column=g.column, numeric_key=bool(col and col.numeric))
        else:
            a = plan.aggregates[out.index]
            column = result.columns.add(
                name=out.name,
                kind=query_pb2.ResultColumn.KIND_AGGREGATE,
                function=a.function.value,
                source_column=a.column or "",
                scale=specs[out.index].scale,
            )
            if dp is not None:
                column.noise.CopyFrom(query_pb2.ColumnNoise(column=out.name, function=a.function.value,
                                                            **dp.column_noise(a, k)))
    result.disclosure_mode = "dp" if dp is not None else "exact"
    if dp is not None:
        result.epsilon = dp.epsilon

    for spec, _ in weighted:
        result.columns.add(name=spec.name, kind=query_pb2.ResultColumn.KIND_WEIGHTED_SUM,
                           function="WEIGHTED_SUM", source_column=",".join(spec.value_columns),
                           scale=spec.result_scale)

    cells: list[int] = []
    released_keys: list[tuple[str, ...]] = []
    released = suppressed = 0
    group_outputs = [o for o in plan.output if o.kind == "group"]
    agg_outputs = [o for o in plan.output if o.kind == "aggregate"]
    for keys in group_domain(plan, dataset):
        g = by_key.get(keys)
        if dp is not None:
            ok = dp.released(keys, k) and keys not in suppress
        else:
            ok = g is not None and g.rows >= k and all(
                c.count >= k for c in g.columns.values()
            ) and keys not in suppress
        result.rows.add(keys=[keys[o.index] for o in group_outputs], suppressed=not ok)
        if not ok:
            suppressed += 1
            continue
        released += 1
        released_keys.append(keys)
        for o in agg_outputs:
            a = plan.aggregates[o.index]
            sp = specs[o.index]
            if dp is not None:
                cells.append(dp.cell(a, keys, sp.scale, sp.low, sp.high))
            else:
                cells.append(cell_value(a, g.rows, g.columns.get(a.column or ""), cols[o.index], sp))

    # Each aggregate column gets slots as wide as its own declared bounds need (a count is
    # narrower than a sum), so fewer ciphertexts carry the same cells.
    packing = ColumnPacking.for_ranges(public_key, [(specs[o.index].low, specs[o.index].high)
                                                    for o in agg_outputs]) if agg_outputs else None
    try:
        ciphertexts = encrypt_packed(public_key, cells, packing, obfuscation=obfuscation) if cells and packing else []
    except EncodingOverflow:
        # Cannot happen with clamped inputs; refusing is the safe answer if it ever does.
        raise Internal("a result cell fell outside its declared bound", reason="RESULT_OUT_OF_RANGE") from None
    if packing is not None:
        result.cells.column_slot_bits.extend(packing.widths)
        result.cells.column_slot_offsets.extend(str(low) for low in packing.lows)
        result.cells.plaintext_bits = packing.capacity
    result.cells.cell_count = len(cells)
    result.cells.ciphertexts.extend(c.to_bytes() for c in ciphertexts)
    per_column = [cells_for_groups(spec, released_keys, st, public_key, k, obfuscation=obfuscation, zero=zero)
                  for spec, st in weighted]
    for i in range(len(released_keys)):
        result.weighted_cells.extend(col[i] for col in per_column)
    if now is not None:
        result.create_time.CopyFrom(now)
    result.result_digest = result_digest(result)
    return result, {"groups_released": released, "groups_suppressed": suppressed,
                    "cells": len(cells) + len(result.weighted_cells)}


def result_digest(result: query_pb2.QueryResult) -> str:
    """SHA-256 over the result with its digest field cleared (deterministic serialisation)."""
    copy = query_pb2.QueryResult()
    copy.CopyFrom(result)
    copy.result_digest = ""
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()
