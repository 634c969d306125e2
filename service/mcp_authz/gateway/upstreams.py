"""The gateway's upstream MCP servers: connect, keep their catalogs current, route requests.

Each upstream is one long-lived `mcp` client session (a stdio child process or a streamable HTTP
connection) opened at start. The gateway talks to it with its own identity: the user's token
never leaves the gateway.

Catalogs (tools, prompts, resources, resource templates; every page) are listed at start and
listed again whenever the upstream says a list changed (``notifications/{tools,prompts,
resources}/list_changed``; on a 2026-07-28 session, where servers send those only on a
``subscriptions/listen`` stream, the gateway keeps one open). A failed re-listing keeps the
previous list.

Routing:
- tools and prompts by exposed name: the upstream's own name, or ``<upstream>__<name>`` when
  namespaced; the decision service sees the upstream's own name and the upstream's name as
  ``server.id``;
- resources by URI, which stays as the upstream wrote it: the upstream that lists the URI, else
  the first whose resource template matches it, else (one upstream only) that upstream. A URI or
  template offered by several upstreams belongs to the first in configuration order, so a later
  upstream can never take another's URIs over.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
from anyio.abc import TaskGroup, TaskStatus
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.session import IncomingMessage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.uri_template import InvalidUriTemplate, UriTemplate
from mcp.types import (
    METHOD_NOT_FOUND,
    CallToolResult,
    GetPromptResult,
    Prompt,
    ReadResourceResult,
    Resource,
    ResourceTemplate,
    Tool,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from ..errors import ConfigError
from .config import NAMESPACE_SEPARATOR, GatewayConfig, UpstreamConfig

log = logging.getLogger(__name__)

MAX_PAGES = 100
"""Pages read per listing; an upstream that never stops paginating is cut off here."""

LIST_CHANGED = {"notifications/tools/list_changed": "tools",
                "notifications/prompts/list_changed": "prompts",
                "notifications/resources/list_changed": "resources"}


@dataclass(frozen=True)
class Route:
    upstream: str
    name: str
    """The upstream's own tool or prompt name, or the resource URI."""


@dataclass
class Catalog:
    """What one upstream offers, as it last listed it."""

    tools: list[Tool] = field(default_factory=list)
    prompts: list[Prompt] = field(default_factory=list)
    resources: list[Resource] = field(default_factory=list)
    templates: list[ResourceTemplate] = field(default_factory=list)


@dataclass(frozen=True)
class Tables:
    """Every upstream's catalog merged into what callers see, with the routes back.

    Rebuilt whole after any listing and swapped in one assignment, so a request sees one
    consistent set."""

    tools: list[Tool] = field(default_factory=list)
    prompts: list[Prompt] = field(default_factory=list)
    resources: list[Resource] = field(default_factory=list)
    templates: list[ResourceTemplate] = field(default_factory=list)
    tool_routes: dict[str, Route] = field(default_factory=dict)
    prompt_routes: dict[str, Route] = field(default_factory=dict)
    resource_owners: dict[str, str] = field(default_factory=dict)
    template_owners: list[tuple[UriTemplate, str]] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)


def _transport(config: UpstreamConfig, base_dir_path: Any) -> Any:
    if config.url:
        headers = dict((k.strip(), v.strip()) for k, _, v in
                       (h.partition(":") for h in config.headers))
        http = httpx2.AsyncClient(headers=headers, timeout=config.timeout_seconds)
        return streamable_http_client(config.url, http_client=http), http
    env = dict(entry.partition("=")[::2] for entry in config.env)
    return StdioServerParameters(command=config.command[0], args=list(config.command[1:]),
                                 env=env or None, cwd=base_dir_path(config.cwd) or None), None


async def _all_pages(fetch: Callable[[str | None], Awaitable[Any]], items: str) -> list[Any]:
    found: list[Any] = []
    cursor = None
    for _ in range(MAX_PAGES):
        page = await fetch(cursor)
        found.extend(getattr(page, items))
        cursor = page.next_cursor
        if not cursor:
            return found
    log.warning("listing %s stopped after %d pages", items, MAX_PAGES)
    return found


