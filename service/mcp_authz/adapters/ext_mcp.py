"""agentgateway ExtMcp (``agentgateway.dev.ext_mcp.ExtMcp``): gate MCP requests, filter and
redact MCP results.

CheckRequest decides ``tools/call``, ``resources/read`` and ``prompts/get`` from the JSON-RPC
``params`` and the gateway's ``metadata_context`` (the CEL values its config sends: the bearer
token, the tenant, the server resource, a correlation id; the token may also come from the
forwarded ``authorization`` header). Listing and lifecycle methods in ``passthrough_methods``
pass; anything else is denied.

CheckResponse filters ``tools/list`` results through ``DecisionPath.filter_tools`` and applies a
call's ``redact`` / ``max_result_bytes`` obligations to its result. McpResponse carries neither
the request nor its decision, so an allowed call's obligations wait in a bounded cache keyed by
(service, the gateway's correlation id, a digest of the caller's token) until its response
arrives. Any doubt is a deny: no correlation id, an id already in flight, a response with no
decision on record (expired, evicted, another replica), an obligation this path cannot enforce.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import grpc
from google.protobuf import struct_pb2

from .._pb.agentgateway.dev.ext_mcp import ext_mcp_pb2 as pb
from ..config import ExtMcpConfig, LimitsConfig
from ..decisions import DecisionPath
from ..errors import MCPAuthzError, NoPolicyError, PolicyError, RequestError
from ..model import Decision, DecisionRequest, Obligation
from ..protocol import struct_to_dict
from . import outcomes, results
from .mcp_messages import annotation_hints, bearer, call_fields, is_decided, matches_any

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ExtMcp"].full_name
Code = pb.AuthorizationError.Code
_UNPARSABLE = "request: cannot parse the protobuf message"


class DecisionCache:
    """Allowed calls' obligations until their response: bounded, expiring, one entry per key."""

    def __init__(self, size: int, ttl_seconds: float,
                 clock: Callable[[], float] = time.monotonic):
        self._size = size
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, tuple[Obligation, ...]]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: str, obligations: tuple[Obligation, ...]) -> bool:
        """Record a decision; False when a live one already holds ``key`` (nothing changes)."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            if key in self._entries:
                return False
            while len(self._entries) >= self._size:
                self._entries.popitem(last=False)  # its response will find nothing: a deny
            self._entries[key] = (now + self._ttl, obligations)
            return True

    def pop(self, key: str) -> tuple[Obligation, ...] | None:
        with self._lock:
            self._expire(self._clock())
            entry = self._entries.pop(key, None)
        return entry[1] if entry else None

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self, now: float) -> None:
        while self._entries and next(iter(self._entries.values()))[0] <= now:
            self._entries.popitem(last=False)


class _Caller:
    """What the gateway told us about the caller of one MCP message."""

    def __init__(self, token: str, tenant: str, resource: str, approvals: tuple[str, ...],
                 correlation: str):
        self.token = token
        self.tenant = tenant
        self.resource = resource
        self.approvals = approvals
        self.correlation = correlation

    def cache_key(self, service: str) -> str:
        material = "\x00".join((service, self.correlation, self.token))
        return hashlib.sha256(material.encode("utf-8")).hexdigest()


class ExtMcpServicer:
    def __init__(self, path: DecisionPath, config: ExtMcpConfig, limits: LimitsConfig,
                 cache: DecisionCache | None = None):
        self._path = path
        self._config = config
        self._limits = limits
        self.cache = cache or DecisionCache(config.decision_cache_size,
                                            config.decision_ttl_seconds)

    def CheckRequest(self, request: pb.McpRequest,  # noqa: N802 (gRPC's name)
                     context: grpc.ServicerContext) -> pb.McpRequestResult:
        if not isinstance(request, pb.McpRequest):
            return _error(pb.McpRequestResult, Code.INVALID, _UNPARSABLE, {"reason": "invalid"})
        return _guarded(pb.McpRequestResult, lambda: self._check_request(request))

    def CheckResponse(self, request: pb.McpResponse,  # noqa: N802 (gRPC's name)
                      context: grpc.ServicerContext) -> pb.McpResponseResult:
        if not isinstance(request, pb.McpResponse):
            return _error(pb.McpResponseResult, Code.INVALID, _UNPARSABLE, {"reason": "invalid"})
        return _guarded(pb.McpResponseResult, lambda: self._check_response(request))

    def _check_request(self, message: pb.McpRequest) -> pb.McpRequestResult:
        method = message.method
        if not is_decided(method):
            if matches_any(method, self._config.passthrough_methods):
                return pb.McpRequestResult(**{"pass": pb.Pass()})
            return _error(pb.McpRequestResult, Code.PERMISSION_DENIED,
                          f"tool_unknown: method {method[:64]!r} is not authorized here",
                          {"reason": "tool_unknown"})
        caller = self._caller(message.metadata_context, message.headers)
        params = struct_to_dict(message.mcp_request, "mcp_request", self._limits)
        decision = self._path.decide(DecisionRequest(
            method=method, tenant=caller.tenant, server_resource=caller.resource,
            bearer_token=caller.token, server_id=message.service_name,
            request_id=caller.correlation, approval_tokens=caller.approvals,
            **call_fields(method, params, "mcp_request")))
        if not decision.allow:
            error = outcomes.deny_error(decision)["error"]
            return _error(pb.McpRequestResult, Code.PERMISSION_DENIED, error["message"],
                          error["data"])
        refusal = self._remember(message.service_name, caller, decision)
        if refusal:
            return _error(pb.McpRequestResult, Code.PERMISSION_DENIED, refusal,
                          {"reason": "obligation_unenforceable",
                           "decision_id": decision.decision_id})
        metadata = struct_pb2.Struct()
        metadata.update({"mcp_authz_decision_id": decision.decision_id,
                         "mcp_authz_policy_revision": decision.policy_revision})
        return pb.McpRequestResult(metadata=metadata, **{"pass": pb.Pass()})

    def _remember(self, service: str, caller: _Caller, decision: Decision) -> str:
        """Keep an allowed call's obligations for its response; a reason when we cannot."""
        missing = results.unenforceable(decision.obligations)
        if missing:
            return f"obligation(s) {', '.join(missing)} cannot be enforced through ExtMcp"
        if not caller.correlation:
            if results.needs_result(decision.obligations):
                return (f"the decision carries result obligations but metadata_context has no "
                        f"{self._config.correlation_key!r} to match the response with")
            return ""
        if not self.cache.put(caller.cache_key(service), decision.obligations):
            return (f"another call with the same {self._config.correlation_key!r} is still "
                    "in flight")
        return ""

    def _check_response(self, message: pb.McpResponse) -> pb.McpResponseResult:
        method = message.method
        if method == "tools/list":
            return self._filter_tools(message)
        if not is_decided(method):
            return pb.McpResponseResult(**{"pass": pb.Pass()})
        caller = self._caller(message.metadata_context, ())
        obligations = (self.cache.pop(caller.cache_key(message.service_name))
                       if caller.correlation else None)
        if obligations is None:
            return _error(pb.McpResponseResult, Code.PERMISSION_DENIED,
                          "no decision on record for this response (missing correlation id, "
                          "expired, or decided elsewhere)", {"reason": "decision_unknown"})
        result = struct_to_dict(message.mcp_response, "mcp_response", self._limits)
        enforced = results.enforce(result, obligations)
        if enforced.over_limit is not None:
            text = f"result withheld: larger than the policy's limit of {enforced.over_limit} bytes"
            if method != "tools/call":
                return _error(pb.McpResponseResult, Code.RESOURCE_EXHAUSTED, text,
                              {"reason": "max_result_bytes"})
            return _mutated(pb.McpResponseResult,
                            {"content": [{"type": "text", "text": text}], "isError": True})
        if enforced.changed:
            return _mutated(pb.McpResponseResult, enforced.result)
        return pb.McpResponseResult(**{"pass": pb.Pass()})

    def _filter_tools(self, message: pb.McpResponse) -> pb.McpResponseResult:
        result = struct_to_dict(message.mcp_response, "mcp_response", self._limits)
        tools = result.get("tools")
        if not isinstance(tools, list) or not all(
                isinstance(t, dict) and isinstance(t.get("name"), str) for t in tools):
            raise RequestError("mcp_response.tools", "must be a list of tools with names")
        caller = self._caller(message.metadata_context, ())
        base = DecisionRequest(method="tools/list", tenant=caller.tenant,
                               server_resource=caller.resource, bearer_token=caller.token,
                               server_id=message.service_name, request_id=caller.correlation)
        visibility, _ = self._path.filter_tools(
            base, [(t["name"], annotation_hints(t)) for t in tools])
        allowed = {v.name for v in visibility if v.allowed}
        kept = [t for t in tools if t["name"] in allowed]
        if len(kept) == len(tools):
            return pb.McpResponseResult(**{"pass": pb.Pass()})
        return _mutated(pb.McpResponseResult, {**result, "tools": kept})

    def _caller(self, metadata_struct: struct_pb2.Struct, headers: Any) -> _Caller:
        cfg = self._config
        metadata = struct_to_dict(metadata_struct, "metadata_context", self._limits)
        token = _text(metadata.get(cfg.token_key))
        if not token and cfg.token_header:
            token = next((h.value for h in headers if h.key.lower() == cfg.token_header), "")
        if token.lower().startswith("bearer "):
            token = bearer(token)
        approvals = metadata.get(cfg.approval_key, ())
        approvals = (approvals,) if isinstance(approvals, str) else approvals
        if not isinstance(approvals, list | tuple) or not all(
                isinstance(a, str) for a in approvals):
            raise RequestError(f"metadata_context.{cfg.approval_key}",
                               "must be a string or a list of strings")
        return _Caller(token=token,
                       tenant=_text(metadata.get(cfg.tenant_key)) or cfg.tenant,
                       resource=_text(metadata.get(cfg.server_resource_key))
                       or cfg.server_resource,
                       approvals=tuple(a for a in approvals if a),
                       correlation=_text(metadata.get(cfg.correlation_key)))


