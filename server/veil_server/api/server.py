"""Starting and stopping a node's gRPC server.

``run_server`` is a context manager that binds (port 0 picks a free one), registers the
services, health checking and reflection, and yields the running server with its bound port.
On exit, health turns NOT_SERVING first so balancers drain, then in-flight calls get a grace
period before the server stops.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass
from typing import Any, Iterator

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from veil.v1 import (audit_pb2, audit_pb2_grpc, catalog_pb2, catalog_pb2_grpc, governance_pb2, governance_pb2_grpc,
                     model_pb2, model_pb2_grpc, query_pb2, query_pb2_grpc)

from .audit_service import AuditServicer
from .reflection import enable_reflection
from ..access.auth import AuthInterceptor
from ..config import ConfigError, NodeConfig
from ..crypto_executor import crypto_executor
from .federation_service import SERVICE_NAMES as FEDERATION_SERVICE_NAMES, add_federation_services
from ..node import Node
from .governance_service import GovernanceServicer, ReviewServicer
from .query_service import CatalogServicer, QueryServicer
from .model_service import ModelServicer  # issue 18: regression models
# Issue 8: transport security, identities, limits and the request guard.
from ..access.guard import RequestGuard
from ..access.identity import NodeAuthenticator
from ..access.limits import Limiter
from ..access.memory import return_large_buffers
from ..access.security import bind, check_startable, open_queries, server_options, settings_of, token_verifier
from ..state.storage import StorageMonitor
from ..witness import node_witness
# Issue 19: the web console, on its own port, calling these same handlers through these interceptors.
from ..console import HandlerTable, NodeCalls, start_console
# Issue 20: every call logged and counted (outermost interceptor); Prometheus metrics on their own port.
from ..telemetry import NULL_METRICS, NodeMetrics
from ..telemetry.calls import CallInterceptor

log = logging.getLogger("veil.server")
# sqlglot warns with the analyst's SQL quoted; the node logs queries only through its own audit path.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
SERVICE_NAMES = (
    catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name,
    query_pb2.DESCRIPTOR.services_by_name["QueryService"].full_name,
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
    governance_pb2.DESCRIPTOR.services_by_name["GovernanceService"].full_name,
    governance_pb2.DESCRIPTOR.services_by_name["ReviewService"].full_name,
    model_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,  # issue 18
) + FEDERATION_SERVICE_NAMES  # federation (issue 6)


@dataclass
class RunningNode:
    server: grpc.Server
    node: Node
    port: int
    health: health.HealthServicer
    federation: Any = None  # federation (issue 6): veil_server.api.federation_service.Federation
    mtls_port: int = 0  # issue 8: the mutual-TLS port, 0 without one
    guard: Any = None  # issue 8: veil_server.access.guard.RequestGuard (limits, draining)
    witness: Any = None  # issue 15: veil_server.witness.WitnessServer when [witness] serve is set
    console: Any = None  # issue 19: veil_server.console.app.Console, None when [console] is off
    metrics_port: int = 0  # issue 20: the Prometheus endpoint's port, 0 when [metrics] is off

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextlib.contextmanager
def run_server(config: NodeConfig, *, listen: str | None = None, grace: float = 5.0,
               mtls_listen: str | None = None, console_listen: str | None = None,
               metrics_listen: str | None = None) -> Iterator[RunningNode]:
    # Issue 9: [crypto] executor -- this process's encryption on a Dask cluster while the node
    # runs (refused at start if the cluster does not answer), else the local process pool.
    with crypto_executor(getattr(config, "crypto", None), error=ConfigError):
        with _serve(config, listen=listen, grace=grace, mtls_listen=mtls_listen,
                    console_listen=console_listen, metrics_listen=metrics_listen) as running:
            yield running


@contextlib.contextmanager
def _serve(config: NodeConfig, *, listen: str | None, grace: float, mtls_listen: str | None,
           console_listen: str | None = None, metrics_listen: str | None = None) -> Iterator[RunningNode]:
    security = settings_of(config)
    return_large_buffers()  # issue 15: 15 MiB request buffers go back to the system once freed
    address = listen or config.listen
    check_startable(security, address, error=ConfigError)  # no plaintext outside explicit dev mode
    metrics_settings = getattr(config, "metrics", None)
    metrics = NodeMetrics() if metrics_listen or (metrics_settings and metrics_settings.enabled) else NULL_METRICS
    node = Node(config, metrics=metrics)
    try:
        authenticator = NodeAuthenticator(config, dev_mode=security.dev_mode, tls=security.tls,
                                          verifier=token_verifier(security, issuer=config.name,
                                                                  state_dir=config.state_dir))
    except BaseException:
        node.close()
        raise
    guard = RequestGuard(Limiter(security.limits, open_queries=open_queries(node)),
                         StorageMonitor(config.state_dir, security.limits.min_free_bytes), on_denied=node.audit.denied)
    # Every refusal at the door (no credentials, bad token or certificate, wrong role) is itself
    # audited; then the guard: malformed bytes, per-principal limits, storage, draining.
    interceptors = [CallInterceptor(metrics), AuthInterceptor(authenticator, on_denied=node.audit.denied,
                                    on_data_loss=lambda service: health_servicer.set(
                                        service, health_pb2.HealthCheckResponse.NOT_SERVING),
                                    preauth_slots=security.limits.max_preauth_calls,
                                    client_certs=bool(security.tls and (mtls_listen or security.tls.mtls_listen))),
                    guard]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=security.limits.rpc_threads, thread_name_prefix="veil-rpc"),
        interceptors=interceptors,
        options=server_options(security),
        maximum_concurrent_rpcs=security.limits.max_concurrent_rpcs,
    )
    health_servicer = health.HealthServicer()
    services = HandlerTable(server)  # the console (issue 19) calls these handlers in-process
    catalog_pb2_grpc.add_CatalogServiceServicer_to_server(CatalogServicer(node), services)
    query_pb2_grpc.add_QueryServiceServicer_to_server(QueryServicer(node), services)
    audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(node), services)
    governance_pb2_grpc.add_GovernanceServiceServicer_to_server(GovernanceServicer(node), services)
    governance_pb2_grpc.add_ReviewServiceServicer_to_server(ReviewServicer(node), services)
    federation = add_federation_services(server, node)  # federation (issue 6): PeerService, FederationService
    model_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(node, federation), services)  # issue 18
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection(SERVICE_NAMES + (health.SERVICE_NAME,), server)  # v1 and v1alpha (issue 20)
    address = listen or config.listen
    port, mtls_port = bind(server, address, security, mtls_address=mtls_listen)
    if port == 0:
        federation.close()
        node.close()
        raise OSError(f"cannot listen on {address}: the address is taken or invalid (set node.listen or VEIL_LISTEN)")
    try:
        console = _start_console(config, security, NodeCalls(services, interceptors), authenticator, node,
                                 listen=console_listen)
    except BaseException:
        federation.close()
        node.close()
        raise
    try:
        metrics_port = metrics.serve(metrics_listen or metrics_settings.listen) if metrics.enabled else 0
    except OSError as e:
        if console is not None:
            console.close()
        federation.close()
        node.close()
        raise ConfigError(f"metrics.listen: cannot listen ({e.strerror or e}); choose a free port "
                          "(VEIL_METRICS_LISTEN, --metrics-listen) or set metrics.enabled = false") from None
    server.start()
    witness = node_witness(config, node.audit.key, node.audit.node_id)  # issue 15: peers' checkpoints
    for name in ("",) + SERVICE_NAMES:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("node %s listening on %s (port %d)", config.name, address, port)
    try:
        yield RunningNode(server, node, port, health_servicer, federation, mtls_port, guard, witness=witness,
                          console=console, metrics_port=metrics_port)
    finally:
        metrics.close()
        if console is not None:
            console.close()  # sessions end; no new page starts an RPC
        if witness is not None:
            witness.close()
        health_servicer.enter_graceful_shutdown()
        guard.drain()  # new calls: UNAVAILABLE / NODE_STOPPING; admitted calls finish within the grace
        server.stop(grace).wait()
        federation.close()
        node.close()


def _start_console(config: NodeConfig, security: Any, calls: NodeCalls, authenticator: NodeAuthenticator,
                   node: Node, *, listen: str | None) -> Any:
    """The web console of ``[console]`` (None when it is off): its own port, the gRPC port's
    transport rule (TLS with the node's certificate, or plaintext on loopback in dev mode)."""
    settings = getattr(config, "console", None)
    if settings is None or not settings.enabled:
        return None
    address = listen or settings.listen
    check_startable(security, address, error=ConfigError)
    try:
        console = start_console(settings, calls=calls, authenticator=authenticator, on_denied=node.audit.denied,
                                on_session=lambda verb, who, details: node.audit.admin(f"console.{verb}", who,
                                                                                       details=details),
                                node_name=config.name, tls=security.tls, listen=address,
                                witness_keys=tuple(w.key for w in getattr(config.witness, "witnesses", ()) or ()))
    except OSError as e:
        raise ConfigError(f"console.listen: cannot listen on {address} ({e.strerror or e}); choose a free port "
                          "(VEIL_CONSOLE_LISTEN) or set console.enabled = false") from None
    log.info("console on %s://%s:%d/", console.scheme, address.rpartition(":")[0], console.port)
    return console


def serve_forever(config: NodeConfig, *, metrics_listen: str | None = None) -> None:
    """Run until SIGINT or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with run_server(config, metrics_listen=metrics_listen) as running:
        mode = (f"TLS; mutual TLS on port {running.mtls_port}" if running.mtls_port else "TLS") \
            if settings_of(config).tls else "plaintext, development mode"
        print(f"veil node '{config.name}' serving on {config.listen} (port {running.port}) [{mode}]", flush=True)
        if running.console is not None:
            print(f"veil console on {running.console.url}", flush=True)
        if running.metrics_port:
            host = (metrics_listen or config.metrics.listen).rpartition(":")[0]
            print(f"veil metrics on http://{host}:{running.metrics_port}/metrics", flush=True)
        stop.wait()
        print("veil node stopping", flush=True)
