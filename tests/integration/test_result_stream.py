"""Streamed results over real gRPC (issue 22): the SDK reads results through StreamQueryResult,
the stream reassembles to GetQueryResult's bytes, and it is refused as GetQueryResult is."""

from __future__ import annotations

import duckdb
import grpc
import pytest

from veil.results import assemble_stream
from veil.v1 import query_pb2, query_pb2_grpc

SQL = ("SELECT region, FLOOR(age / 5) * 5 AS band, COUNT(*) AS n, SUM(length_of_stay) AS stay FROM patients "
       "GROUP BY region, band")


def test_the_sdk_streams_results_and_they_equal_the_raw_data(demo_node, alice, monkeypatch) -> None:
    calls: list[str] = []
    stream = alice._queries.StreamQueryResult

    def counted(*args, **kwargs):
        calls.append("stream")
        return stream(*args, **kwargs)

    monkeypatch.setattr(alice._queries, "StreamQueryResult", counted)
    monkeypatch.setattr(alice._queries, "GetQueryResult", None)  # any use of the unary call fails
    frame = alice.query(SQL, purpose="research")
    assert calls == ["stream"]
    ref = duckdb.connect().execute(
        f"SELECT region, FLOOR(age / 5) * 5 AS band, COUNT(*) AS n, SUM(length_of_stay) AS stay "
        f"FROM read_csv_auto('{demo_node.csv}') GROUP BY region, band").df()
    ref = {(r.region, int(r.band)): (int(r.n), int(r.stay)) for r in ref.itertuples()}
    released = frame[~frame["suppressed"]]
    assert len(released) > 40  # many cells: several ciphertexts, several chunks
    for row in released.itertuples():
        assert ref[(row.region, int(row.band))] == (row.n, row.stay)


def test_the_stream_is_the_unary_result_in_chunks(alice) -> None:
    info = alice.submit(SQL, purpose="research")
    alice.wait(info.name)
    stub = query_pb2_grpc.QueryServiceStub(alice._channel)
    md = alice._metadata()
    whole = stub.GetQueryResult(query_pb2.GetQueryResultRequest(name=info.name), metadata=md)
    chunks = list(stub.StreamQueryResult(query_pb2.StreamQueryResultRequest(name=info.name, chunk_ciphertexts=1),
                                         metadata=md))
    assert len(chunks) == len(whole.cells.ciphertexts) + len(whole.weighted_cells) >= 3
    assert all(len(c.ciphertexts) == 1 for c in chunks)
    got = assemble_stream(chunks)
    assert got.SerializeToString(deterministic=True) == whole.SerializeToString(deterministic=True)
    default = list(stub.StreamQueryResult(query_pb2.StreamQueryResultRequest(name=info.name), metadata=md))
    assert assemble_stream(default).SerializeToString(deterministic=True) == whole.SerializeToString(deterministic=True)


def test_the_stream_is_refused_as_the_unary_call_is(alice, bob) -> None:
    info = alice.submit(SQL, purpose="research")
    alice.wait(info.name)
    stub = query_pb2_grpc.QueryServiceStub(alice._channel)
    with pytest.raises(grpc.RpcError) as bad:
        list(stub.StreamQueryResult(query_pb2.StreamQueryResultRequest(name=info.name, chunk_ciphertexts=5000),
                                    metadata=alice._metadata()))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "chunk_ciphertexts" in bad.value.details()
    other = query_pb2_grpc.QueryServiceStub(bob._channel)
    with pytest.raises(grpc.RpcError) as unary:
        other.GetQueryResult(query_pb2.GetQueryResultRequest(name=info.name), metadata=bob._metadata())
    with pytest.raises(grpc.RpcError) as streamed:
        list(other.StreamQueryResult(query_pb2.StreamQueryResultRequest(name=info.name), metadata=bob._metadata()))
    assert streamed.value.code() == unary.value.code() != grpc.StatusCode.OK
    assert streamed.value.details() == unary.value.details()
