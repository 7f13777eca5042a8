"""Encrypted-input queries: per group, Enc(sum over rows of w[row] * x[row]) from encrypted weights.

The analyst sends weights encrypted under its own Paillier key, either one per declared category
of a ``key`` column (a private selection or weighting of categories) or one per value column (a
private linear scoring model). The node reduces each group to plaintext sufficient statistics it
already computes for ordinary aggregates, S[g][j] (the sum of the value, or the row count, of the
rows of group g whose key is category j; or the sum of value column j over group g), and returns
Enc(sum_j w_j * S[g][j]) by an encrypted dot product (multi-exponentiation), obfuscated.

What each party learns:
- The node learns nothing about the weights: it sees ciphertexts only (Paillier, semantic
  security), and its work does not depend on the weights' values.
- The analyst learns, per released group, one linear combination of S[g][.] of its choosing.
  Weights chosen as powers of a large base can pack every S[g][j] into one result, so the owner
  must assume the analyst learns all of them. The policy therefore allows exactly what the
  equivalent plaintext query would: the key column must be one the analyst may GROUP BY, the value
  columns ones it may aggregate, the number of (group, category) cells must fit the dataset's
  max_groups, and every (group, category) cell with fewer than k rows is zeroed before the dot
  product (and every group below k is suppressed as usual). An encrypted-input query thus reveals
  at most what ``SELECT g, key, SUM(x) ... GROUP BY g, key`` would, under the same k rule.
- Disclosure control treats each (group, category) sub-cell as a released population: under DP
  (the default) every sub-cell's count and sums carry their own noise before the dot product
  (:mod:`veil_server.disclosure.dp`), so whatever the weights, the analyst receives a function of
  noisy sub-cells; in exact mode the sub-cells join the dataset's release history like any cell,
  and one the history's secondary check holds back contributes zero (``zero``).
- What remains possible for a malicious analyst: choosing weights that overflow the plaintext
  space only corrupts its own result; weights cannot be range-checked under encryption without
  zero-knowledge proofs, which is why the bound above does not rely on their range. An owner who
  does not want this form at all leaves the key column without the `group` control.
"""

from __future__ import annotations

from dataclasses import dataclass

from veil.crypto import Ciphertext, InvalidCiphertext, PublicKey, dot
from veil.crypto.obfuscation import Obfuscation
from veil.v1 import query_pb2

from .catalog import ColumnControl, Dataset
from .engine import AggregateResult, key_string
from ..errors import InvalidArgument, PolicyViolation
from .plan import AggFunc, Aggregate, GroupKey, OutputColumn, QueryPlan
from .domain import expected_groups

MAX_WEIGHTED_SUMS = 4
MAX_WEIGHT_SCALE = 12


@dataclass(frozen=True)
class WeightedSpec:
    """A validated weighted sum (weights still encrypted)."""

    name: str
    key_column: str | None
    value_columns: tuple[str, ...]
    weight_scale: int
    weights: tuple[bytes, ...]
    categories: tuple[str, ...]  # the key's declared domain, in weight order
    value_scales: tuple[int, ...]

    @property
    def result_scale(self) -> int:
        return self.weight_scale + max(self.value_scales, default=0)


