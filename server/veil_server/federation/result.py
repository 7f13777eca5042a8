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

from veil.crypto import PackingLayout, PublicKey
from veil.v1 import federation_pb2, query_pb2

from ..query.catalog import Dataset
from ..query.domain import group_domain
from ..query.plan import QueryPlan
from ..query.release import cell_spec
from .partial import VectorLayout

_STATISTIC = {"ROWS": federation_pb2.StatisticSection.STATISTIC_ROWS,
              "COUNT": federation_pb2.StatisticSection.STATISTIC_COUNT,
              "SUM": federation_pb2.StatisticSection.STATISTIC_SUM,
              "SUM_OF_SQUARES": federation_pb2.StatisticSection.STATISTIC_SUM_OF_SQUARES}


def build_federated_result(*, query: str, plan: QueryPlan, dataset: Dataset, layout: VectorLayout,
                           released: list[bool], sections: list[list[bytes]], packings: list[PackingLayout],
                           terms: int, ring_bits: int, public_key: PublicKey, protocol: int,
                           participants: list[str], compute: list[str], k: int) -> federation_pb2.FederatedResult:
    result = federation_pb2.FederatedResult(
        name=f"federatedQueries/{query}", dataset=dataset.name, protocol=protocol, participants=participants,
        compute_parties=compute, public_key_fingerprint=public_key.fingerprint(), min_group_size=k,
        canonical_sql=plan.canonical_sql())
    for out in plan.output:
        if out.kind == "group":
            g = plan.group_keys[out.index]
            col = dataset.column(g.column)
            result.columns.add(name=out.name, kind=query_pb2.ResultColumn.KIND_GROUP_KEY, source_column=g.column,
                               numeric_key=bool(col and col.numeric))
        else:
            a = plan.aggregates[out.index]
            result.columns.add(name=out.name, kind=query_pb2.ResultColumn.KIND_AGGREGATE, function=a.function.value,
                               source_column=a.column or "", scale=cell_spec(a, dataset).scale)
    group_outputs = [o for o in plan.output if o.kind == "group"]
    for keys, keep in zip(group_domain(plan, dataset), released):
        result.rows.add(keys=[keys[o.index] for o in group_outputs], suppressed=not keep)
    cells = sum(released)
    for stat, cts, packing in zip(layout.statistics, sections, packings):
        section = result.sections.add(statistic=_STATISTIC[stat.kind], column=stat.column, scale=stat.scale,
                                      terms=terms, share_ring_bits=ring_bits)
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


def result_digest(result: federation_pb2.FederatedResult) -> str:
    copy = federation_pb2.FederatedResult()
    copy.CopyFrom(result)
    copy.result_digest = ""
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()
