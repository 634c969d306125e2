"""The gRPC server: DecisionService, health and reflection, built by a factory.

``create_server`` builds and starts a server and returns it with its bound port, apart from the
process concerns of ``serve`` (signals, logging setup) in the CLI. The servicer only translates
(``protocol.py``) and maps errors to statuses in one place (``_guard``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable
from concurrent import futures
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from . import evalguard, protocol, tls
from ._pb.mcp.authz.v1 import authz_pb2 as pb
from .activation import PolicyStatus, PolicyStore
from .config import Config
from .decisions import DecisionPath
from .errors import LimitExceeded, MCPAuthzError, RequestError, grpc_status_for
from .worker_state import WorkerBoard

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["DecisionService"].full_name
#: A health service name that is SERVING while the process runs (until shutdown begins), for
#: liveness probes: the policy state must not restart a pod, only take it out of rotation.
LIVENESS_SERVICE = "liveness"
InFlight = Callable[[], contextlib.AbstractContextManager[Any]]
T = TypeVar("T")


class _Malformed:
    """A request body protobuf could not parse (e.g. nested past protobuf's recursion limit)."""

    def __init__(self, error: Exception):
        self.error = error


def _lenient(parse: Callable[[bytes], T]) -> Callable[[bytes], T | _Malformed]:
    def deserialize(data: bytes) -> T | _Malformed:
        try:
            return parse(data)
        except (DecodeError, RecursionError) as exc:
            return _Malformed(exc)
    return deserialize


def _guard(method: Callable[..., Any]) -> Callable[..., Any]:
    """Map the error tree to gRPC statuses, in one place; never leak a traceback."""

    @functools.wraps(method)
    def wrapper(self: DecisionServicer, request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, _Malformed):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"request: cannot parse message ({request.error})")
        seconds = evalguard.remaining(context.time_remaining())
        source = "the call's deadline"
        if seconds is None:  # the caller set none: the configured default applies
            seconds = self.default_deadline_ms / 1000
            source = f"limits.default_deadline_ms ({self.default_deadline_ms})"
        with self.in_flight(), evalguard.call_deadline(seconds, source):
            try:
                evalguard.check_deadline()  # it may have passed while the call was queued
                response = method(self, request, context)
                evalguard.check_deadline()  # a late answer is not sent: no decision
                return response
            except MCPAuthzError as exc:
                context.abort(grpc_status_for(exc), str(exc))
            except Exception:
                log.exception("internal error in %s", method.__name__)
                context.abort(grpc.StatusCode.INTERNAL, "internal error")
    return wrapper


class DecisionServicer:
    def __init__(self, path: DecisionPath, store: PolicyStore, config: Config,
                 in_flight: InFlight = contextlib.nullcontext, board: WorkerBoard | None = None):
        self._path = path
        self._store = store
        self._limits = config.limits
        self.default_deadline_ms = config.limits.default_deadline_ms
        self.in_flight = in_flight
        self._board = board

    @_guard
    def Decide(self, request: pb.DecideRequest, context: grpc.ServicerContext) -> pb.Decision:
        decision = self._path.decide(protocol.request_from_proto(request, self._limits))
        return protocol.decision_to_proto(decision)

    @_guard
    def DecideBatch(self, request: pb.DecideBatchRequest,
                    context: grpc.ServicerContext) -> pb.DecideBatchResponse:
        if len(request.requests) > self._limits.max_batch:
            raise LimitExceeded("requests", "max_batch", self._limits.max_batch)
        decisions = []
        for i, item in enumerate(request.requests):
            evalguard.check_deadline()
            try:
                decision = self._path.decide(protocol.request_from_proto(item, self._limits))
            except RequestError as exc:
                raise RequestError(f"requests[{i}].{exc.field}",
                                   str(exc).partition(": ")[2]) from exc
            decisions.append(protocol.decision_to_proto(decision))
        return pb.DecideBatchResponse(decisions=decisions)

    @_guard
    def FilterTools(self, request: pb.FilterToolsRequest,
                    context: grpc.ServicerContext) -> pb.FilterToolsResponse:
        base = protocol.filter_request_from_proto(request, self._limits)
        tools = [(t.name, protocol.annotations_to_dict(t.annotations)) for t in request.tools]
        visibility, revision = self._path.filter_tools(base, tools)
        return protocol.filter_response_to_proto(visibility, revision)

    @_guard
    def GetPolicyStatus(self, request: pb.GetPolicyStatusRequest,
                        context: grpc.ServicerContext) -> pb.PolicyStatus:
        message = protocol.status_to_proto(self._store.status())
        if self._board is None:
            return protocol.add_workers(message, 0, os.getpid(), [])
        return protocol.add_workers(message, self._board.index or 0, os.getpid(),
                                    self._board.read())


def _handlers(servicer: DecisionServicer) -> grpc.GenericRpcHandler:
    methods = {
        "Decide": (pb.DecideRequest, pb.Decision),
        "DecideBatch": (pb.DecideBatchRequest, pb.DecideBatchResponse),
        "FilterTools": (pb.FilterToolsRequest, pb.FilterToolsResponse),
        "GetPolicyStatus": (pb.GetPolicyStatusRequest, pb.PolicyStatus),
    }
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, name),
            request_deserializer=_lenient(request_type.FromString),
            response_serializer=response_type.SerializeToString)
        for name, (request_type, response_type) in methods.items()
    }
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


class HealthReporter:
    """Keeps the gRPC health service in step with the policy store: SERVING only while a policy
    is active, NOT_SERVING from the moment shutdown begins."""

    def __init__(self, servicer: health.HealthServicer, store: PolicyStore):
        self._servicer = servicer
        self._store = store
        self._stopping = False
        store.on_change(self._changed)
        self._changed(store.status(), store.active() is not None)
        servicer.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)

    def serving(self) -> bool:
        """SERVING for the DecisionService: a policy is active and shutdown has not begun."""
        return self._store.active() is not None and not self._stopping

    def _changed(self, status: PolicyStatus, activated: bool) -> None:
        state = (health_pb2.HealthCheckResponse.SERVING if self.serving()
                 else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", SERVICE_NAME):
            self._servicer.set(name, state)

    def shutting_down(self) -> None:
        self._stopping = True
        self._servicer.enter_graceful_shutdown()


def create_server(config: Config, path: DecisionPath, store: PolicyStore,
                  listen: str | None = None, in_flight: InFlight = contextlib.nullcontext,
                  board: WorkerBoard | None = None,
                  ) -> tuple[grpc.Server, int, HealthReporter]:
    """Build and start the gRPC server; returns it, its bound port and its health reporter.

    ``in_flight()`` wraps every RPC (the metrics' in-flight gauge). A worker of a group
    (``board``) shares its port with the others (SO_REUSEPORT); a single process does not, so
    a second service cannot silently take half of its connections."""
    options = [
        ("grpc.max_receive_message_length", config.server.max_message_bytes),
        ("grpc.max_send_message_length", config.server.max_message_bytes),
        ("grpc.so_reuseport", int(board is not None)),
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.server.max_workers,
                                   thread_name_prefix="decide"),
        options=options, maximum_concurrent_rpcs=config.server.max_concurrent_requests,
        interceptors=tls.grpc_interceptors(config.server.tls, "server"))
    server.add_generic_rpc_handlers(
        (_handlers(DecisionServicer(path, store, config, in_flight, board)),))
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reporter = HealthReporter(health_servicer, store)
    if config.server.reflection:
        names = (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                 reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
    address = listen or config.server.listen
    port = tls.bind_grpc(server, address, config, "server.listen")
    server.start()
    return server, port, reporter
