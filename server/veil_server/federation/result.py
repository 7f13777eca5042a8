"""The combined result the coordinator returns to the analyst (``veil.v1.FederatedResult``).

Shaped like a single-node result: the output columns with their cell scales, one row per group
of the whole public domain (suppressed rows marked, never dropped), and the released groups'
sufficient statistics as encrypted sections, from which the SDK derives COUNT, SUM, AVG,
VAR_SAMP and STDDEV_SAMP exactly as ``release.cell_value`` does on one node. The analyst
therefore learns, per released group, the count, sum and (for VAR/STDDEV) sum of squares of
each aggregated column -- the sufficient statistics -- rather than only the requested cells.
"""

from __future__ import annotations

import hashlib

from google.protobuf.timestamp_pb2 import Timestamp

from veil.accuracy import Noise, avg_bound, var_bound
from veil.crypto import PackingLayout, PublicKey
from veil.v1 import federation_pb2, query_pb2

from ..query.catalog import Dataset
from ..query.domain import group_domain
from ..query.plan import AggFunc, Aggregate, QueryPlan
from ..query.release import cell_spec
from .partial import VectorLayout, noises

_STATISTIC = {"ROWS": federation_pb2.StatisticSection.STATISTIC_ROWS,
              "COUNT": federation_pb2.StatisticSection.STATISTIC_COUNT,
              "SUM": federation_pb2.StatisticSection.STATISTIC_SUM,
              "SUM_OF_SQUARES": federation_pb2.StatisticSection.STATISTIC_SUM_OF_SQUARES}


def build_federated_result(*, query: str, plan: QueryPlan, dataset: Dataset, layout: VectorLayout,
                           released: list[bool], sections: list[list[bytes]], packings: list[PackingLayout],
                           terms: int, ring_bits: int, public_key: PublicKey, protocol: int,
                           participants: list[str], compute: list[str], k: int,
                           epsilon: float) -> federation_pb2.FederatedResult:
    result = federation_pb2.FederatedResult(
        name=f"federatedQueries/{query}", dataset=dataset.name, protocol=protocol, participants=participants,
        compute_parties=compute, public_key_fingerprint=public_key.fingerprint(), min_group_size=k,
        canonical_sql=plan.canonical_sql(), disclosure_mode="dp", epsilon=epsilon)
    noise = dict(zip(((s.kind, s.column) for s in layout.statistics),
                     noises(layout, epsilon, members=len(participants))))
    for out in plan.output:
        if out.kind == "group":
            g = plan.group_keys[out.index]
            col = dataset.column(g.column)
            result.columns.add(name=out.name, kind=query_pb2.ResultColumn.KIND_GROUP_KEY, source_column=g.column,
                               numeric_key=bool(col and col.numeric))
        else:
            a = plan.aggregates[out.index]
            column = result.columns.add(name=out.name, kind=query_pb2.ResultColumn.KIND_AGGREGATE,
                                        function=a.function.value, source_column=a.column or "",
                                        scale=cell_spec(a, dataset).scale)
            column.noise.CopyFrom(column_noise(out.name, a, dataset, noise, k, epsilon))
    group_outputs = [o for o in plan.output if o.kind == "group"]
    for keys, keep in zip(group_domain(plan, dataset), released):
        result.rows.add(keys=[keys[o.index] for o in group_outputs], suppressed=not keep)
    cells = sum(released)
    for stat, cts, packing in zip(layout.statistics, sections, packings):
        n = noise[(stat.kind, stat.column)]
        section = result.sections.add(statistic=_STATISTIC[stat.kind], column=stat.column, scale=stat.scale,
                                      terms=terms, share_ring_bits=ring_bits, noise_scale=n.scale * n.unit)
        section.cells.slot_bits = packing.slot_bits
        section.cells.slots_per_ciphertext = packing.slots
        section.cells.slot_offset = str(packing.low)
        section.cells.cell_count = cells
        section.cells.ciphertexts.extend(cts)
    now = Timestamp()
    now.GetCurrentTime()
    result.create_time.CopyFrom(now)
    result.result_digest = result_digest(result)
    return result


def column_noise(name: str, agg: Aggregate, dataset: Dataset, noise: dict, k: int,
                 epsilon: float) -> query_pb2.ColumnNoise:
    """What a federated column says of its noise: every member's draw summed (``terms``), in the
    column's value units; derived columns from the uncentred SUM (see veil.accuracy)."""
    out = query_pb2.ColumnNoise(column=name, function=agg.function.value, mechanism="discrete_laplace",
                                epsilon=epsilon)
    if agg.column is None:
        n = noise[("ROWS", "")]
        out.terms, out.count_scale, out.std, out.error_bound_95 = n.terms, n.scale * n.unit, n.std(), n.bound()
        return out
    col = dataset.column(agg.column)
    assert col is not None and col.value_range is not None
    lo, hi = (float(v) for v in col.value_range)
    unit = 10.0 ** -col.scale
    count, total = noise[("COUNT", agg.column)], noise[("SUM", agg.column)]
    out.terms, out.centre, out.spread = count.terms, (lo + hi) / 2, hi - lo
    out.count_scale = count.scale * count.unit
    out.sum_scale = total.scale * total.unit * unit
    if agg.function is AggFunc.COUNT:
        out.std, out.error_bound_95 = count.std(), count.bound()
        return out
    if agg.function is AggFunc.SUM:
        out.std, out.error_bound_95 = total.std() * unit, total.bound() * unit
        return out
    magnitude = max(abs(lo), abs(hi))
    in_units = Noise(total.scale * total.unit * unit, 1, total.terms)
    if agg.function is AggFunc.AVG:
        b = avg_bound(k, count=count, total=in_units, magnitude=magnitude)
    else:
        sq = noise[("SUM_OF_SQUARES", agg.column)]
        squares = Noise(sq.scale * sq.unit * unit * unit, 1, sq.terms)
        out.squares_scale = squares.scale
        b = var_bound(k, count=count, total=in_units, squares=squares, spread=2 * magnitude)
        if agg.function is AggFunc.STDDEV_SAMP:
            b = b ** 0.5
    out.std, out.error_bound_95 = b / 1.96, b
    return out


def result_digest(result: federation_pb2.FederatedResult) -> str:
    copy = federation_pb2.FederatedResult()
    copy.CopyFrom(result)
    copy.result_digest = ""
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()
