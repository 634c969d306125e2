"""The same MCP call through all four APIs (native Decide, Envoy ext_authz, agentgateway ExtMcp,
AuthZEN) gives the same decision and reason on the default bundle, and every adapter decision is
in the native decision log, without the token."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from adapter_support import (
    Running,
    all_adapters,
    authzen_post,
    denied_body,
    envoy_check,
    envoy_stub,
    error_data,
    ext_mcp_stub,
    mcp_evaluation,
    mcp_metadata,
    mcp_request,
    response_headers,
    running_app,
    tool_call,
)

from mcp_authz._pb.mcp.authz.v1 import authz_pb2_grpc as pb_grpc
from mcp_authz.decisions import DecisionRecord
from support import JsonServer, Keys, decide_request

IN_TENANT = "/srv/mcp/acme/notes.txt"
_ids = itertools.count()

# (case, token claims or None, tool, arguments, expected allow, expected primary reason)
CASES = [
    ("allow", {"scopes": ("files:read",)}, "read_file", {"path": IN_TENANT}, True, ""),
    ("scope", {"scopes": ("files:read",)}, "write_file", {"path": IN_TENANT}, False,
     "scope_missing"),
    ("approval", {"scopes": ("files:write",)}, "delete_file", {"path": IN_TENANT}, False,
     "approval_required"),
    ("argument", {"scopes": ("files:read",)}, "read_file", {"path": "/etc/passwd"}, False,
     "argument_violation"),
    ("unknown", {"scopes": ("files:read",)}, "format_disk", {}, False, "tool_unknown"),
    ("tenant", {"scopes": ("files:read",), "tenant": "globex"}, "read_file",
     {"path": IN_TENANT}, False, "tenant_mismatch"),
    ("no token", None, "read_file", {"path": IN_TENANT}, False, "token_missing"),
    ("expired", {"scopes": ("files:read",), "ttl": 60, "now": 1_000_000}, "read_file",
     {"path": IN_TENANT}, False, "token_expired"),
]


@pytest.fixture(scope="module")
def log_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("parity_log") / "decisions.jsonl"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, jwks_server: JsonServer,
            log_path: Path) -> Iterator[Running]:
    with running_app(tmp_path_factory.mktemp("parity"), jwks_server, adapters=all_adapters(),
                     decision_log={"enabled": True, "sink": "file",
                                   "path": str(log_path)}) as app:
        yield app


def _native(running: Running, token: str, tool: str, arguments: dict[str, Any]) -> tuple:
    with grpc.insecure_channel(running.grpc_target) as channel:
        decision = pb_grpc.DecisionServiceStub(channel).Decide(
            decide_request(token, tool, arguments))
    return decision.allow, decision.reasons[0].code if decision.reasons else "", \
        decision.decision_id


def _ext_authz(running: Running, token: str, tool: str, arguments: dict[str, Any]) -> tuple:
    channel, stub = envoy_stub(running)
    with channel:
        response = stub.Check(envoy_check(tool_call(tool, arguments), token or None))
    if response.WhichOneof("http_response") == "ok_response":
        return True, "", response_headers(response.ok_response.headers)[
            "x-mcp-authz-decision-id"]
    data = denied_body(response)["error"]["data"]
    return False, data["reason"], data["decision_id"]


def _ext_mcp(running: Running, token: str, tool: str, arguments: dict[str, Any]) -> tuple:
    channel, stub = ext_mcp_stub(running)
    with channel:
        result = stub.CheckRequest(mcp_request(
            "tools/call", {"name": tool, "arguments": arguments},
            mcp_metadata(token or None, f"parity-{next(_ids)}")))
    if result.WhichOneof("result") == "pass":
        return True, "", result.metadata["mcp_authz_decision_id"]
    data = error_data(result)
    return False, data["reason"], data["decision_id"]


def _authzen(running: Running, token: str, tool: str, arguments: dict[str, Any]) -> tuple:
    status, _, body = authzen_post(running.authzen_port, "/access/v1/evaluation",
                                   mcp_evaluation(token or None, tool, arguments))
    assert status == 200, body
    reasons = body["context"].get("reasons", [])
    return body["decision"], reasons[0]["code"] if reasons else "", body["context"]["decision_id"]


class _Capture:
    """An observer on the decision path: what the policy saw."""

    def __init__(self, inputs: list[Any]):
        self.inputs = inputs

    def observe(self, record: DecisionRecord) -> None:
        self.inputs.append(record.input)


APIS = {"native": _native, "ext_authz": _ext_authz, "ext_mcp": _ext_mcp, "authzen": _authzen}
DECISION_IDS: list[str] = []
TOKENS: list[str] = []


@pytest.mark.requirement("adapters-same-decision")
@pytest.mark.parametrize(("case", "claims", "tool", "arguments", "allow", "reason"), CASES,
                         ids=[c[0] for c in CASES])
def test_all_four_apis_agree(running: Running, keys: Keys, case: str, claims: Any, tool: str,
                             arguments: dict[str, Any], allow: bool, reason: str) -> None:
    token = keys.token(**claims) if claims is not None else ""
    TOKENS.append(token)
    outcomes = {}
    for name, call in APIS.items():
        got_allow, got_reason, decision_id = call(running, token, tool, arguments)
        outcomes[name] = (got_allow, got_reason)
        DECISION_IDS.append(decision_id)
    assert outcomes == dict.fromkeys(APIS, (allow, reason))


def test_authzen_approval_tokens_are_verified_and_never_reach_the_input(
        running: Running, keys: Keys) -> None:
    token = keys.token(scopes=("files:write",))
    approval = keys.approval_token("bob", "0" * 64)  # signed, but for another request
    evaluation = mcp_evaluation(token, "delete_file", {"path": IN_TENANT})
    evaluation["context"] = {"approval_tokens": [approval]}
    inputs: list[Any] = []
    running.app.path.add_observer(_Capture(inputs))
    status, _, body = authzen_post(running.authzen_port, "/access/v1/evaluation", evaluation)
    assert status == 200 and body["decision"] is False
    assert "approval_invalid" in [r["code"] for r in body["context"]["reasons"]]
    seen = json.dumps(inputs)
    assert "delete_file" in seen and approval not in seen and token not in seen
    TOKENS.extend([token, approval])
    DECISION_IDS.append(body["context"]["decision_id"])


def test_adapter_decisions_are_in_the_decision_log_without_tokens(log_path: Path) -> None:
    assert DECISION_IDS, "runs after test_all_four_apis_agree"
    deadline = time.monotonic() + 10  # the log is written off the request path
    while True:
        text = log_path.read_text() if log_path.exists() else ""
        logged = {json.loads(line)["decision_id"] for line in text.splitlines()}
        if set(DECISION_IDS) <= logged or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert set(DECISION_IDS) - logged == set()
    assert not [t for t in TOKENS if t and t in text]
