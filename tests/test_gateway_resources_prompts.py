"""The gateway forwards resources and prompts, decides every read and get first, and follows
upstream tool list changes: real processes on loopback (`mcp-authz serve`, `mcp-authz gateway`),
the npm everything reference server behind a recording stdio proxy (``mcp_recorder.py``: what
reached the upstream), and a small stdio server whose tool list changes (``upstream_clock.py``),
called by the official `mcp` client.

The last test stops the decision service.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from mcp_authz import devstack
from mcp_authz.integrations.mcp import AUTHZ_DENIED
from support import ISSUER, POLICIES, JsonServer, Keys, write_config

GATEWAY = "https://mcp.example.com/gateway"
EVERYTHING = (devstack.NPM_PREFIX / "node_modules" / "@modelcontextprotocol" / "server-everything"
              / "dist" / "index.js")
HERE = Path(__file__).resolve().parent
STATIC = "demo://resource/static/document/"

pytestmark = pytest.mark.slow


@dataclass
class Stack:
    service: devstack.Process
    gateway: devstack.Process
    record: Path

    @property
    def url(self) -> str:
        return self.gateway.url + "/mcp"

    def upstream_saw(self, method: str, key: str, value: str) -> bool:
        """Whether the everything server received ``method`` with ``params[key] == value``."""
        for line in self.record.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("method") == method and (entry.get("params") or {}).get(key) == value:
                return True
        return False


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, jwks_server: JsonServer) -> Iterator[Stack]:
    if not EVERYTHING.exists():
        raise RuntimeError(f"{EVERYTHING} is missing: run `make mcp-servers`")
    tmp = tmp_path_factory.mktemp("gw-rp")
    logs = tmp / "logs"
    logs.mkdir()
    record = tmp / "everything-requests.jsonl"
    record.touch()
    # Decision log to a file: on stdout (a pipe nobody reads) it blocks a worker once full.
    config = write_config(tmp, jwks_server.url("/jwks.json"),
                          jwks_server.url("/approval-jwks.json"), bundle=POLICIES,
                          decision_log={"sink": "file", "path": str(tmp / "decisions.jsonl")})
    upstreams = [
        {"name": "everything", "command": [sys.executable, str(HERE / "mcp_recorder.py"),
                                           str(record), "--", "node", str(EVERYTHING), "stdio"]},
        {"name": "clock", "command": [sys.executable, str(HERE / "upstream_clock.py")]},
    ]
    processes: list[devstack.Process] = []
    try:
        service, target = devstack.start_service(config, logs)
        processes.append(service)
        gateway_config = devstack.write_gateway_config(
            tmp / "gateway.yaml", authz=target, resource=GATEWAY, issuer=ISSUER, tenant="acme",
            upstreams=upstreams)
        processes.append(devstack.start_gateway(gateway_config, logs))
        yield Stack(service, processes[-1], record)
    finally:
        for process in reversed(processes):
            process.stop()


def session(stack: Stack, token: str, body: Callable[[Client], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
            async with Client(streamable_http_client(stack.url, http_client=http)) as client:
                return await body(client)
    return anyio.run(run)


def refused(stack: Stack, token: str, body: Callable[[Client], Awaitable[Any]]) -> dict[str, Any]:
    """The deny details of a resources/read or prompts/get the gateway refused."""
    async def catching(client: Client) -> MCPError | None:
        try:
            await body(client)
        except MCPError as exc:
            return exc
        return None

    error = session(stack, token, catching)
    assert isinstance(error, MCPError) and error.code == AUTHZ_DENIED, error
    return dict(error.error.data or {})


def reader(keys: Keys) -> str:
    return keys.token("alice", "acme", ("demo:read", "time:read"), audience=GATEWAY)


def outsider(keys: Keys) -> str:
    return keys.token("olga", "acme", ("time:read",), audience=GATEWAY)


def test_resource_and_prompt_lists_are_forwarded_whole(stack: Stack, keys: Keys) -> None:
    async def body(client: Client) -> tuple[set[str], set[str], set[str]]:
        resources = {str(r.uri) for r in (await client.list_resources()).resources}
        templates = {t.uri_template for t in
                     (await client.list_resource_templates()).resource_templates}
        prompts = {p.name for p in (await client.list_prompts()).prompts}
        return resources, templates, prompts

    # Listing is not access: a caller without demo:read sees the same lists.
    for token in (reader(keys), outsider(keys)):
        resources, templates, prompts = session(stack, token, body)
        assert f"{STATIC}features.md" in resources  # URIs stay as the upstream wrote them
        assert "demo://resource/dynamic/text/{resourceId}" in templates
        assert {"everything__simple-prompt", "everything__args-prompt"} <= prompts


def test_a_reader_reads_resources_and_gets_prompts_through_the_gateway(stack: Stack,
                                                                        keys: Keys) -> None:
    async def body(client: Client) -> tuple[str, str, str]:
        static = await client.read_resource(f"{STATIC}features.md")
        dynamic = await client.read_resource("demo://resource/dynamic/text/7")
        prompt = await client.get_prompt("everything__args-prompt", {"city": "Lisbon"})
        return (getattr(static.contents[0], "text", ""), getattr(dynamic.contents[0], "text", ""),
                json.dumps(prompt.model_dump(mode="json")))

    static, dynamic, prompt = session(stack, reader(keys), body)
    assert static.startswith("# Everything Server - Features")
    assert "7" in dynamic  # routed by the upstream's resource template
    assert "Lisbon" in prompt
    # The upstream got its own prompt name, and the proxy records what arrives.
    assert stack.upstream_saw("prompts/get", "name", "args-prompt")
    assert stack.upstream_saw("resources/read", "uri", f"{STATIC}features.md")


@pytest.mark.requirement("deny-has-no-side-effect")
def test_without_demo_read_reads_and_gets_are_denied_and_never_reach_the_upstream(
        stack: Stack, keys: Keys) -> None:
    uri = f"{STATIC}startup.md"
    denied = refused(stack, outsider(keys), lambda client: client.read_resource(uri))
    assert denied["reason"] == "scope_missing" and denied["scope"] == "demo:read"
    denied = refused(stack, outsider(keys),
                     lambda client: client.get_prompt("everything__simple-prompt"))
    assert denied["reason"] == "scope_missing" and denied["scope"] == "demo:read"
    assert not stack.upstream_saw("resources/read", "uri", uri)
    assert not stack.upstream_saw("prompts/get", "name", "simple-prompt")


def test_tool_list_change_upstream_reaches_callers_with_the_upstreams_annotations(
        stack: Stack, keys: Keys) -> None:
    async def body(client: Client) -> dict[str, Any]:
        before = {t.name for t in (await client.list_tools()).tools}
        assert "clock__get_current_time" in before and "clock__convert_time" not in before
        assert not (await client.call_tool("clock__get_current_time",
                                           {"timezone": "UTC"})).is_error
        for _ in range(100):  # the upstream's notification is handled asynchronously
            tools = {t.name: t for t in (await client.list_tools()).tools}
            if "clock__convert_time" in tools:
                break
            await anyio.sleep(0.05)
        added = tools["clock__convert_time"]
        result = await client.call_tool("clock__convert_time",
                                        {"time": "12:00", "target_timezone": "UTC"})
        return {"annotations": added.annotations, "result": result}

    outcome = session(stack, reader(keys), body)
    assert outcome["annotations"].idempotent_hint is True  # the upstream's own definition
    assert not outcome["result"].is_error
    assert "12:00 in UTC" in outcome["result"].content[0].text


# --- must stay last: stops the decision service ------------------------------------------------

@pytest.mark.requirement("fail-closed-service-down")
def test_decision_service_down_denies_reads_and_gets_and_nothing_reaches_the_upstream(
        stack: Stack, keys: Keys) -> None:
    stack.service.stop()
    uri = f"{STATIC}structure.md"
    denied = refused(stack, reader(keys), lambda client: client.read_resource(uri))
    assert denied["reason"] == "service_unavailable"
    denied = refused(stack, reader(keys), lambda client: client.get_prompt(
        "everything__resource-prompt", {"resourceType": "Text", "resourceId": "1"}))
    assert denied["reason"] == "service_unavailable"
    assert not stack.upstream_saw("resources/read", "uri", uri)
    assert not stack.upstream_saw("prompts/get", "name", "resource-prompt")
