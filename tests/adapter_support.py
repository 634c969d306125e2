"""Real parts for the gateway adapter tests: the whole App with adapters on loopback ports,
Envoy-shaped CheckRequests, ExtMcp messages and an AuthZEN HTTP client."""

from __future__ import annotations

import hashlib
import http.client
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc
from google.protobuf import struct_pb2

from mcp_authz._pb.agentgateway.dev.ext_mcp import ext_mcp_pb2, ext_mcp_pb2_grpc
from mcp_authz.adapters.components import AuthzenComponent
from mcp_authz.app import App
from mcp_authz.config import load_config
from support import RESOURCE, JsonServer, write_config

PEP_SECRET = "pep-secret-for-tests-only"
PEP_SECRET_SHA256 = hashlib.sha256(PEP_SECRET.encode()).hexdigest()
RESOURCE_METADATA = "https://mcp.example.com/.well-known/oauth-protected-resource/files"
ROOT = Path(__file__).resolve().parent.parent
TODO_BUNDLE = ROOT / "examples" / "authzen-todo"


@dataclass
class Running:
    app: App

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.app.grpc.port}"

    @property
    def authzen_port(self) -> int:
        return next(c for c in self.app.components if isinstance(c, AuthzenComponent)).port


@contextmanager
def running_app(directory: Path, jwks: JsonServer, **sections: Any) -> Iterator[Running]:
    """The App as ``mcp-authz serve`` builds it, on ephemeral loopback ports."""
    sections.setdefault("metrics", {"enabled": False})
    sections.setdefault("decision_log", {"enabled": False})
    path = write_config(directory, jwks.url("/jwks.json"), jwks.url("/approval-jwks.json"),
                        **sections)
    app = App(load_config(str(path)))
    app.start()
    try:
        yield Running(app)
    finally:
        app.stop(0)


def all_adapters(authzen_mode: str = "token") -> dict[str, Any]:
    authzen: dict[str, Any] = {"enabled": True, "listen": "127.0.0.1:0",
                               "public_url": "https://pdp.example.com",
                               "pep_token_sha256": [PEP_SECRET_SHA256],
                               "subject_mode": authzen_mode}
    if authzen_mode == "token":
        authzen.update(tenant="acme", server_id="files", server_resource=RESOURCE)
    else:
        authzen.update(bundle=str(TODO_BUNDLE), entrypoint="authzen/todo/decision")
    return {"ext_authz": {"enabled": True, "tenant": "acme", "server_id": "files",
                          "server_resource": RESOURCE,
                          "resource_metadata_url": RESOURCE_METADATA},
            "ext_mcp": {"enabled": True, "tenant": "acme", "server_resource": RESOURCE},
            "authzen": authzen}


# --- Envoy ext_authz ------------------------------------------------------------------------

def jsonrpc(method: str, params: dict[str, Any] | None = None, id: int = 7) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def tool_call(name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    return jsonrpc("tools/call", {"name": name, "arguments": arguments or {}})


def envoy_check(body: Any = None, token: str | None = None, *, mcp_headers: bool = True,
                headers: dict[str, str] | None = None, raw: bool = False, method: str = "POST",
                extensions: dict[str, str] | None = None) -> external_auth_pb2.CheckRequest:
    """A CheckRequest as Envoy's ext_authz filter sends it for MCP over streamable HTTP
    (``with_request_body`` on; ``raw`` = ``pack_as_bytes``)."""
    text = body if isinstance(body, str | bytes) else (
        json.dumps(body) if body is not None else "")
    data = text.encode() if isinstance(text, str) else text
    all_headers = {":authority": "mcp.example.com", ":method": method, ":path": "/mcp",
                   ":scheme": "https", "content-type": "application/json",
                   "accept": "application/json, text/event-stream",
                   "mcp-protocol-version": "2025-11-25", "mcp-session-id": "sess-1",
                   "x-request-id": "envoy-req-1"}
    if token is not None:
        all_headers["authorization"] = f"Bearer {token}"
    if mcp_headers and isinstance(body, dict) and "method" in body:
        all_headers["mcp-method"] = body["method"]
        params = body.get("params") or {}
        name = params.get("uri") if body["method"].startswith("resources/") else params.get(
            "name")
        if isinstance(name, str):
            all_headers["mcp-name"] = name
    all_headers.update(headers or {})
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        id="envoy-req-1", method=method, headers=all_headers, path="/mcp",
        host="mcp.example.com", scheme="https", protocol="HTTP/1.1", size=len(data))
    if raw:
        http.raw_body = data
    else:
        http.body = data.decode("utf-8", "replace")
    attributes = attribute_context_pb2.AttributeContext(
        request=attribute_context_pb2.AttributeContext.Request(http=http),
        context_extensions=extensions or {})
    return external_auth_pb2.CheckRequest(attributes=attributes)


