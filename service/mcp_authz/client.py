"""Clients for the DecisionService: synchronous (``DecisionClient``) and asyncio
(``AsyncDecisionClient``). Both fail closed.

A client never raises for a service problem: an unreachable service, a deadline, a refused request
or an answer that does not look like a decision all come back as a *deny* ``Decision`` with a
reason code (``service_unavailable``, ``invalid_request``, ``policy_error``), so a caller that only
checks ``decision.allow`` can never mistake a failure for an allow.

One channel per client, created once and reused (HTTP/2 multiplexes calls), with keepalive.
Retries: only on ``UNAVAILABLE``, at most ``max_attempts`` calls, with full-jitter exponential
backoff, all inside the one overall deadline.

    client = DecisionClient("127.0.0.1:50051")
    decision = client.decide(DecisionRequest(method="tools/call", tenant="acme", ...))
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from google.protobuf import json_format, struct_pb2

from ._pb.mcp.authz.v1 import authz_pb2 as pb
from ._pb.mcp.authz.v1 import authz_pb2_grpc as pb_grpc
from .model import Decision, DecisionRequest, Obligation, Reason

__all__ = [
    "AsyncDecisionClient", "ClientOptions", "DecisionClient", "TLSOptions", "ToolFilter",
    "deny", "SERVICE_UNAVAILABLE", "INVALID_REQUEST", "POLICY_ERROR",
]

SERVICE_UNAVAILABLE = "service_unavailable"
INVALID_REQUEST = "invalid_request"
POLICY_ERROR = "policy_error"

_ANNOTATIONS = {"readOnlyHint": "read_only_hint", "destructiveHint": "destructive_hint",
                "idempotentHint": "idempotent_hint", "openWorldHint": "open_world_hint"}
_UNAVAILABLE_STATUSES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                         grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED}


@dataclass(frozen=True)
class TLSOptions:
    """TLS to the service; with ``cert_file`` and ``key_file`` also a client certificate (mTLS).

    ``ca_file`` empty means the system's roots. ``server_name`` overrides the name checked against
    the server's certificate (when the target is an IP address, for example).
    """

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""

    def credentials(self) -> grpc.ChannelCredentials:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("tls: set both cert_file and key_file for mutual TLS, or neither")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file), private_key=_read(self.key_file),
            certificate_chain=_read(self.cert_file))


def _read(path: str) -> bytes | None:
    return Path(path).read_bytes() if path else None


@dataclass(frozen=True)
class ClientOptions:
    deadline_seconds: float = 1.0
    """The whole budget of one decision, retries included."""
    max_attempts: int = 3
    backoff_seconds: float = 0.02
    """First retry waits up to this (full jitter), doubling each time."""
    keepalive_seconds: float = 300.0
    """HTTP/2 pings on a busy channel. gRPC servers refuse pings more often than every 5 min by
    default (``too_many_pings``); lower this only if the server permits it."""
    keepalive_timeout_seconds: float = 20.0
    tls: TLSOptions | None = None
    channel_options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class ToolFilter:
    """Which tools a caller may see. A tool absent from both sets is not visible either."""

    allowed: frozenset[str]
    denied: Mapping[str, tuple[Reason, ...]] = field(default_factory=dict)
    policy_revision: str = ""


def deny(code: str, message: str, request_id: str = "") -> Decision:
    """A deny made on this side of the wire (the service could not decide)."""
    return Decision(decision_id=f"local-{uuid.uuid4()}", request_id=request_id, allow=False,
                    reasons=(Reason(code, message),), obligations=(), policy_revision="",
                    decided_at_ns=time.time_ns())


# --- translation: internal shapes <-> protobuf ------------------------------------------------

def _struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(dict(values))
    return struct


def _annotations(hints: Mapping[str, Any]) -> pb.ToolAnnotations:
    """Accepts both the proto's names (``read_only_hint``) and MCP's (``readOnlyHint``)."""
    fields = {}
    for key, value in hints.items():
        name = _ANNOTATIONS.get(key, key)
        if name in _ANNOTATIONS.values() and isinstance(value, bool):
            fields[name] = value
    return pb.ToolAnnotations(**fields)


def request_to_proto(request: DecisionRequest) -> pb.DecideRequest:
    message = pb.DecideRequest(
        request_id=request.request_id, bearer_token=request.bearer_token, tenant=request.tenant,
        server=pb.ServerRef(id=request.server_id, resource=request.server_resource),
        client=pb.ClientRef(id=request.client_id, name=request.client_name,
                            version=request.client_version),
        method=request.method, resource_uri=request.resource_uri,
        approval_tokens=list(request.approval_tokens), session_id=request.session_id)
    if request.tool_name:
        message.tool.CopyFrom(pb.ToolCall(name=request.tool_name,
                                          arguments=_struct(request.tool_arguments),
                                          annotations=_annotations(request.tool_annotations)))
    if request.prompt_name:
        message.prompt.CopyFrom(pb.PromptRef(name=request.prompt_name,
                                             arguments=_struct(request.prompt_arguments)))
    if request.context:
        message.context.CopyFrom(_struct(request.context))
    return message


def filter_request_to_proto(
        request: DecisionRequest,
        tools: Sequence[tuple[str, Mapping[str, Any]]]) -> pb.FilterToolsRequest:
    message = pb.FilterToolsRequest(
        request_id=request.request_id, bearer_token=request.bearer_token, tenant=request.tenant,
        server=pb.ServerRef(id=request.server_id, resource=request.server_resource),
        client=pb.ClientRef(id=request.client_id, name=request.client_name,
                            version=request.client_version),
        tools=[pb.ToolDescriptor(name=name, annotations=_annotations(hints))
               for name, hints in tools],
        session_id=request.session_id)
    if request.context:
        message.context.CopyFrom(_struct(request.context))
    return message


class GarbageAnswer(ValueError):
    """The service answered something that is not a well-formed decision."""


def decision_from_proto(message: Any, request_id: str) -> Decision:
    """A checked Decision; ``GarbageAnswer`` when the answer breaks the contract."""
    if not isinstance(message, pb.Decision):
        raise GarbageAnswer(f"expected a Decision, got {type(message).__name__}")
    if message.request_id != request_id:
        raise GarbageAnswer("the decision answers another request (request_id differs)")
    if not message.decision_id:
        raise GarbageAnswer("the decision has no decision_id")
    reasons = tuple(Reason(r.code, r.message) for r in message.reasons)
    if any(not r.code for r in reasons):
        raise GarbageAnswer("a reason has no code")
    obligations = tuple(Obligation(o.type, json_format.MessageToDict(o.params))
                        for o in message.obligations)
    if any(not o.type for o in obligations):
        raise GarbageAnswer("an obligation has no type")
    decided = message.decided_at.seconds * 1_000_000_000 + message.decided_at.nanos
    return Decision(decision_id=message.decision_id, request_id=message.request_id,
                    allow=message.allow is True, reasons=reasons, obligations=obligations,
                    policy_revision=message.policy_revision, decided_at_ns=decided)


def filter_from_proto(message: Any, names: Sequence[str]) -> ToolFilter:
    if not isinstance(message, pb.FilterToolsResponse):
        raise GarbageAnswer(f"expected a FilterToolsResponse, got {type(message).__name__}")
    known = set(names)
    denied = {d.name: tuple(Reason(r.code, r.message) for r in d.reasons) for d in message.denied}
    # Only names that were asked about and not also denied count as allowed.
    allowed = frozenset(n for n in message.allowed if n in known and n not in denied)
    return ToolFilter(allowed, denied, message.policy_revision)


def failure_reason(error: grpc.RpcError) -> Reason:
    """The deny reason for a failed call (no token or request data in the message)."""
    code = error.code() if hasattr(error, "code") else None
    details = (error.details() if hasattr(error, "details") else "") or ""
    if code in _UNAVAILABLE_STATUSES:
        return Reason(SERVICE_UNAVAILABLE, f"the decision service is unavailable ({code.name})")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return Reason(INVALID_REQUEST, f"the decision service refused the request: {details}")
    name = code.name if code is not None else "unknown"
    return Reason(POLICY_ERROR, f"the decision service failed ({name})")


# --- channel and retries ----------------------------------------------------------------------

def _channel_options(options: ClientOptions) -> list[tuple[str, Any]]:
    result: list[tuple[str, Any]] = [
        ("grpc.keepalive_time_ms", int(options.keepalive_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", int(options.keepalive_timeout_seconds * 1000)),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.enable_retries", 0),  # retries are ours: bounded, UNAVAILABLE only
    ]
    if options.tls is not None and options.tls.server_name:
        result.append(("grpc.ssl_target_name_override", options.tls.server_name))
    return result + list(options.channel_options)


def _open(target: str, options: ClientOptions, module: Any) -> Any:
    """``module`` is ``grpc`` or ``grpc.aio``: the same options for both kinds of channel."""
    channel_options = _channel_options(options)
    if options.tls is None:
        return module.insecure_channel(target, options=channel_options)
    return module.secure_channel(target, options.tls.credentials(), options=channel_options)


class _Attempts:
    """Bounded retries inside one deadline: which attempt may run and how long to wait first."""

    def __init__(self, options: ClientOptions, rng: Callable[[], float] = random.random):
        self._options = options
        self._rng = rng
        self._end = time.monotonic() + options.deadline_seconds
        self.number = 0

    def remaining(self) -> float:
        return self._end - time.monotonic()

    def retry_delay(self, error: grpc.RpcError) -> float | None:
        """Seconds to wait before the next attempt, or None when no retry is allowed."""
        self.number += 1
        if error.code() != grpc.StatusCode.UNAVAILABLE:
            return None
        if self.number >= self._options.max_attempts:
            return None
        delay = self._rng() * self._options.backoff_seconds * 2 ** (self.number - 1)
        return delay if delay < self.remaining() else None


def _tools(tools: Sequence[Any]) -> list[tuple[str, Mapping[str, Any]]]:
    return [(t, {}) if isinstance(t, str) else (t[0], t[1]) for t in tools]


def _ensure_id(request: DecisionRequest) -> DecisionRequest:
    if request.request_id:
        return request
    return dataclasses.replace(request, request_id=str(uuid.uuid4()))


_FAILURES = (grpc.RpcError, GarbageAnswer, ValueError, TypeError)


def _encoded(request: DecisionRequest) -> pb.DecideRequest | Decision:
    """The request as sent, or a deny when it cannot be encoded (e.g. a non-JSON argument)."""
    try:
        return request_to_proto(request)
    except (ValueError, TypeError) as exc:
        return deny(INVALID_REQUEST, f"the request cannot be encoded: {exc}", request.request_id)


def _reason_for(error: Exception) -> Reason:
    """The deny reason for anything that went wrong in a call: never an allow."""
    if isinstance(error, grpc.RpcError):
        return failure_reason(error)
    return Reason(POLICY_ERROR, f"the decision service's answer is unusable: {error}")


def _hidden_filter(names: Sequence[str], reason: Reason) -> ToolFilter:
    return ToolFilter(frozenset(), {name: (reason,) for name in names})


class DecisionClient:
    """Synchronous client. Thread-safe: one channel, shared by every thread."""

    def __init__(self, target: str, options: ClientOptions | None = None):
        self.target = target
        self.options = options or ClientOptions()
        self._channel = _open(target, self.options, grpc)
        self._stub = pb_grpc.DecisionServiceStub(self._channel)

    def decide(self, request: DecisionRequest) -> Decision:
        request = _ensure_id(request)
        message = _encoded(request)
        if isinstance(message, Decision):
            return message
        try:
            return decision_from_proto(self._call(self._stub.Decide, message), request.request_id)
        except _FAILURES as exc:
            reason = _reason_for(exc)
        return deny(reason.code, reason.message, request.request_id)

    def filter_tools(self, request: DecisionRequest, tools: Sequence[Any]) -> ToolFilter:
        """``tools``: names, or (name, annotations) pairs. On any failure nothing is visible."""
        pairs = _tools(tools)
        names = [name for name, _ in pairs]
        try:
            message = filter_request_to_proto(_ensure_id(request), pairs)
            return filter_from_proto(self._call(self._stub.FilterTools, message), names)
        except _FAILURES as exc:
            return _hidden_filter(names, _reason_for(exc))

    def _call(self, method: Any, message: Any) -> Any:
        attempts = _Attempts(self.options)
        while True:
            try:
                return method(message, timeout=max(attempts.remaining(), 0.001))
            except grpc.RpcError as exc:
                delay = attempts.retry_delay(exc)
                if delay is None:
                    raise
                time.sleep(delay)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> DecisionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncDecisionClient:
    """asyncio client. The channel is opened on first use in the running event loop (a gRPC
    asyncio channel belongs to one loop) and reopened if used from another loop."""

    def __init__(self, target: str, options: ClientOptions | None = None):
        self.target = target
        self.options = options or ClientOptions()
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.DecisionServiceStub | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _stub_for_loop(self) -> pb_grpc.DecisionServiceStub:
        loop = asyncio.get_running_loop()
        if self._stub is None or self._loop is not loop:
            self._channel = _open(self.target, self.options, grpc.aio)
            self._stub = pb_grpc.DecisionServiceStub(self._channel)
            self._loop = loop
        return self._stub

    async def decide(self, request: DecisionRequest) -> Decision:
        request = _ensure_id(request)
        message = _encoded(request)
        if isinstance(message, Decision):
            return message
        try:
            answer = await self._call("Decide", message)
            return decision_from_proto(answer, request.request_id)
        except _FAILURES as exc:
            reason = _reason_for(exc)
        return deny(reason.code, reason.message, request.request_id)

    async def filter_tools(self, request: DecisionRequest, tools: Sequence[Any]) -> ToolFilter:
        """``tools``: names, or (name, annotations) pairs. On any failure nothing is visible."""
        pairs = _tools(tools)
        names = [name for name, _ in pairs]
        try:
            message = filter_request_to_proto(_ensure_id(request), pairs)
            return filter_from_proto(await self._call("FilterTools", message), names)
        except _FAILURES as exc:
            return _hidden_filter(names, _reason_for(exc))

    async def _call(self, name: str, message: Any) -> Any:
        method = getattr(self._stub_for_loop(), name)
        attempts = _Attempts(self.options)
        while True:
            try:
                return await method(message, timeout=max(attempts.remaining(), 0.001))
            except grpc.RpcError as exc:
                delay = attempts.retry_delay(exc)
                if delay is None:
                    raise
                await asyncio.sleep(delay)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = self._loop = None