def validate(specs: list[query_pb2.WeightedSum], plan: QueryPlan, ds: Dataset, key: PublicKey) -> list[WeightedSpec]:
    if len(specs) > MAX_WEIGHTED_SUMS:
        raise InvalidArgument(f"at most {MAX_WEIGHTED_SUMS} weighted sums per query", reason="TOO_MANY_WEIGHTED_SUMS")
    out: list[WeightedSpec] = []
    taken = {o.name.lower() for o in plan.output}
    for ws in specs:
        name = ws.name or f"weighted_sum_{len(out) + 1}"
        if name.lower() in taken:
            raise InvalidArgument(f"output name '{name}' is used twice", reason="DUPLICATE_OUTPUT_NAME")
        taken.add(name.lower())
        if not 0 <= ws.weight_scale <= MAX_WEIGHT_SCALE:
            raise InvalidArgument(f"weight_scale must be between 0 and {MAX_WEIGHT_SCALE}",
                                  reason="INVALID_WEIGHT_SCALE")
        values = []
        for vc in ws.value_columns:
            col = ds.column(vc)
            if col is None or col.hidden:
                raise PolicyViolation(f"column {vc} may not be aggregated here", reason="AGGREGATE_NOT_ALLOWED",
                                      metadata={"column": vc})
            if not col.allows(ColumnControl.AGGREGATE) or col.value_range is None:
                raise PolicyViolation(f"column {col.name} may not be aggregated; the owner has not granted it",
                                      reason="AGGREGATE_NOT_ALLOWED", metadata={"column": col.name})
            values.append(col)
        categories: tuple[str, ...] = ()
        key_name = None
        if ws.key_column:
            kc = ds.column(ws.key_column)
            if kc is None or kc.hidden or not kc.allows(ColumnControl.GROUP) or not kc.categories:
                raise PolicyViolation(
                    f"weights may be keyed only by a group column with declared categories; {ws.key_column} is not",
                    reason="WEIGHT_KEY_NOT_ALLOWED", metadata={"column": ws.key_column})
            if len(values) > 1:
                raise InvalidArgument("weights keyed by a column multiply at most one value column",
                                      reason="INVALID_WEIGHTED_SUM")
            key_name = kc.name
            categories = tuple(key_string(c) for c in kc.categories)
            expected = len(categories)
        else:
            if not values:
                raise InvalidArgument("a weighted sum needs key_column or at least one value column",
                                      reason="INVALID_WEIGHTED_SUM")
            expected = len(values)
        if len(ws.weights) != expected:
            raise InvalidArgument(f"expected {expected} encrypted weights, one per "
                                  f"{'category of ' + key_name if key_name else 'value column'}",
                                  reason="WEIGHT_COUNT_MISMATCH")
        for w in ws.weights:
            try:
                Ciphertext.from_bytes(key, w)
            except InvalidCiphertext as e:
                raise InvalidArgument(f"an encrypted weight is not a valid ciphertext under your key: {e}",
                                      reason="INVALID_CIPHERTEXT") from None
        cells = expected_groups(plan, ds) * max(1, len(categories))
        if cells > ds.max_groups:
            raise PolicyViolation(
                f"groups x weight categories = {cells} exceeds the {ds.max_groups} groups datasets/{ds.name} allows",
                reason="TOO_MANY_GROUPS", metadata={"limit": str(ds.max_groups)})
        out.append(WeightedSpec(name, key_name, tuple(c.name for c in values), ws.weight_scale,
                                tuple(ws.weights), categories, tuple(c.scale for c in values)))
    return out


def statistics_plan(plan: QueryPlan, spec: WeightedSpec) -> QueryPlan:
    """The plaintext plan whose statistics feed the dot product: the query's groups, refined by
    the key column if there is one, with a sum per value column (or a count)."""
    keys = plan.group_keys + ((GroupKey(spec.key_column, "__key"),) if spec.key_column else ())
    aggs = (Aggregate(AggFunc.COUNT, None, "__n"),) + tuple(
        Aggregate(AggFunc.SUM, c, f"__s{i}") for i, c in enumerate(spec.value_columns))
    output = tuple(OutputColumn(k.alias, "group", i) for i, k in enumerate(keys)) + tuple(
        OutputColumn(a.alias, "aggregate", i) for i, a in enumerate(aggs))
    return QueryPlan(plan.dataset, keys, aggs, plan.where, output)


def cells_for_groups(spec: WeightedSpec, groups: list[tuple[str, ...]], stats: AggregateResult,
                     key: PublicKey, k: int, *, obfuscation: Obfuscation = "djn",
                     zero: frozenset | set = frozenset()) -> list[bytes]:
    """One obfuscated ciphertext per group, in the order of ``groups`` (``obfuscation``: the
    node's ``[crypto] obfuscation``; ``zero``: sub-cells, group keys plus category, held back)."""
    weights = [Ciphertext.from_bytes(key, w) for w in spec.weights]
    top = max(spec.value_scales, default=0)
    rescale = [10 ** (top - s) for s in spec.value_scales]
    if spec.key_column:
        table: dict[tuple[str, ...], list[int]] = {}
        index = {c: j for j, c in enumerate(spec.categories)}
        for g in stats.groups:
            j = index.get(g.keys[-1])
            if j is None or g.rows < k or any(c.count < k for c in g.columns.values()) or g.keys in zero:
                # Outside the declared domain, or a (group, category) cell below k: contributes zero.
                continue
            row = table.setdefault(g.keys[:-1], [0] * len(spec.categories))
            row[j] = g.columns[spec.value_columns[0]].total if spec.value_columns else g.rows
        vectors = [table.get(grp, [0] * len(spec.categories)) for grp in groups]
    else:
        by = {g.keys: g for g in stats.groups}
        vectors = []
        for grp in groups:
            g = by.get(grp)
            vectors.append([g.columns[c].total * r for c, r in zip(spec.value_columns, rescale)]
                           if g is not None else [0] * len(spec.value_columns))
    return [dot(weights, vec, obfuscation=obfuscation).to_bytes() for vec in vectors]
