"""agentgateway ExtMcp through a real gRPC client generated from proto/agentgateway/...: request
gating, tools/list filtering, result redaction and size limits, and the correlation cache."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from adapter_support import (
    Running,
    all_adapters,
    error_data,
    ext_mcp_stub,
    mcp_metadata,
    mcp_request,
    mcp_response,
    running_app,
)
from google.protobuf.json_format import MessageToDict

from mcp_authz._pb.agentgateway.dev.ext_mcp import ext_mcp_pb2
from mcp_authz.adapters.ext_mcp import DecisionCache
from mcp_authz.adapters.results import REDACTED, enforce, parse_path
from mcp_authz.errors import PolicyError
from mcp_authz.model import Obligation
from support import POLICIES, JsonServer, Keys

Code = ext_mcp_pb2.AuthorizationError.Code
IN_TENANT = "/srv/mcp/acme/notes.txt"
CARD = "4111111111111111"
ACCOUNT = "DE89370400440532013000"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory,
            jwks_server: JsonServer) -> Iterator[Running]:
    """The default bundle (its decision also answers tools/list, for FilterTools)."""
    directory = tmp_path_factory.mktemp("ext_mcp")
    with running_app(directory, jwks_server, adapters=all_adapters(),
                     policy={"bundle": str(POLICIES)}) as app:
        yield app


@pytest.fixture(scope="module")
def stub(running: Running) -> Iterator[Any]:
    channel, client = ext_mcp_stub(running)
    yield client
    channel.close()


def _read(path: str = IN_TENANT) -> dict[str, Any]:
    return {"name": "read_file", "arguments": {"path": path}}


@pytest.mark.requirement("ext-mcp-gates-requests")
def test_allowed_call_passes_with_the_decision_id(stub: Any, keys: Keys) -> None:
    metadata = mcp_metadata(keys.token(scopes=("files:read",)), "gate-1")
    result = stub.CheckRequest(mcp_request("tools/call", _read(), metadata))
    assert result.WhichOneof("result") == "pass"
    assert result.metadata["mcp_authz_decision_id"]
    # its response is then matched to this decision (and consumed)
    answer = stub.CheckResponse(mcp_response("tools/call", {"content": []}, metadata))
    assert answer.WhichOneof("result") == "pass"


@pytest.mark.parametrize(("token_scopes", "params", "reason"), [
    (("files:read",), {"name": "write_file", "arguments": {"path": IN_TENANT}}, "scope_missing"),
    (("files:read",), {"name": "read_file", "arguments": {"path": "/etc/shadow"}},
     "argument_violation"),
    (None, {"name": "read_file", "arguments": {"path": IN_TENANT}}, "token_missing"),
    (("files:read",), {"name": "no_such_tool", "arguments": {}}, "tool_unknown"),
])
def test_denied_call_is_permission_denied_with_the_reason(stub: Any, keys: Keys,
                                                          token_scopes: Any, params: Any,
                                                          reason: str) -> None:
    token = keys.token(scopes=token_scopes) if token_scopes is not None else None
    result = stub.CheckRequest(mcp_request("tools/call", params, mcp_metadata(token, "d-1")))
    assert result.WhichOneof("result") == "error"
    assert result.error.code == Code.PERMISSION_DENIED
    assert result.error.reason.startswith(f"{reason}: ")
    assert error_data(result)["reason"] == reason


def test_token_may_come_from_the_forwarded_authorization_header(stub: Any, keys: Keys) -> None:
    request = mcp_request("tools/call", _read(), mcp_metadata(None, "hdr-1"))
    request.headers.add(key="Authorization", value=f"Bearer {keys.token(scopes=('files:read',))}")
    assert stub.CheckRequest(request).WhichOneof("result") == "pass"


def test_resources_read_and_prompts_get_are_decided(stub: Any, keys: Keys) -> None:
    token = keys.token(scopes=("files:read",))
    allowed = stub.CheckRequest(mcp_request("resources/read", {"uri": f"file://{IN_TENANT}"},
                                            mcp_metadata(token, "res-1")))
    assert allowed.WhichOneof("result") == "pass"
    denied = stub.CheckRequest(mcp_request("prompts/get", {"name": "simple-prompt"},
                                           mcp_metadata(token, None)))
    assert error_data(denied)["reason"] == "scope_missing"


def test_lifecycle_passes_and_unknown_methods_are_denied(stub: Any, keys: Keys) -> None:
    metadata = mcp_metadata(keys.token(), None)
    assert stub.CheckRequest(mcp_request("initialize", {}, metadata)).WhichOneof(
        "result") == "pass"
    denied = stub.CheckRequest(mcp_request("sampling/createMessage", {}, metadata))
    assert denied.error.code == Code.PERMISSION_DENIED
    assert error_data(denied)["reason"] == "tool_unknown"


@pytest.mark.requirement("ext-mcp-filters-tools-list")
def test_tools_list_response_is_filtered_for_the_caller(stub: Any, keys: Keys) -> None:
    tools = [{"name": "read_file", "inputSchema": {"type": "object"},
              "annotations": {"readOnlyHint": True}},
             {"name": "write_file", "inputSchema": {"type": "object"}},
             {"name": "not_in_catalog", "inputSchema": {"type": "object"}}]
    result = stub.CheckResponse(mcp_response(
        "tools/list", {"tools": tools, "nextCursor": "c2"},
        mcp_metadata(keys.token(scopes=("files:read",)), None)))
    assert result.WhichOneof("result") == "mutated"
    mutated = _plain(result.mutated)
    assert [t["name"] for t in mutated["tools"]] == ["read_file"]
    assert mutated["nextCursor"] == "c2"
    nobody = stub.CheckResponse(mcp_response("tools/list", {"tools": tools},
                                             mcp_metadata(None, None)))
    assert list(nobody.mutated["tools"]) == []


def _plain(value: Any) -> Any:
    return MessageToDict(value)


def _pay(stub: Any, keys: Keys, correlation: str, token: str | None = None) -> Any:
    token = token or keys.token(scopes=("payments:write",), roles=("finance",))
    metadata = mcp_metadata(token, correlation)
    allowed = stub.CheckRequest(mcp_request(
        "tools/call", {"name": "pay_invoice", "arguments": {"amount": 250}}, metadata))
    assert allowed.WhichOneof("result") == "pass"
    return metadata


@pytest.mark.requirement("ext-mcp-redacts-results")
def test_call_result_is_redacted_everywhere_the_values_appear(stub: Any, keys: Keys) -> None:
    metadata = _pay(stub, keys, "pay-1")
    structured = {"status": "paid", "account_number": ACCOUNT, "card_number": CARD}
    result = {"content": [{"type": "text", "text": json.dumps(structured)},
                          {"type": "text", "text": f"charged card {CARD}"}],
              "structuredContent": structured, "isError": False}
    answer = stub.CheckResponse(mcp_response("tools/call", result, metadata))
    assert answer.WhichOneof("result") == "mutated"
    mutated = _plain(answer.mutated)
    assert mutated["structuredContent"] == {"status": "paid"}
    assert json.loads(mutated["content"][0]["text"]) == {"status": "paid"}
    assert mutated["content"][1]["text"] == REDACTED
    assert CARD not in json.dumps(mutated) and ACCOUNT not in json.dumps(mutated)


@pytest.mark.requirement("ext-mcp-max-result-bytes")
def test_oversized_call_result_is_replaced_by_a_tool_error(stub: Any, keys: Keys) -> None:
    metadata = mcp_metadata(keys.token(scopes=("files:read",)), "big-1")
    assert stub.CheckRequest(mcp_request("tools/call", _read(), metadata)).WhichOneof(
        "result") == "pass"
    big = {"content": [{"type": "text", "text": "x" * (1024 * 1024 + 1)}]}
    answer = stub.CheckResponse(mcp_response("tools/call", big, metadata))
    mutated = _plain(answer.mutated)
    assert mutated["isError"] is True
    assert "1048576 bytes" in mutated["content"][0]["text"]


def test_response_without_a_decision_on_record_is_denied(stub: Any, keys: Keys) -> None:
    token = keys.token(scopes=("payments:write",), roles=("finance",))
    for metadata in (mcp_metadata(token, "never-decided"), mcp_metadata(token, None)):
        answer = stub.CheckResponse(mcp_response("tools/call", {"content": []}, metadata))
        assert answer.error.code == Code.PERMISSION_DENIED
        assert error_data(answer)["reason"] == "decision_unknown"


def test_a_decision_is_bound_to_the_callers_token(stub: Any, keys: Keys) -> None:
    _pay(stub, keys, "pay-bound")
    other = mcp_metadata(keys.token(sub="mallory", scopes=("payments:write",)), "pay-bound")
    answer = stub.CheckResponse(mcp_response("tools/call", {"content": []}, other))
    assert error_data(answer)["reason"] == "decision_unknown"


def test_result_obligations_without_correlation_id_are_denied_up_front(stub: Any,
                                                                      keys: Keys) -> None:
    """read_file carries max_result_bytes: with no id to match its response, it cannot pass."""
    result = stub.CheckRequest(mcp_request(
        "tools/call", _read(), mcp_metadata(keys.token(scopes=("files:read",)), None)))
    assert error_data(result)["reason"] == "obligation_unenforceable"


def test_a_correlation_id_in_flight_cannot_be_reused(stub: Any, keys: Keys) -> None:
    token = keys.token(scopes=("payments:write",), roles=("finance",))
    _pay(stub, keys, "dup-1", token)
    again = stub.CheckRequest(mcp_request(
        "tools/call", {"name": "pay_invoice", "arguments": {"amount": 250}},
        mcp_metadata(token, "dup-1")))
    assert error_data(again)["reason"] == "obligation_unenforceable"


@pytest.mark.parametrize(("message", "field"), [
    (mcp_request("tools/call", {"name": 3}, mcp_metadata("t", None)), "mcp_request.name"),
    (mcp_request("tools/call", {"name": "read_file", "arguments": "x"}, mcp_metadata("t", None)),
     "mcp_request.arguments"),
])
def test_malformed_params_are_invalid(stub: Any, message: Any, field: str) -> None:
    result = stub.CheckRequest(message)
    assert result.error.code == Code.INVALID
    assert result.error.reason.startswith(f"{field}: ")


def test_unparsable_message_is_invalid_and_the_server_keeps_serving(running: Running,
                                                                    stub: Any,
                                                                    keys: Keys) -> None:
    with grpc.insecure_channel(running.grpc_target) as channel:
        raw = channel.unary_unary("/agentgateway.dev.ext_mcp.ExtMcp/CheckRequest")
        answer = ext_mcp_pb2.McpRequestResult.FromString(raw(b"\x22\xff\xff\xff\xff"))
    assert answer.error.code == Code.INVALID
    metadata = mcp_metadata(keys.token(scopes=("files:read",)), "after-garbage")
    assert stub.CheckRequest(mcp_request("tools/call", _read(), metadata)).WhichOneof(
        "result") == "pass"


def test_cache_is_bounded_and_expires() -> None:
    now = [0.0]
    cache = DecisionCache(size=2, ttl_seconds=10, clock=lambda: now[0])
    assert cache.put("a", ()) and cache.put("b", ()) and cache.put("c", ())
    assert len(cache) == 2 and cache.pop("a") is None  # evicted: its response is denied
    now[0] = 11
    assert cache.pop("b") is None and cache.pop("c") is None


def test_redaction_paths() -> None:
    assert parse_path("$.a[0]['b c'][*].d") == ["a", 0, "b c", parse_path("$[*]")[0], "d"]
    result = {"items": [{"secret": "s3cr3t", "ok": 1}, {"secret": "t0p-s3", "ok": 2}]}
    enforced = enforce(result, [Obligation("redact", {"paths": ["$.items[*].secret"]})])
    assert enforced.result == {"items": [{"ok": 1}, {"ok": 2}]} and enforced.changed
    with pytest.raises(PolicyError):
        parse_path("items.secret")
    with pytest.raises(PolicyError):
        enforce(result, [Obligation("max_result_bytes", {"bytes": 0})])
