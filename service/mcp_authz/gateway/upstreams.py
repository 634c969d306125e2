"""The gateway's upstream MCP servers: connect, list tools once, route calls by exposed name.

Each upstream is one long-lived `mcp` client session (a stdio child process or a streamable HTTP
connection) opened at start. The gateway talks to it with its own identity: the user's token
never leaves the gateway. Tool names are exposed as-is, or as ``<upstream>__<tool>`` when
namespaced; the decision service always sees the upstream's own tool name and the upstream's
name as ``server.id``.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, Tool

from ..errors import ConfigError
from .config import NAMESPACE_SEPARATOR, GatewayConfig, UpstreamConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    upstream: str
    tool: str


def _transport(config: UpstreamConfig, base_dir_path: Any) -> Any:
    if config.url:
        headers = dict((k.strip(), v.strip()) for k, _, v in
                       (h.partition(":") for h in config.headers))
        http = httpx2.AsyncClient(headers=headers, timeout=config.timeout_seconds)
        return streamable_http_client(config.url, http_client=http), http
    env = dict(entry.partition("=")[::2] for entry in config.env)
    return StdioServerParameters(command=config.command[0], args=list(config.command[1:]),
                                 env=env or None, cwd=base_dir_path(config.cwd) or None), None


class Upstreams:
    """Every upstream's session and tool list, with the exposed-name routing table."""

    def __init__(self, config: GatewayConfig):
        self._config = config
        self._clients: dict[str, Client] = {}
        self._stack = AsyncExitStack()
        self.tools: list[Tool] = []
        self.routes: dict[str, Route] = {}

    @property
    def namespaced(self) -> bool:
        mode = self._config.namespace
        return mode == "always" or (mode == "auto" and len(self._config.upstreams) > 1)

    def exposed_name(self, upstream: str, tool: str) -> str:
        return f"{upstream}{NAMESPACE_SEPARATOR}{tool}" if self.namespaced else tool

    async def __aenter__(self) -> Upstreams:
        try:
            for upstream in self._config.upstreams:
                await self._connect(upstream)
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _connect(self, config: UpstreamConfig) -> None:
        target, http = _transport(config, self._config.path_of)
        if http is not None:
            await self._stack.enter_async_context(http)
        client = Client(target, mode=config.mode,  # type: ignore[arg-type]
                        read_timeout_seconds=config.timeout_seconds)
        await self._stack.enter_async_context(client)
        self._clients[config.name] = client
        listing = await client.list_tools()
        for tool in listing.tools:
            name = self.exposed_name(config.name, tool.name)
            if name in self.routes:
                raise ConfigError([f"upstreams: tool name {name!r} is offered twice; "
                                   "use namespace: auto or always"])
            self.routes[name] = Route(config.name, tool.name)
            self.tools.append(tool.model_copy(update={"name": name}))
        log.info("upstream %s: %d tools", config.name, len(listing.tools))

    def route(self, name: str) -> Route | None:
        return self.routes.get(name)

    async def call_tool(self, name: str, arguments: dict[str, Any] | None) -> CallToolResult:
        route = self.routes[name]
        return await self._clients[route.upstream].call_tool(route.tool, arguments)
