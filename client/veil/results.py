"""Decrypting a node's result locally into a pandas DataFrame.

The result is checked before it is trusted: its digest, the key it was encrypted under, the
number and width of its ciphertexts, and the number of cells against the non-suppressed rows.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Executor
from decimal import Decimal
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from .crypto import Ciphertext, ColumnPacking, EncodingOverflow, PackingLayout, PrivateKey, decrypt_packed
from .errors import IntegrityError
from .v1 import query_pb2

if TYPE_CHECKING:
    import pandas as pd

KEY, AGG = query_pb2.ResultColumn.KIND_GROUP_KEY, query_pb2.ResultColumn.KIND_AGGREGATE
WEIGHTED = query_pb2.ResultColumn.KIND_WEIGHTED_SUM


def result_digest(result: query_pb2.QueryResult) -> str:
    copy = query_pb2.QueryResult()
    copy.CopyFrom(result)
    copy.result_digest = ""
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def decrypt_cells(result: query_pb2.QueryResult, private_key: PrivateKey, *, workers: int = 1,
                  executor: Executor | None = None, raw: Sequence[int] | None = None) -> list[int]:
    """The result's aggregate cells, decrypted and unpacked, after checking its key, digest and
    shape. ``raw``: the plaintexts of ``cells.ciphertexts`` already decrypted (in order), as a
    streamed result's chunks were (``assemble_stream``)."""
    pk = private_key.public_key
    if result.public_key_fingerprint != pk.fingerprint():
        raise IntegrityError("the result is encrypted under a different key than this keyring's",
                             reason="KEY_MISMATCH")
    if result.result_digest != result_digest(result):
        raise IntegrityError("the result does not match its digest", reason="DIGEST_MISMATCH")
    cells = result.cells
    aggregates = sum(1 for c in result.columns if c.kind == AGG)
    released = sum(1 for r in result.rows if not r.suppressed)
    if cells.cell_count != released * aggregates:
        raise IntegrityError("the number of cells does not match the released rows", reason="SHAPE_MISMATCH")
    if cells.cell_count == 0:
        return []
    layout = _layout(cells, aggregates, pk.bits)
    if len(cells.ciphertexts) != layout.ciphertexts_for(cells.cell_count):
        raise IntegrityError("the number of ciphertexts does not match the cells", reason="SHAPE_MISMATCH")
    if raw is not None:
        if len(raw) != len(cells.ciphertexts):
            raise IntegrityError("the decrypted chunks do not cover the result's ciphertexts", reason="SHAPE_MISMATCH")
        try:
            return layout.unpack(raw, cells.cell_count)
        except EncodingOverflow:
            raise IntegrityError("a cell does not fit its packing slot", reason="SHAPE_MISMATCH") from None
    cts = [Ciphertext.from_bytes(pk, b) for b in cells.ciphertexts]
    return decrypt_packed(private_key, cts, layout, cells.cell_count, workers=workers, executor=executor)


def assemble_stream(chunks: Iterable[query_pb2.QueryResultChunk],
                    on_cells: Callable[[list[bytes]], None] | None = None) -> query_pb2.QueryResult:
    """The QueryResult a StreamQueryResult carries, checked chunk by chunk: chunk i has index i,
    its offset is the count received before it, nothing comes after the chunk marked last, and at
    the end the counts equal the header's totals. Lost, reordered, duplicated and truncated
    chunks are refused (IntegrityError, STREAM_BROKEN); a substituted ciphertext is caught by the
    result's digest, checked when it is decrypted. ``on_cells`` receives each run of
    ``cells.ciphertexts`` as it arrives (in order), so decryption starts with the first chunk."""
    result: query_pb2.QueryResult | None = None
    total = weighted_total = received = 0
    sequence: list[bytes] = []
    done = False
    for expected, chunk in enumerate(chunks):
        if done:
            raise IntegrityError("a chunk arrived after the last one", reason="STREAM_BROKEN")
        if chunk.index != expected or chunk.offset != received:
            raise IntegrityError(f"chunk {chunk.index} at offset {chunk.offset} arrived where chunk {expected} at "
                                 f"offset {received} was due (lost, reordered or repeated)", reason="STREAM_BROKEN")
        if expected == 0:
            if not chunk.HasField("header"):
                raise IntegrityError("the first chunk carries no result header", reason="STREAM_BROKEN")
            result = query_pb2.QueryResult()
            result.CopyFrom(chunk.header)
            total, weighted_total = chunk.total_ciphertexts, chunk.total_weighted
            if total < 0 or weighted_total < 0 or result.cells.ciphertexts or result.weighted_cells:
                raise IntegrityError("the result header is malformed", reason="STREAM_BROKEN")
        elif chunk.HasField("header"):
            raise IntegrityError("a second result header arrived", reason="STREAM_BROKEN")
        blobs = list(chunk.ciphertexts)
        if received + len(blobs) > total + weighted_total:
            raise IntegrityError("more ciphertexts arrived than the header announced", reason="STREAM_BROKEN")
        cells = blobs[:max(0, total - received)]
        if cells and on_cells is not None:
            on_cells(cells)
        sequence += blobs
        received += len(blobs)
        done = chunk.last
    if result is None or not done or received != total + weighted_total:
        raise IntegrityError("the result stream ended before its last chunk (truncated)", reason="STREAM_BROKEN")
    result.cells.ciphertexts.extend(sequence[:total])
    result.weighted_cells.extend(sequence[total:])
    return result


