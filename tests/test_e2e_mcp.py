"""End to end, as real processes on loopback: `mcp-authz serve`, the example MCP server (the
middleware) and `mcp-authz gateway` in front of the real filesystem (npm) and git (PyPI) servers,
called by the official `mcp` client with tokens from a real issuer key served as JWKS.

Every deny also checks that its side effect did not happen. The last test stops the decision
service: from then on every call is denied and nothing runs.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from mcp_authz import devstack
from mcp_authz.integrations.mcp import APPROVAL_META_KEY, DECISION_META_KEY
from support import ISSUER, POLICIES, RESOURCE, JsonServer, Keys, write_config

GATEWAY = "https://mcp.example.com/gateway"
ACCEPT = {"Accept": "application/json, text/event-stream"}
READER = ("files:read", "sql:read", "git:read")

pytestmark = pytest.mark.slow


@dataclass
class Stack:
    service: devstack.Process
    example: devstack.Process
    gateway: devstack.Process
    example_root: Path
    gateway_root: Path
    repo: Path

    @property
    def example_url(self) -> str:
        return self.example.url + "/mcp"

    @property
    def gateway_url(self) -> str:
        return self.gateway.url + "/mcp"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout


def _make_repo(repo: Path) -> None:
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "e2e@example.com")
    _git(repo, "config", "user.name", "e2e")
    (repo / "README.md").write_text("hello\n")
    _git(repo, "add", "README.md")
    _git(repo, "commit", "-q", "-m", "initial")
    (repo / "staged.txt").write_text("staged\n")
    _git(repo, "add", "staged.txt")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, jwks_server: JsonServer) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("e2e")
    logs = tmp / "logs"
    logs.mkdir()
    config = write_config(tmp, jwks_server.url("/jwks.json"),
                          jwks_server.url("/approval-jwks.json"), bundle=POLICIES)
    gateway_root = tmp / "gw"
    (gateway_root / "sandbox" / "acme").mkdir(parents=True)
    (gateway_root / "sandbox" / "acme" / "doc.txt").write_text("acme document\n")
    (gateway_root / "sandbox" / "globex").mkdir(parents=True)
    (gateway_root / "sandbox" / "globex" / "plan.txt").write_text("globex plan\n")
    repo = gateway_root / "sandbox" / "acme" / "repo"
    _make_repo(repo)
    processes: list[devstack.Process] = []
    try:
        service, target = devstack.start_service(config, logs)
        processes.append(service)
        example = devstack.start_example(tmp / "example", target, logs, resource=RESOURCE,
                                         issuer=ISSUER, wait=False)
        processes.append(example)
        gateway_config = devstack.write_gateway_config(
            tmp / "gateway.yaml", authz=target, resource=GATEWAY, issuer=ISSUER, tenant="acme",
            upstreams=[devstack.filesystem_upstream("files", gateway_root),
                       devstack.git_upstream("git", repo, gateway_root)])
        gateway = devstack.start_gateway(gateway_config, logs, wait=False)
        processes.append(gateway)
        example.wait_ready()
        gateway.wait_ready()
        yield Stack(service, example, gateway, tmp / "example", gateway_root, repo)
    finally:
        for process in reversed(processes):
            process.stop()


def _session(url: str, token: str | None,
             body: Callable[[Client], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx2.AsyncClient(headers=headers) as http:
            async with Client(streamable_http_client(url, http_client=http)) as client:
                return await body(client)
    return anyio.run(run)


def tool_names(url: str, token: str) -> set[str]:
    async def body(client: Client) -> set[str]:
        return {tool.name for tool in (await client.list_tools()).tools}
    return _session(url, token, body)


def call(url: str, token: str, name: str, arguments: dict[str, Any],
         approvals: tuple[str, ...] = ()) -> CallToolResult:
    async def body(client: Client) -> CallToolResult:
        await client.list_tools()
        meta = {APPROVAL_META_KEY: list(approvals)} if approvals else None
        return await client.call_tool(name, arguments, meta=meta)
    return _session(url, token, body)


def denial(result: CallToolResult) -> dict[str, Any]:
    assert result.is_error, result
    return (result.meta or {})[DECISION_META_KEY]


def text(result: CallToolResult) -> str:
    assert not result.is_error, result.content
    return "".join(getattr(block, "text", "") for block in result.content)


# --- the example server (middleware) ----------------------------------------------------------

@pytest.mark.requirement("tools-list-filtered")
def test_alice_lists_only_the_tools_her_scopes_allow(stack: Stack, keys: Keys) -> None:
    names = tool_names(stack.example_url, keys.token("alice", "acme", READER))
    assert {"read_file", "list_dir", "sql_query"} <= names
    assert not names & {"write_file", "delete_file", "pay_invoice", "http_fetch"}


def test_alice_reads_a_file_in_her_sandbox(stack: Stack, keys: Keys) -> None:
    result = call(stack.example_url, keys.token("alice", "acme", READER), "read_file",
                  {"path": "sandbox/acme/notes.txt"})
    assert "Quarterly planning notes" in text(result)


@pytest.mark.requirement("tenant-isolation")
@pytest.mark.parametrize("path", ["sandbox/acme/../globex/secrets.txt",
                                  "sandbox/globex/secrets.txt", "/etc/passwd"])
def test_escapes_and_other_tenants_data_are_denied(stack: Stack, keys: Keys, path: str) -> None:
    result = call(stack.example_url, keys.token("alice", "acme", READER), "read_file",
                  {"path": path})
    assert denial(result)["reason"] == "argument_violation"
    assert "globex internal data" not in json.dumps(result.model_dump())


@pytest.mark.requirement("deny-has-no-side-effect")
def test_write_without_the_write_scope_is_denied_with_the_scope_to_ask_for(
        stack: Stack, keys: Keys) -> None:
    target = stack.example_root / "sandbox" / "acme" / "notes.txt"
    before = target.read_text()
    result = call(stack.example_url, keys.token("alice", "acme", READER), "write_file",
                  {"path": "sandbox/acme/notes.txt", "content": "overwritten"})
    details = denial(result)
    assert details["reason"] == "scope_missing"
    assert details["scope"] == "files:write"
    assert target.read_text() == before


@pytest.mark.requirement("fail-closed-identity")
@pytest.mark.parametrize("kind, reason", [("other_tenant", "tenant_mismatch"),
                                          ("expired", "token_expired"),
                                          ("other_audience", "audience_mismatch")])
def test_bad_tokens_see_nothing_and_are_denied(stack: Stack, keys: Keys, kind: str,
                                               reason: str) -> None:
    token = {
        "other_tenant": keys.token("gina", "globex", READER),
        "expired": keys.token("alice", "acme", READER, ttl=600, now=time.time() - 3600),
        "other_audience": keys.token("alice", "acme", READER,
                                     audience="https://elsewhere.example.com/mcp"),
    }[kind]
    assert tool_names(stack.example_url, token) == set()
    result = call(stack.example_url, token, "read_file", {"path": "sandbox/acme/notes.txt"})
    assert denial(result)["reason"] == reason


def _customer_name(stack: Stack, customer: int) -> str:
    with sqlite3.connect(stack.example_root / "example.db") as db:
        return db.execute("SELECT name FROM customers WHERE id = ?", (customer,)).fetchone()[0]


@pytest.mark.requirement("deny-has-no-side-effect")
def test_sql_write_is_denied_without_sql_write_and_the_row_is_unchanged(
        stack: Stack, keys: Keys) -> None:
    update = {"query": "UPDATE customers SET name = 'pwned' WHERE id = 2"}
    result = call(stack.example_url, keys.token("alice", "acme", READER), "sql_query", update)
    assert denial(result)["reason"] == "argument_violation"
    assert _customer_name(stack, 2) == "Coyote Engineering"
    # The same statement with the write scope goes through: the row above was protected by
    # the decision, not by the server.
    writer = keys.token("dora", "acme", READER + ("sql:write",))
    assert not call(stack.example_url, writer, "sql_query", update).is_error
    assert _customer_name(stack, 2) == "pwned"


def test_redact_obligation_removes_payment_details(stack: Stack, keys: Keys) -> None:
    token = keys.token("fin", "acme", ("payments:write",), roles=("finance",))
    result = call(stack.example_url, token, "pay_invoice",
                  {"invoice_id": "INV-1001", "amount": 420})
    assert result.structured_content is not None
    assert result.structured_content["status"] == "paid"
    assert result.structured_content["account_number"] == "[redacted]"
    assert result.structured_content["card_number"] == "[redacted]"
    assert "4111111111111111" not in text(result)


@pytest.mark.requirement("approval")
def test_delete_needs_an_approval_from_another_approver_for_these_arguments(
        stack: Stack, keys: Keys) -> None:
    target = stack.example_root / "sandbox" / "acme" / "scratch.txt"
    bob = keys.token("bob", "acme", ("files:read", "files:write"))
    arguments = {"path": "sandbox/acme/scratch.txt"}
    details = denial(call(stack.example_url, bob, "delete_file", arguments))
    assert details["reason"] == "approval_required"
    digest = details["approval"]["digest"]
    assert target.exists()

    other = denial(call(stack.example_url, bob, "delete_file", {"path": "sandbox/acme/notes.txt"}))
    wrong = keys.approval_token("carol", other["approval"]["digest"])
    refused = denial(call(stack.example_url, bob, "delete_file", arguments, (wrong,)))
    assert refused["reason"] in ("approval_invalid", "approval_required")
    assert target.exists()

    own = keys.approval_token("bob", digest)
    refused = denial(call(stack.example_url, bob, "delete_file", arguments, (own,)))
    assert refused["reason"] in ("approval_invalid", "approval_required")
    assert target.exists()

    approval = keys.approval_token("carol", digest)
    assert "deleted" in text(call(stack.example_url, bob, "delete_file", arguments, (approval,)))
    assert not target.exists()


@pytest.mark.requirement("protected-resource")
@pytest.mark.parametrize("which", ["example", "gateway"])
def test_missing_token_gets_401_with_the_resource_metadata_pointer(stack: Stack,
                                                                   which: str) -> None:
    base = stack.example.url if which == "example" else stack.gateway.url
    resource = RESOURCE if which == "example" else GATEWAY
    answer = httpx2.post(base + "/mcp", headers=ACCEPT,
                         json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert answer.status_code == 401
    challenge = answer.headers["www-authenticate"]
    path = "/.well-known/oauth-protected-resource" + httpx2.URL(resource).path
    assert f'resource_metadata="https://mcp.example.com{path}"' in challenge
    metadata = httpx2.get(base + path).json()
    assert metadata["resource"] == resource
    assert metadata["authorization_servers"] == [ISSUER]


# --- the gateway in front of the real filesystem and git servers ------------------------------

def test_gateway_lists_namespaced_tools_filtered_by_policy(stack: Stack, keys: Keys) -> None:
    names = tool_names(stack.gateway_url, keys.token("alice", "acme", READER, audience=GATEWAY))
    assert {"files__read_text_file", "files__list_directory", "git__git_status"} <= names
    assert not names & {"files__write_file", "files__move_file", "git__git_commit",
                        "git__git_reset", "git__git_add"}


def test_gateway_reads_through_and_denies_other_tenants_paths(stack: Stack, keys: Keys) -> None:
    alice = keys.token("alice", "acme", READER, audience=GATEWAY)
    read = call(stack.gateway_url, alice, "files__read_text_file",
                {"path": "sandbox/acme/doc.txt"})
    assert "acme document" in text(read)
    denied = call(stack.gateway_url, alice, "files__read_text_file",
                  {"path": "sandbox/globex/plan.txt"})
    assert denial(denied)["reason"] == "argument_violation"
    assert "globex plan" not in json.dumps(denied.model_dump())


def _raw_session(base: str, token: str) -> tuple[httpx2.Client, dict[str, str]]:
    client = httpx2.Client(base_url=base, headers={**ACCEPT, "Authorization": f"Bearer {token}"})
    answer = client.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                       "params": {"protocolVersion": "2025-11-25",
                                                  "capabilities": {},
                                                  "clientInfo": {"name": "raw", "version": "1"}}})
    answer.raise_for_status()
    headers = {"mcp-session-id": answer.headers["mcp-session-id"],
               "mcp-protocol-version": "2025-11-25"}
    client.post("/mcp", headers=headers,
                json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    return client, headers


@pytest.mark.requirement("protected-resource")
def test_gateway_answers_a_missing_scope_with_403_insufficient_scope(stack: Stack,
                                                                     keys: Keys) -> None:
    target = stack.gateway_root / "sandbox" / "acme" / "doc.txt"
    client, headers = _raw_session(stack.gateway.url,
                                   keys.token("alice", "acme", READER, audience=GATEWAY))
    try:
        answer = client.post("/mcp", headers=headers, json={
            "jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "files__write_file",
                       "arguments": {"path": "sandbox/acme/doc.txt", "content": "x"}}})
    finally:
        client.close()
    assert answer.status_code == 403
    challenge = answer.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="files:write"' in challenge
    assert target.read_text() == "acme document\n"


@pytest.mark.requirement("approval")
def test_gateway_git_reset_needs_approval_and_the_repository_is_unchanged_until_then(
        stack: Stack, keys: Keys) -> None:
    bob = keys.token("bob", "acme", ("git:read", "git:write"), audience=GATEWAY)
    arguments = {"repo_path": "sandbox/acme/repo"}
    details = denial(call(stack.gateway_url, bob, "git__git_reset", arguments))
    assert details["reason"] == "approval_required"
    assert "staged.txt" in _git(stack.repo, "diff", "--cached", "--name-only")
    approval = keys.approval_token("carol", details["approval"]["digest"])
    assert not call(stack.gateway_url, bob, "git__git_reset", arguments, (approval,)).is_error
    assert _git(stack.repo, "diff", "--cached", "--name-only") == ""


# --- must stay last: stops the decision service ------------------------------------------------

@pytest.mark.requirement("fail-closed-service-down")
def test_decision_service_down_denies_everything_and_nothing_runs(stack: Stack,
                                                                   keys: Keys) -> None:
    stack.service.stop()
    writer = keys.token("dora", "acme", READER + ("sql:write",))
    update = {"query": "UPDATE customers SET name = 'down' WHERE id = 1"}
    assert denial(call(stack.example_url, writer, "sql_query", update))["reason"] == \
        "service_unavailable"
    assert _customer_name(stack, 1) == "Road Runner Logistics"
    assert tool_names(stack.example_url, writer) == set()

    (stack.repo / "new.txt").write_text("new\n")
    git_writer = keys.token("dora", "acme", ("git:read", "git:write"), audience=GATEWAY)
    result = call(stack.gateway_url, git_writer, "git__git_add",
                  {"repo_path": "sandbox/acme/repo", "files": ["new.txt"]})
    assert denial(result)["reason"] == "service_unavailable"
    assert "new.txt" not in _git(stack.repo, "diff", "--cached", "--name-only")
    assert tool_names(stack.gateway_url, git_writer) == set()
