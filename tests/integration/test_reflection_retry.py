"""Issue 20: server reflection answers under grpc.reflection.v1 as well as v1alpha, and a rate-limit
refusal carries google.rpc.RetryInfo next to ErrorInfo's retry_after_ms (kept for older clients)."""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from veil.v1 import catalog_pb2
from veil_server.api.server import run_server
from veil_server.cli.demo import init_node_folder
from veil_server.config import load_config


def _reflect(channel: grpc.Channel, version: str, request_fields: dict):
    """One request on the reflection stream of ``version``, with messages built from that
    version's own descriptors (v1's from the pool, as a client that compiled v1 would have)."""
    pool = descriptor_pool.Default()
    request_cls = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"grpc.reflection.{version}.ServerReflectionRequest"))
    response_cls = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"grpc.reflection.{version}.ServerReflectionResponse"))
    call = channel.stream_stream(f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                                 request_serializer=request_cls.SerializeToString,
                                 response_deserializer=response_cls.FromString)
    return next(iter(call(iter([request_cls(**request_fields)]), timeout=10)))


def test_reflection_v1_and_v1alpha(demo_node):
    with grpc.insecure_channel(demo_node.target) as ch:
        for version in ("v1", "v1alpha"):
            listed = _reflect(ch, version, {"list_services": ""})
            names = {s.name for s in listed.list_services_response.service}
            assert {"veil.v1.QueryService", "veil.v1.CatalogService", "grpc.health.v1.Health",
                    "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"} <= names
            found = _reflect(ch, version, {"file_containing_symbol": "veil.v1.QueryService"})
            files = [descriptor_pb2.FileDescriptorProto.FromString(b)
                     for b in found.file_descriptor_response.file_descriptor_proto]
            assert any(f.package == "veil.v1" and any(s.name == "QueryService" for s in f.service) for f in files)
        # The v1 service describes itself under its own package.
        own = _reflect(ch, "v1", {"file_containing_symbol": "grpc.reflection.v1.ServerReflection"})
        first = descriptor_pb2.FileDescriptorProto.FromString(own.file_descriptor_response.file_descriptor_proto[0])
        assert first.package == "grpc.reflection.v1" and first.service[0].name == "ServerReflection"
        assert first.service[0].method[0].input_type == ".grpc.reflection.v1.ServerReflectionRequest"
        missing = _reflect(ch, "v1", {"file_containing_symbol": "veil.v1.NoSuchService"})
        assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


def test_rate_limit_refusal_carries_retry_info(tmp_path):
    folder = tmp_path / "node"
    tokens = init_node_folder(folder, rows=500)  # development mode: plaintext on loopback
    with open(folder / "veil.toml", "a") as f:
        f.write("\n[limits]\nrequests_per_second = 0.1\nburst = 1\n")  # one call, then one per 10 s
    config = load_config(folder / "veil.toml", env={})
    with run_server(config, listen="127.0.0.1:0", grace=1.0) as running, \
            grpc.insecure_channel(running.target) as ch:
        list_datasets = ch.unary_unary("/veil.v1.CatalogService/ListDatasets",
                                       request_serializer=catalog_pb2.ListDatasetsRequest.SerializeToString,
                                       response_deserializer=catalog_pb2.ListDatasetsResponse.FromString)
        metadata = (("authorization", f"Bearer {tokens['alice']}"),)
        list_datasets(catalog_pb2.ListDatasetsRequest(), metadata=metadata, timeout=10)  # the burst
        refusal = None
        for _ in range(20):  # the bucket holds one call per 10 s: one of these is refused
            try:
                list_datasets(catalog_pb2.ListDatasetsRequest(), metadata=metadata, timeout=10)
            except grpc.RpcError as e:
                refusal = e
                break
        assert refusal is not None and refusal.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        status = rpc_status.from_call(refusal)
        infos, retries = [], []
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                infos.append(error_details_pb2.ErrorInfo())
                detail.Unpack(infos[-1])
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retries.append(error_details_pb2.RetryInfo())
                detail.Unpack(retries[-1])
        assert len(infos) == 1 and infos[0].reason == "RATE_LIMITED"
        assert len(retries) == 1
        legacy_ms = int(infos[0].metadata["retry_after_ms"])
        delay = retries[0].retry_delay
        assert delay.seconds * 1000 + delay.nanos // 1_000_000 == legacy_ms
        assert 1 <= legacy_ms <= 10_001  # at most one token's worth of waiting at 0.1 calls per second

        # The SDK reads it too (from RetryInfo, or the old metadata).
        from veil.errors import from_rpc_error
        assert from_rpc_error(refusal).metadata["retry_after_ms"] == str(legacy_ms)
