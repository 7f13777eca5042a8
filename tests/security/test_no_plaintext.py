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


def query_and_scan_wire(alice, target: str, token: str) -> list[tuple[int, int]]:
    """Run SQL as alice over raw gRPC, check no response carries a released value in clear,
    and return the released cells (fixed-point value, scale) for scanning storage."""
    _, sk = alice.keys
    pk_msg = query_pb2.PaillierPublicKey(n=alice.keys[0].to_bytes())
    md = [("authorization", f"Bearer {token}")]
    wire: list[bytes] = []
    with grpc.insecure_channel(target) as ch:
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
    return cells


def test_no_released_value_on_the_wire_or_in_the_store(alice, demo_node):
    cells = query_and_scan_wire(alice, demo_node.target, demo_node.tokens["alice"])
    state = demo_node.running.node.config.state_dir
    files = [p for p in state.iterdir() if p.name.startswith(("state.db", "audit.db"))]
    assert {"state.db", "audit.db"} <= {p.name for p in files}
    for path in files:
        assert not leaks(path.read_bytes(), cells), path.name
    export = io.BytesIO()
    demo_node.running.node.audit.log.export(export)
    assert b"query.release" in export.getvalue() and not leaks(export.getvalue(), cells)


def test_no_released_value_in_the_shared_postgres_state(tmp_path, analyst_home, state_postgres):
    """Replicas' state (issue 9): every table of the node's two schemas, dumped in PostgreSQL's
    binary and text formats, holds no released value either."""
    import psycopg

    import veil
    from tests.integration.test_governance_walkthrough import use_postgres_state
    from veil_server.config import load_config
    from veil_server.cli.demo import init_node_folder
    from veil_server.api.server import run_server

    tokens = init_node_folder(tmp_path / "node", rows=20_000, disclosure="exact")
    use_postgres_state(tmp_path / "node", state_postgres)
    config = load_config(tmp_path / "node" / "veil.toml", env={})
    with run_server(config, listen="127.0.0.1:0", grace=1) as running:
        with veil.connect(running.target, token=tokens["alice"], home=analyst_home) as alice:
            cells = query_and_scan_wire(alice, running.target, tokens["alice"])
    dumps: dict[str, bytes] = {}
    with psycopg.connect(state_postgres, autocommit=True) as conn:
        tables = conn.execute("SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema "
                              "IN (%s, %s)", (config.state.schema, config.state.schema + "_audit")).fetchall()
        for schema, table in tables:
            for fmt in ("binary", "text"):
                buf = bytearray()
                with conn.cursor().copy(f'COPY "{schema}"."{table}" TO STDOUT (FORMAT {fmt})') as copy:
                    for chunk in copy:
                        buf += chunk
                dumps[f"{schema}.{table} ({fmt})"] = bytes(buf)
    names = {k.split(" ")[0].split(".")[1] for k in dumps}
    assert {"queries", "results", "entry", "usage_ledger"} <= names, names
    assert b"query.release" in b"".join(dumps.values())  # the scan reads the real rows
    for where, blob in dumps.items():
        assert not leaks(blob, cells), where
