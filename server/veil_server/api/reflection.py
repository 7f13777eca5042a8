"""Server reflection under both names clients use: ``grpc.reflection.v1`` and ``v1alpha``.

grpcio-reflection implements only ``grpc.reflection.v1alpha.ServerReflection``; current tools
(grpcurl, Postman, buf curl) ask for ``grpc.reflection.v1.ServerReflection`` first. The v1 protocol
is the v1alpha one renamed: the same messages, field for field, so the same bytes on the wire.
The node therefore serves v1 with the v1alpha servicer, and adds a v1 file descriptor (v1alpha's,
renamed) to the descriptor pool so that reflection can describe the v1 service itself.
"""

from __future__ import annotations

from typing import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1ALPHA_SERVICE = reflection.SERVICE_NAME
V1_SERVICE = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"
_ALPHA, _V1 = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."


def _add_v1_descriptor() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_V1_FILE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name, proto.package = _V1_FILE, "grpc.reflection.v1"
    proto.ClearField("options")  # v1alpha's language options name v1alpha packages

    def rename(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
        for m in messages:
            for f in m.field:
                if f.type_name:  # assigning even "" would mark a scalar field as typed
                    f.type_name = f.type_name.replace(_ALPHA, _V1)
            rename(m.nested_type)

    rename(proto.message_type)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(_ALPHA, _V1)
            method.output_type = method.output_type.replace(_ALPHA, _V1)
    pool.AddSerializedFile(proto.SerializeToString())


def enable_reflection(service_names: Iterable[str], server: grpc.Server) -> None:
    """Serve reflection v1 and v1alpha for ``service_names`` (both reflection services added)."""
    _add_v1_descriptor()
    names = tuple(service_names) + (V1_SERVICE, V1ALPHA_SERVICE)
    servicer = reflection.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.method_handlers_generic_handler(V1_SERVICE, {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString),
    })
    server.add_generic_rpc_handlers((v1,))
