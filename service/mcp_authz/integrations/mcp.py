"""Authorization for MCP servers built with the `mcp` SDK (2.3): a server middleware.

    from mcp_authz.client import AsyncDecisionClient
    from mcp_authz.integrations.mcp import AuthorizationMiddleware

    authz = AuthorizationMiddleware(AsyncDecisionClient("127.0.0.1:50051"),
                                    tenant="acme", resource="https://mcp.example.com/files")
    server = MCPServer("files", middleware=[authz])

What it does, for every request that reaches the server:

- ``tools/call``, ``resources/read``, ``prompts/get`` are decided by the DecisionService before
  the handler runs. A deny never runs the handler: ``tools/call`` answers a
  ``CallToolResult(isError=True)``, the others an ``MCPError`` with code ``AUTHZ_DENIED``
  (-32010); both carry ``{"reason", "message", "decision_id", ...}`` (in the result's ``_meta``
  under ``io.mcp-authz/decision``, or in the error's ``data``). ``scope_missing`` adds
  ``"scope"`` (what step-up authorization asks for) and ``approval_required`` adds
  ``"approval": {"digest", "approver_roles", "expires_in_seconds"}``.
- ``tools/list`` is filtered through FilterTools: a caller only sees tools it may call.
- The bearer token comes from the HTTP request's ``Authorization`` header (streamable HTTP) and
  goes to the decision service only: the handler sees the request without that header.
- Approval tokens come from the request's ``_meta["io.mcp-authz/approval"]`` (a string or a list
  of strings) and go to the decision service; the key is removed before the handler runs.
- Tool annotations sent to the service come from this server's own ``tools/list``, never from
  the caller.
- An allow's obligations are enforced (``integrations.obligations``); an obligation type this
  middleware does not know makes the call denied before the handler runs.
- A decision service that cannot be reached denies everything (the client fails closed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from mcp import MCPError
from mcp.server.auth.provider import AccessToken
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.types import CallToolResult, TextContent
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..client import ToolFilter
from ..model import Decision, DecisionRequest, Reason
from .obligations import ObligationFailed, enforce, unknown_obligations

__all__ = [
    "APPROVAL_META_KEY", "AUTHZ_DENIED", "DECISION_META_KEY", "AuthorizationMiddleware",
    "Decider", "DeferredTokenVerifier", "StepUpChallenge",
]

log = logging.getLogger(__name__)

APPROVAL_META_KEY = "io.mcp-authz/approval"
DECISION_META_KEY = "io.mcp-authz/decision"
AUTHZ_DENIED = -32010
"""JSON-RPC error code of a denied resources/read or prompts/get (the implementation-defined band
-32000..-32019; the SDK itself uses -32000 and -32001)."""
STEP_UP_SCOPE_KEY = "mcp_authz.insufficient_scope"
"""Where the middleware leaves the missing scope in the ASGI scope for ``StepUpChallenge``."""
DECIDED = ("tools/call", "resources/read", "prompts/get")
_LACKS_RE = re.compile(r"lacks: ([A-Za-z0-9_.:/*, -]+)$")
_MAX_TOOL_PAGES = 20


class Decider(Protocol):
    """What the middleware needs from a decision client (``AsyncDecisionClient`` has it)."""

    async def decide(self, request: DecisionRequest) -> Decision: ...

    async def filter_tools(self, request: DecisionRequest,
                           tools: Sequence[tuple[str, Mapping[str, Any]]]) -> ToolFilter: ...


def bearer_token(request: Any) -> str:
    """The bearer token of an HTTP request, or "" (stdio has no request)."""
    if request is None:
        return ""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _without_credentials(request: Any) -> Any:
    """The same HTTP request as handlers see it, minus the Authorization header."""
    if not isinstance(request, Request):
        return request
    scope = dict(request.scope)
    scope["headers"] = [(k, v) for k, v in request.scope.get("headers", [])
                        if k.lower() != b"authorization"]
    return Request(scope, request.receive)


def _approval_tokens(meta: Mapping[str, Any] | None) -> tuple[str, ...]:
    value = (meta or {}).get(APPROVAL_META_KEY)
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, str) and v)
    return ()


def _client_info(ctx: ServerRequestContext[Any, Any]) -> tuple[str, str]:
    info = (ctx.meta or {}).get("io.modelcontextprotocol/clientInfo")
    if isinstance(info, Mapping):
        return str(info.get("name", "")), str(info.get("version", ""))
    params = getattr(ctx.session, "client_params", None)
    implementation = getattr(params, "client_info", None)
    return (getattr(implementation, "name", "") or "", getattr(implementation, "version", "") or "")


def missing_scopes(reasons: Sequence[Reason]) -> str:
    """The scopes a ``scope_missing`` deny names, space-separated (OAuth's ``scope`` syntax)."""
    found: list[str] = []
    for reason in reasons:
        if reason.code != "scope_missing":
            continue
        for part in reason.message.split("; "):
            match = _LACKS_RE.search(part)
            if match:
                found.extend(s.strip() for s in match.group(1).split(",") if s.strip())
    return " ".join(dict.fromkeys(found))


def deny_details(decision: Decision) -> dict[str, Any]:
    """What a deny tells the caller: reason, message, ids, and what it takes to get an allow."""
    reason = decision.reasons[0] if decision.reasons else Reason("policy_error", "denied")
    details: dict[str, Any] = {"reason": reason.code, "message": reason.message,
                               "decision_id": decision.decision_id,
                               "policy_revision": decision.policy_revision}
    scope = missing_scopes(decision.reasons)
    if scope:
        details["scope"] = scope
    for obligation in decision.obligations:
        if obligation.type == "require_approval":
            details["approval"] = dict(obligation.params)
            details["approval"]["meta_key"] = APPROVAL_META_KEY
    return details


def _refusal(decision: Decision, code: str, message: str) -> Decision:
    return dataclasses.replace(decision, allow=False, reasons=(Reason(code, message),),
                               obligations=())


Resolver = Callable[[str, str], "tuple[str, str] | None"]
"""(method, exposed tool or prompt name or resource URI) -> (server id, the server's own name or
URI); a gateway's routing table. ``method`` is tools/call, prompts/get or resources/read."""


class AuthorizationMiddleware:
    """An `mcp` SDK ``ServerMiddleware``: decide, filter, enforce (see the module docstring).

    ``resolve`` maps the tool and prompt names and resource URIs callers send to the server id
    and name the policy knows (a gateway namespaces names per upstream); by default everything is
    this server's own.
    """

    def __init__(self, decider: Decider, *, tenant: str, resource: str, server_id: str = "",
                 resolve: Resolver | None = None):
        self.decider = decider
        self.tenant = tenant
        self.resource = resource
        self.server_id = server_id
        self._resolve = resolve

    def resolve(self, method: str, name: str) -> tuple[str, str]:
        found = self._resolve(method, name) if self._resolve is not None else None
        return found if found is not None else (self.server_id, name)

    async def __call__(self, ctx: ServerRequestContext[Any, Any],
                       call_next: CallNext) -> HandlerResult:
        if ctx.method == "tools/list" and ctx.request_id is not None:
            return await self._list_tools(ctx, call_next)
        if ctx.method not in DECIDED or ctx.request_id is None:
            return await call_next(ctx)
        params = dict(ctx.params or {})
        tool = await self._tool_definition(ctx, call_next, params.get("name"))
        decision = await self.decider.decide(self._request(ctx, params, tool))
        if decision.allow and unknown_obligations(decision.obligations):
            names = ", ".join(unknown_obligations(decision.obligations))
            decision = _refusal(decision, "obligation_unsupported",
                                f"this server cannot enforce obligation(s): {names}")
        if not decision.allow:
            return self._deny(ctx, decision)
        result = await call_next(self._for_handler(ctx, params))
        if not isinstance(result, dict):
            return result
        what = f"{ctx.method} {params.get('name') or params.get('uri')!r}"
        try:
            return enforce(result, decision.obligations, (tool or {}).get("outputSchema"), what,
                           decision.decision_id)
        except ObligationFailed as exc:
            return self._deny(ctx, _refusal(decision, exc.code, str(exc)))

    def _base_request(self, ctx: ServerRequestContext[Any, Any], method: str,
                      server_id: str) -> DecisionRequest:
        client_name, client_version = _client_info(ctx)
        session = ctx.request.headers.get("mcp-session-id", "") if ctx.request else ""
        return DecisionRequest(
            method=method, tenant=self.tenant, server_resource=self.resource,
            server_id=server_id, bearer_token=bearer_token(ctx.request),
            request_id=str(uuid.uuid4()), client_name=client_name,
            client_version=client_version, session_id=session)

    def _request(self, ctx: ServerRequestContext[Any, Any], params: Mapping[str, Any],
                 tool: Mapping[str, Any] | None) -> DecisionRequest:
        tokens = _approval_tokens(ctx.meta)
        if ctx.method == "tools/call":
            server_id, name = self.resolve(ctx.method, str(params.get("name") or ""))
            return dataclasses.replace(
                self._base_request(ctx, ctx.method, server_id), tool_name=name,
                tool_arguments=params.get("arguments") or {},
                tool_annotations=(tool or {}).get("annotations") or {}, approval_tokens=tokens)
        target = str(params.get("name" if ctx.method == "prompts/get" else "uri") or "")
        server_id, target = self.resolve(ctx.method, target)
        base = self._base_request(ctx, ctx.method, server_id)
        if ctx.method == "prompts/get":
            return dataclasses.replace(base, prompt_name=target,
                                       prompt_arguments=params.get("arguments") or {},
                                       approval_tokens=tokens)
        return dataclasses.replace(base, resource_uri=target, approval_tokens=tokens)

    async def _tool_definition(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext,
                               name: Any) -> dict[str, Any] | None:
        """This server's own definition of tool ``name`` (annotations, outputSchema)."""
        if ctx.method != "tools/call" or not isinstance(name, str):
            return None
        for tool in await self._server_tools(ctx, call_next):
            if isinstance(tool, dict) and tool.get("name") == name:
                return tool
        return None

    async def _server_tools(self, ctx: ServerRequestContext[Any, Any],
                            call_next: CallNext) -> list[Any]:
        meta = (ctx.params or {}).get("_meta")
        tools: list[Any] = []
        cursor = None
        for _ in range(_MAX_TOOL_PAGES):
            params: dict[str, Any] = {"_meta": meta} if meta is not None else {}
            if cursor:
                params["cursor"] = cursor
            page = await call_next(dataclasses.replace(ctx, method="tools/list", params=params))
            if not isinstance(page, dict):
                break
            tools.extend(page.get("tools") or [])
            cursor = page.get("nextCursor")
            if not cursor:
                break
        return tools

    def _for_handler(self, ctx: ServerRequestContext[Any, Any],
                     params: dict[str, Any]) -> ServerRequestContext[Any, Any]:
        """The context the handler gets: no Authorization header, no approval tokens."""
        meta = ctx.meta
        if isinstance(params.get("_meta"), Mapping) and APPROVAL_META_KEY in params["_meta"]:
            params["_meta"] = {k: v for k, v in params["_meta"].items() if k != APPROVAL_META_KEY}
            meta = params["_meta"]  # type: ignore[assignment]
        return dataclasses.replace(ctx, params=params, meta=meta,
                                   request=_without_credentials(ctx.request))

    async def _list_tools(self, ctx: ServerRequestContext[Any, Any],
                          call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        if not isinstance(result, dict):
            return result
        tools = [t for t in result.get("tools") or [] if isinstance(t, dict)]
        by_server: dict[str, list[tuple[str, str, Any]]] = {}
        for tool in tools:
            exposed = str(tool.get("name", ""))
            server_id, name = self.resolve("tools/call", exposed)
            by_server.setdefault(server_id, []).append((exposed, name, tool.get("annotations")))
        visible: set[str] = set()
        for server_id, entries in by_server.items():
            answer = await self.decider.filter_tools(
                self._base_request(ctx, "tools/list", server_id),
                [(name, annotations or {}) for _, name, annotations in entries])
            visible.update(exposed for exposed, name, _ in entries if name in answer.allowed)
        log.debug("tools/list: %d of %d tools visible", len(visible), len(tools))
        return {**result, "tools": [t for t in tools if t.get("name") in visible]}

    def _deny(self, ctx: ServerRequestContext[Any, Any], decision: Decision) -> HandlerResult:
        details = deny_details(decision)
        log.info("denied %s: %s (decision %s)", ctx.method, details["reason"],
                 decision.decision_id)
        if "scope" in details and isinstance(ctx.request, Request):
            ctx.request.scope[STEP_UP_SCOPE_KEY] = details["scope"]
        text = f"denied: {details['reason']}: {details['message']}"
        if "approval" in details:
            text += (f" (approval digest {details['approval'].get('digest', '')}; send approval "
                     f"tokens in _meta[{APPROVAL_META_KEY!r}])")
        if ctx.method == "tools/call":
            return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True,
                                  _meta={DECISION_META_KEY: details})
        raise MCPError(code=AUTHZ_DENIED, message=text, data=details)


class DeferredTokenVerifier:
    """An SDK ``TokenVerifier`` that accepts any bearer token and leaves its verification to the
    decision service, which checks it on every request.

    With ``MCPServer(token_verifier=DeferredTokenVerifier(), auth=AuthSettings(...,
    validate_token_resource=False))`` the SDK answers a request without a token with 401 and
    ``WWW-Authenticate: Bearer ... resource_metadata="..."`` and serves the RFC 9728 metadata.
    The session is bound to a hash of the token; the token itself is not kept.
    """

    async def verify_token(self, token: str) -> AccessToken | None:
        if not token:
            return None
        digest = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:32]
        return AccessToken(token="", client_id=f"bearer-{digest}", scopes=[])


class StepUpChallenge:
    """ASGI wrapper: when the middleware denied a request for a missing scope, the HTTP answer
    becomes ``403`` with ``WWW-Authenticate: Bearer error="insufficient_scope", scope="..."``
    (MCP authorization, scope challenge). The JSON-RPC body is kept. Needs the streamable HTTP app
    built with ``json_response=True`` (an SSE answer has started before the decision is made)."""

    def __init__(self, app: ASGIApp, resource_metadata_url: str = ""):
        self.app = app
        self.resource_metadata_url = resource_metadata_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def challenge(message: Message) -> None:
            needed = scope.get(STEP_UP_SCOPE_KEY)
            if message["type"] == "http.response.start" and needed and message["status"] == 200:
                header = (f'Bearer error="insufficient_scope", scope="{needed}", '
                          'error_description="the policy requires more scope"')
                if self.resource_metadata_url:
                    header += f', resource_metadata="{self.resource_metadata_url}"'
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != b"www-authenticate"]
                headers.append((b"www-authenticate", header.encode()))
                message = {**message, "status": 403, "headers": headers}
            await send(message)

        await self.app(scope, receive, challenge)
