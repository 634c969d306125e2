"""Envoy ext_authz v3 through a real gRPC client built from xds-protos, with CheckRequests shaped
as Envoy sends them for MCP over streamable HTTP, against the App on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from adapter_support import (
    RESOURCE_METADATA,
    Running,
    all_adapters,
    denied_body,
    envoy_check,
    envoy_stub,
    jsonrpc,
    response_headers,
    running_app,
    tool_call,
)
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mcp_authz.adapters.components import AdapterGrpcServer
from support import JsonServer, Keys

IN_TENANT = "/srv/mcp/acme/notes.txt"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory,
            jwks_server: JsonServer) -> Iterator[Running]:
    with running_app(tmp_path_factory.mktemp("ext_authz"), jwks_server,
                     adapters=all_adapters()) as app:
        yield app


@pytest.fixture(scope="module")
def check(running: Running) -> Iterator[Any]:
    channel, stub = envoy_stub(running)
    yield stub.Check
    channel.close()


def _denied(response: external_auth_pb2.CheckResponse) -> tuple[int, dict[str, str], Any]:
    assert response.WhichOneof("http_response") == "denied_response"
    assert response.status.code != 0
    denied = response.denied_response
    return denied.status.code, response_headers(denied.headers), denied_body(response)


@pytest.mark.requirement("ext-authz-allow-carries-obligations")
def test_allow_forwards_decision_id_and_obligations_upstream(check: Any, keys: Keys) -> None:
    response = check(envoy_check(tool_call("read_file", {"path": IN_TENANT}),
                                 keys.token(scopes=("files:read",))))
    assert response.status.code == 0
    assert response.WhichOneof("http_response") == "ok_response"
    headers = response_headers(response.ok_response.headers)
    assert headers["x-mcp-authz-decision-id"]
    assert json.loads(headers["x-mcp-authz-obligations"]) == [
        {"type": "max_result_bytes", "params": {"bytes": 1048576}}]
    # a client cannot smuggle its own decision headers past Envoy: ours overwrite them
    assert all(o.append_action == o.OVERWRITE_IF_EXISTS_OR_ADD
               for o in response.ok_response.headers)


def test_allow_with_raw_body_as_pack_as_bytes_sends_it(check: Any, keys: Keys) -> None:
    response = check(envoy_check(tool_call("read_file", {"path": IN_TENANT}),
                                 keys.token(scopes=("files:read",)), raw=True))
    assert response.WhichOneof("http_response") == "ok_response"


@pytest.mark.requirement("ext-authz-deny-is-403-jsonrpc")
def test_policy_deny_is_403_with_jsonrpc_error_and_reason(check: Any, keys: Keys) -> None:
    token = keys.token(scopes=("files:read",))
    status, headers, body = _denied(check(envoy_check(
        tool_call("read_file", {"path": "/etc/passwd"}), token)))
    assert status == 403
    assert "www-authenticate" not in headers
    assert headers["content-type"] == "application/json"
    assert body["jsonrpc"] == "2.0" and body["id"] == 7
    assert body["error"]["data"]["reason"] == "argument_violation"
    assert body["error"]["message"].startswith("argument_violation: ")


def test_approval_deny_carries_the_require_approval_obligation(check: Any, keys: Keys) -> None:
    token = keys.token(scopes=("files:write",))
    status, _, body = _denied(check(envoy_check(
        tool_call("delete_file", {"path": IN_TENANT}), token)))
    assert status == 403
    assert body["error"]["data"]["reason"] == "approval_required"
    [obligation] = body["error"]["data"]["obligations"]
    assert obligation["type"] == "require_approval" and len(obligation["params"]["digest"]) == 64


@pytest.mark.requirement("ext-authz-401-www-authenticate")
def test_missing_token_is_401_with_resource_metadata(check: Any) -> None:
    status, headers, body = _denied(check(envoy_check(tool_call("read_file",
                                                                {"path": IN_TENANT}))))
    assert status == 401
    assert headers["www-authenticate"] == f'Bearer resource_metadata="{RESOURCE_METADATA}"'
    assert body["error"]["data"]["reason"] == "token_missing"


def test_bad_token_is_401_invalid_token(check: Any, keys: Keys) -> None:
    expired = keys.token(scopes=("files:read",), ttl=60, now=1_000_000)
    status, headers, body = _denied(check(envoy_check(
        tool_call("read_file", {"path": IN_TENANT}), expired)))
    assert status == 401
    assert headers["www-authenticate"].startswith('Bearer error="invalid_token", ')
    assert body["error"]["data"]["reason"] == "token_expired"
    status, _, body = _denied(check(envoy_check(tool_call("read_file", {"path": IN_TENANT}),
                                                "not.a.jwt")))
    assert (status, body["error"]["data"]["reason"]) == (401, "token_invalid")


@pytest.mark.requirement("ext-authz-insufficient-scope")
def test_missing_scope_is_403_insufficient_scope_naming_the_scope(check: Any,
                                                                 keys: Keys) -> None:
    status, headers, body = _denied(check(envoy_check(
        tool_call("write_file", {"path": IN_TENANT}), keys.token(scopes=("files:read",)))))
    assert status == 403
    assert headers["www-authenticate"] == (
        f'Bearer error="insufficient_scope", scope="files:write", '
        f'resource_metadata="{RESOURCE_METADATA}"')
    assert body["error"]["data"]["reason"] == "scope_missing"


@pytest.mark.requirement("ext-authz-headers-agree-with-body")
@pytest.mark.parametrize(("headers", "field"), [
    ({"mcp-method": "tools/list"}, "Mcp-Method"),
    ({"mcp-name": "list_directory"}, "Mcp-Name"),
])
def test_mcp_headers_that_disagree_with_the_body_are_400(check: Any, keys: Keys,
                                                        headers: dict[str, str],
                                                        field: str) -> None:
    status, _, body = _denied(check(envoy_check(
        tool_call("read_file", {"path": IN_TENANT}), keys.token(scopes=("files:read",)),
        headers=headers)))
    assert status == 400
    assert body["error"]["code"] == -32600
    assert body["error"]["message"].startswith(f"{field}: ")


def test_headers_only_request_is_decided_without_arguments(check: Any, keys: Keys) -> None:
    """Without the body (no with_request_body) only Mcp-Method/Mcp-Name are known: the call is
    decided with no arguments, so a tool whose arguments are checked is denied, never allowed."""
    request = envoy_check(None, keys.token(scopes=("files:read",)),
                          headers={"mcp-method": "tools/call", "mcp-name": "read_file"})
    status, _, body = _denied(check(request))
    assert (status, body["error"]["data"]["reason"]) == (403, "argument_violation")


def test_context_extensions_name_the_tenant_per_route(check: Any, keys: Keys) -> None:
    status, _, body = _denied(check(envoy_check(
        tool_call("read_file", {"path": IN_TENANT}), keys.token(scopes=("files:read",)),
        extensions={"tenant": "globex"})))
    assert (status, body["error"]["data"]["reason"]) == (403, "tenant_mismatch")


def test_lifecycle_methods_pass_with_a_token_and_strip_forged_headers(check: Any,
                                                                      keys: Keys) -> None:
    response = check(envoy_check(jsonrpc("initialize", {"protocolVersion": "2025-11-25"}),
                                 keys.token(), headers={"x-mcp-authz-obligations": "[]"}))
    assert response.WhichOneof("http_response") == "ok_response"
    assert "x-mcp-authz-obligations" in response.ok_response.headers_to_remove
    status, _, _ = _denied(check(envoy_check(jsonrpc("tools/list"))))
    assert status == 401
    sse = check(envoy_check(None, keys.token(), method="GET"))
    assert sse.WhichOneof("http_response") == "ok_response"


def test_unknown_methods_are_denied(check: Any, keys: Keys) -> None:
    status, _, body = _denied(check(envoy_check(jsonrpc("sampling/createMessage", {}),
                                                keys.token())))
    assert (status, body["error"]["data"]["reason"]) == (403, "tool_unknown")


@pytest.mark.requirement("ext-authz-bad-input-denied")
@pytest.mark.parametrize(("body", "headers", "status", "says"), [
    ("{not json", {}, 400, "body: is not a JSON-RPC message"),
    ([{"jsonrpc": "2.0", "id": 1, "method": "tools/call"}], {}, 400, "JSON-RPC batches"),
    ({"jsonrpc": "1.0", "id": 1, "method": "tools/call"}, {}, 400, "body.jsonrpc"),
    ({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": 5}}, {}, 400,
     "body.params.name"),
    ({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "x" * 10}},
     {"x-envoy-auth-partial-body": "true"}, 413, "body: exceeds limits.max_body_bytes"),
    ("", {}, 400, "an MCP POST needs its JSON-RPC body"),
])
def test_malformed_requests_are_clear_denies(check: Any, keys: Keys, body: Any,
                                             headers: dict[str, str], status: int,
                                             says: str) -> None:
    got, _, document = _denied(check(envoy_check(body, keys.token(), mcp_headers=False,
                                                 headers=headers)))
    assert got == status
    assert says in document["error"]["message"]


def test_oversized_body_is_413(tmp_path: Path, jwks_server: JsonServer, keys: Keys) -> None:
    adapters = all_adapters()
    adapters["ext_authz"]["max_body_bytes"] = 64
    with running_app(tmp_path, jwks_server, adapters={"ext_authz": adapters["ext_authz"]}) as app:
        channel, stub = envoy_stub(app)
        with channel:
            big = tool_call("read_file", {"path": IN_TENANT, "pad": "x" * 200})
            status, _, body = _denied(stub.Check(envoy_check(big, keys.token())))
    assert status == 413 and "max_body_bytes" in body["error"]["message"]


def test_unparsable_message_is_denied_and_the_server_keeps_serving(running: Running,
                                                                   check: Any,
                                                                   keys: Keys) -> None:
    channel = grpc.insecure_channel(running.grpc_target)
    with channel:
        raw = channel.unary_unary("/envoy.service.auth.v3.Authorization/Check")
        answer = external_auth_pb2.CheckResponse.FromString(raw(b"\x0a\xff\xff\xff\xff"))
    assert answer.denied_response.status.code == 400
    response = check(envoy_check(tool_call("read_file", {"path": IN_TENANT}),
                                 keys.token(scopes=("files:read",))))
    assert response.WhichOneof("http_response") == "ok_response"


def test_own_listener_serves_check_and_health(tmp_path: Path, jwks_server: JsonServer,
                                              keys: Keys) -> None:
    adapters = all_adapters()
    adapters["ext_authz"]["listen"] = "127.0.0.1:0"
    with running_app(tmp_path, jwks_server, adapters={"ext_authz": adapters["ext_authz"]}) as app:
        own = next(c for c in app.app.components if isinstance(c, AdapterGrpcServer))
        channel = grpc.insecure_channel(f"127.0.0.1:{own.port}")
        with channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            response = stub.Check(envoy_check(tool_call("read_file", {"path": IN_TENANT}),
                                              keys.token(scopes=("files:read",))))
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert response.WhichOneof("http_response") == "ok_response"
