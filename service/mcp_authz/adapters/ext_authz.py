"""Envoy ext_authz v3 (``envoy.service.auth.v3.Authorization/Check``) for MCP over HTTP.

Envoy sends the HTTP request's attributes (headers, and the body when ``with_request_body`` is
set); this adapter reads the MCP JSON-RPC message from them, decides it on the service's
``DecisionPath`` and answers with Envoy's own response types:

- allow: ``OkHttpResponse`` adding ``x-mcp-authz-decision-id``, ``x-mcp-authz-obligations``
  (JSON) and ``x-mcp-authz-policy-revision`` to the upstream request, overwriting any the client
  sent, so the MCP server behind Envoy can enforce the obligations;
- deny: ``DeniedHttpResponse`` with a JSON-RPC error body (reason code first), 401 plus
  ``WWW-Authenticate`` for token problems, 403 (``insufficient_scope`` challenge for
  ``scope_missing``) otherwise; a malformed request is 400, no active policy 503.

Only ``tools/call``, ``resources/read`` and ``prompts/get`` are decided. Methods listed in
``passthrough_methods`` (initialize, lists, notifications, ...) and the streamable HTTP GET/DELETE
need a bearer token to be present and pass; any other method is denied.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from ..config import ExtAuthzConfig
from ..decisions import DecisionPath
from ..errors import LimitExceeded, MCPAuthzError, NoPolicyError, RequestError
from ..model import Decision, DecisionRequest, Reason
from . import outcomes
from .mcp_messages import (
    RESPONSE_MESSAGE,
    McpMessage,
    bearer,
    call_fields,
    is_decided,
    matches_any,
    parse_body,
    target_name,
)

log = logging.getLogger(__name__)

SERVICE_NAME = "envoy.service.auth.v3.Authorization"
DECISION_HEADER = "x-mcp-authz-decision-id"
OBLIGATIONS_HEADER = "x-mcp-authz-obligations"
REVISION_HEADER = "x-mcp-authz-policy-revision"
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
# Streamable HTTP requests that carry no JSON-RPC message: the SSE stream and session end.
_BODYLESS_METHODS = ("GET", "DELETE")

HttpRequest = attribute_context_pb2.AttributeContext.HttpRequest


class ExtAuthzServicer:
    """``Authorization.Check``: never raises; every failure is an explicit denied response."""

    def __init__(self, path: DecisionPath, config: ExtAuthzConfig):
        self._path = path
        self._config = config

    def Check(self, request: external_auth_pb2.CheckRequest,  # noqa: N802 (gRPC's name)
              context: grpc.ServicerContext) -> external_auth_pb2.CheckResponse:
        message_id = None
        try:
            if not isinstance(request, external_auth_pb2.CheckRequest):
                raise RequestError("request", "cannot parse the CheckRequest message")
            attributes = request.attributes
            http = attributes.request.http
            headers = _headers(http)
            message = self._message(http, headers)
            message_id = message.id if message else None
            return self._answer(message, headers, dict(attributes.context_extensions), http.id)
        except MCPAuthzError as exc:
            return _error_response(exc, message_id)
        except Exception:
            log.exception("ext_authz: internal error")
            return _denied(500, outcomes.jsonrpc_error(
                message_id, outcomes.INTERNAL_ERROR, "internal error", {"reason": "internal"}))

    def _message(self, http: HttpRequest, headers: Mapping[str, str]) -> McpMessage | None:
        """The JSON-RPC message in the body, or one described by the Mcp-* headers alone."""
        body = http.raw_body or http.body.encode("utf-8")
        if headers.get("x-envoy-auth-partial-body", "").lower() == "true":
            raise LimitExceeded("body", "max_body_bytes", self._config.max_body_bytes)
        if body:
            message = parse_body(body, self._config.max_body_bytes)
            _check_headers_agree(message, headers)
            return message
        method = headers.get("mcp-method", "")
        if not method:
            if http.method.upper() in _BODYLESS_METHODS:
                return None
            raise RequestError("body", "an MCP POST needs its JSON-RPC body (set Envoy's "
                               "with_request_body) or an Mcp-Method header")
        name = headers.get("mcp-name")
        key = "uri" if method.startswith("resources/") else "name"
        return McpMessage(method, None, {key: name} if name is not None else {})

    def _answer(self, message: McpMessage | None, headers: Mapping[str, str],
                extensions: Mapping[str, str], http_id: str) -> external_auth_pb2.CheckResponse:
        token = bearer(headers.get("authorization", ""))
        resource_metadata = extensions.get("resource_metadata",
                                           self._config.resource_metadata_url)
        if message is not None and is_decided(message.method):
            request = self._request(message, headers, extensions, token, http_id)
            return _decision_response(self._path.decide(request), message.id, resource_metadata)
        if message is None or message.method == RESPONSE_MESSAGE or matches_any(
                message.method, self._config.passthrough_methods):
            if not token:
                return _refusal(Reason("token_missing", "no bearer token"),
                                message.id if message else None, resource_metadata)
            return _passthrough()
        what = message.method[:64]
        return _refusal(Reason("tool_unknown", f"method {what!r} is not authorized here"),
                        message.id, resource_metadata)

    def _request(self, message: McpMessage, headers: Mapping[str, str],
                 extensions: Mapping[str, str], token: str, http_id: str) -> DecisionRequest:
        cfg = self._config
        approvals = tuple(t.strip() for t in headers.get(cfg.approval_header, "").split(",")
                          if t.strip()) if cfg.approval_header else ()
        return DecisionRequest(
            method=message.method,
            tenant=extensions.get("tenant") or _header(headers, cfg.tenant_header) or cfg.tenant,
            server_resource=(extensions.get("server_resource")
                             or _header(headers, cfg.server_resource_header)
                             or cfg.server_resource),
            server_id=extensions.get("server_id", cfg.server_id),
            bearer_token=token, request_id=headers.get("x-request-id", http_id),
            session_id=headers.get("mcp-session-id", ""), approval_tokens=approvals,
            **call_fields(message.method, message.params, "body.params"))


def _headers(http: HttpRequest) -> dict[str, str]:
    """Lower-cased request headers, from ``headers`` or (raw headers mode) ``header_map``."""
    headers = {key.lower(): value for key, value in http.headers.items()}
    for header in http.header_map.headers:
        value = header.raw_value.decode("utf-8", "replace") if header.raw_value else header.value
        key = header.key.lower()
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    return headers


def _header(headers: Mapping[str, str], name: str) -> str:
    return headers.get(name.lower(), "") if name else ""


def _check_headers_agree(message: McpMessage, headers: Mapping[str, str]) -> None:
    """SEP-2243: Mcp-Method / Mcp-Name mirror the body; a gateway routing on them must not be
    told one thing while the server is asked another."""
    header_method = headers.get("mcp-method")
    if header_method is not None and header_method != message.method:
        raise RequestError("Mcp-Method", f"header {header_method[:64]!r} does not match the "
                           f"body's method {message.method[:64]!r}")
    header_name = headers.get("mcp-name")
    if header_name is not None and header_name != target_name(message.method, message.params):
        raise RequestError("Mcp-Name", "header does not match the body's params.name/params.uri")


def _decision_response(decision: Decision, message_id: Any,
                       resource_metadata: str) -> external_auth_pb2.CheckResponse:
    if not decision.allow:
        return _deny_response(decision, message_id, resource_metadata)
    values = {DECISION_HEADER: decision.decision_id,
              OBLIGATIONS_HEADER: json.dumps(outcomes.obligations_json(decision.obligations),
                                             separators=(",", ":"), ensure_ascii=True),
              REVISION_HEADER: decision.policy_revision}
    ok = external_auth_pb2.OkHttpResponse(headers=[_header_option(k, v)
                                                    for k, v in values.items()])
    return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK),
                                           ok_response=ok)


def _passthrough() -> external_auth_pb2.CheckResponse:
    """Allowed without a decision: strip any decision headers a client forged."""
    ok = external_auth_pb2.OkHttpResponse(
        headers_to_remove=[DECISION_HEADER, OBLIGATIONS_HEADER, REVISION_HEADER])
    return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK),
                                           ok_response=ok)


def _refusal(reason: Reason, message_id: Any,
             resource_metadata: str) -> external_auth_pb2.CheckResponse:
    """A deny the adapter makes before any decision (no token, a method it never forwards)."""
    decision = Decision(decision_id="", request_id="", allow=False, reasons=(reason,),
                        obligations=(), policy_revision="", decided_at_ns=0)
    return _deny_response(decision, message_id, resource_metadata)


def _deny_response(decision: Decision, message_id: Any,
                   resource_metadata: str) -> external_auth_pb2.CheckResponse:
    extra = {DECISION_HEADER: decision.decision_id} if decision.decision_id else {}
    challenge = outcomes.www_authenticate(decision, resource_metadata)
    if challenge:
        extra["www-authenticate"] = challenge
    return _denied(outcomes.http_status(decision), outcomes.deny_error(decision, message_id),
                   extra)


def _error_response(exc: MCPAuthzError, message_id: Any) -> external_auth_pb2.CheckResponse:
    if isinstance(exc, RequestError):
        status = 413 if isinstance(exc, LimitExceeded) and exc.field == "body" else 400
        return _denied(status, outcomes.jsonrpc_error(
            message_id, outcomes.INVALID_REQUEST, str(exc), {"reason": exc.code}))
    if isinstance(exc, NoPolicyError):
        return _denied(503, outcomes.jsonrpc_error(
            message_id, outcomes.UNAVAILABLE, "no active policy", {"reason": "no_policy"}))
    log.warning("ext_authz: %s", exc)
    return _denied(500, outcomes.jsonrpc_error(
        message_id, outcomes.INTERNAL_ERROR, "internal error", {"reason": exc.code}))


def _denied(status: int, body: dict[str, Any],
            headers: Mapping[str, str] | None = None) -> external_auth_pb2.CheckResponse:
    values = {"content-type": "application/json", **(headers or {})}
    denied = external_auth_pb2.DeniedHttpResponse(
        status=http_status_pb2.HttpStatus(code=status),
        headers=[_header_option(k, v) for k, v in values.items()],
        body=json.dumps(body, separators=(",", ":"), ensure_ascii=False))
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.UNAUTHENTICATED if status == 401
                                 else code_pb2.PERMISSION_DENIED),
        denied_response=denied)


def _header_option(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value),
                                      append_action=_OVERWRITE)