async def _list(client: Client, kind: str, catalog: Catalog) -> None:
    """List ``kind`` (tools, prompts or resources with templates) into ``catalog``."""
    if kind == "tools":
        catalog.tools = await _all_pages(
            lambda c: client.list_tools(cursor=c, cache_mode="bypass"), "tools")
    elif kind == "prompts":
        catalog.prompts = await _all_pages(
            lambda c: client.list_prompts(cursor=c, cache_mode="bypass"), "prompts")
    else:
        resources = await _all_pages(
            lambda c: client.list_resources(cursor=c, cache_mode="bypass"), "resources")
        try:
            catalog.templates = await _all_pages(
                lambda c: client.list_resource_templates(cursor=c, cache_mode="bypass"),
                "resource_templates")
        except MCPError as exc:
            if exc.code != METHOD_NOT_FOUND:
                raise
            catalog.templates = []  # resources without templates
        catalog.resources = resources


def _offered(client: Client) -> list[str]:
    capabilities = client.server_capabilities
    return [kind for kind in ("tools", "prompts", "resources")
            if getattr(capabilities, kind, None) is not None]


class Upstreams:
    """Every upstream's session and catalog, with the routing tables callers are served from."""

    def __init__(self, config: GatewayConfig):
        self._config = config
        self._clients: dict[str, Client] = {}
        self._catalogs: dict[str, Catalog] = {u.name: Catalog() for u in config.upstreams}
        self._locks = {u.name: anyio.Lock() for u in config.upstreams}
        self._stack = AsyncExitStack()
        self._tasks: TaskGroup | None = None
        self.tables = Tables()

    @property
    def namespaced(self) -> bool:
        mode = self._config.namespace
        return mode == "always" or (mode == "auto" and len(self._config.upstreams) > 1)

    def exposed_name(self, upstream: str, name: str) -> str:
        return f"{upstream}{NAMESPACE_SEPARATOR}{name}" if self.namespaced else name

    async def __aenter__(self) -> Upstreams:
        try:
            self._tasks = await self._stack.enter_async_context(anyio.create_task_group())
            for upstream in self._config.upstreams:
                await self._connect(upstream)
            self.tables = self._build()
            if self.tables.conflicts:
                raise ConfigError([f"upstreams: {c}; use namespace: auto or always"
                                   for c in self.tables.conflicts])
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._close()

    async def _close(self) -> None:
        if self._tasks is not None:
            self._tasks.cancel_scope.cancel()
        await self._stack.aclose()

    async def _connect(self, config: UpstreamConfig) -> None:
        target, http = _transport(config, self._config.path_of)
        if http is not None:
            await self._stack.enter_async_context(http)
        # No response cache: every listing and read reaches the upstream (callers cache).
        client = Client(target, mode=config.mode,  # type: ignore[arg-type]
                        read_timeout_seconds=config.timeout_seconds, cache=None,
                        message_handler=self._message_handler(config.name))
        await self._stack.enter_async_context(client)
        async with self._locks[config.name]:
            self._clients[config.name] = client
            catalog = self._catalogs[config.name]
            for kind in _offered(client):
                await _list(client, kind, catalog)
        if client.protocol_version in MODERN_PROTOCOL_VERSIONS and self._tasks is not None:
            await self._tasks.start(self._listen, config.name, client)
        log.info("upstream %s: %d tools, %d prompts, %d resources, %d resource templates",
                 config.name, len(catalog.tools), len(catalog.prompts), len(catalog.resources),
                 len(catalog.templates))

    def _message_handler(self, upstream: str) -> Callable[[IncomingMessage], Awaitable[None]]:
        async def handle(message: IncomingMessage) -> None:
            kind = LIST_CHANGED.get(getattr(message, "method", ""))
            if kind is not None:
                await self.refresh(upstream, kind)
        return handle

    async def _listen(self, upstream: str, client: Client, *,
                      task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Keep a 2026-07-28 ``subscriptions/listen`` stream open (started once acknowledged):
        its list-changed frames reach the message handler like handshake-era notifications."""
        wanted = {f"{kind}_list_changed": True for kind in _offered(client)}
        started = False
        try:
            async with client.listen(**wanted) as events:
                task_status.started()
                started = True
                async for _ in events:
                    pass
        except Exception as exc:  # the upstream refused or the session ended: log only
            log.warning("upstream %s: list-change stream ended: %s", upstream, exc)
        if not started:
            task_status.started()  # never leave the connecting gateway waiting

    async def refresh(self, upstream: str, kind: str) -> None:
        """List ``kind`` of ``upstream`` again and rebuild the tables; on failure keep the old."""
        async with self._locks[upstream]:
            client = self._clients.get(upstream)
            if client is None:
                return  # still connecting: its first listing follows
            try:
                await _list(client, kind, self._catalogs[upstream])
            except Exception as exc:  # any upstream failure: serve the last good list
                log.warning("upstream %s: listing %s again failed, keeping the last list: %s",
                            upstream, kind, exc)
                return
            self.tables = self._build()
        for conflict in self.tables.conflicts:
            log.warning("upstream %s: %s; the first upstream keeps it", upstream, conflict)
        log.info("upstream %s: %s list changed, listed again", upstream, kind)

    def _build(self) -> Tables:
        tables = Tables()
        for name, catalog in self._catalogs.items():  # configuration order
            for tool in catalog.tools:
                self._add(tables.tools, tables.tool_routes, tables.conflicts, "tool", name, tool)
            for prompt in catalog.prompts:
                self._add(tables.prompts, tables.prompt_routes, tables.conflicts, "prompt", name,
                          prompt)
            for resource in catalog.resources:
                if tables.resource_owners.setdefault(str(resource.uri), name) == name:
                    tables.resources.append(resource)
            for template in catalog.templates:
                try:
                    tables.template_owners.append((UriTemplate.parse(template.uri_template),
                                                   name))
                except InvalidUriTemplate as exc:
                    log.warning("upstream %s: resource template %r ignored for routing: %s",
                                name, template.uri_template, exc)
                tables.templates.append(template)
        return tables

    def _add(self, items: list[Any], routes: dict[str, Route], conflicts: list[str], what: str,
             upstream: str, item: Any) -> None:
        exposed = self.exposed_name(upstream, item.name)
        if exposed in routes:
            conflicts.append(f"{what} name {exposed!r} is offered twice")
            return
        routes[exposed] = Route(upstream, item.name)
        items.append(item.model_copy(update={"name": exposed}))

    def route_tool(self, name: str) -> Route | None:
        return self.tables.tool_routes.get(name)

    def route_prompt(self, name: str) -> Route | None:
        return self.tables.prompt_routes.get(name)

    def route_resource(self, uri: str) -> Route | None:
        tables = self.tables
        owner = tables.resource_owners.get(uri)
        if owner is None:
            owner = next((name for template, name in tables.template_owners
                          if template.match(uri) is not None), None)
        if owner is None and len(self._config.upstreams) == 1:
            owner = self._config.upstreams[0].name
        return Route(owner, uri) if owner is not None else None

    def route(self, method: str, name: str) -> Route | None:
        """The route of a ``tools/call``, ``prompts/get`` or ``resources/read`` target."""
        if method == "tools/call":
            return self.route_tool(name)
        if method == "prompts/get":
            return self.route_prompt(name)
        return self.route_resource(name)

    async def call_tool(self, route: Route, arguments: dict[str, Any] | None) -> CallToolResult:
        return await self._clients[route.upstream].call_tool(route.name, arguments)

    async def get_prompt(self, route: Route, arguments: dict[str, str] | None) -> GetPromptResult:
        return await self._clients[route.upstream].get_prompt(route.name, arguments)

    async def read_resource(self, route: Route) -> ReadResourceResult:
        return await self._clients[route.upstream].read_resource(route.name, cache_mode="bypass")

