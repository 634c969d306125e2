"""The gateway's upstream table on real upstream processes (no decision service involved):
resource URIs offered by two upstreams, and a 2026-07-28 upstream's tool list changing (the
gateway must hold a ``subscriptions/listen`` stream to hear about it).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from mcp_authz import devstack
from mcp_authz.gateway.config import GatewayConfig, UpstreamConfig
from mcp_authz.gateway.upstreams import Upstreams

EVERYTHING = (devstack.NPM_PREFIX / "node_modules" / "@modelcontextprotocol" / "server-everything"
              / "dist" / "index.js")
CLOCK = Path(__file__).resolve().parent / "upstream_clock.py"

pytestmark = pytest.mark.slow


def everything(name: str) -> UpstreamConfig:
    return UpstreamConfig(name=name, command=("node", str(EVERYTHING), "stdio"))


def test_a_uri_listed_by_two_upstreams_belongs_to_the_first_configured() -> None:
    async def routes() -> tuple[str | None, ...]:
        config = GatewayConfig(upstreams=(everything("first"), everything("second")))
        async with Upstreams(config) as upstreams:
            uris = [str(r.uri) for r in upstreams.tables.resources]
            assert len(uris) == len(set(uris)) == 7  # listed once, not once per upstream
            listed = upstreams.route("resources/read",
                                     "demo://resource/static/document/features.md")
            templated = upstreams.route("resources/read", "demo://resource/dynamic/blob/3")
            unknown = upstreams.route("resources/read", "file:///etc/passwd")
            prompt = upstreams.route("prompts/get", "second__simple-prompt")
            return (listed and listed.upstream, templated and templated.upstream, unknown,
                    prompt and prompt.name)

    assert anyio.run(routes) == ("first", "first", None, "simple-prompt")


@pytest.fixture
def http_clock() -> Iterator[str]:
    port = devstack.free_port()
    process = subprocess.Popen([sys.executable, str(CLOCK), "--http", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(10)


def test_a_2026_upstreams_tool_list_change_is_followed(http_clock: str) -> None:
    async def tools_after_change() -> tuple[str, list[str]]:
        config = GatewayConfig(upstreams=(UpstreamConfig(name="clock", url=http_clock,
                                                         mode="auto"),))
        async with Upstreams(config) as upstreams:
            version = upstreams._clients["clock"].protocol_version
            route = upstreams.route("tools/call", "get_current_time")
            assert route is not None
            await upstreams.call_tool(route, {"timezone": "UTC"})
            for _ in range(100):  # the change event is handled asynchronously
                if upstreams.route("tools/call", "convert_time") is not None:
                    break
                await anyio.sleep(0.05)
            return version, [tool.name for tool in upstreams.tables.tools]

    version, tools = anyio.run(tools_after_change)
    assert version == "2026-07-28"
    assert tools == ["get_current_time", "convert_time"]
