"""The gateway adapters as App components, each on the listener its config names.

ext_authz and ExtMcp are gRPC services: with ``listen`` empty they are added to the native gRPC
server (one port, one health service); with ``listen: HOST:PORT`` they get their own server with
its own health service (both adapters may share one such address). AuthZEN is HTTP on its own
``listen``. ``trusted_id`` AuthZEN decides on its own bundle, with its own store and decision
path, which get the same decision log and metrics observers as the native path.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent import futures
from functools import partial
from typing import TYPE_CHECKING, Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2
from grpc_health.v1 import health, health_pb2_grpc

from .. import tls
from .._pb.agentgateway.dev.ext_mcp import ext_mcp_pb2
from ..activation import PolicyStore
from ..decisions import DecisionPath
from ..errors import MCPAuthzError
from ..server import HealthReporter, _lenient
from ..sources import bundle_source
from . import authzen, ext_authz, ext_mcp
from .authzen_http import EVALUATION, EVALUATIONS, AuthzenHttpServer

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger(__name__)

TRUSTED_RESOURCE = "urn:mcp-authz:authzen"


def grpc_handlers(app: App) -> dict[str, list[grpc.GenericRpcHandler]]:
    """The enabled gRPC adapters' handlers, by listen address ('' = the native server)."""
    adapters = app.config.adapters
    by_listen: dict[str, list[grpc.GenericRpcHandler]] = {}
    if adapters.ext_authz.enabled:
        servicer = ext_authz.ExtAuthzServicer(app.path, adapters.ext_authz)
        by_listen.setdefault(adapters.ext_authz.listen, []).append(_handler(
            ext_authz.SERVICE_NAME, {"Check": (servicer.Check, external_auth_pb2.CheckRequest,
                                               external_auth_pb2.CheckResponse)}))
    if adapters.ext_mcp.enabled:
        mcp = ext_mcp.ExtMcpServicer(app.path, adapters.ext_mcp, app.config.limits)
        by_listen.setdefault(adapters.ext_mcp.listen, []).append(_handler(
            ext_mcp.SERVICE_NAME,
            {"CheckRequest": (mcp.CheckRequest, ext_mcp_pb2.McpRequest,
                              ext_mcp_pb2.McpRequestResult),
             "CheckResponse": (mcp.CheckResponse, ext_mcp_pb2.McpResponse,
                               ext_mcp_pb2.McpResponseResult)}))
    return by_listen


def _handler(service: str, methods: dict[str, tuple[Callable[..., Any], Any, Any]]
             ) -> grpc.GenericRpcHandler:
    """Unparsable messages reach the servicer as a non-message, which it answers as a deny."""
    return grpc.method_handlers_generic_handler(service, {
        name: grpc.unary_unary_rpc_method_handler(
            function, request_deserializer=_lenient(request_type.FromString),
            response_serializer=response_type.SerializeToString)
        for name, (function, request_type, response_type) in methods.items()})


class NativeAdapters:
    """Adds adapter services to the native gRPC server once it has started."""

    def __init__(self, app: App, handlers: list[grpc.GenericRpcHandler]):
        self._app = app
        self._handlers = handlers

    def start(self) -> None:
        server = self._app.grpc.server
        if server is None:
            raise MCPAuthzError("adapters: the native gRPC server is not running")
        server.add_generic_rpc_handlers(self._handlers)
        log.info("gateway adapters %s on the native gRPC server (port %d)",
                 ", ".join(h.service_name() for h in self._handlers), self._app.grpc.port)

    def stop(self, grace: float) -> None:
        """The native server's own component drains and stops it."""


