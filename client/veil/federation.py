"""The analyst's side of a federated query: send it to any member, decrypt the total locally.

``node.federated_query(sql, purpose=..., protocol="paillier" | "sharing")`` sends the query
with the analyst's public key to the node it is connected to (the coordinator), receives the
combined result and decrypts it here. The result carries, per released group, the sufficient
statistics (rows, and per aggregated column its count, sum and -- for VAR/STDDEV -- sum of
squares); each aggregate is derived from them exactly as a node derives its own cells
(fixed point, round half to even, exact integer square roots), so a federated AVG reads like a
single-node AVG. What the analyst learns is those statistics of the released groups, nothing
about any member's own part; suppressed groups carry nothing.

Decoding. PAILLIER: a slot holds sum_i (v_i - low) over ``terms`` members, so a value is
slot + terms * low. SHARING: a slot holds the sum of ``terms`` shares in [0, 2^B), so a value
is the slot mod 2^B, read as a signed B-bit integer.

A member that refuses or cannot be reached fails the whole query: the SDK raises
:class:`FederationFailed` with ``node`` naming it, and no result exists.
"""

from __future__ import annotations

import hashlib
import uuid
from concurrent.futures import Executor
from decimal import Decimal
from fractions import Fraction
from math import isqrt
from typing import TYPE_CHECKING, Sequence


from .crypto import Ciphertext, PackingLayout, PrivateKey
from .errors import IntegrityError, VeilError
from .results import describe
from .v1 import federation_pb2, federation_pb2_grpc, query_pb2

if TYPE_CHECKING:
    import pandas as pd

    from .connection import Connection

PROTOCOLS = {"paillier": federation_pb2.FEDERATION_PROTOCOL_PAILLIER,
             "sharing": federation_pb2.FEDERATION_PROTOCOL_SHARING}
DERIVED_DIGITS = 12  # as the node: AVG/STDDEV keep 12 more digits than the column, VAR 12 more than 2x
KEY, AGG = query_pb2.ResultColumn.KIND_GROUP_KEY, query_pb2.ResultColumn.KIND_AGGREGATE
_S = federation_pb2.StatisticSection
_STAT_NAMES = {_S.STATISTIC_ROWS: "ROWS", _S.STATISTIC_COUNT: "COUNT", _S.STATISTIC_SUM: "SUM",
               _S.STATISTIC_SUM_OF_SQUARES: "SUM_OF_SQUARES"}
FEDERATION_REASONS = ("FEDERATION_PEER_REJECTED", "FEDERATION_PEER_UNAVAILABLE", "FEDERATION_PEER_MISBEHAVED",
                      "FEDERATION_SCHEMA_MISMATCH")


class FederationFailed(VeilError):
    """A member refused its part or could not be reached; nothing was released."""

    @property
    def node(self) -> str:
        return self.metadata.get("node", "")


def run(node: Connection, sql: str, *, purpose: str, protocol: str = "paillier", compute_parties: Sequence[str] = (),
        request_id: str | None = None, timeout: float = 120.0,
        epsilon: float | None = None) -> federation_pb2.FederatedResult:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}")
    pk, _ = node.keys
    request = federation_pb2.RunFederatedQueryRequest(
        sql=sql, purpose=purpose, request_id=request_id or str(uuid.uuid4()),
        public_key=query_pb2.PaillierPublicKey(n=pk.to_bytes()), protocol=PROTOCOLS[protocol],
        compute_parties=list(compute_parties), epsilon=epsilon or 0.0)
    stub = federation_pb2_grpc.FederationServiceStub(node._channel)
    try:
        return node._call(stub.RunFederatedQuery, request, retry=True, timeout=timeout)
    except VeilError as e:
        if e.reason in FEDERATION_REASONS:
            raise FederationFailed(e.message, reason=e.reason, code=e.code, metadata=e.metadata) from None
        raise


def list_federated(node: Connection) -> federation_pb2.ListFederatedDatasetsResponse:
    stub = federation_pb2_grpc.FederationServiceStub(node._channel)
    return node._call(stub.ListFederatedDatasets, federation_pb2.ListFederatedDatasetsRequest(), retry=True)


