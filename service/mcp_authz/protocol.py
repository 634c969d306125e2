"""Translate between the public protobuf messages and the internal request/decision shapes.

No policy or identity logic: fields in, fields out (STYLE: adapters only translate).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

from ._pb.mcp.authz.v1 import authz_pb2 as pb
from .activation import PolicyStatus
from .config import LimitsConfig
from .decisions import ToolVisibility
from .errors import LimitExceeded
from .model import Decision, DecisionRequest, Reason
from .worker_state import WorkerPolicy

ANNOTATION_FIELDS = ("read_only_hint", "destructive_hint", "idempotent_hint", "open_world_hint")


def struct_to_dict(struct: struct_pb2.Struct, field: str, limits: LimitsConfig,
                   depth: int = 0) -> dict[str, Any]:
    """A Struct as plain Python, refusing nesting past ``limits.max_depth`` by name."""
    if depth > limits.max_depth:
        raise LimitExceeded(field, "max_depth", limits.max_depth)
    return {key: _value(value, field, limits, depth + 1) for key, value in struct.fields.items()}


def _value(value: struct_pb2.Value, field: str, limits: LimitsConfig, depth: int) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        return value.number_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_dict(value.struct_value, field, limits, depth)
    if kind == "list_value":
        if depth > limits.max_depth:
            raise LimitExceeded(field, "max_depth", limits.max_depth)
        return [_value(item, field, limits, depth + 1) for item in value.list_value.values]
    return None


def annotations_to_dict(annotations: pb.ToolAnnotations) -> dict[str, bool]:
    return {name: getattr(annotations, name) for name in ANNOTATION_FIELDS
            if annotations.HasField(name)}


def request_from_proto(message: pb.DecideRequest, limits: LimitsConfig) -> DecisionRequest:
    return DecisionRequest(
        request_id=message.request_id, bearer_token=message.bearer_token, tenant=message.tenant,
        server_id=message.server.id, server_resource=message.server.resource,
        client_id=message.client.id, client_name=message.client.name,
        client_version=message.client.version, method=message.method,
        tool_name=message.tool.name,
        tool_arguments=struct_to_dict(message.tool.arguments, "tool.arguments", limits),
        tool_annotations=annotations_to_dict(message.tool.annotations),
        resource_uri=message.resource_uri, prompt_name=message.prompt.name,
        prompt_arguments=struct_to_dict(message.prompt.arguments, "prompt.arguments", limits),
        approval_tokens=tuple(message.approval_tokens),
        context=struct_to_dict(message.context, "context", limits),
        session_id=message.session_id)


def filter_request_from_proto(message: pb.FilterToolsRequest,
                              limits: LimitsConfig) -> DecisionRequest:
    return DecisionRequest(
        request_id=message.request_id, bearer_token=message.bearer_token, tenant=message.tenant,
        server_id=message.server.id, server_resource=message.server.resource,
        client_id=message.client.id, client_name=message.client.name,
        client_version=message.client.version, method="tools/list",
        context=struct_to_dict(message.context, "context", limits),
        session_id=message.session_id)


def _reasons(reasons: tuple[Reason, ...]) -> list[pb.Reason]:
    return [pb.Reason(code=r.code, message=r.message) for r in reasons]


def _struct(params: Any) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(params)
    return struct


def timestamp(ns: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def decision_to_proto(decision: Decision) -> pb.Decision:
    return pb.Decision(
        decision_id=decision.decision_id, request_id=decision.request_id, allow=decision.allow,
        reasons=_reasons(decision.reasons),
        obligations=[pb.Obligation(type=o.type, params=_struct(o.params))
                     for o in decision.obligations],
        policy_revision=decision.policy_revision, decided_at=timestamp(decision.decided_at_ns))


def filter_response_to_proto(visibility: list[ToolVisibility],
                             revision: str) -> pb.FilterToolsResponse:
    return pb.FilterToolsResponse(
        allowed=[v.name for v in visibility if v.allowed],
        denied=[pb.DeniedTool(name=v.name, reasons=_reasons(v.reasons))
                for v in visibility if not v.allowed],
        policy_revision=revision)


def status_to_proto(status: PolicyStatus) -> pb.PolicyStatus:
    message = pb.PolicyStatus(
        active_revision=status.active_revision, previous_revision=status.previous_revision,
        last_error=status.last_error, source=status.source, entrypoint=status.entrypoint)
    if status.activated_at_ns:
        message.activated_at.CopyFrom(timestamp(status.activated_at_ns))
    if status.last_error_at_ns:
        message.last_error_at.CopyFrom(timestamp(status.last_error_at_ns))
    return message


def add_workers(message: pb.PolicyStatus, index: int, pid: int,
                workers: list[WorkerPolicy]) -> pb.PolicyStatus:
    """Say which worker answered and what every worker of the group serves."""
    message.worker_index, message.worker_pid = index, pid
    for worker in workers:
        entry = message.workers.add(index=worker.index, pid=worker.pid, serving=worker.serving,
                                    active_revision=worker.active_revision)
        if worker.activated_at_ns:
            entry.activated_at.CopyFrom(timestamp(worker.activated_at_ns))
    return message