def _layout(cells: query_pb2.EncryptedCells, aggregates: int, key_bits: int) -> PackingLayout | ColumnPacking:
    """The packing the node declares, rebuilt and checked against the key and the columns."""
    try:
        if cells.column_slot_bits:
            if len(cells.column_slot_bits) != aggregates or len(cells.column_slot_offsets) != aggregates \
                    or cells.slot_bits or cells.slots_per_ciphertext:
                raise ValueError("per-column packing does not match the aggregate columns")
            lows = tuple(_offset(o) for o in cells.column_slot_offsets)
            widths = tuple(cells.column_slot_bits)
            if not all(1 <= w <= cells.plaintext_bits <= key_bits for w in widths):
                raise ValueError("slot widths do not fit the key")
            highs = tuple(low + (1 << w) - 1 for low, w in zip(lows, widths))
            return ColumnPacking(lows, highs, widths, cells.plaintext_bits, key_bits)
        if not 0 < cells.slot_bits * cells.slots_per_ciphertext < key_bits - 2:
            raise ValueError("the packing layout does not fit the key")
        low = _offset(cells.slot_offset)
        return PackingLayout(slot_bits=cells.slot_bits, slots=cells.slots_per_ciphertext, low=low,
                             high=low + (1 << cells.slot_bits) - 1, terms=1, key_bits=key_bits)
    except (ValueError, EncodingOverflow):
        raise IntegrityError("the packing layout does not fit the key", reason="SHAPE_MISMATCH") from None


def _offset(text: str) -> int:
    if not 0 < len(text) <= 4000:  # a slot offset is a few dozen digits; refuse giant strings
        raise ValueError("slot offset")
    return int(text)


def decrypt_weighted(result: query_pb2.QueryResult, private_key: PrivateKey, *, workers: int = 1,
                     executor: Executor | None = None) -> list[int]:
    """Encrypted-input sums: one signed fixed-point value per (released row, weighted column)."""
    pk = private_key.public_key
    columns = sum(1 for c in result.columns if c.kind == WEIGHTED)
    released = sum(1 for r in result.rows if not r.suppressed)
    if len(result.weighted_cells) != columns * released:
        raise IntegrityError("the number of weighted-sum cells does not match the released rows",
                             reason="SHAPE_MISMATCH")
    return private_key.decrypt_many([Ciphertext.from_bytes(pk, b) for b in result.weighted_cells], workers=workers,
                                    executor=executor)


def to_frame(result: query_pb2.QueryResult, private_key: PrivateKey, *, exact: bool = False,
             workers: int = 1, executor: Executor | None = None, raw_cells: Sequence[int] | None = None) -> pd.DataFrame:
    """Group keys, decrypted aggregates and a ``suppressed`` flag, one row per group.

    Suppressed groups keep their row (with missing aggregates), never silently dropped.
    ``exact=True`` gives ``Decimal`` aggregates instead of floats. ``workers > 1`` decrypts in
    that many processes (spawned: the calling script needs an ``if __name__ == "__main__":`` guard);
    ``executor`` decrypts on it instead (it receives p and q: ``veil.crypto.pool``).
    """
    values = iter(decrypt_cells(result, private_key, workers=workers, executor=executor, raw=raw_cells))
    weighted = iter(decrypt_weighted(result, private_key, workers=workers, executor=executor))
    columns = list(result.columns)
    data: dict[str, list] = {c.name: [] for c in columns}
    for row in result.rows:
        keys = iter(row.keys)
        for c in columns:
            if c.kind == KEY:
                data[c.name].append(_key(next(keys), c.numeric_key))
            elif row.suppressed:
                data[c.name].append(None)
            elif c.kind == WEIGHTED:
                data[c.name].append(_cell(next(weighted), c.scale, exact))
            else:
                data[c.name].append(_cell(next(values), c.scale, exact))
    import pandas as pd  # on first use: `import veil` does not load pandas

    frame = pd.DataFrame(data)
    for c in columns:
        if c.kind in (AGG, WEIGHTED) and c.scale == 0 and not exact:
            frame[c.name] = frame[c.name].astype("Int64")
        elif c.kind in (AGG, WEIGHTED) and not exact:
            frame[c.name] = frame[c.name].astype("float64")
    frame["suppressed"] = [r.suppressed for r in result.rows]
    describe(frame, result.disclosure_mode, result.epsilon, columns)
    # A consent dataset: the digest of the consent state the figures were computed under.
    frame.attrs["consent_snapshot"] = result.consent_snapshot
    return frame


NOISE_FIELDS = ("mechanism", "epsilon", "terms", "count_scale", "sum_scale", "squares_scale", "centre", "spread",
                "std", "error_bound_95", "centred")


def noise_dict(n) -> dict:
    """A ``ColumnNoise`` as a plain dict (column and function first)."""
    return {"column": n.column, "function": n.function, **{f: getattr(n, f) for f in NOISE_FIELDS}}


def describe(frame: pd.DataFrame, mode: str, epsilon: float, columns) -> None:
    """``frame.attrs``: how the figures were released (and, under DP, each column's noise)."""
    frame.attrs["disclosure"] = mode or "exact"
    frame.attrs["epsilon"] = epsilon
    frame.attrs["noise"] = {c.name: noise_dict(c.noise) for c in columns
                            if c.kind == AGG and c.HasField("noise")}


def _key(text: str, numeric: bool):
    if not numeric:
        return text
    d = Decimal(text)
    return int(d) if d == d.to_integral_value() else float(d)


def _cell(value: int, scale: int, exact: bool):
    if scale == 0:
        return value
    if exact:
        return Decimal(value).scaleb(-scale)
    return value / 10**scale  # int / int is correctly rounded, as float(Decimal) is
