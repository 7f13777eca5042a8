"""What crosses the wire and what lands in the state store holds no released value in plaintext.

We run a real query, decrypt its result (so we know every released value), then scan the raw
bytes of every response the node sent (the receipt included) and the node's SQLite files (the
state store and the audit log, databases and WALs, and an audit export) for each
value in every plausible plaintext encoding: decimal text, fixed-point text, 8-byte big- and
little-endian integers, protobuf varints and IEEE doubles. A positive control proves the scanner
finds values where they are present.
"""

from __future__ import annotations

import io
import struct
from decimal import Decimal

import grpc

from veil.v1 import audit_pb2, query_pb2

SQL = "SELECT region, COUNT(*) AS n, SUM(cost) AS total, AVG(cost) AS avg_cost FROM patients GROUP BY region"


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def encodings(fixed: int, scale: int) -> list[bytes]:
    """Ways a released cell (fixed-point integer ``fixed`` at ``scale``) could appear in clear."""
    value = Decimal(fixed).scaleb(-scale)
    out = [str(fixed).encode(), format(value, "f").encode(), repr(float(value)).encode(), varint(fixed),
           struct.pack("<d", float(value)), struct.pack(">d", float(value))]
    if fixed < 2**63:
        out += [struct.pack("<q", fixed), struct.pack(">q", fixed)]
    return out


def released_cells(result: query_pb2.QueryResult, sk) -> list[tuple[int, int]]:
    from veil.results import decrypt_cells

    scales = [c.scale for c in result.columns if c.kind == query_pb2.ResultColumn.KIND_AGGREGATE]
    cells = decrypt_cells(result, sk)
    return [(v, scales[i % len(scales)]) for i, v in enumerate(cells)]


def leaks(blob: bytes, cells) -> list[str]:
    found = []
    for fixed, scale in cells:
        if abs(fixed) < 100_000:  # short numbers occur by chance in any binary blob
            continue
        for enc in encodings(fixed, scale):
            if enc in blob:
                found.append(f"{fixed}@{scale} as {enc!r}")
    return found


def test_no_released_value_on_the_wire_or_in_the_store(alice, demo_node):
    _, sk = alice.keys
    pk_msg = query_pb2.PaillierPublicKey(n=alice.keys[0].to_bytes())
    md = [("authorization", f"Bearer {demo_node.tokens['alice']}")]
    wire: list[bytes] = []
    with grpc.insecure_channel(demo_node.target) as ch:
        raw = lambda m, ser: ch.unary_unary(m, request_serializer=ser, response_deserializer=None)  # noqa: E731
        ser = lambda msg: msg.SerializeToString()  # noqa: E731
        submitted = raw("/veil.v1.QueryService/SubmitQuery", ser)(
            query_pb2.SubmitQueryRequest(sql=SQL, purpose="research", public_key=pk_msg, request_id="wire-scan"),
            metadata=md)
        wire.append(submitted)
        name = query_pb2.Query.FromString(submitted).name
        alice.wait(name)
        wire.append(raw("/veil.v1.QueryService/GetQuery", ser)(query_pb2.GetQueryRequest(name=name), metadata=md))
        result_bytes = raw("/veil.v1.QueryService/GetQueryResult", ser)(
            query_pb2.GetQueryResultRequest(name=name), metadata=md)
        wire.append(result_bytes)
        wire.append(raw("/veil.v1.QueryService/ListQueries", ser)(query_pb2.ListQueriesRequest(), metadata=md))
        wire.append(raw("/veil.v1.AuditService/GetReceipt", ser)(audit_pb2.GetReceiptRequest(name=name), metadata=md))

    result = query_pb2.QueryResult.FromString(result_bytes)
    cells = released_cells(result, sk)
    assert len(cells) == 8 * 3
    checked = [c for c in cells if abs(c[0]) >= 100_000]
    assert len(checked) >= 16, "the scan must cover most cells (sums and averages)"

    # Positive control: the scanner finds values where they are in clear.
    clear = b"|".join(str(v).encode() for v, _ in cells)
    assert leaks(clear, cells)

    for blob in wire:
        assert not leaks(blob, cells)

    state = demo_node.running.node.config.state_dir
    files = [p for p in state.iterdir() if p.name.startswith(("state.db", "audit.db"))]
    assert {"state.db", "audit.db"} <= {p.name for p in files}
    for path in files:
        assert not leaks(path.read_bytes(), cells), path.name
    export = io.BytesIO()
    demo_node.running.node.audit.log.export(export)
    assert b"query.release" in export.getvalue() and not leaks(export.getvalue(), cells)