def result_digest(result: federation_pb2.FederatedResult) -> str:
    copy = federation_pb2.FederatedResult()
    copy.CopyFrom(result)
    copy.result_digest = ""
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def decrypt_sections(result: federation_pb2.FederatedResult, private_key: PrivateKey, *,
                     workers: int = 1, executor: Executor | None = None) -> dict[tuple[str, str], list[int]]:
    """(statistic, column) -> the totals of the released groups, in row order. Checked first."""
    pk = private_key.public_key
    if result.public_key_fingerprint != pk.fingerprint():
        raise IntegrityError("the result is encrypted under a different key than this keyring's",
                             reason="KEY_MISMATCH")
    if result.result_digest != result_digest(result):
        raise IntegrityError("the result does not match its digest", reason="DIGEST_MISMATCH")
    released = sum(1 for r in result.rows if not r.suppressed)
    sharing = result.protocol == federation_pb2.FEDERATION_PROTOCOL_SHARING
    out: dict[tuple[str, str], list[int]] = {}
    for s in result.sections:
        cells = s.cells
        if cells.cell_count != released or s.terms < 1:
            raise IntegrityError("a section does not match the released rows", reason="SHAPE_MISMATCH")
        if released and not 0 < cells.slot_bits * cells.slots_per_ciphertext < pk.bits - 2:
            raise IntegrityError("a section's packing does not fit the key", reason="SHAPE_MISMATCH")
        if len(cells.ciphertexts) != (-(-released // cells.slots_per_ciphertext) if released else 0):
            raise IntegrityError("a section's ciphertexts do not match its cells", reason="SHAPE_MISMATCH")
        raw = []
        if released:
            layout = PackingLayout(slot_bits=cells.slot_bits, slots=cells.slots_per_ciphertext, low=0,
                                   high=(1 << cells.slot_bits) - 1, terms=1, key_bits=pk.bits)
            plaintexts = private_key.decrypt_raw_many([Ciphertext.from_bytes(pk, c) for c in cells.ciphertexts],
                                                      workers=workers, executor=executor)
            raw = layout.unpack(plaintexts, released)
        if sharing:
            if s.share_ring_bits < 64 or s.share_ring_bits % 64:
                raise IntegrityError("a section names an invalid share ring", reason="SHAPE_MISMATCH")
            m, half = 1 << s.share_ring_bits, 1 << (s.share_ring_bits - 1)
            values = [v % m - m if v % m >= half else v % m for v in raw]
        else:
            offset = s.terms * int(cells.slot_offset)
            values = [v + offset for v in raw]
        out[(_STAT_NAMES.get(s.statistic, "?"), s.column)] = values
    return out


def _round(x: Fraction) -> int:
    return round(x)


def cell(function: str, column: str, scale: int, stats: dict[tuple[str, str], list[int]], i: int,
         col_scale: int, value_range: tuple[float, float] | None = None) -> int:
    """The fixed-point cell of one aggregate for released row ``i`` (as ``release.cell_value``).

    Noisy statistics (DP, ``value_range`` the column's declared range) can give an average
    outside the range or a negative variance: such cells are clamped back (post-processing)."""
    if function == "COUNT":
        return stats[("ROWS", "")][i] if not column else stats[("COUNT", column)][i]
    n, total = stats[("COUNT", column)][i], stats[("SUM", column)][i]
    if function == "SUM":
        return total
    if function == "AVG":
        v = _round(Fraction(total * 10 ** (scale - col_scale), max(n, 1)))
        if value_range is not None:
            lo, hi = (round(Fraction(x) * 10**scale) for x in value_range)
            v = max(lo, min(hi, v))
        return v
    squares = stats[("SUM_OF_SQUARES", column)][i]
    var = max(Fraction(0), Fraction(n * squares - total * total, max(n * (n - 1), 1)))
    if function == "VAR_SAMP":
        return _round(var * 10 ** (scale - 2 * col_scale))
    x = var * 10 ** (2 * scale - 2 * col_scale)
    r = isqrt(x.numerator // x.denominator)
    if 4 * r * r + 4 * r + 1 <= 4 * x:
        r += 1
    return r


def to_frame(result: federation_pb2.FederatedResult, private_key: PrivateKey, *, exact: bool = False,
             workers: int = 1, executor: Executor | None = None) -> pd.DataFrame:
    """Group keys, derived aggregates and ``suppressed``, one row per group of the domain."""
    stats = decrypt_sections(result, private_key, workers=workers, executor=executor)
    col_scales = {s.column: s.scale for s in result.sections if s.column}
    columns = list(result.columns)
    data: dict[str, list] = {c.name: [] for c in columns}
    i = 0
    for row in result.rows:
        keys = iter(row.keys)
        for c in columns:
            if c.kind == KEY:
                data[c.name].append(_key(next(keys), c.numeric_key))
            elif row.suppressed:
                data[c.name].append(None)
            else:
                bounds = None
                if c.HasField("noise") and c.noise.spread:
                    bounds = (c.noise.centre - c.noise.spread / 2, c.noise.centre + c.noise.spread / 2)
                v = cell(c.function, c.source_column, c.scale, stats, i, col_scales.get(c.source_column, 0), bounds)
                data[c.name].append(v if c.scale == 0 else (Decimal(v).scaleb(-c.scale) if exact
                                                             else float(Decimal(v).scaleb(-c.scale))))
        if not row.suppressed:
            i += 1
    import pandas as pd

    frame = pd.DataFrame(data)
    for c in columns:
        if c.kind == AGG and c.scale == 0 and not exact:
            frame[c.name] = frame[c.name].astype("Int64")
        elif c.kind == AGG and not exact:
            frame[c.name] = frame[c.name].astype("float64")
    frame["suppressed"] = [r.suppressed for r in result.rows]
    frame.attrs["federated_query"] = result.name
    frame.attrs["participants"] = list(result.participants)
    frame.attrs["protocol"] = "sharing" if result.protocol == federation_pb2.FEDERATION_PROTOCOL_SHARING else "paillier"
    describe(frame, result.disclosure_mode, result.epsilon, columns)
    return frame


def _key(text: str, numeric: bool):
    if not numeric:
        return text
    d = Decimal(text)
    return int(d) if d == d.to_integral_value() else float(d)