class AdapterGrpcServer:
    """gRPC adapters on a listener of their own, with a health service tied to the policy."""

    def __init__(self, app: App, listen: str, handlers: list[grpc.GenericRpcHandler]):
        self._app = app
        self.listen = listen
        self._handlers = handlers
        self.server: grpc.Server | None = None
        self.port = 0
        self._health: HealthReporter | None = None

    def start(self) -> None:
        cfg = self._app.config.server
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=cfg.max_workers, thread_name_prefix="adapter"),
            options=[("grpc.max_receive_message_length", cfg.max_message_bytes),
                     ("grpc.max_send_message_length", cfg.max_message_bytes),
                     ("grpc.so_reuseport", 0)],
            maximum_concurrent_rpcs=cfg.max_concurrent_requests,
            interceptors=tls.grpc_interceptors(cfg.tls, "server"))
        server.add_generic_rpc_handlers(self._handlers)
        health_servicer = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        self._health = HealthReporter(health_servicer, self._app.store)
        self.port = tls.bind_grpc(server, self.listen, self._app.config, "adapters")
        server.start()
        self.server = server
        log.info("gateway adapters %s listening on %s (port %d)",
                 ", ".join(h.service_name() for h in self._handlers), self.listen, self.port)

    def stop(self, grace: float) -> None:
        if self._health is not None:
            self._health.shutting_down()
        if self.server is not None:
            self.server.stop(grace).wait()


class AuthzenComponent:
    """The AuthZEN HTTP endpoint, deciding on the native path or (trusted_id) its own."""

    def __init__(self, app: App):
        self._app = app
        self.config = app.config.adapters.authzen
        cfg = self.config
        self.store: PolicyStore | None = None
        self._source: Any = None
        path = app.path
        if cfg.subject_mode == "trusted_id":
            self.store = PolicyStore(cfg.entrypoint or app.config.policy.entrypoint)
            path = DecisionPath(self.store, authzen.TrustedSubjectVerifier(cfg.tenant or "authzen"),
                                None, app.config.limits)
            for observer in (getattr(app, "metrics", None), getattr(app, "decision_log", None)):
                if observer is not None:
                    path.add_observer(observer)
            self._source = bundle_source(self.store, cfg.bundle, app.config, persist=False,
                                         name="AuthZEN bundle")
        self.path = path
        self.target = authzen.Target(
            subject_mode=cfg.subject_mode, tenant=cfg.tenant or (
                "authzen" if cfg.subject_mode == "trusted_id" else ""),
            server_id=cfg.server_id, server_resource=cfg.server_resource or (
                TRUSTED_RESOURCE if cfg.subject_mode == "trusted_id" else ""))
        self.server: AuthzenHttpServer | None = None
        self.port = 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._source is not None:
            self._source.start()
        host, _, port = self.config.listen.rpartition(":")
        endpoints = {
            EVALUATION: partial(authzen.evaluate, self.path, target=self.target),
            EVALUATIONS: partial(authzen.evaluate_many, self.path, target=self.target,
                                 max_batch=self._app.config.limits.max_batch),
        }
        try:
            self.server = AuthzenHttpServer((host.strip("[]"), int(port)), self.config, endpoints,
                                            self._app.config.server.max_concurrent_requests)
            self.server.tls = tls.HttpTls.from_config(self.config.tls, self._app.config,
                                                      "adapters.authzen")
        except OSError as exc:
            raise MCPAuthzError(f"adapters.authzen.listen: cannot bind {self.config.listen}: "
                                f"{exc.strerror}") from exc
        self.port = self.server.server_address[1]
        log.info("AuthZEN (%s subjects) listening on %s (port %d)", self.config.subject_mode,
                 self.config.listen, self.port)
        self._thread = threading.Thread(target=self.server.serve_forever, name="authzen",
                                        daemon=True)
        self._thread.start()

    def stop(self, grace: float) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        if self._thread is not None:
            self._thread.join(grace)
        if self._source is not None:
            self._source.stop(grace)


def adapter_components(app: App) -> list[Any]:
    """Every enabled adapter, in start order (after the native server and the bundle)."""
    components: list[Any] = []
    for listen, handlers in grpc_handlers(app).items():
        components.append(NativeAdapters(app, handlers) if not listen
                          else AdapterGrpcServer(app, listen, handlers))
    if app.config.adapters.authzen.enabled:
        components.append(AuthzenComponent(app))
    return components
