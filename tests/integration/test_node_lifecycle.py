"""The node as a service: restarts lose nothing, generic gRPC tools can discover and call it,
and every RPC declares who may call it."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

import veil
from veil.crypto import PublicKey
from veil.v1 import audit_pb2, catalog_pb2, federation_pb2, query_pb2
from veil_server.access.auth import METHOD_ROLES, PEER_SIGNED
from veil_server.config import load_config
from veil_server.cli.demo import init_node_folder
from veil_server.state.lifecycle import QueryState
from veil_server.api.server import run_server
from veil_server.node import Node


@pytest.fixture()
def small_node_folder(tmp_path):
    tokens = init_node_folder(tmp_path / "node", rows=3_000, disclosure="exact")
    return tmp_path / "node", tokens


def test_state_survives_restart(small_node_folder, analyst_home):
    folder, tokens = small_node_folder
    config = load_config(folder / "veil.toml", env={})
    sql = "SELECT sex, COUNT(*) AS n, AVG(cost) AS c FROM patients GROUP BY sex"
    with run_server(config, listen="127.0.0.1:0", grace=1) as running:
        with veil.connect(running.target, token=tokens["alice"], home=analyst_home) as alice:
            info = alice.submit(sql, purpose="research", request_id="survive-1")
            before = alice.wait(info.name)
    with run_server(config, listen="127.0.0.1:0", grace=1) as running:
        with veil.connect(running.target, token=tokens["alice"], home=analyst_home) as alice:
            after_info = alice.get(info.name)
            assert after_info.state == "SUCCEEDED"
            assert [h[0] for h in after_info.history] == ["PENDING_APPROVAL", "APPROVED", "RUNNING", "SUCCEEDED"]
            assert alice.result(info.name).equals(before)
            # The idempotency record survived too: a retry after the restart is the same query.
            assert alice.submit(sql, purpose="research", request_id="survive-1").name == info.name


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("crashed_in", [QueryState.APPROVED, QueryState.RUNNING])
def test_acknowledged_query_interrupted_by_a_crash_is_completed(small_node_folder, analyst_home, crashed_in,
                                                                backend, request):
    """A query acknowledged (approved or running) when the node died runs again on start: with
    the state in SQLite, and in PostgreSQL (a replica that died with a run it had not recorded)."""
    folder, tokens = small_node_folder
    if backend == "postgres":
        from tests.integration.test_governance_walkthrough import use_postgres_state

        use_postgres_state(folder, request.getfixturevalue("state_postgres"))
    config = load_config(folder / "veil.toml", env={})
    with veil.connect("127.0.0.1:1", home=analyst_home) as offline:
        pk: PublicKey = offline.keys[0]
    rec = crash_with_acknowledged_query(config, pk, running=crashed_in is QueryState.RUNNING)

    with run_server(config, listen="127.0.0.1:0", grace=1) as running:
        with veil.connect(running.target, token=tokens["alice"], home=analyst_home) as alice:
            df = alice.wait(rec.id, timeout=60)
            assert df["count"].sum() > 0
            states = [h[0] for h in alice.get(rec.id).history]
    assert states[-1] == "SUCCEEDED"
    if crashed_in is QueryState.RUNNING:
        assert states.count("RUNNING") == 2  # re-queued after the restart, then run once more


def crash_with_acknowledged_query(config, pk: PublicKey, *, running: bool):
    """A node that accepted (and approved) a query, logged like any, and died before running it
    (or while running it: RUNNING is a claim, not logged): no stop entry, nothing executed."""
    node = Node(config)
    node._pool.shutdown()  # nothing runs: the "crash" comes first
    alice = next(p for p in config.principals if p.name == "alice")
    sub = node.submit(alice, sql="SELECT region, COUNT(*) FROM patients GROUP BY region", purpose="research",
                      public_key=pk.to_bytes(), request_id="crash-1")
    assert sub.query.state is QueryState.APPROVED
    if running:
        node.store.transition(sub.query.id, QueryState.RUNNING, "EXECUTION_STARTED", "test")
    node._closed.set()
    node.store.close()
    node.audit.close()
    return sub.query


def test_health_and_reflection_for_generic_clients(demo_node):
    with grpc.insecure_channel(demo_node.target) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("", "veil.v1.QueryService", "veil.v1.CatalogService", "veil.v1.AuditService"):
            resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        db = ProtoReflectionDescriptorDatabase(ch)
        services = set(db.get_services())
        assert {"veil.v1.QueryService", "veil.v1.CatalogService", "veil.v1.AuditService",
                "grpc.health.v1.Health"} <= services
        pool = descriptor_pool.DescriptorPool(db)
        submit = pool.FindServiceByName("veil.v1.QueryService").FindMethodByName("SubmitQuery")
        assert submit.input_type.full_name == "veil.v1.SubmitQueryRequest"


def _all_proto_files():
    """Every generated module of the contract, found on disk: a new .proto is covered unasked."""
    import importlib
    import pkgutil

    import veil.v1

    return [importlib.import_module(f"veil.v1.{m.name}").DESCRIPTOR
            for m in pkgutil.iter_modules(veil.v1.__path__) if m.name.endswith("_pb2")]


def test_every_rpc_declares_its_roles():
    """Deny by default: a method added to the proto without a rule fails here."""
    methods = {
        f"/{svc.full_name}/{m.name}"
        for fd in _all_proto_files()
        for svc in fd.services_by_name.values()
        for m in svc.methods
    }
    assert methods == set(METHOD_ROLES), methods ^ set(METHOD_ROLES)
    # Node-to-node methods take no token role: a signed peer envelope is their credential.
    assert all(METHOD_ROLES[m] or METHOD_ROLES[m] is PEER_SIGNED for m in methods)


def test_undeclared_method_is_refused(demo_node, monkeypatch):
    monkeypatch.delitem(METHOD_ROLES, "/veil.v1.CatalogService/ListDatasets")
    with grpc.insecure_channel(demo_node.target) as ch:
        call = ch.unary_unary("/veil.v1.CatalogService/ListDatasets",
                              request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=catalog_pb2.ListDatasetsResponse.FromString)
        with pytest.raises(grpc.RpcError) as e:
            call(catalog_pb2.ListDatasetsRequest(),
                 metadata=[("authorization", f"Bearer {demo_node.tokens['adam']}")], timeout=5)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_malformed_requests(alice, demo_node):
    md = [("authorization", f"Bearer {demo_node.tokens['alice']}")]
    with grpc.insecure_channel(demo_node.target) as ch:
        submit = ch.unary_unary("/veil.v1.QueryService/SubmitQuery",
                                request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=query_pb2.Query.FromString)
        cases = [
            (query_pb2.SubmitQueryRequest(sql="SELECT COUNT(*) FROM patients", purpose="research", request_id="m1"),
             "PUBLIC_KEY_REQUIRED"),
            (query_pb2.SubmitQueryRequest(sql="SELECT COUNT(*) FROM patients", purpose="research", request_id="m2",
                                          public_key=query_pb2.PaillierPublicKey(n=b"\x01" * 64)), "INVALID_PUBLIC_KEY"),
            (query_pb2.SubmitQueryRequest(sql="SELECT COUNT(*) FROM patients", purpose="research", request_id="m3",
                                          public_key=query_pb2.PaillierPublicKey(n=b"\xff" * 256)), "INVALID_PUBLIC_KEY"),
            (query_pb2.SubmitQueryRequest(sql="SELECT COUNT(*) FROM patients", purpose="research",
                                          public_key=query_pb2.PaillierPublicKey(n=alice.keys[0].to_bytes())),
             "REQUEST_ID_REQUIRED"),
            (query_pb2.SubmitQueryRequest(sql="SELECT COUNT(*) FROM patients", request_id="m4",
                                          public_key=query_pb2.PaillierPublicKey(n=alice.keys[0].to_bytes())),
             "PURPOSE_REQUIRED"),
        ]
        for req, reason in cases:
            with pytest.raises(grpc.RpcError) as e:
                submit(req, metadata=md, timeout=10)
            err = veil.errors.from_rpc_error(e.value)
            assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    with pytest.raises(veil.InvalidRequest) as e:
        alice._call(alice._queries.ListQueries, query_pb2.ListQueriesRequest(page_token="garbage!"))
    assert e.value.reason == "INVALID_PAGE_TOKEN"