def envoy_stub(running: Running) -> tuple[grpc.Channel, external_auth_pb2_grpc.AuthorizationStub]:
    channel = grpc.insecure_channel(running.grpc_target)
    return channel, external_auth_pb2_grpc.AuthorizationStub(channel)


def response_headers(options: Any) -> dict[str, str]:
    return {o.header.key: o.header.value for o in options}


def denied_body(response: external_auth_pb2.CheckResponse) -> dict[str, Any]:
    return json.loads(response.denied_response.body)


# --- agentgateway ExtMcp --------------------------------------------------------------------

def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


def mcp_metadata(token: str | None, correlation: str | None = "call-1",
                 **extra: Any) -> struct_pb2.Struct:
    values: dict[str, Any] = dict(extra)
    if token is not None:
        values["authorization"] = f"Bearer {token}"
    if correlation is not None:
        values["request_id"] = correlation
    return struct(values)


def ext_mcp_stub(running: Running) -> tuple[grpc.Channel, ext_mcp_pb2_grpc.ExtMcpStub]:
    channel = grpc.insecure_channel(running.grpc_target)
    return channel, ext_mcp_pb2_grpc.ExtMcpStub(channel)


def mcp_request(method: str, params: dict[str, Any] | None, metadata: struct_pb2.Struct,
                service: str = "files") -> ext_mcp_pb2.McpRequest:
    request = ext_mcp_pb2.McpRequest(service_name=service, method=method,
                                     metadata_context=metadata)
    if params is not None:
        request.mcp_request.CopyFrom(struct(params))
    return request


def mcp_response(method: str, result: dict[str, Any], metadata: struct_pb2.Struct,
                 service: str = "files") -> ext_mcp_pb2.McpResponse:
    return ext_mcp_pb2.McpResponse(service_name=service, method=method,
                                   metadata_context=metadata, mcp_response=struct(result))


def error_data(result: Any) -> dict[str, Any]:
    return dict(result.error.mcp_error)


# --- AuthZEN --------------------------------------------------------------------------------

def authzen_post(port: int, path: str, document: Any, secret: str | None = PEP_SECRET,
                 headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """One POST over a real HTTP connection; returns status, headers, the JSON body."""
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    all_headers = {"Content-Type": "application/json"}
    if secret is not None:
        all_headers["Authorization"] = f"Bearer {secret}"
    all_headers.update(headers or {})
    return _http(port, "POST", path, body, all_headers)


def authzen_get(port: int, path: str) -> tuple[int, dict[str, str], Any]:
    return _http(port, "GET", path, None, {})


def _http(port: int, method: str, path: str, body: bytes | None,
          headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(
            data) if data else None
    finally:
        connection.close()


def mcp_evaluation(token: str | None, tool: str, arguments: dict[str, Any] | None = None,
                   action: str = "tools/call", resource_type: str = "tool") -> dict[str, Any]:
    """An AuthZEN evaluation for an MCP call, mapped as the draft COAZ MCP profile does."""
    subject: dict[str, Any] = {"type": "user", "id": "alice"}
    if token is not None:
        subject["properties"] = {"token": token}
    return {"subject": subject, "action": {"name": action},
            "resource": {"type": resource_type, "id": tool, "properties": arguments or {}}}
