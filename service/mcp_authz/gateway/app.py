"""The gateway app: an MCP server on streamable HTTP in front of the configured upstreams.

It is a plain low-level `mcp` Server whose handlers forward tools, prompts and resources to the
upstreams, with the very same ``AuthorizationMiddleware`` an SDK server uses (decide every
``tools/call``, ``prompts/get`` and ``resources/read``; filter ``tools/list``; obligations,
approvals). Prompt and resource lists are served whole: listing is not access, every get and
read is decided. Around it, the SDK's OAuth protected-resource wiring: RFC 9728 metadata, 401
with ``resource_metadata`` when the token is missing. ``StepUpChallenge`` turns a
``scope_missing`` deny into 403 ``insufficient_scope`` with the scope. A deny never reaches an
upstream; neither does the user's token (upstream sessions carry only the gateway's own
configuration).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from mcp import MCPError
from mcp.server.auth.routes import build_resource_metadata_url
from mcp.server.auth.settings import AuthSettings
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import (
    INVALID_PARAMS,
    CallToolRequestParams,
    CallToolResult,
    GetPromptRequestParams,
    GetPromptResult,
    ListPromptsResult,
    ListResourcesResult,
    ListResourceTemplatesResult,
    ListToolsResult,
    PaginatedRequestParams,
    ReadResourceRequestParams,
    ReadResourceResult,
)
from starlette.applications import Starlette
from starlette.types import ASGIApp

from ..client import AsyncDecisionClient, ClientOptions, TLSOptions
from ..integrations.mcp import AuthorizationMiddleware, DeferredTokenVerifier, StepUpChallenge
from ..integrations.serving import split_listen
from .config import GatewayConfig
from .upstreams import Route, Upstreams

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def decision_client(config: GatewayConfig) -> AsyncDecisionClient:
    service = config.decision_service
    tls = None
    if service.tls is not None:
        tls = TLSOptions(ca_file=config.path_of(service.tls.ca_file),
                         cert_file=config.path_of(service.tls.cert_file),
                         key_file=config.path_of(service.tls.key_file),
                         server_name=service.tls.server_name)
    return AsyncDecisionClient(service.target, ClientOptions(
        deadline_seconds=service.deadline_seconds, max_attempts=service.max_attempts, tls=tls))


def _transport_security(config: GatewayConfig) -> TransportSecuritySettings | None:
    host, _ = split_listen(config.listen)
    if config.allowed_hosts:
        return TransportSecuritySettings(enable_dns_rebinding_protection=True,
                                         allowed_hosts=list(config.allowed_hosts))
    if host in LOOPBACK:
        return None  # the SDK protects loopback listeners itself
    return TransportSecuritySettings(enable_dns_rebinding_protection=False)


def build_gateway(config: GatewayConfig,
                  decider: AsyncDecisionClient | None = None) -> tuple[ASGIApp, Upstreams]:
    """The ASGI app and its upstreams (connected when the app's lifespan starts)."""
    upstreams = Upstreams(config)

    def resolve(method: str, name: str) -> tuple[str, str] | None:
        route = upstreams.route(method, name)
        return (route.upstream, route.name) if route is not None else None

    authz = AuthorizationMiddleware(decider or decision_client(config), tenant=config.tenant,
                                    resource=config.resource, server_id=config.server_id,
                                    resolve=resolve)
    server = _forwarding_server(upstreams)
    server.middleware.append(authz)
    auth = AuthSettings(issuer_url=config.authorization_servers[0],
                        resource_server_url=config.resource, validate_token_resource=False)
    host, _ = split_listen(config.listen)
    app: Starlette = server.streamable_http_app(
        streamable_http_path=config.path, json_response=True, auth=auth,
        token_verifier=DeferredTokenVerifier(), host=host,
        transport_security=_transport_security(config))
    _open_upstreams_with(app, upstreams)
    metadata_url = str(build_resource_metadata_url(auth.resource_server_url))  # type: ignore
    return StepUpChallenge(app, metadata_url), upstreams


def _routed(upstreams: Upstreams, method: str, name: str, what: str) -> Route:
    route = upstreams.route(method, name)
    if route is None:
        raise MCPError(code=INVALID_PARAMS, message=f"Unknown {what}: {name}")
    return route


def _forwarding_server(upstreams: Upstreams) -> Server[Any]:
    """A low-level Server whose handlers forward to the upstreams (after the middleware)."""
    Ctx = ServerRequestContext[Any, Any]
    Page = PaginatedRequestParams | None

    async def list_tools(ctx: Ctx, params: Page) -> ListToolsResult:
        return ListToolsResult(tools=upstreams.tables.tools)

    async def call_tool(ctx: Ctx, params: CallToolRequestParams) -> CallToolResult:
        route = _routed(upstreams, "tools/call", params.name, "tool")
        return await upstreams.call_tool(route, params.arguments)

    async def list_prompts(ctx: Ctx, params: Page) -> ListPromptsResult:
        return ListPromptsResult(prompts=upstreams.tables.prompts)

    async def get_prompt(ctx: Ctx, params: GetPromptRequestParams) -> GetPromptResult:
        route = _routed(upstreams, "prompts/get", params.name, "prompt")
        return await upstreams.get_prompt(route, params.arguments)

    async def list_resources(ctx: Ctx, params: Page) -> ListResourcesResult:
        return ListResourcesResult(resources=upstreams.tables.resources)

    async def list_templates(ctx: Ctx, params: Page) -> ListResourceTemplatesResult:
        return ListResourceTemplatesResult(resource_templates=upstreams.tables.templates)

    async def read_resource(ctx: Ctx, params: ReadResourceRequestParams) -> ReadResourceResult:
        return await upstreams.read_resource(
            _routed(upstreams, "resources/read", str(params.uri), "resource"))

    return Server("mcp-authz-gateway", on_list_tools=list_tools, on_call_tool=call_tool,
                  on_list_prompts=list_prompts, on_get_prompt=get_prompt,
                  on_list_resources=list_resources,
                  on_list_resource_templates=list_templates, on_read_resource=read_resource)


def _open_upstreams_with(app: Starlette, upstreams: Upstreams) -> None:
    """Connect the upstreams before the app serves, close them after it stops."""
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(starlette: Any) -> AsyncIterator[Any]:
        async with upstreams, inner(starlette) as state:
            yield state

    app.router.lifespan_context = lifespan