def _text(value: Any) -> str:
    """A metadata value as text: strings as they are, integral numbers without a fraction."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return ""


def _guarded(result_type: Any, run: Callable[[], Any]) -> Any:
    """Every failure becomes an explicit AuthorizationError result (the gateway fails closed)."""
    try:
        return run()
    except RequestError as exc:
        return _error(result_type, Code.INVALID, str(exc), {"reason": exc.code})
    except NoPolicyError:
        return _error(result_type, Code.UNKNOWN, "no active policy", {"reason": "no_policy"})
    except PolicyError as exc:
        log.warning("ext_mcp: cannot enforce obligations: %s", exc)
        return _error(result_type, Code.PERMISSION_DENIED,
                      "the policy's obligations cannot be enforced", {"reason": "policy_error"})
    except MCPAuthzError as exc:
        return _error(result_type, Code.UNKNOWN, str(exc), {"reason": exc.code})
    except Exception:
        log.exception("ext_mcp: internal error")
        return _error(result_type, Code.UNKNOWN, "internal error", {"reason": "internal"})


def _error(result_type: Any, code: int, reason: str, data: Mapping[str, Any]) -> Any:
    """``mcp_error`` becomes the JSON-RPC error's ``data`` at the gateway."""
    mcp_error = struct_pb2.Struct()
    mcp_error.update(dict(data))
    return result_type(error=pb.AuthorizationError(code=code, reason=reason,
                                                   mcp_error=mcp_error))


def _mutated(result_type: Any, value: Mapping[str, Any]) -> Any:
    struct = struct_pb2.Struct()
    struct.update(dict(value))
    return result_type(mutated=struct)
